"""The NDJSON and plain lines of scripted runs, pinned against what real lab calls printed.

`golden/*.ndjson` are the `--json` lines of real lab calls (`sip2rtmp call` against kamailio,
baresip and nginx-rtmp) with `ts` removed; `golden/*.txt` the plain lines the summary printer
made of the same events, timestamps removed. Each script below replays one of those runs as
typed relay events, at the instants they happened, through today's printers: scripts that read
events see no change in fields, order, values or wording. `nat` and `hold` are composed rather
than recorded (see `nat_call`, `held_call`): loopback calls never produce the first's events,
and the second pins what docs/events.md promises for mid-call changes.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import get_args

import pytest

from sip2rtmp.cli.events import record
from sip2rtmp.cli.output import EventPrinter
from sip2rtmp.cli.summary import PlainSummary
from sip2rtmp.outcomes import MediaTimedOut, Rejected, RingTimeout, Unanswered
from sip2rtmp.relay.events import (
    AudioStats,
    CallStatus,
    Codec,
    Dtmf,
    Established,
    Failed,
    Finished,
    Held,
    MediaArrived,
    MediaChanged,
    NatAddress,
    OutputChanged,
    OutputStats,
    Progress,
    Registered,
    Registering,
    RegistrationRetry,
    RelayEvent,
    Resumed,
    SipReconnected,
    SipServerChanged,
    Stats,
    Trying,
    Unregistered,
    VideoMode,
    VideoStats,
)
from sip2rtmp.rtp.source import SourceStats

GOLDEN = Path(__file__).parent / "golden"
EVENTS_DOC = next(
    folder / "docs" / "events.md"
    for folder in Path(__file__).resolve().parents
    if (folder / "docs" / "events.md").is_file()
)
SERVER = "127.0.0.1:5060"
TARGET = "rtmp://127.0.0.1:1935/live/***"
DEAD_TARGET = "rtmp://127.0.0.1:1/live/***"
CLEAN = SourceStats(0, 0, 0, 0, 0, 0, 0, 0)
RINGING = Progress(CallStatus.RING, 180, "Ringing")
OPUS = Codec("opus", 48000)
Script = list[tuple[float, RelayEvent]]


def audio(received: int, jitter_ms: float) -> AudioStats:
    return AudioStats(received, 0, 0, 0, 0, jitter_ms, 40.0, 0.0, 0, CLEAN)


def registered_call(callee: str) -> Script:
    return [
        (0.0, Registering(SERVER, "udp")),
        (0.002, Registered(600)),
        (0.003, Trying(f"sip:{callee}@lab.sip2rtmp.test")),
    ]


def video_call() -> Script:
    """`--callee video --rtmp-stream live --max-duration 4 --dtmf "wait:1 12"`."""
    video = VideoStats("passthrough", 0, 105, 5, 0, 4, 43, 122, 0, 2.0, 40.0, None, CLEAN)
    closed = (OutputStats(TARGET, "closed", 111072, 69420, 0),)
    return [
        *registered_call("video"),
        (0.01, RINGING),
        (0.051, Established(200, "OK", OPUS, Codec("H264", 90000))),
        (0.112, VideoMode("passthrough", width=640, height=480)),
        (0.293, OutputChanged(TARGET, "connecting")),
        (0.293, MediaArrived("video", "127.0.0.1:10188")),
        (0.295, MediaArrived("audio", "127.0.0.1:10158")),
        (0.831, OutputChanged(TARGET, "live")),
        (1.699, Dtmf("1", "sent", "info")),
        (1.699, Dtmf("2", "sent", "info")),
        (4.299, OutputChanged(TARGET, "closed")),
        (4.299, Stats(4.2, -14.3, closed, audio(212, 1.6), video)),
        (4.299, Finished("max duration reached", 4.249)),
        (4.302, Unregistered()),
    ]


def dead_output_call() -> Script:
    """Two outputs, one refused: `--rtmp-url rtmp://127.0.0.1:1/live --max-duration 20`; the
    plain printer shows one `stats` line in ten seconds and the last one before FINISH."""
    dead = OutputStats(DEAD_TARGET, "failed", 0, 0, 0)
    samples = [
        (5.306, 5.3, -14.5, "live", 121515, 78911, 265, 1.3),
        (10.345, 10.3, -14.9, "live", 118819, 153173, 517, 1.3),
        (15.386, 15.4, -14.4, "live", 114909, 224991, 769, 1.5),
        (20.285, 20.3, -14.6, "closed", 126286, 301306, 1013, 1.3),
    ]
    stats: Script = [
        (at, Stats(duration, level, (OutputStats(TARGET, state, rate, size, 0), dead),
                   audio(received, jitter)))
        for at, duration, level, state, rate, size, received, jitter in samples
    ]  # fmt: skip
    return [
        *registered_call("tone"),
        (0.005, RINGING),
        (0.021, Established(200, "OK", OPUS, None)),
        (0.279, OutputChanged(TARGET, "connecting")),
        (0.279, OutputChanged(DEAD_TARGET, "failed", "Connection refused")),
        (0.28, MediaArrived("audio", "127.0.0.1:10074")),
        (0.786, OutputChanged(TARGET, "live")),
        *stats[:3],
        (20.285, OutputChanged(TARGET, "closed")),
        stats[3],
        (20.285, Finished("max duration reached", 20.264)),
        (20.286, Unregistered()),
    ]


def nat_call() -> Script:
    """A call from behind a NAT to a carrier found by SRV, over TCP: the first server answers
    503, the second takes the call; a refresh goes unanswered and is retried while the
    connection is reopened; then the callee's audio stops and the media timeout ends it.
    Composed from the events' definitions, not recorded: the lab's loopback calls never
    produce these events."""
    closed = (OutputStats(TARGET, "closed", 95104, 2376192, 0),)
    return [
        (0.0, Registering("carrier.test", "tcp")),
        (0.012, SipServerChanged("10.77.0.2:5060", "10.77.0.3:5060", "503 Service Unavailable")),
        (0.031, NatAddress("sip", "198.51.100.2:40312", "received")),
        (0.032, Registered(300)),
        (0.04, NatAddress("media", "198.51.100.2", "stun")),
        (0.041, Trying("sip:tone@carrier.test")),
        (0.06, RINGING),
        (1.102, Established(200, "OK", Codec("PCMU", 8000), None)),
        (1.36, OutputChanged(TARGET, "connecting")),
        (1.361, MediaArrived("audio", "203.0.113.20:16384")),
        (1.87, OutputChanged(TARGET, "live")),
        (150.1, RegistrationRetry(Unanswered("REGISTER", "10.77.0.3:5060", 32.0), 30.0)),
        (151.4, SipReconnected("10.77.0.3:5060")),
        (180.2, Registered(300)),
        (215.9, OutputChanged(TARGET, "closed")),
        (215.9, Stats(214.8, -91.0, closed, audio(9950, 1.2))),
        (215.91, Failed(MediaTimedOut(15, stopped=True))),
    ]


def held_call() -> Script:
    """A call through a PBX: the callee holds it (sendonly, then inactive), takes it back, and
    the PBX moves the media to its own address with PCMA (RFC 3264 §8); a re-INVITE that
    declines the video leaves only audio. `--max-duration 60`."""
    pcmu, pcma = Codec("PCMU", 8000), Codec("PCMA", 8000)
    live = (OutputStats(TARGET, "live", 96000, 360000, 0),)
    closed = (OutputStats(TARGET, "closed", 95800, 718500, 0),)
    return [
        *registered_call("pbx"),
        (0.01, RINGING),
        (1.5, Established(200, "OK", pcmu, Codec("H264", 90000))),
        (1.8, OutputChanged(TARGET, "connecting")),
        (1.8, MediaArrived("audio", "192.0.2.10:16384")),
        (2.3, OutputChanged(TARGET, "live")),
        (11.5, Held("sendonly")),
        (14.0, Held("inactive")),
        (21.5, Resumed()),
        (31.5, Stats(30.0, -20.5, live, audio(1000, 2.0))),
        (33.2, MediaChanged(pcma, None, "198.51.100.40:40000", "")),
        (61.5, OutputChanged(TARGET, "closed")),
        (61.5, Stats(60.0, -21.0, closed, audio(2500, 2.1))),
        (61.5, Finished("max duration reached", 60.0)),
        (61.6, Unregistered()),
    ]


def invite_rejected(callee: str, status: int, reason: str) -> Script:
    failed = Failed(Rejected("INVITE", status, reason, SERVER))
    return [*registered_call(callee), (0.02, failed)]


SCRIPTS: dict[str, Script] = {
    "video": video_call(),
    "nat": nat_call(),
    "hold": held_call(),
    "deadout": dead_output_call(),
    "busy": invite_rejected("busy", 486, "Busy Here"),
    "nobody": invite_rejected("nobody", 404, "Not Found"),
    "authfail": [
        (0.0, Registering(SERVER, "udp")),
        (0.001, Failed(Rejected("REGISTER", 401, "Unauthorized", SERVER))),
    ],
    "noanswer": [*registered_call("noanswer"), (0.005, RINGING), (2.007, Failed(RingTimeout(2)))],
}
CALL_IDS = {
    "video": "e5ffa8b1-c412-4795-a1bb-cd90cb2107ba",
    "deadout": "8330ee1f-616f-44cb-ab38-da5892a1da5d",
    "busy": "c18dc876-2b6b-44dd-8143-c9c07ec33d48",
    "nobody": "7cb5745a-8d81-4450-84bd-4627127f4cf3",
    "authfail": "8fb89a51-6c6f-4651-bed9-c174b1782a94",
    "noanswer": "745939a4-fdb2-4876-9a91-a42c78636f8b",
    "nat": "3f0c2a6e-5b1d-4c8e-9a7f-2d6b8e1c4a90",
    "hold": "0b7e9d42-6f1a-4c3e-8d25-a91f3c6e7b10",
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_json_lines_match_the_real_runs(name: str) -> None:
    stream = io.StringIO()
    printer = EventPrinter(CALL_IDS[name], as_json=True, stream=stream)
    for _, event in SCRIPTS[name]:
        printer(event)
    printed = stream.getvalue().splitlines()
    records = [json.loads(line) for line in printed]
    assert all(list(record)[:3] == ["event", "ts", "callId"] for record in records)
    without_ts = [
        json.dumps({k: v for k, v in record.items() if k != "ts"}, separators=(",", ":"))
        for record in records
    ]
    assert without_ts == (GOLDEN / f"{name}.ndjson").read_text().splitlines()


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_plain_lines_match_the_real_runs(name: str) -> None:
    now = [0.0]
    stream = io.StringIO()
    summary = PlainSummary(stream=stream, every=10.0, clock=lambda: now[0])
    for at, event in SCRIPTS[name]:
        now[0] = at
        summary(event)
    words = [line.split(" ", 1) for line in stream.getvalue().splitlines()]
    assert all(ts.endswith("Z") for ts, _ in words)
    assert [rest for _, rest in words] == (GOLDEN / f"{name}.txt").read_text().splitlines()


def test_every_event_kind_of_the_union_is_pinned() -> None:
    """The scripts cover every kind of event the relay reports, each ending."""
    kinds = {type(event) for script in SCRIPTS.values() for _, event in script}
    assert kinds == set(get_args(RelayEvent))
    endings = {script[-1][1].__class__.__name__ for script in SCRIPTS.values()}
    assert endings == {"Unregistered", "Failed"}
    statuses = {
        event.status for script in SCRIPTS.values() for _, event in script
        if isinstance(event, Failed)
    }  # fmt: skip
    assert statuses == {CallStatus.BUSY, CallStatus.FAILED}


def test_every_event_and_status_printed_has_a_row_in_the_docs() -> None:
    """docs/events.md has a table row for each event name and each status the printers write
    (the scripts cover every kind of event, see above)."""
    rows = set(re.findall(r"^\| `(\w+)` \|", EVENTS_DOC.read_text(), re.MULTILINE))
    printed = {
        record(event).get("status") or record(event)["event"]
        for script in SCRIPTS.values()
        for _, event in script
    }
    assert {"HOLD", "media_changed"} <= printed
    assert printed - rows == set()


def test_early_media_statuses_keep_their_documented_names() -> None:
    """No lab callee sends early media, so none of the real runs above has these: the names
    docs/events.md gives a 180 with SDP and a 183, with their fields in order."""
    stream = io.StringIO()
    printer = EventPrinter("c1", as_json=True, stream=stream)
    printer(Progress(CallStatus.RING_MEDIA, 180, "Ringing"))
    printer(Progress(CallStatus.SESSION_PROGRESS, 183, "Session Progress"))
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [[(k, v) for k, v in record.items() if k != "ts"] for record in records] == [
        [("event", "status"), ("callId", "c1"), ("status", "RING_MEDIA"), ("code", 180),
         ("reason", "Ringing")],
        [("event", "status"), ("callId", "c1"), ("status", "SESSION_PROGRESS"), ("code", 183),
         ("reason", "Session Progress")],
    ]  # fmt: skip
