"""Audio toward the callee: RTP payloads in the negotiated codec, as long as the answer asks.

Everything is encoded before the call needs it (one silence payload, the whole announcement),
so sending costs a list lookup per packet.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from sip2rtmp.media.audio import RtpAudioCodec, audio_context, rtp_audio_codec

PTIME_MS = 20
"""The packet duration when the answer names none (RFC 3551 §4.2)."""
MIN_PTIME_MS = 10
MAX_PTIME_MS = 60
"""The packet durations an answer's ``a=ptime`` is taken within; one asking for less or more
gets the nearest."""
_OPUS_FRAMES_MS = (5, 10, 20, 40, 60)
"""The Opus frame sizes in whole milliseconds (RFC 6716 §2.1.4)."""
_G711_SILENCE = {"PCMU": b"\xff", "PCMA": b"\xd5"}
"""The codes for 0 in mu-law and A-law: G.711 silence is a constant payload."""
_OPUS_OPTIONS = {"application": "voip"}
_OPUS_BIT_RATE = 32_000
_SETTLE_FRAMES = 5
"""ADPCM and Opus state needs a few frames of silence before a frame becomes repeatable."""


def packet_time(codec: str, ptime: int | None = None, maxptime: int | None = None) -> int:
    """Milliseconds of audio per packet toward the callee, from the answer's ``a=ptime`` and
    ``a=maxptime`` (RFC 4566 §6).

    ``ptime`` is a wish, taken within MIN_PTIME_MS-MAX_PTIME_MS (PTIME_MS without one);
    ``maxptime`` is a limit, never exceeded, even below MIN_PTIME_MS (down to 5 ms for Opus,
    its shortest whole-millisecond frame). Opus packets carry one frame, the longest of its
    frame sizes that fits.
    """
    chosen = min(max(ptime or PTIME_MS, MIN_PTIME_MS), MAX_PTIME_MS)
    if maxptime is not None and maxptime > 0:
        chosen = min(chosen, maxptime)
    if rtp_audio_codec(codec).name == "opus":
        fitting = [frame for frame in _OPUS_FRAMES_MS if frame <= chosen]
        chosen = fitting[-1] if fitting else _OPUS_FRAMES_MS[0]
    return chosen


class OutboundAudio:
    """Yields payloads for consecutive slots of ``ptime_ms`` each (see ``packet_time``): the
    announcement (once or looped), then silence. Each payload advances the RTP timestamp by
    ``timestamp_step``."""

    def __init__(
        self,
        codec: str,
        *,
        ptime: int | None = None,
        maxptime: int | None = None,
        announce_path: str | Path | None = None,
        loop: bool = False,
    ) -> None:
        self.codec = rtp_audio_codec(codec)
        self.ptime_ms = packet_time(codec, ptime, maxptime)
        self.timestamp_step = self.codec.clock_rate * self.ptime_ms // 1000
        self.samples_per_payload = self.codec.sample_rate * self.ptime_ms // 1000
        self.loop = loop
        self.silence = self._encode_silence()
        self.announcement = (
            self._encode_file(str(announce_path)) if announce_path is not None else []
        )

    @property
    def period(self) -> float:
        """Seconds between packets."""
        return self.ptime_ms / 1000

    def __iter__(self) -> Iterator[bytes]:
        if self.loop and self.announcement:
            while True:
                yield from self.announcement
        yield from self.announcement
        while True:
            yield self.silence

    def _encode_silence(self) -> bytes:
        fixed = _G711_SILENCE.get(self.codec.name)
        if fixed is not None:
            return fixed * self.samples_per_payload
        frames = np.zeros((_SETTLE_FRAMES, self.samples_per_payload), dtype=np.int16)
        return self._encode(frames)[_SETTLE_FRAMES - 1]

    def _encode_file(self, path: str) -> list[bytes]:
        """Decode any audio file or URL PyAV reads (a URL kept as given, not as a `Path`),
        resample to the codec's rate, cut in packets."""
        resampler = av.AudioResampler(format="s16", layout="mono", rate=self.codec.sample_rate)
        with av.open(path) as container:
            pieces = [
                out.to_ndarray().reshape(-1)
                for frame in container.decode(audio=0)
                for out in resampler.resample(frame)
            ]
        pieces.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
        pcm = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
        slots = -(-pcm.size // self.samples_per_payload)
        padded = np.zeros(slots * self.samples_per_payload, dtype=np.int16)
        padded[: pcm.size] = pcm
        return self._encode(padded.reshape(slots, self.samples_per_payload))

    def _encode(self, frames: np.ndarray[Any, np.dtype[np.int16]]) -> list[bytes]:
        """One payload per row of ``frames``, from a fresh encoder."""
        ctx = _encoder(self.codec, self.ptime_ms)
        packets: list[Any] = []
        for index, row in enumerate(frames):
            frame = av.AudioFrame.from_ndarray(row.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = self.codec.sample_rate
            frame.pts = index * self.samples_per_payload
            frame.time_base = Fraction(1, self.codec.sample_rate)
            packets.extend(ctx.encode(frame))
        packets.extend(ctx.encode(None))
        payloads = [bytes(packet) for packet in packets]
        if self.codec.name == "G722":
            payloads = _cut(b"".join(payloads), self.samples_per_payload // 2)
        if len(payloads) < len(frames):
            raise RuntimeError(f"{self.codec.name} encoder returned fewer payloads than frames")
        return payloads[: len(frames)]


def _cut(stream: bytes, size: int) -> list[bytes]:
    """A G.722 stream in payloads of ``size`` octets: FFmpeg's encoder codes 20 ms frames,
    and any whole octet (two 16 kHz samples) is a place a packet may end (RFC 3551 §4.5.2)."""
    return [stream[start : start + size] for start in range(0, len(stream), size)]


def _encoder(codec: RtpAudioCodec, ptime_ms: int) -> av.AudioCodecContext:
    name = "libopus" if codec.name == "opus" else codec.ffmpeg_name
    ctx = audio_context(name, "w")
    ctx.sample_rate = codec.sample_rate
    ctx.layout = "mono"
    ctx.format = "s16"
    if codec.name == "opus":
        ctx.bit_rate = _OPUS_BIT_RATE
        ctx.options = {**_OPUS_OPTIONS, "frame_duration": str(ptime_ms)}
    ctx.open()
    return ctx
