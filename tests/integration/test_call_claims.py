"""What the docs promise about a `sip2rtmp call` run, each proven by a real call into the lab.

Measured from outside the relay: nginx's recordings, the file `--record` wrote, what the callee
heard (its own dump of the decoded audio) and logged, the exit code and every line printed.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from sip2rtmp.lab import (
    RELAY_ACCOUNT,
    RTMP_URL,
    SIP_DOMAIN,
    SIP_HOST,
    Lab,
    account,
    read_dump,
    write_tone,
)
from sip2rtmp.lab.recording import decode_audio, dominant_frequency, read_recording, tone_seconds
from tests.integration.conftest import CallRun, RtmpServer, read_events
from tests.unit.cli.test_contract import run

pytestmark = pytest.mark.lab

ANNOUNCE_HZ = 1000
ANNOUNCE_SECONDS = 2.0
LEFT, RIGHT = (200, 40, 40), (40, 80, 200)
"""The slate test picture: two halves a decoded frame must reproduce, each in its place."""
KEYFRAME_GAP = 2.05
"""The 2 s keyframe interval (docs/usage.md) plus FLV's millisecond rounding."""
COLOUR_TOLERANCE = 12
"""Per channel, 0-255: what H.264 at the slate's quality and the YUV 4:2:0 round trip change
in a flat area."""


def write_png(path: Path, picture: npt.NDArray[np.uint8]) -> None:
    """An 8-bit RGB PNG (RFC 2083: signature, IHDR, one IDAT of unfiltered rows, IEND)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    height, width, _ = picture.shape
    rows = b"".join(b"\x00" + picture[row].tobytes() for row in range(height))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def frame_at(path: Path, seconds: float) -> npt.NDArray[np.uint8]:
    """The first decoded video frame of a recording at or after `seconds`, as RGB."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.time is not None and frame.time >= seconds:
                return np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
    pytest.fail(f"{path} has no video frame at {seconds} s or later")


def heard_by(lab: Lab, user: str, before: set[Path], hz: float) -> npt.NDArray[np.bool_]:
    """For each 100 ms of what the callee heard in the call just made (its new dump of the
    decoded audio): was it `hz`? Other calls to the same callee leave dumps without it."""
    found = []
    for path in lab.received_audio(user):
        if path not in before:
            samples, rate = read_dump(path)
            windows = tone_seconds((samples / 32768).astype(np.float32), rate, hz)
            if windows.any():
                found.append(windows)
    assert len(found) == 1, f"{len(found)} new dumps of {user} with {hz} Hz in them, not one"
    return found[0]


def test_announcement_slate_and_mp4_record_in_one_call(
    start_call: Any, lab: Lab, tmp_path: Path
) -> None:
    """`--announce` plays once to the callee, `--slate` is the stream's picture, and `--record
    x.mp4` holds the same H.264 + AAC as the stream, as long as the call (docs/cli.md)."""
    announcement = tmp_path / "announce.wav"
    write_tone(announcement, ANNOUNCE_HZ, seconds=ANNOUNCE_SECONDS)
    picture = np.zeros((720, 1280, 3), dtype=np.uint8)
    picture[:, :640], picture[:, 640:] = LEFT, RIGHT
    slate = tmp_path / "slate.png"
    write_png(slate, picture)
    record = tmp_path / "call.mp4"
    dumps_before = set(lab.received_audio("pcmu"))

    run = start_call(
        "pcmu",
        "--no-video",
        "--announce",
        str(announcement),
        "--slate",
        str(slate),
        "--record",
        str(record),
        "--max-duration",
        "5",
    ).wait(40)
    assert run.returncode == 0, run.stderr
    call_seconds = run.last("status")["duration"]

    windows = heard_by(lab, "pcmu", dumps_before, ANNOUNCE_HZ)
    assert windows.size >= 40, f"the callee heard only {windows.size / 10:.1f} s"
    played = np.flatnonzero(windows) * 0.1
    assert abs(played.size * 0.1 - ANNOUNCE_SECONDS) <= 0.3, (
        f"the announcement was heard for {played.size * 0.1:.1f} s of its {ANNOUNCE_SECONDS} s"
    )
    assert played[-1] - played[0] <= ANNOUNCE_SECONDS + 0.2, "played once, in one piece"

    [stream_path] = lab.recordings(run.stream_key)
    for path in (stream_path, record):
        recording = read_recording(path)
        assert [(s.codec, s.width, s.height) for s in recording.kinds("video")] == [
            ("h264", 1280, 720)
        ], recording.describe()
        assert [s.codec for s in recording.kinds("audio")] == ["aac"], recording.describe()
        assert abs(recording.duration - call_seconds) <= 0.5, (path, recording.describe())
        assert recording.max_keyframe_gap <= KEYFRAME_GAP, recording.describe()
        frame = frame_at(path, 1.0)
        for name, area, colour in (
            ("left", frame[40:-40, 40:600], LEFT),
            ("right", frame[40:-40, 680:-40], RIGHT),
        ):
            mean = area.reshape(-1, 3).mean(axis=0)
            assert np.all(np.abs(mean - colour) <= COLOUR_TOLERANCE), (
                f"{path.name}: the {name} half is {mean.round()}, the slate's is {colour}"
            )
        tone = decode_audio(path)[48000:]
        assert abs(dominant_frequency(tone, 48000) - (account("pcmu").tone_hz or 0)) < 5, (
            "the callee's tone is streamed"
        )


