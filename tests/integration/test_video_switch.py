"""Never a black or frozen picture: the callee's video stops mid-call and comes back at another
size, while its audio goes on.

Measured in what nginx recorded and in the relay's own FLV file: the size of every decoded
picture in order, each AVC sequence header where it sits in the stream, the video timeline and
its keyframes. A synthetic callee changes size and starts late, which the lab's baresip cannot
do; the lab's H.264 callee (baresip) stops and restarts its video by putting the call on hold.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from sip2rtmp.lab import RTMP_URL, Lab
from sip2rtmp.lab.recording import read_recording
from sip2rtmp.media.packets import KEYFRAME_INTERVAL_S
from sip2rtmp.media.pipeline import MediaConfig
from sip2rtmp.media.slate import DEFAULT_FPS
from sip2rtmp.media.switch import STALL_S
from sip2rtmp.relay.core import KEYFRAME_WAIT, RINGING_SLATE_AFTER
from sip2rtmp.rtp.h264 import parse_sps
from tests.integration.test_network_faults import DTS_TOLERANCE, CallResult, run_call
from tests.support.av_peer import FPS, AvPeer, paused_video
from tests.support.flv import avc_sequence_headers
from tests.support.sip_peer import SipPeer

pytestmark = pytest.mark.lab

BEFORE_S, PAUSE_S, AFTER_S = 4.0, 3.0, 6.0
"""The callee's video: 4 s, then nothing for 3 s, then a new encoder; the call lasts 11 s."""
CALL_S = 11
HOLD_AT_S, HOLD_S = 3.0, 3.0
"""The baresip callee holds 3 s after the answer and resumes 3 s later; the call lasts 11 s."""
BACK_WITHIN_S = 1.0
"""From the callee's resume to its picture in the stream: its re-INVITE, its first packets, a
keyframe request answered (docs/usage.md: asked for as soon as video arrives again)."""
LATE_S = 2.5
"""A callee whose video starts this long after the answer, well after the outputs started."""
SMALL, LARGE, SLATE = (320, 240), (640, 480), (1280, 720)
FRAME_S = 1 / FPS
SLATE_FRAME_S = 1 / DEFAULT_FPS


def pictures(path: Path) -> list[tuple[float, tuple[int, int]]]:
    """Time and size of every picture the video decodes to; a decoding error raises."""
    with av.open(str(path)) as container:
        return [
            (float(frame.time or 0.0), (frame.width, frame.height))
            for frame in container.decode(video=0)
        ]


def record_size(record: bytes) -> tuple[int, int]:
    """The picture size of an avcC record's first SPS (ISO/IEC 14496-15 §5.2.4.1)."""
    length = int.from_bytes(record[6:8], "big")
    info = parse_sps(record[8 : 8 + length])
    return info.width, info.height


def stretches(path: Path) -> list[tuple[tuple[int, int], list[float]]]:
    """The recording's pictures cut where their size changes: (size, times) of each stretch.

    Checks what holds for any call on the way: every packet decodes, DTS strictly increase,
    no hole in the video or the audio but the stall before the slate, each stretch opens on a
    keyframe that carries a sequence header of its size, keyframes at most 2.1 s apart.
    """
    recording = read_recording(path)
    shown = pictures(path)
    assert len(shown) == len(recording.video_dts), "every video packet decodes to a picture"
    runs = [
        (size, [time for time, _ in group])
        for size, group in itertools.groupby(shown, key=lambda picture: picture[1])
    ]
    steps = np.diff(recording.video_dts)
    assert np.all(steps > 0), "video DTS strictly increase"
    # Frames come every 40 ms (callee) or 100 ms (slate): the only longer steps are the stall
    # before the slate and the return to the callee, whose keyframe follows the slate's last
    # frame by up to a slate frame and a media tick.
    run_starts = itertools.accumulate(len(times) for _, times in runs[:-1])
    returns = {
        start - 1 for start, (size, _) in zip(run_starts, runs[1:], strict=False) if size != SLATE
    }
    assert all(steps[index] <= SLATE_FRAME_S + MediaConfig().tick_s + 0.02 for index in returns)
    stalls = [index for index, step in enumerate(steps) if step > 0.15 and index not in returns]
    for index in stalls:  # the slate comes after STALL_S, or when the keyframe interval ends
        last_key = max(
            key for key in recording.video_keyframes if key <= recording.video_dts[index]
        )
        interval_end = last_key + KEYFRAME_INTERVAL_S
        assert steps[index] == pytest.approx(STALL_S, abs=0.01) or (
            steps[index] < STALL_S
            and recording.video_dts[index + 1] == pytest.approx(interval_end, abs=0.01)
        ), (steps[index], recording.video_dts[index], last_key)
    assert {times[0] for _, times in runs} <= set(recording.video_keyframes)
    assert recording.max_keyframe_gap <= 2.1, np.diff(recording.video_keyframes)

    headers = avc_sequence_headers(path)
    assert [record_size(record) for _, record in headers] == [size for size, _ in runs]
    assert [time for time, _ in headers[1:]] == [times[0] for _, times in runs[1:]]

    frame = 1024 / 48000
    assert np.diff(recording.audio_dts).max() <= frame + DTS_TOLERANCE, "the audio goes on"
    return runs


