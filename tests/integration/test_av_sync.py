"""Lip sync from RTCP sender reports, measured in the recording sip2rtmp writes.

The callee's media and sender reports are FFmpeg's (tests/support/av_peer.py): its video
reaches the relay 300 ms after its capture instant while the reports tell the truth (RFC 3550
§6.4.1). A white frame and a 1 kHz beep share each capture instant, once a second, so the gap
between them in the recording is the A/V skew the relay left in, judged at every mark. The
callee's H.264 passes through; its VP8 goes through the transcoder, which places frames the
same way.

The lab's baresip callees cannot stand in here: their picture (fakevideo) and tone (a looped
WAV file) share no capture instant a recording could show.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from tests.integration.test_network_faults import run_call
from tests.support.av_peer import BEEP_HZ, BEEP_PERIOD_S, FfmpegAvPeer

pytestmark = pytest.mark.lab

CALL_S = 10
RATE = 48000
ENVELOPE_S = 0.02
"""Averaging window of the 1 kHz envelope: 11 cycles of the 560 Hz gap to the tone."""


@pytest.fixture
def peer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FfmpegAvPeer]:
    codec, sender_reports = request.param
    callee = FfmpegAvPeer(codec=codec, sender_reports=sender_reports, directory=tmp_path)
    callee.start()
    yield callee
    callee.stop()


def white_frames(record: Path) -> list[float]:
    """Times of the frames whose mean luma says white."""
    times = []
    with av.open(str(record)) as container:
        for frame in container.decode(video=0):
            luma = frame.to_ndarray()[: frame.height]
            if luma.mean() > 128 and frame.time is not None:
                times.append(float(frame.time))
    return times


def beep_onsets(record: Path) -> list[float]:
    """Times where the 1 kHz envelope rises through half its peak."""
    chunks: list[npt.NDArray[np.float32]] = []
    start: float | None = None
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    with av.open(str(record)) as container:
        for frame in container.decode(audio=0):
            if start is None:
                start = float(frame.time or 0.0)
            for out in resampler.resample(frame):
                chunks.append(np.asarray(out.to_ndarray(), dtype=np.float32).reshape(-1))
    assert start is not None and chunks, "no audio in the recording"
    samples = np.concatenate(chunks)
    t = np.arange(samples.size) / RATE
    mixed = samples * np.exp(-2j * np.pi * BEEP_HZ * t)
    window = np.ones(round(ENVELOPE_S * RATE)) / round(ENVELOPE_S * RATE)
    envelope = np.abs(np.convolve(mixed, window, mode="same"))
    above = envelope > envelope.max() / 2
    rises = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    return [start + index / RATE for index in rises]


def offsets(record: Path) -> list[float]:
    """White-frame time minus the nearest beep onset, for every white frame."""
    beeps = np.array(beep_onsets(record))
    return [
        white - float(beeps[np.argmin(np.abs(beeps - white))]) for white in white_frames(record)
    ]


@pytest.mark.parametrize(
    ("peer", "expected", "latency"),
    [
        (("H264", True), 0.0, "normal"),
        (("H264", False), 0.3, "normal"),
        (("VP8", True), 0.0, "normal"),
        (("VP8", False), 0.3, "normal"),
        (("H264", True), 0.0, "low"),
    ],
    indirect=["peer"],
    ids=["sr", "no-sr", "vp8-sr", "vp8-no-sr", "sr-latency-low"],
)
def test_video_meets_audio_by_capture_time(
    peer: FfmpegAvPeer, expected: float, latency: str, tmp_path: Path
) -> None:
    """With `--latency low` the audio leaves ahead of the video it goes with; their
    timestamps still put them together."""
    record = tmp_path / "call.flv"
    extra = ("--latency", latency)
    call = run_call(peer.uri, record, max_duration=CALL_S, video=True, extra=extra)
    assert call.returncode == 0, call.stderr[-3000:]
    assert len(peer.ffmpeg) == 2, "the callee's FFmpeg never started"
    assert all(process.poll() is None for process in peer.ffmpeg), peer.log.read_text()
    assert not peer.late, f"FFmpeg's packets came too late to be paced (s): {peer.late}"
    modes = [e["mode"] for e in call.events if e.get("event") == "video"]
    # FFmpeg may take longer than the relay waits for a first keyframe: the slate opens then.
    assert modes[-1:] == ["passthrough" if peer.codec == "H264" else "transcode"], modes
    assert set(modes[:-1]) <= {"slate"}, modes
    measured = offsets(record)
    # A mark every second from 1 s on, the recording starting within about a second of the
    # answer: every mark of the call but the first two and the last is in it.
    assert len(measured) >= CALL_S / BEEP_PERIOD_S - 3, measured
    # 40 ms is what lip sync needs; placement is exact to a few ms, so no mark may be off by
    # more than 20 ms, which also catches a bias of up to a frame.
    worst = max(abs(offset - expected) for offset in measured)
    assert worst <= 0.02, measured
    stats = [e["video"] for e in call.events if e.get("event") == "stats" and "video" in e]
    skew = stats[-1]["av_skew_ms"]
    if expected:
        assert skew is None, "no sender reports, no measured skew"
    else:
        assert 250 <= skew <= 350, skew
    # A slate goes toward an H.264 callee, none toward a VP8 one (there is no VP8 encoder).
    assert (peer.video_received > 0) == (peer.codec == "H264"), peer.video_received
    assert peer.seen.rtp_received > 0, "audio toward the callee"
