"""Running the installed `sip2rtmp` against the lab, and reading back what it did."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sip2rtmp.lab import RELAY_ACCOUNT, RTMP_URL, SIP_DOMAIN, SIP_HOST, Lab, LabError
from tests.support.nat_world import NatWorld
from tests.support.nat_world import nat_world as build_nat_world
from tests.support.netns import NetnsUnavailable

SIP2RTMP = str(Path(sys.executable).with_name("sip2rtmp"))
TERMINAL_STATUSES = frozenset({"FINISH", "FAILED", "BUSY"})
STATUSES = TERMINAL_STATUSES | {
    "TRYING",
    "RING",
    "RING_MEDIA",
    "SESSION_PROGRESS",
    "ESTABLISHED",
    "HOLD",
}
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
"""`ts`: UTC, ISO 8601 with milliseconds (docs/events.md)."""


def read_events(stdout: str, returncode: int, call_id: str | None = None) -> list[dict[str, Any]]:
    """The events of one `--json` run, held to docs/events.md's contract.

    Every stdout line is one JSON object (logs go to stderr, never to stdout); every event has
    `event`, `ts` and the run's `callId`; the run ends with exactly one FINISH, FAILED or BUSY,
    whose `exitCode` is the process's (FINISH: exit code 0).
    """
    events: list[dict[str, Any]] = []
    for number, line in enumerate(stdout.splitlines(), 1):
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            pytest.fail(f"stdout line {number} is not a JSON event: {line!r}", pytrace=False)
        events.append(event)
    problems = []
    for event in events:
        if not isinstance(event.get("event"), str):
            problems.append(f"no `event`: {event}")
        if not TIMESTAMP.fullmatch(str(event.get("ts"))):
            problems.append(f"`ts` missing or not ISO 8601 UTC with milliseconds: {event}")
        if not isinstance(event.get("callId"), str) or not event["callId"]:
            problems.append(f"no `callId`: {event}")
        if event.get("event") == "status" and event.get("status") not in STATUSES:
            problems.append(f"unknown status: {event}")
    call_ids = {event.get("callId") for event in events}
    if len(call_ids) > 1 or (call_id is not None and call_ids != {call_id}):
        problems.append(f"callId is not the run's one id ({call_id}): {sorted(map(str, call_ids))}")
    statuses = [event for event in events if event.get("event") == "status"]
    terminal = [event for event in statuses if event.get("status") in TERMINAL_STATUSES]
    if len(terminal) != 1:
        problems.append(f"{len(terminal)} terminal statuses (FINISH, FAILED, BUSY), not one")
    elif terminal[0] is not statuses[-1]:
        problems.append(f"a status after {terminal[0]['status']}: {statuses[-1]}")
    elif terminal[0]["status"] == "FINISH":
        if returncode != 0:
            problems.append(f"FINISH but exit code {returncode}")
    elif terminal[0].get("exitCode") != returncode:
        problems.append(f"exitCode in {terminal[0]} is not the exit code {returncode}")
    if problems:
        pytest.fail("\n".join(["the events break their contract:", *problems]), pytrace=False)
    return events


@dataclass
class CallRun:
    """A finished `sip2rtmp call`: exit code, output, parsed events and its debug log."""

    returncode: int
    stdout: str
    stderr: str
    log: str
    stream_key: str
    elapsed: float
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def statuses(self) -> list[str]:
        return [e["status"] for e in self.events if "status" in e]

    def last(self, event: str) -> dict[str, Any]:
        matching = [e for e in self.events if e["event"] == event]
        assert matching, f"no {event!r} event in {self.events}"
        return matching[-1]

    @property
    def everything(self) -> str:
        return self.stdout + self.stderr + self.log


class CallProcess:
    """A running `sip2rtmp call --json`; its events are collected as they are printed."""

    def __init__(
        self,
        args: list[str],
        log_file: Path,
        stream_key: str,
        env: dict[str, str],
        *,
        json_events: bool = True,
        prefix: Sequence[str] = (),
    ):
        self.log_file = log_file
        self.json_events = json_events
        self.call_id = args[args.index("--call-id") + 1] if "--call-id" in args else None
        self.stream_key = stream_key
        self.started = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self._stdout: list[str] = []
        self.process = subprocess.Popen(
            [*prefix, SIP2RTMP, "call", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._stdout.append(line)
            if self.json_events:
                # A line that is no JSON is reported by `wait`, which holds every line to the
                # contract; here only the events `wait_for_status` looks for are collected.
                with contextlib.suppress(ValueError):
                    self.events.append(json.loads(line))

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait_for_status(self, status: str, timeout: float) -> float:
        """Block until the call reports `status`; returns the seconds it took."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(event.get("status") == status for event in self.events):
                return time.monotonic() - self.started
            if self.process.poll() is not None:
                self._reader.join(2)
                if any(event.get("status") == status for event in self.events):
                    return time.monotonic() - self.started
                pytest.fail(f"sip2rtmp ended before {status}: {self.events}")
            time.sleep(0.05)
        pytest.fail(f"no {status} within {timeout} s: {self.events}")

    def wait(self, timeout: float) -> CallRun:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"sip2rtmp call did not end within {timeout} s: {self.events}")
        self._reader.join(5)
        assert self.process.stderr is not None
        stderr = self.process.stderr.read()
        log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        stdout = "".join(self._stdout)
        returncode = self.process.returncode
        return CallRun(
            returncode=returncode,
            stdout=stdout,
            stderr=stderr,
            log=log,
            stream_key=self.stream_key,
            elapsed=time.monotonic() - self.started,
            events=read_events(stdout, returncode, self.call_id) if self.json_events else [],
        )


