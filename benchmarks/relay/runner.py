"""The runner: the case table, and the two runs of a case against the lab, one after the other.

1. ``sip2rtmp call … --json``: the real CLI, measured as a whole process.
2. The ffmpeg baseline (``baseline.py``), offering the codec sip2rtmp's call agreed on unless
   told otherwise, so both runs decode the same RTP.

An SRTP case has another baseline: the same sip2rtmp call in plain RTP to ``PLAIN_CALLEE``,
which sends what the SRTP callee sends, in clear. What SRTP costs is the difference.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from benchmarks.relay.baseline import run_baseline
from benchmarks.relay.calls import MeasuredCall, Options, Run
from benchmarks.relay.probes.process import Watched, program_env
from benchmarks.relay.served import Served, run_served
from sip2rtmp.lab import RELAY_ACCOUNT, RTMP_URL, SIP_DOMAIN, SIP_HOST

Event = dict[str, Any]


@dataclass(frozen=True)
class Case:
    """One kind of call the benchmark can measure."""

    callee: str
    video_codec: str | None
    """What the baseline offers for video, in build_offer's names; None for audio only.

    H.264 is offered in packetization-mode 0: the lab's ``video`` callee rejects a mode-1-only
    offer, and answers sip2rtmp's offer with mode 0 too.
    """
    summary: str
    audio_codec: str | None = None
    """The one audio codec both runs offer; None: sip2rtmp offers all it has, and the baseline
    the one that call agreed on."""
    srtp: bool = False
    """sip2rtmp's call is SDES-SRTP (``--srtp required``), and the baseline is the same call in
    plain RTP to ``PLAIN_CALLEE``, not ffmpeg."""


CASES = {
    "audio": Case("tone", None, "audio only, the baseline adds a black slate"),
    "g711": Case("pcmu", None, "audio only in G.711 µ-law: nothing above 4 kHz"),
    "h264": Case("video", "H264/0", "H.264 640x480 25 fps passed through"),
    "h264-g711": Case("video", "H264/0", "H.264 passed through, G.711 µ-law audio", "PCMU"),
    "vp8": Case("vp8", "VP8", "VP8 640x480 25 fps transcoded to H.264"),
    "srtp": Case("srtp", None, "audio only in SDES-SRTP, against the same call in RTP", srtp=True),
}
PLAIN_CALLEE = "tone"
"""The SRTP case's baseline callee: the lab's ``srtp`` callee is ``tone`` demanding SRTP (the
same codecs, the same 440 Hz tone over the same noise floor), so both calls carry the same
media and differ only in encryption."""


FULL_CALL = "max duration reached"
"""The reason of the FINISH event of a call that lasted its ``--max-duration``."""


def sip2rtmp_command() -> list[str]:
    script = Path(sys.executable).with_name("sip2rtmp")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sip2rtmp"]


class EventReader:
    """Reads the NDJSON events of a `sip2rtmp call --json` with their arrival times."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.events: list[tuple[float, Event]] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                with self._changed:
                    self.events.append((time.time(), record))
                    self._changed.notify_all()
        with self._changed:
            self.events.append((time.time(), {"event": "eof"}))
            self._changed.notify_all()

    def wait_for(self, match: Callable[[Event], bool], timeout: float) -> tuple[float, Event]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for when, record in self.events:
                    if match(record):
                        return when, record
                    if record["event"] == "eof":
                        raise RuntimeError("sip2rtmp ended before the call was answered")
                if not self._changed.wait(max(deadline - time.monotonic(), 0.0)):
                    raise RuntimeError("no ESTABLISHED event in time")

    def find(self, match: Callable[[Event], bool]) -> list[tuple[float, Event]]:
        with self._changed:
            return [(when, record) for when, record in self.events if match(record)]


def call_command(options: Options, stream_key: str) -> list[str]:
    """`sip2rtmp call` to the case's callee through the lab, with NDJSON events on stdout."""
    flags = {
        "--callee": options.callee,
        "--sip-login": RELAY_ACCOUNT.user,
        "--sip-domain": SIP_DOMAIN,
        "--sip-outbound-proxy": SIP_HOST,
        "--rtmp-url": RTMP_URL,
        "--rtmp-stream": stream_key,
    }
    return [
        *sip2rtmp_command(),
        "call",
        *itertools.chain.from_iterable(flags.items()),
        *([] if options.video_codec else ["--no-video"]),
        *(["--audio-codecs", options.audio_codec] if options.audio_codec else []),
        *(["--srtp", "required"] if options.srtp else []),
        *(["--latency", options.latency] if options.latency != "normal" else []),
        "--max-duration",
        f"{options.duration:g}",
        "--json",
    ]