def video_events(events: list[dict[str, Any]]) -> list[tuple[object, ...]]:
    return [
        (event["mode"], event.get("width"), event.get("height"), event.get("reason"))
        for event in events
        if event.get("event") == "video"
    ]


def call_with(
    frames: list[list[bytes]], lab: Lab, record: Path, seconds: float, video_delay: float = 0.3
) -> tuple[CallResult, list[Path]]:
    """Call a synthetic callee that sends ``frames``, each ``video_delay`` after its capture,
    recording to nginx and to ``record``; the call and both recordings."""
    peer = AvPeer(frames=frames, video_delay=video_delay)
    peer.start()
    key = f"switch-{uuid.uuid4().hex[:8]}"
    extra = ("--rtmp-url", RTMP_URL, "--rtmp-stream", key)
    try:
        call = run_call(peer.uri, record, max_duration=seconds, video=True, extra=extra)
    finally:
        peer.stop()
    assert call.returncode == 0, call.stderr[-3000:]
    recorded = lab.recordings(key)
    assert len(recorded) == 1, recorded
    return call, [recorded[0], record]


def test_the_slate_fills_a_pause_and_the_callee_comes_back_at_a_new_size(
    lab: Lab, tmp_path: Path
) -> None:
    frames = paused_video(BEFORE_S, PAUSE_S, AFTER_S, (SMALL, LARGE))
    call, recordings = call_with(frames, lab, tmp_path / "call.flv", CALL_S)
    for path in recordings:
        runs = stretches(path)
        assert [size for size, _ in runs] == [SMALL, SLATE, LARGE], "callee, slate, callee"
        (_, small), (_, slate), (_, large) = runs
        assert slate[0] - small[-1] == pytest.approx(STALL_S, abs=0.01), "after the stall"
        assert large[0] - small[-1] == pytest.approx(PAUSE_S + FRAME_S, abs=0.2), "at once"
        assert len(large) >= (CALL_S - BEFORE_S - PAUSE_S - 1) * FPS

    assert video_events(call.events) == [
        ("passthrough", *SMALL, None),
        ("slate", None, None, "callee video stopped"),
        ("passthrough", *LARGE, None),
    ]
    stats = [event["video"] for event in call.events if event.get("event") == "stats"]
    assert (stats[-1]["mode"], stats[-1]["slate_switches"]) == ("passthrough", 1)


def test_a_late_first_keyframe_takes_the_stream_from_the_slate(lab: Lab, tmp_path: Path) -> None:
    # The callee's encoder adds no delay, so its first keyframe reaches the relay at its capture
    # instant, LATE_S - KEYFRAME_WAIT into the stream: between two media ticks. With 0.3 s of
    # encoder delay it arrived 1.8 s in, on a tick, and whether the slate frames up to
    # 1.8 - latency_s had gone out before it (moving it just past them) was a race.
    frames = paused_video(0.0, LATE_S, CALL_S, (SMALL, LARGE))
    call, recordings = call_with(frames, lab, tmp_path / "call.flv", 8, video_delay=0.0)
    for path in recordings:
        runs = stretches(path)
        assert [size for size, _ in runs] == [SLATE, LARGE], "the slate, then the callee"
        (_, slate), (_, large) = runs
        # The outputs started KEYFRAME_WAIT after the answer, the callee's video LATE_S after it.
        assert large[0] - slate[0] == pytest.approx(LATE_S - KEYFRAME_WAIT, abs=0.2)
        assert len(large) >= (8 - LATE_S) * FPS

    assert video_events(call.events) == [
        ("slate", None, None, "no keyframe from the callee"),
        ("passthrough", *LARGE, None),
    ]
    stats = [event["video"] for event in call.events if event.get("event") == "stats"]
    assert (stats[-1]["mode"], stats[-1]["slate_switches"]) == ("passthrough", 0)