@pytest.fixture
def start_call(lab: Lab, tmp_path: Path) -> Iterator[Any]:
    """Factory: start a lab call to `callee` with extra flags; killed at the end if still up."""
    processes: list[CallProcess] = []

    def start(
        callee: str,
        *extra: str,
        password: str | None = RELAY_ACCOUNT.password,
        transport: str = "udp",
        rtmp: bool = True,
        json_events: bool = True,
        rtmp_url: str = RTMP_URL,
        stream_key: str | None = None,
        environment: dict[str, str] | None = None,
    ) -> CallProcess:
        key = stream_key or f"t{uuid.uuid4().hex[:10]}"
        log_file = tmp_path / f"{uuid.uuid4().hex[:10]}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIP2RTMP_")}
        if password is not None:
            env["SIP2RTMP_SIP_PASSWORD"] = password
        env.update(environment or {})
        args = [
            "--callee",
            callee,
            "--sip-login",
            RELAY_ACCOUNT.user,
            "--sip-domain",
            SIP_DOMAIN,
            "--sip-outbound-proxy",
            SIP_HOST,
            "--sip-transport",
            transport,
            *(["--json"] if json_events else []),
            "--log-file",
            str(log_file),
        ]
        if rtmp:
            args += ["--rtmp-url", rtmp_url, "--rtmp-stream", key]
        process = CallProcess([*args, *extra], log_file, key, env, json_events=json_events)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait()


NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


class RtmpServer:
    """A private nginx-rtmp that a test may stop and restart: the shared lab's must not be.

    Records every publish as `<key>-<unixtime>.flv` (`record_unique`), like the lab's.
    """

    def __init__(self, root: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        root.chmod(0o755)  # nginx workers drop privileges and must reach the recordings
        self.recordings_dir = root / "rec"
        self.recordings_dir.mkdir()
        self.recordings_dir.chmod(0o777)
        (root / "logs").mkdir()
        self.config = root / "nginx.conf"
        self.config.write_text(
            f"load_module {NGINX_RTMP_MODULE};\n"
            f"daemon off; pid {root}/nginx.pid; error_log {root}/logs/error.log info;\n"
            "events { worker_connections 64; }\n"
            f"rtmp {{ server {{ listen 127.0.0.1:{self.port}; application live {{\n"
            f"live on; record all; record_unique on; record_path {self.recordings_dir}; }} }} }}\n"
        )
        self.root = root
        self.url = f"rtmp://127.0.0.1:{self.port}/live"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["nginx", "-p", str(self.root), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.01)
        pytest.fail(f"the private nginx-rtmp did not listen on {self.port} within 5 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(5)
            self.process = None

    def recordings(self, stream_key: str) -> list[Path]:
        return sorted(self.recordings_dir.glob(f"{stream_key}-*.flv"))


@pytest.fixture
def rtmp_server() -> Iterator[RtmpServer]:
    """A private nginx-rtmp, running; fails (CI has nginx) rather than skips without one."""
    if shutil.which("nginx") is None or not NGINX_RTMP_MODULE.exists():
        pytest.fail(
            "nginx with the RTMP module is needed (Debian packages nginx, libnginx-mod-rtmp; "
            "scripts/bootstrap installs them)",
            pytrace=False,
        )
    # Not under pytest's private temporary directory: nginx's workers could not enter it.
    with tempfile.TemporaryDirectory(prefix="sip2rtmp-nginx-") as root:
        server = RtmpServer(Path(root))
        server.start()
        yield server
        server.stop()


@pytest.fixture(scope="session")
def nat_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatWorld]:
    """The NAT world (tests/support/nat_world.py), built once a session and removed at its
    end, even after failures; a world that cannot be built fails the test (CI is root and
    has the programs), it is never skipped."""
    with contextlib.ExitStack() as stack:
        try:
            world = stack.enter_context(build_nat_world(tmp_path_factory.mktemp("nat-world")))
        except (NetnsUnavailable, LabError) as exc:
            pytest.fail(f"the NAT world could not be built: {exc}", pytrace=False)
        yield world