def run_sip2rtmp(options: Options, name: str = "sip2rtmp", label: str = "sip2rtmp") -> Run:
    """One call relayed by sip2rtmp, which ends it itself after ``--max-duration``."""
    call = MeasuredCall(options, name, label=label)
    env = program_env(SIP2RTMP_SIP_PASSWORD=RELAY_ACCOUNT.password)
    with (options.work_dir / f"{name}.stderr").open("wb") as stderr:
        process = subprocess.Popen(
            call_command(options, call.stream_key), stdout=subprocess.PIPE, stderr=stderr, env=env
        )
    assert process.stdout is not None
    watched = Watched(process)
    events = EventReader(process.stdout)
    try:
        answered_wall, answered = events.wait_for(
            lambda r: r.get("status") == "ESTABLISHED", timeout=30
        )
    except RuntimeError:
        call.abandon(watched, signal.SIGTERM)
        raise
    answered_at = time.monotonic() - (time.time() - answered_wall)
    note = call.steady_window(watched, answered_at)
    usage = watched.reap(timeout=options.duration + 30)
    ends = events.find(lambda r: r.get("status") in ("FINISH", "FAILED"))
    reason = str(ends[-1][1].get("reason")) if ends else "no FINISH event"
    if reason != FULL_CALL:  # a shorter call's CPU per minute would mean nothing
        call.finish(watched, usage, codec="", note="", sip_ports=set(), rtp_ports=set())
        raise RuntimeError(f"the {label} call did not last: {reason}")
    codec = str(answered.get("audio", {}).get("codec", "PCMU"))
    ports = watched.udp_ports
    run = call.finish(watched, usage, codec=codec, note=note, sip_ports=ports, rtp_ports=ports)
    live = events.find(lambda r: r.get("event") == "output" and r.get("state") == "live")
    run.live_event_s = live[0][0] - answered_wall if live else None
    run.depth_ms = [
        float(r["rtp"]["depth_ms"])
        for _, r in events.find(lambda r: r.get("event") == "stats" and "rtp" in r)
    ]
    return run


def run_case(
    options: Options, baseline_codec: str | None, served: bool = False
) -> tuple[Run, Run, Served | None]:
    """sip2rtmp's run, the same call through `sip2rtmp serve` if ``served``, then the
    baseline's: never at the same time, so none slows another."""
    if options.srtp:
        return (*run_srtp_case(options), None)
    print(f"sip2rtmp: {options.duration:g} s call to {options.callee} …", file=sys.stderr)
    label = "sip2rtmp" if options.latency == "normal" else f"sip2rtmp --latency {options.latency}"
    ours = run_sip2rtmp(options, label=label)
    through_serve = None
    if served:
        print(f"sip2rtmp serve: {options.duration:g} s call …", file=sys.stderr)
        through_serve = run_served(options)
    codec = baseline_codec or ours.codec
    print(f"ffmpeg baseline: {options.duration:g} s call, {codec} …", file=sys.stderr)
    return ours, run_baseline(options, codec), through_serve


def run_srtp_case(options: Options) -> tuple[Run, Run]:
    """The SRTP call, then the same call in plain RTP to ``PLAIN_CALLEE``.

    Neither is captured nor probed: the SRTP call's payloads on the wire are encrypted, so no
    tone onset can be found in them, and both runs must do the same work for their CPU to
    compare.
    """
    options = replace(options, capture=False, probe=False)
    print(f"sip2rtmp SRTP: {options.duration:g} s call to {options.callee} …", file=sys.stderr)
    ours = run_sip2rtmp(options, "sip2rtmp-srtp", "sip2rtmp SRTP")
    plain = replace(options, callee=PLAIN_CALLEE, srtp=False)
    print(f"sip2rtmp RTP: {options.duration:g} s call to {PLAIN_CALLEE} …", file=sys.stderr)
    return ours, run_sip2rtmp(plain, "sip2rtmp-rtp", "sip2rtmp plain RTP")
