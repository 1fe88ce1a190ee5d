"""One load against the lab: `sip2rtmp serve` starts N calls, holds them, and hangs them up.

The calls are started at a steady rate (a worker's start-up, importing PyAV and rendering the
slate, costs about a CPU-second, which would starve the calls already up if all came at once),
held once every one is up, and hung up together through `/rest-api/call/terminate`. The hold
is measured from outside: the processes' CPU and memory from /proc, the calls' RTP counters
from the server's `/call/find_all`, the streams from nginx's recordings.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.relay.calls import stamp
from benchmarks.relay.probes.process import (
    children,
    machine_cpu_s,
    memory_kb,
    own_cpu_s,
    process_cpu_s,
    program_env,
    rss_kb,
    sleep_until,
)
from benchmarks.serve.report import (
    CallFigures,
    LoadRun,
    RtpCounters,
    audio_dropouts,
    audio_gaps,
)
from sip2rtmp.lab import RELAY_ACCOUNT, RTMP_URL, SIP_DOMAIN, SIP_HOST, Lab, callee_program
from sip2rtmp.lab.recording import decode_audio, read_recording

FINAL = frozenset({"FINISH", "FAILED", "BUSY"})
SETTLE_S = 6.0
"""The hold starts this long after the last call is up: its first stats, its output live."""
MEMORY_EVERY_S = 5.0
OUTPUT_START_S = 0.3
"""From the answer to the stream's first packet (docs/performance.md), which is the
recording's time 0: how the hold is placed on each recording's timeline."""
ANSWER_TIMEOUT_S = 30.0
HANGUP_TIMEOUT_S = 60.0
AUDIO_RATE = 48000


@dataclass(frozen=True)
class LoadOptions:
    calls: int
    hold_s: float
    ramp_per_s: float
    callees: tuple[str, ...]
    work_dir: Path
    keep_recordings: bool = False


def _sip2rtmp() -> list[str]:
    script = Path(sys.executable).with_name("sip2rtmp")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sip2rtmp"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """`sip2rtmp serve` on a free loopback port, with a profile holding the lab's relay
    account, so the startup bodies carry no password."""

    def __init__(self, work_dir: Path, max_calls: int) -> None:
        profile = work_dir / "relay.toml"
        profile.touch(mode=0o600)
        profile.write_text(
            f'sip-login = "{RELAY_ACCOUNT.user}"\n'
            f'sip-password = "{RELAY_ACCOUNT.password}"\n'
            f'sip-domain = "{SIP_DOMAIN}"\n'
            f'sip-outbound-proxy = "{SIP_HOST}"\n'
        )
        self.url = f"http://127.0.0.1:{_free_port()}"
        listen = self.url.removeprefix("http://")
        argv = [*_sip2rtmp(), "serve", "--listen", listen, "--max-calls", str(max_calls)]
        with (work_dir / "serve.log").open("ab") as log:
            self.process = subprocess.Popen(
                [*argv, "--profile", str(profile)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=program_env(),
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def request(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """POST `body` as JSON; (status, decoded answer) for errors as well as successes."""
        request = urllib.request.Request(
            f"{self.url}/rest-api{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            with contextlib.suppress(ValueError):
                return error.code, json.loads(error.read() or b"null")
            return error.code, None

    def calls(self) -> dict[str, dict[str, Any]]:
        """Every call the server knows, by callId."""
        status, found = self.request("/call/find_all", {})
        if status == 404:
            return {}
        if status != 200:
            raise RuntimeError(f"find_all answered {status}: {found}")
        listed = found.get("calls", []) if isinstance(found, dict) else found
        return {call["callId"]: call for call in listed}

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sip2rtmp serve exited with {self.process.returncode}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer,
            ):
                if answer.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("sip2rtmp serve did not answer /health")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM: the server hangs up what is left and exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@dataclass
class _Edge:
    """One edge of the hold: when, the CPU of every measured process, the calls' counters."""

    at: float
    workers: dict[int, float]
    server: float
    lab: float
    machine: tuple[float, float]
    calls: dict[str, dict[str, Any]]


def _tree_cpu_s(pid: int) -> float:
    """A process and its children (kamailio's and nginx's workers are forked children)."""
    total = 0.0
    for member in (pid, *children(pid)):
        with contextlib.suppress(OSError):
            total += process_cpu_s(member)
    return total


def _lab_pids(callees: tuple[str, ...]) -> list[int]:
    wanted = {"kamailio", "nginx", *(callee_program(user) for user in callees)}
    return [p.pid for p in Lab().status().programs if p.name in wanted and p.pid is not None]


def zygotes(server: Server) -> list[int]:
    """The server's children: the zygote its workers are forked from."""
    return children(server.pid)


def workers(server: Server) -> list[int]:
    """The server's call workers: its zygote's children."""
    return [pid for zygote in zygotes(server) for pid in children(zygote)]


def _edge(server: Server, lab_pids: list[int]) -> _Edge:
    cpu: dict[int, float] = {}
    for pid in workers(server):
        with contextlib.suppress(OSError):
            cpu[pid] = process_cpu_s(pid)
    return _Edge(
        at=time.monotonic(),
        workers=cpu,
        server=sum(own_cpu_s(pid) for pid in (server.pid, *zygotes(server))),
        lab=sum(_tree_cpu_s(pid) for pid in lab_pids),
        machine=machine_cpu_s(),
        calls=server.calls(),
    )


def _rss(server: Server) -> int:
    total = 0
    for pid in (server.pid, *zygotes(server), *workers(server)):
        with contextlib.suppress(OSError):
            total += rss_kb(pid)
    return total