def masked_everywhere(run: CallRun, secret: str) -> None:
    for name, text in (("stdout", run.stdout), ("stderr", run.stderr), ("--log-file", run.log)):
        assert secret not in text, f"{secret!r} appears in {name}"


def all_keys(value: object) -> set[str]:
    """Every key of every object nested in a JSON value."""
    if isinstance(value, dict):
        return set(value) | {k for item in value.values() for k in all_keys(item)}
    if isinstance(value, list):
        return {k for item in value for k in all_keys(item)}
    return set()


@pytest.mark.parametrize(
    ("key", "common_word"), [("k7Qp2-xVw9-Lm4T-Zr8e", False), ("live", True)], ids=["long", "short"]
)
def test_the_stream_key_never_appears_and_the_output_stays_readable(
    start_call: Any, rtmp_server: RtmpServer, key: str, common_word: bool
) -> None:
    """docs/events.md: stream keys appear only masked, in events, logs (-vv) and --log-file.

    `live` is both a common word (the output state) and the application's name: the URL with
    it must never be shown, while `live` as a word must stay. Logs go to stderr only: with
    `-vv` stderr is full of them, and stdout is still only events (checked by `read_events`).
    """
    run = start_call(
        "tone", "--no-video", "-vv", "--max-duration", "2", rtmp_url=rtmp_server.url, stream_key=key
    ).wait(30)
    assert run.returncode == 0, run.stderr
    assert rtmp_server.recordings(key), "nginx received the stream under that key"
    masked_everywhere(run, f"{rtmp_server.url}/{key}")
    masked_everywhere(run, f"/live/{key}")
    if not common_word:
        masked_everywhere(run, key)
    assert len(run.stderr.splitlines()) > 20, "-vv logs the call on stderr"
    outputs = [e for e in run.events if e["event"] == "output"]
    assert [e["state"] for e in outputs][-2:] == ["live", "closed"], outputs
    for event in outputs:
        assert event["target"].startswith(f"{rtmp_server.url}/"), event
    stats = run.last("stats")
    assert stats["rtp"]["received"] > 50 and stats["outputs"][0]["state"] == "closed", stats
    assert "***" not in all_keys(run.events), "a field name was masked"


def test_a_key_named_like_a_field_leaves_the_events_intact(
    start_call: Any, rtmp_server: RtmpServer
) -> None:
    """A key that is also a field name (`exitCode`) is masked where shown as a key, and the
    events keep their fields: masking must not rewrite the JSON around it."""
    run = start_call(
        "pcmu",
        "--no-video",
        "--audio-codecs",
        "PCMA",
        rtmp_url=rtmp_server.url,
        stream_key="exitCode",
    ).wait(30)
    assert run.returncode == 10, run.stderr
    status = run.last("status")
    assert (status["status"], status.get("exitCode")) == ("FAILED", 10), status
    assert "***" not in all_keys(run.events), "a field name was masked"


def test_exit_10_for_another_sip_failure(start_call: Any, lab: Lab) -> None:
    """A callee that accepts none of the offered codecs answers 488 (RFC 3261 §21.4.26): no
    exit code of its own, so 10 (docs/exit-codes.md), with one line saying why. The offer had
    no SRTP, so the line ends with the hint that the callee may want it."""
    log_before = len(lab.callee_log("pcmu"))
    run = start_call("pcmu", "--no-video", "--audio-codecs", "PCMA").wait(30)
    assert run.returncode == 10, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines == [
        "sip2rtmp: error: call failed (SIP 488 Not Acceptable Here) — the callee may require"
        " encrypted media: try --srtp required (with --sip-transport tls)"
    ], lines
    assert run.last("status")["exitCode"] == 10
    assert "ESTABLISHED" not in run.statuses
    assert "no common audio codecs - rejected" in lab.callee_log("pcmu")[log_before:]


