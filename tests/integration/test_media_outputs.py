"""Several outputs of one `sip2rtmp call`: RTMP, RTMPS and a local file at once, and one output
dropping mid-call while the others go on (docs/usage.md, "Several outputs at once").

Measured from what each server recorded, and from nginx's own view of the streams while the
call runs (its `rtmp_stat` page), never from the relay's counters alone.
"""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sip2rtmp.lab import RTMP_URL, RTMPS_URL, STAT_URL, Lab, account
from sip2rtmp.lab.recording import Recording, decode_audio, read_recording, tone_seconds
from sip2rtmp.media.output import OutputPolicy
from tests.integration.conftest import RtmpServer

pytestmark = pytest.mark.lab

AAC_FRAME = 1024 / 48000
DTS_TOLERANCE = 0.002
"""FLV stores milliseconds: a 21.33 ms AAC frame shows as steps of 21 or 22 ms."""
KEYFRAME_GAP = 2.05
"""The 2 s keyframe interval (docs/usage.md) plus FLV's millisecond rounding."""
STALL_LIMIT = 0.25
"""How much further an unaffected stream may fall behind the wall clock at nginx while another
output is down than it did before: a player's buffer hides that much."""
OUTAGE = 2.0
RECONNECT_SLACK = 0.75
"""Beyond the backoff schedule: noticing the drop, the RTMP handshake, nginx opening its file."""


def reconnect_bound(outage: float) -> float:
    """Longest wait from the server's return to the next reconnection attempt: attempts follow
    the failure after backoff_initial_s, doubling up to backoff_max_s (sip2rtmp/media/output.py)."""
    policy = OutputPolicy()
    waited, backoff = 0.0, policy.backoff_initial_s
    while waited < outage:
        waited += backoff
        backoff = min(backoff * 2, policy.backoff_max_s)
    return waited - outage


def assert_continuous(recording: Recording, call_seconds: float) -> None:
    """H.264 + AAC, audio without a gap, video strictly increasing with 2 s keyframes, and as
    long as the call."""
    assert [s.codec for s in recording.kinds("video")] == ["h264"], recording.describe()
    assert [s.codec for s in recording.kinds("audio")] == ["aac"], recording.describe()
    steps = np.diff(recording.audio_dts)
    assert steps.min() > 0 and steps.max() <= AAC_FRAME + DTS_TOLERANCE, (
        f"{recording.path.name}: audio steps from {steps.min():.3f} to {steps.max():.3f} s"
    )
    assert np.all(np.diff(recording.video_dts) > 0), "video DTS must strictly increase"
    assert recording.video_keyframes[0] == recording.video_dts[0]
    assert recording.max_keyframe_gap <= KEYFRAME_GAP, recording.describe()
    assert abs(recording.duration - call_seconds) <= 0.5, (recording.describe(), call_seconds)


def assert_tone_throughout(path: Path, skip: float = 0.5) -> None:
    samples = decode_audio(path)[int(skip * 48000) :]
    present = tone_seconds(samples, 48000, account("tone").tone_hz or 0)
    assert present.size and present.mean() >= 0.95, (
        f"{path.name}: the callee's tone in only {present.mean():.0%} of 100 ms windows"
    )


class StatWatcher:
    """Samples, every 50 ms, the timestamp of the latest media nginx received on given streams.

    A stream that keeps flowing stays at most a constant distance behind the wall clock (it
    arrives in batches, so the distance saws up and down between them); a stall shows as that
    largest distance growing.
    """

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.samples: dict[str, list[tuple[float, float]]] = {key: [] for key in keys}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with urllib.request.urlopen(STAT_URL, timeout=2) as reply:
                root = ET.fromstring(reply.read())
            now = time.monotonic()
            for stream in root.iter("stream"):
                key = stream.findtext("name") or ""
                for client in stream.iter("client"):
                    if key in self.samples and client.find("publishing") is not None:
                        received = int(client.findtext("timestamp") or 0) / 1000
                        self.samples[key].append((now, received))

    def max_lag(self, key: str, start: float, end: float) -> float:
        """The stream's largest distance behind the wall clock within [start, end]."""
        lags = [now - received for now, received in self.samples[key] if start <= now <= end]
        assert len(lags) >= 10, f"nginx reported {key} only {len(lags)} times: {self.samples[key]}"
        return max(lags)