def event_time(event: dict[str, Any]) -> float:
    """An event's `ts` (ISO 8601, UTC) as seconds since the epoch."""
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


def test_a_baresip_callee_on_hold_gives_way_to_the_slate_and_comes_back(
    start_call: Any, lab: Lab
) -> None:
    """The lab's H.264 callee holds the call from its control port (a re-INVITE with
    a=sendonly, after which it sends nothing) and resumes it (a=sendrecv): the slate takes
    over a stall after its last frame and the callee's picture is back within a second."""
    call = start_call("video", "--max-duration", str(CALL_S))
    call.wait_for_status("ESTABLISHED", 20)
    time.sleep(HOLD_AT_S)
    lab.callee_command("video", "hold")
    held = time.monotonic()
    time.sleep(HOLD_S)
    resumed = time.monotonic()
    lab.callee_command("video", "resume")
    run = call.wait(CALL_S + 20)
    assert run.returncode == 0, run.stderr[-3000:]

    recorded = lab.recordings(run.stream_key)
    assert len(recorded) == 1, recorded
    runs = stretches(recorded[0])
    assert [size for size, _ in runs] == [LARGE, SLATE, LARGE], "callee, slate, callee"
    (_, before), (_, slate), (_, after) = runs
    assert slate[0] - before[-1] == pytest.approx(STALL_S, abs=0.01), "after the stall"
    assert slate[-1] - slate[0] >= HOLD_S - STALL_S - 0.5, "the slate fills the hold"
    assert after[-1] - after[0] >= CALL_S - HOLD_AT_S - HOLD_S - BACK_WITHIN_S - 1.5

    assert video_events(run.events) == [
        ("passthrough", *LARGE, None),
        ("slate", None, None, "callee video stopped"),
        ("passthrough", *LARGE, None),
    ]
    # The stream's timeline runs at the wall clock's pace: the picture's return, counted from
    # the last picture before the hold plus the time the callee was held, is its delay after
    # the resume (a little more: that last picture came just before the hold). The `video`
    # event cannot time it: the relay reports output state twice a second.
    back = after[0] - before[-1] - (resumed - held)
    assert 0 < back <= BACK_WITHIN_S, f"the callee's picture came back {back:.2f} s after resume"
    stats = run.last("stats")["video"]
    assert (stats["mode"], stats["slate_switches"]) == ("passthrough", 1)


RING_S = 1.0
"""A phone that rings a second before it answers, longer than `RINGING_SLATE_AFTER`."""


def logged_at(log: str, pattern: str) -> float:
    """The time of the first debug-log record matching ``pattern``, as seconds since the epoch
    of the log's local clock."""
    found = re.search(rf"^(\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) .*{pattern}", log, re.M)
    assert found, f"no record matching {pattern!r} in the debug log"
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_a_phone_that_rings_and_answers_without_video_finds_the_slate_rendered(
    lab: Lab, tmp_path: Path
) -> None:
    """A video call asks for the stream's slate once the callee has rung for a while: a phone
    that then answers with audio only is streamed from the slate rendered meanwhile."""
    peer = SipPeer(ring_s=RING_S)
    peer.start()
    key = f"ringing-{uuid.uuid4().hex[:8]}"
    log_file = tmp_path / "call.log"
    extra = ("--rtmp-url", RTMP_URL, "--rtmp-stream", key, "--log-file", str(log_file))
    try:
        call = run_call(peer.uri, tmp_path / "call.flv", max_duration=3, video=True, extra=extra)
    finally:
        peer.stop()
    assert call.returncode == 0, call.stderr[-3000:]

    log = log_file.read_text()
    ringing = logged_at(log, r"sip2rtmp\.sip\.wire: received .*\nSIP/2\.0 180 ")
    rendered = logged_at(log, r"sip2rtmp\.relay\.media: slate rendered: 1280x720")
    # Without registering, the first 200 OK the call receives answers its INVITE.
    answered = logged_at(log, r"sip2rtmp\.sip\.wire: received .*\nSIP/2\.0 200 ")
    assert ringing + RINGING_SLATE_AFTER <= rendered + 0.01, "asked for once the phone has rung"
    assert rendered < answered, "rendered before the answer"
    assert answered - ringing == pytest.approx(RING_S, abs=0.2)

    for path in [*lab.recordings(key), tmp_path / "call.flv"]:
        shown = pictures(path)
        assert shown, f"{path.name}: no video in the stream of an audio-only answer"
        assert {size for _, size in shown} == {SLATE}, "the stream's slate throughout"
        assert read_recording(path).kinds("audio"), f"{path.name}: no audio"