INJECTED_FAULT = """\
import sip2rtmp.relay.media as media


async def _fault(self, *, live):
    raise RuntimeError("injected fault")


media.CallMedia.start_outputs = _fault
"""
"""A stand-in for a bug: the relay step after the answer raises what no code expects."""


def test_exit_1_for_an_internal_error(start_call: Any, lab: Lab, tmp_path: Path) -> None:
    """An unexpected exception (a bug) exits 1 with one line on stderr, its traceback only in
    the debug log; the answered call is still hung up with a BYE, and the run still ends
    with one FAILED event (docs/events.md). No input makes the relay fail this way, so
    the bug is put in at start-up (`sitecustomize`) of an otherwise real run."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(INJECTED_FAULT)
    log_before = len(lab.callee_log("pcma"))
    run = start_call(
        "pcma", "--no-video", "--max-duration", "5", environment={"PYTHONPATH": str(inject)}
    ).wait(30)
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "internal error: RuntimeError: injected fault" in lines[0], lines
    assert "Traceback" in run.log and "Traceback" not in run.stderr
    assert "ESTABLISHED" in run.statuses
    callee_log = lab.callee_log("pcma")[log_before:]
    assert "session closed: Connection reset by peer" in callee_log, "the callee got a BYE"
    assert run.last("status")["exitCode"] == 1


PROFILE = """\
[profiles.lab]
callee = "pcmu"
sip-login = "{login}"
sip-domain = "{domain}"
sip-password = "{password}"
audio-codecs = "PCMA"
rtmp-url = ["{rtmp_url}"]
rtmp-stream = "{key}"
"""


@pytest.mark.parametrize(("mode", "warns"), [(0o644, True), (0o600, False)])
def test_a_profile_with_a_password_others_can_read_draws_a_warning(
    lab: Lab, tmp_path: Path, mode: int, warns: bool
) -> None:
    """docs/cli.md: "A profile holding a password that other users can read draws a warning";
    the run goes on with it (here to a quick 488, exit 10)."""
    config = tmp_path / "config.toml"
    config.write_text(
        PROFILE.format(
            login=RELAY_ACCOUNT.user,
            domain=SIP_DOMAIN,
            password=RELAY_ACCOUNT.password,
            rtmp_url=RTMP_URL,
            key=f"profile-{uuid.uuid4().hex[:8]}",
        )
    )
    config.chmod(mode)
    done = run(
        "call",
        "--config",
        str(config),
        "--profile",
        "lab",
        "--no-video",
        "--sip-outbound-proxy",
        SIP_HOST,
        "--json",
    )
    assert done.returncode == 10, done.stderr
    read_events(done.stdout, done.returncode)
    warnings = [line for line in done.stderr.splitlines() if "readable by other users" in line]
    expected = f"{config} holds a password and is readable by other users: chmod 600 it"
    assert warnings == ([expected] if warns else []), done.stderr
    assert RELAY_ACCOUNT.password not in done.stdout + done.stderr


GOOD = [
    '{"event":"status","ts":"2026-01-02T03:04:05.678Z","callId":"c1","status":"TRYING"}',
    '{"event":"status","ts":"2026-01-02T03:04:06.000Z","callId":"c1","status":"FINISH"}',
]


@pytest.mark.parametrize(
    ("lines", "returncode"),
    [
        ([*GOOD[:1], "INFO a log line on stdout", *GOOD[1:]], 0),
        ([GOOD[0].replace(',"ts":"2026-01-02T03:04:05.678Z"', ""), *GOOD[1:]], 0),
        ([GOOD[0].replace("05.678Z", "05Z"), *GOOD[1:]], 0),
        ([GOOD[0].replace('"c1"', '"c2"'), *GOOD[1:]], 0),
        (GOOD[:1], 0),
        ([*GOOD, GOOD[1]], 0),
        (GOOD, 3),
        ([GOOD[0], GOOD[1].replace('"FINISH"', '"FAILED","exitCode":4')], 3),
    ],
    ids=[
        "log-on-stdout",
        "no-ts",
        "ts-without-ms",
        "two-call-ids",
        "no-terminal",
        "two-terminals",
        "finish-not-0",
        "exit-code-differs",
    ],
)
def test_the_event_reader_fails_a_run_that_breaks_the_contract(
    lines: list[str], returncode: int
) -> None:
    """The checks every call test relies on bite: each breach of docs/events.md fails."""
    assert read_events("\n".join(GOOD) + "\n", 0)[-1]["status"] == "FINISH"
    with pytest.raises(pytest.fail.Exception):
        read_events("\n".join(lines) + "\n", returncode)