def wait_until(condition: Any, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.02)
    return time.monotonic()


def published(key: str) -> bool:
    with urllib.request.urlopen(STAT_URL, timeout=2) as reply:
        root = ET.fromstring(reply.read())
    return any(
        stream.findtext("name") == key and stream.find(".//publishing") is not None
        for stream in root.iter("stream")
    )


@pytest.mark.parametrize("latency", ["normal", "low"])
def test_fan_out_and_one_output_dropping_leaves_the_others_alone(
    start_call: Any, lab: Lab, rtmp_server: RtmpServer, tmp_path: Path, latency: str
) -> None:
    """RTMP, RTMPS, another RTMP server and a file from one call. The third server goes away
    for 2 s: the others carry on without a stall or a gap, and it is reconnected on its own
    at the next backoff attempt, its timeline continuing (docs/usage.md)."""
    base = f"fan{uuid.uuid4().hex[:8]}"
    plain, tls, dropping = f"{base}-plain", f"{base}-tls", f"{base}-drop"
    record = tmp_path / "local.flv"
    call = start_call(
        "tone", "--no-video", "--max-duration", "10", "--record", str(record),
        "--rtmp-url", RTMP_URL, "--rtmp-stream", plain,
        "--rtmp-url", RTMPS_URL, "--rtmp-stream", tls, "--rtmps-ca", str(lab.tls_ca),
        "--rtmp-url", rtmp_server.url, "--rtmp-stream", dropping, "--latency", latency,
        rtmp=False,
    )  # fmt: skip
    call.wait_for_status("ESTABLISHED", 15)
    with StatWatcher([plain, tls]) as watcher:
        wait_until(lambda: published(plain) and published(tls), 5, "both lab streams live")
        wait_until(lambda: rtmp_server.recordings(dropping), 5, "the third stream live")
        calm = time.monotonic()
        time.sleep(1.5)
        stopped = time.monotonic()
        rtmp_server.stop()
        time.sleep(OUTAGE)
        rtmp_server.start()
        back = time.monotonic()
        resumed = wait_until(
            lambda: len(rtmp_server.recordings(dropping)) == 2, 10, "the third stream back"
        )
        time.sleep(1.0)
        run = call.wait(40)
        stall = {
            key: watcher.max_lag(key, stopped, resumed + 1.0) - watcher.max_lag(key, calm, stopped)
            for key in (plain, tls)
        }

    assert run.returncode == 0, run.stderr
    call_seconds = run.last("status")["duration"]
    states: dict[str, list[str]] = {}
    for event in run.events:
        if event["event"] == "output":
            target = event["target"]
            where = target.split("/")[2] if target.startswith("rtmp") else target
            states.setdefault(where, []).append(event["state"])
    port = f"127.0.0.1:{rtmp_server.port}"
    assert set(states) == {"127.0.0.1:1935", "127.0.0.1:1936", port, str(record)}, states
    for target, seen in states.items():
        if target == port:
            assert "reconnecting" in seen and seen[-2:] == ["live", "closed"], seen
        else:
            assert seen[-2:] == ["live", "closed"] and "reconnecting" not in seen, (target, seen)

    for key, lag in stall.items():
        assert lag <= STALL_LIMIT, f"{key} stalled by {lag:.2f} s while the other output was down"
    for path in [*lab.recordings(plain), *lab.recordings(tls), record]:
        assert_continuous(read_recording(path), call_seconds)
        assert_tone_throughout(path)
    assert len(lab.recordings(plain)) == len(lab.recordings(tls)) == 1

    delay = resumed - back
    assert delay <= reconnect_bound(back - stopped) + RECONNECT_SLACK, (
        f"reconnected {delay:.2f} s after the server came back, {back - stopped:.2f} s down"
    )
    first, second = (read_recording(path) for path in rtmp_server.recordings(dropping))
    assert second.video_keyframes[:1] == second.video_dts[:1], "it resumes at a keyframe"
    assert second.audio_dts[0] >= first.audio_dts[-1], "the timeline continues, never restarts"
    assert second.video_dts[0] >= first.video_dts[-1]
    for part in (first, second):
        steps = np.diff(part.audio_dts)
        assert steps.max() <= AAC_FRAME + DTS_TOLERANCE, f"gap within {part.path.name}"
    assert_tone_throughout(second.path, skip=0.0)
