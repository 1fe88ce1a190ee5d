"""Reading back what an RTMP server recorded: streams, keyframes, timestamps and the tone.

The demo prints this summary, and the integration tests assert on it: a claim about the relay
is proven by measuring its output, not by trusting its logs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class StreamInfo:
    kind: str
    codec: str
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0


@dataclass
class Recording:
    """What one FLV/MP4 file holds, read packet by packet (times in seconds)."""

    path: Path
    streams: list[StreamInfo] = field(default_factory=list)
    video_dts: list[float] = field(default_factory=list)
    video_keyframes: list[float] = field(default_factory=list)
    audio_dts: list[float] = field(default_factory=list)

    @property
    def duration(self) -> float:
        ends = [times[-1] for times in (self.video_dts, self.audio_dts) if times]
        starts = [times[0] for times in (self.video_dts, self.audio_dts) if times]
        return max(ends) - min(starts) if ends else 0.0

    @property
    def max_keyframe_gap(self) -> float:
        """Longest time between keyframes, counting the stretch after the last one."""
        if not self.video_keyframes:
            return float("inf")
        marks = [*self.video_keyframes, self.video_dts[-1]]
        return max(b - a for a, b in itertools.pairwise(marks)) if len(marks) > 1 else 0.0

    def kinds(self, kind: str) -> list[StreamInfo]:
        return [s for s in self.streams if s.kind == kind]

    def describe(self) -> str:
        parts = []
        for stream in self.streams:
            if stream.kind == "video":
                parts.append(f"video {stream.codec} {stream.width}x{stream.height}")
            else:
                parts.append(f"audio {stream.codec} {stream.sample_rate} Hz x{stream.channels}")
        gap = f", keyframes every <= {self.max_keyframe_gap:.2f} s" if self.video_keyframes else ""
        return f"{', '.join(parts)}; {self.duration:.1f} s{gap}"


def read_recording(path: Path) -> Recording:
    """Demux every packet (no decoding) to collect stream info, timestamps and keyframes."""
    recording = Recording(path=path)
    with av.open(str(path)) as container:
        for stream in container.streams:
            context: Any = stream.codec_context
            if stream.type == "video":
                info = StreamInfo("video", context.name, width=context.width, height=context.height)
            elif stream.type == "audio":
                info = StreamInfo(
                    "audio",
                    context.name,
                    sample_rate=context.sample_rate,
                    channels=context.channels,
                )
            else:
                continue
            recording.streams.append(info)
        for packet in container.demux():
            if packet.dts is None or packet.size == 0:
                continue
            seconds = float(packet.dts * packet.time_base)
            if packet.stream.type == "video":
                recording.video_dts.append(seconds)
                if packet.is_keyframe:
                    recording.video_keyframes.append(seconds)
            elif packet.stream.type == "audio":
                recording.audio_dts.append(seconds)
    return recording


def decode_audio(path: Path, rate: int = 48000) -> npt.NDArray[np.float32]:
    """The recording's audio, decoded and resampled to mono float at `rate`."""
    chunks: list[npt.NDArray[np.float32]] = []
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return np.zeros(0, dtype=np.float32)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1).astype(np.float32))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def dominant_frequency(samples: npt.NDArray[np.float32], rate: int) -> float:
    """The strongest frequency in the signal (Hann-windowed FFT, parabolic peak refinement)."""
    if samples.size < 64:
        return 0.0
    window = np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(samples * window))
    spectrum[0] = 0.0
    peak = int(np.argmax(spectrum))
    if 0 < peak < spectrum.size - 1:
        left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denominator = left - 2 * centre + right
        offset = 0.5 * (left - right) / denominator if denominator else 0.0
    else:
        offset = 0.0
    return float((peak + offset) * rate / samples.size)


def tone_seconds(
    samples: npt.NDArray[np.float32], rate: int, frequency: float, window: float = 0.1
) -> npt.NDArray[np.bool_]:
    """For each window: does `frequency` dominate it? Finds where a tone is present or absent."""
    size = int(rate * window)
    count = samples.size // size
    if count == 0:
        return np.zeros(0, dtype=bool)
    frames = samples[: count * size].reshape(count, size) * np.hanning(size)
    spectra = np.abs(np.fft.rfft(frames, axis=1))
    spectra[:, 0] = 0.0
    bin_width = rate / size
    target = round(frequency / bin_width)
    peaks = np.argmax(spectra, axis=1)
    loud = spectra.max(axis=1) > 1e-3 * size
    result: npt.NDArray[np.bool_] = (np.abs(peaks - target) <= 1) & loud
    return result


def latest_recording(directory: Path, stream_key: str) -> Path | None:
    """nginx-rtmp's `record_unique on` writes `<key>-<unixtime>.flv` per publish."""
    candidates = sorted(directory.glob(f"{stream_key}-*.flv"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None
