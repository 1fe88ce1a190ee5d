"""What reaches the RTMP server: measured from nginx's recording of real lab calls."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sip2rtmp.lab import Lab, account, read_dump
from sip2rtmp.lab.recording import (
    Recording,
    decode_audio,
    dominant_frequency,
    read_recording,
    tone_seconds,
)

pytestmark = pytest.mark.lab
AAC_FRAME = 1024 / 48000


def recording_of(lab: Lab, key: str) -> Path:
    paths = lab.recordings(key)
    assert len(paths) == 1, f"expected one recording of {key}, found {paths}"
    return paths[0]


def assert_valid_stream(recording: Recording, call_seconds: float) -> None:
    """What YouTube and Facebook need: H.264 + AAC, 2 s keyframes, sane timestamps."""
    assert [s.codec for s in recording.kinds("video")] == ["h264"]
    assert [s.codec for s in recording.kinds("audio")] == ["aac"]
    assert len(recording.streams) == 2
    assert recording.max_keyframe_gap <= 2.1
    assert np.all(np.diff(recording.video_dts) > 0), "video DTS must strictly increase"
    assert np.all(np.diff(recording.audio_dts) >= 0), "audio DTS must not decrease"
    assert abs(recording.duration - call_seconds) <= 1.0, (recording.duration, call_seconds)


def assert_no_audio_gap(recording: Recording) -> None:
    steps = np.diff(recording.audio_dts)
    assert steps.max() <= AAC_FRAME + 0.002, f"audio gap of {steps.max():.3f} s"


def assert_tone(path: Path, hz: float, *, skip: float = 1.0, share: float = 0.9) -> None:
    samples = decode_audio(path)
    body = samples[int(skip * 48000) :]
    assert abs(dominant_frequency(body, 48000) - hz) < 5
    present = tone_seconds(body, 48000, hz)
    assert present.mean() >= share, f"tone in only {present.mean():.0%} of 100 ms windows"


def test_audio_only_call_gives_a_valid_h264_aac_stream(start_call: Any, lab: Lab) -> None:
    run = start_call("tone", "--no-video", "--max-duration", "20").wait(60)
    assert run.returncode == 0, run.stderr
    established = next(e for e in run.events if e.get("status") == "ESTABLISHED")
    assert "audio" in established
    path = recording_of(lab, run.stream_key)
    recording = read_recording(path)
    assert_valid_stream(recording, run.last("status")["duration"])
    assert_no_audio_gap(recording)
    assert_tone(path, account("tone").tone_hz or 0)
    stats = [e for e in run.events if e["event"] == "stats"]
    assert len(stats) >= 4, "stats every 5 s, and once more at the end"
    assert stats[-1]["rtp"]["received"] > 950  # 20 s of 20 ms packets
    assert all(s["outputs"][0]["state"] == "live" for s in stats[:-1])
    assert stats[-1]["outputs"][0]["state"] == "closed"


@pytest.mark.parametrize(
    ("callee", "codec"),
    [("pcmu", "PCMU"), ("pcma", "PCMA"), ("g722", "G722"), ("opus", "opus")],
)
def test_each_audio_codec_reaches_the_stream(
    start_call: Any, lab: Lab, callee: str, codec: str
) -> None:
    run = start_call(callee, "--no-video", "--max-duration", "6").wait(40)
    assert run.returncode == 0, run.stderr
    established = next(e for e in run.events if e.get("status") == "ESTABLISHED")
    assert established["audio"]["codec"] == codec
    path = recording_of(lab, run.stream_key)
    recording = read_recording(path)
    assert_valid_stream(recording, run.last("status")["duration"])
    assert_no_audio_gap(recording)
    assert_tone(path, account(callee).tone_hz or 0)


def test_callee_receives_audio_from_the_first_moment(start_call: Any, lab: Lab) -> None:
    """Silence toward the callee starts the RTP session: baresip logs our stream at once."""
    before = set(lab.received_audio("tone"))
    marker = "incoming rtp for 'audio' established"
    log_before = lab.callee_log("tone").count(marker)
    call = start_call("tone", "--no-video", "--max-duration", "3")
    call.wait_for_status("ESTABLISHED", 15)
    answered = time.monotonic()
    deadline = answered + 2
    while time.monotonic() < deadline and lab.callee_log("tone").count(marker) <= log_before:
        time.sleep(0.02)
    assert lab.callee_log("tone").count(marker) > log_before
    assert time.monotonic() - answered < 0.5
    run = call.wait(20)
    assert run.returncode == 0
    dumps = [p for p in lab.received_audio("tone") if p not in before]
    assert dumps, "the callee recorded what it received"
    samples, rate = read_dump(dumps[-1])
    assert samples.size >= rate * 2, "about 3 s of our audio reached the callee"


@pytest.mark.parametrize(
    ("callee", "method", "logged"),
    [
        ("pcmu", "rfc4733", "received event: '(.)' \\(end=1\\)"),
        ("opus", "rfc4733", "received event: '(.)' \\(end=1\\)"),
    ],
    ids=["pcmu", "opus-with-8k-events"],
)
def test_dtmf_script_reaches_the_callee(
    start_call: Any, lab: Lab, callee: str, method: str, logged: str
) -> None:
    """RFC 4733 events to a callee that takes them, at the codec's clock (PCMU) or at another
    one (Opus at 48 kHz, baresip's telephone-event/8000); SIP INFO is the fallback when the
    answer has no telephone-event (tests/unit/relay/test_dtmf_info.py)."""
    log_before = lab.callee_log(callee)
    run = start_call(
        callee, "--no-video", "--dtmf", "wait:0.5 147# wait:0.3 *9", "--max-duration", "4"
    ).wait(30)
    assert run.returncode == 0, run.stderr
    received = re.findall(logged, lab.callee_log(callee)[len(log_before) :])
    assert received == list("147#*9")
    sent = [e for e in run.events if e["event"] == "dtmf" and e["direction"] == "sent"]
    assert [e["digit"] for e in sent] == list("147#*9")
    assert {e["method"] for e in sent} == {method}
