"""Running the installed `sip2rtmp` against the lab, and reading back what it did."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sip2rtmp.lab import RELAY_ACCOUNT, RTMP_URL, SIP_DOMAIN, SIP_HOST, Lab

SIP2RTMP = str(Path(sys.executable).with_name("sip2rtmp"))


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

    def __init__(self, args: list[str], log_file: Path, stream_key: str, env: dict[str, str]):
        self.log_file = log_file
        self.stream_key = stream_key
        self.started = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self._stdout: list[str] = []
        self.process = subprocess.Popen(
            [SIP2RTMP, "call", *args],
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
            if line.startswith("{"):
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
        return CallRun(
            returncode=self.process.returncode,
            stdout="".join(self._stdout),
            stderr=stderr,
            log=log,
            stream_key=self.stream_key,
            elapsed=time.monotonic() - self.started,
            events=list(self.events),
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
    ) -> CallProcess:
        key = f"t{uuid.uuid4().hex[:10]}"
        log_file = tmp_path / f"{key}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIP2RTMP_")}
        if password is not None:
            env["SIP2RTMP_SIP_PASSWORD"] = password
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
            args += ["--rtmp-url", RTMP_URL, "--rtmp-stream", key]
        process = CallProcess([*args, *extra], log_file, key, env)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait()