def _pss(server: Server) -> int:
    """Once, after the hold: reading PSS stalls each process for a moment (``memory_kb``), and
    50 calls stalled at once lose audio together."""
    total = 0
    for pid in (server.pid, *zygotes(server), *workers(server)):
        with contextlib.suppress(OSError):
            total += memory_kb(pid)[1]
    return total


def _wait_for(server: Server, ids: list[str], done: frozenset[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls = server.calls()
        if all(calls.get(cid, {}).get("status") in done | FINAL for cid in ids):
            return
        time.sleep(1.0)


def _startup(call_id: str, callee: str, stream: str, max_duration: float) -> dict[str, Any]:
    """The reference's startup body, booleans as strings; the account comes from the profile."""
    return {
        "callId": call_id,
        "callee": callee,
        "rtmpUrl": RTMP_URL,
        "rtmpStream": stream,
        "hasAudio": "true",
        "hasVideo": "false",
        "max-duration": round(max_duration),
    }


@contextlib.contextmanager
def _serving(options: LoadOptions) -> Iterator[Server]:
    server = Server(options.work_dir, options.calls)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def run_load(options: LoadOptions) -> LoadRun:
    """Start `options.calls` calls through one server, hold them, hang up, read the streams."""
    prefix = f"bench-serve-{stamp()}-n{options.calls}"
    keys = {
        f"{prefix}-{i:03d}": options.callees[i % len(options.callees)] for i in range(options.calls)
    }
    ramp_s = options.calls / options.ramp_per_s
    max_duration = ramp_s + ANSWER_TIMEOUT_S + SETTLE_S + options.hold_s + HANGUP_TIMEOUT_S
    run = LoadRun(options.calls, 0.0, ramp_s, [])
    lab_pids = _lab_pids(options.callees)
    with _serving(options) as server:
        started = time.monotonic()
        accepted = []
        for index, (key, callee) in enumerate(keys.items()):
            sleep_until(started + index / options.ramp_per_s)
            status, answer = server.request(
                "/call/startup", _startup(key, callee, key, max_duration)
            )
            if status == 200:
                accepted.append(key)
            else:
                run.refused.append(f"{key}: {status} {answer}")
        _wait_for(server, accepted, frozenset({"ESTABLISHED"}), ANSWER_TIMEOUT_S)
        time.sleep(SETTLE_S)
        first = _edge(server, lab_pids)
        memory = [_rss(server)]
        while time.monotonic() < first.at + options.hold_s:
            sleep_until(min(time.monotonic() + MEMORY_EVERY_S, first.at + options.hold_s))
            memory.append(_rss(server))
        last = _edge(server, lab_pids)
        run.pss_kb = _pss(server)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda cid: server.request("/call/terminate", {"callId": cid}), accepted))
        _wait_for(server, accepted, FINAL, HANGUP_TIMEOUT_S)
        final = server.calls()
        _wait_reaped(server, HANGUP_TIMEOUT_S)
        parents = zygotes(server)
        run.lifetime_worker_cpu_s = sum(process_cpu_s(z) - own_cpu_s(z) for z in parents)
        run.zygote_cpu_s = sum(own_cpu_s(zygote) for zygote in parents)
    run.hold_s = last.at - first.at
    both = first.workers.keys() & last.workers.keys()
    run.workers = len(both)
    run.worker_cpu_s = sum(last.workers[pid] - first.workers[pid] for pid in both)
    run.server_cpu_s = last.server - first.server
    run.lab_cpu_s = last.lab - first.lab
    busy, total = (b - a for a, b in zip(first.machine, last.machine, strict=True))
    run.machine_busy = busy / total if total else 0.0
    run.machine_cpu_s = busy
    run.rss_kb = max(memory)
    run.figures = [
        _figures(key, keys[key], first, last, final.get(key, {}), options) for key in keys
    ]
    return run


def _wait_reaped(server: Server, timeout: float) -> None:
    """Until the zygote has waited for every worker: only then does its /proc stat count the
    workers' whole lives."""
    deadline = time.monotonic() + timeout
    while workers(server) and time.monotonic() < deadline:
        time.sleep(0.2)


def _figures(
    key: str, callee: str, first: _Edge, last: _Edge, final: dict[str, Any], options: LoadOptions
) -> CallFigures:
    before, after = first.calls.get(key, {}), last.calls.get(key, {})
    figures = CallFigures(
        call_id=key,
        callee=callee,
        status=str(final.get("status", "unknown")),
        reason=final.get("reason"),
        held=before.get("status") == "ESTABLISHED" and after.get("status") == "ESTABLISHED",
        rtp_hold=RtpCounters.from_stats(after.get("stats"))
        - RtpCounters.from_stats(before.get("stats")),
        rtp_total=RtpCounters.from_stats(final.get("stats")),
        reconnects=sum(
            int(output.get("reconnects", 0))
            for output in (final.get("stats") or {}).get("outputs", [])
        ),
    )
    # The hold on the recording's timeline: the answer was `duration` seconds before the edge.
    start = float(before.get("duration", 0.0)) - OUTPUT_START_S
    figures.hold_span = (start, start + (last.at - first.at))
    recordings = Lab().recordings(key)
    if recordings:
        recording = read_recording(recordings[-1])
        if recording.audio_dts:
            figures.recorded_s = recording.audio_dts[-1] - recording.audio_dts[0]
            figures.gaps = audio_gaps(recording.audio_dts)
            first_audio = recording.audio_dts[0]
            samples = decode_audio(recordings[-1], AUDIO_RATE)
            span = (start - first_audio, figures.hold_span[1] - first_audio)
            figures.dropouts = [
                (at + first_audio, length)
                for at, length in audio_dropouts(samples, AUDIO_RATE, span)
            ]
    if not options.keep_recordings:
        for path in recordings:
            path.unlink(missing_ok=True)
    return figures
