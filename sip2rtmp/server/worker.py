"""One call, one `sip2rtmp call --json --control stdin` process, forked by the zygote.

A call that crashes, hangs or is killed takes only its own process with it: the server reads
the worker's NDJSON events into the call's record and, when the process ends without a final
status of its own, records the call as FAILED with why. Nothing is restarted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from sip2rtmp.server.calls import FINAL_STATUSES, CallRecord
from sip2rtmp.server.request import ExtraValue, StartRequest
from sip2rtmp.server.zygote import ForkedWorker, Zygote

log = logging.getLogger("sip2rtmp.server.worker")

EventHandler = Callable[[CallRecord, dict[str, Any]], None]
CommandFactory = Callable[[StartRequest, str | None], tuple[list[str], dict[str, str]]]

MAX_EVENT_LINE = 1 << 20
"""Longest NDJSON line read from a worker; a longer one is skipped (a `stats` event of a call
with many outputs is a few KiB)."""
STDERR_LINES = 20
"""Last lines of a worker's stderr kept: the last one explains a worker's unexpected exit."""
STDERR_LINE_CHARS = 300
DRAIN_TIMEOUT = 2.0
"""How long the pipes may stay open after the process exited (a child holding them)."""
TERM_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL for a worker that did not hang up when asked."""


def worker_command(request: StartRequest, profile: str | None) -> tuple[list[str], dict[str, str]]:
    """The worker's argv and the environment it needs on top of the server's.

    Secrets stay off the command line, which every local user can read in /proc: the SIP
    password and the stream key go in the environment (`SIP2RTMP_SIP_PASSWORD`,
    `SIP2RTMP_RTMP_STREAM`), and so does an RTMP URL that carries credentials or a query.
    """
    argv = [sys.executable, "-m", "sip2rtmp", "call", "--json", "--control", "stdin"]
    env: dict[str, str] = {}
    if profile:
        argv.append(f"--profile={profile}")
    argv += [f"--call-id={request.call_id}", f"--callee={request.callee}"]
    url = urlsplit(request.rtmp_url)
    if url.password is not None or url.query:
        env["SIP2RTMP_RTMP_URL"] = request.rtmp_url
    elif request.rtmp_url:
        argv.append(f"--rtmp-url={request.rtmp_url}")
    if request.rtmp_stream:
        env["SIP2RTMP_RTMP_STREAM"] = request.rtmp_stream
    if request.sip_password is not None:
        env["SIP2RTMP_SIP_PASSWORD"] = request.sip_password.reveal()
    argv.append("--audio" if request.has_audio else "--no-audio")
    argv.append("--video" if request.has_video else "--no-video")
    argv.append("--register" if request.sip_register_required else "--no-register")
    optional = {
        "sip-login": request.sip_login,
        "sip-auth-name": request.sip_auth_name,
        "sip-domain": request.sip_domain,
        "sip-outbound-proxy": request.sip_outbound_proxy,
        "sip-port": request.sip_port,
    }
    for name, value in optional.items():
        if value is not None:
            argv.append(f"--{name}={value}")
    for name, extra in request.extras.items():
        argv += extra_args(name, extra)
    return argv, env


def extra_args(name: str, value: ExtraValue) -> list[str]:
    """One of sip2rtmp's own flags as arguments: a list repeats the flag, a boolean turns the
    flag on, or off by its `--no-` form where it has one (a plain flag left out is off)."""
    if isinstance(value, bool):
        if value:
            return [f"--{name}"]
        return [f"--no-{name}"] if name in NEGATABLE_FLAGS else []
    if isinstance(value, list):
        return [f"--{name}={item}" for item in value]
    return [f"--{name}={value}"]


NEGATABLE_FLAGS = frozenset({"audio", "video", "register"})
"""The `call` flags with a `--no-` form (`--audio/--no-audio`)."""


def exit_reason(returncode: int) -> str:
    """A worker's end in words, for the FAILED record of a call that gave no outcome."""
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            return f"worker killed by signal {number}"
        return f"worker killed by signal {number} ({name})"
    return f"worker exited with code {returncode}"


class Worker:
    """Runs one call's worker process and keeps its record up to date.

    `on_event` sees every event after the record took it, and a synthetic FAILED status when
    the process ended without a final status. The process has its own session, so a signal
    aimed at the server's process group (Ctrl-C) does not hang up the calls behind its back.
    """

    def __init__(
        self,
        request: StartRequest,
        record: CallRecord,
        on_event: EventHandler,
        *,
        profile: str | None,
        zygote: Zygote,
        command: CommandFactory = worker_command,
        term_grace: float = TERM_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.request = request
        self.record = record
        self.on_event = on_event
        self.profile = profile
        self.term_grace = term_grace
        self.ignored_lines = 0
        """stdout lines that were not a JSON object (or too long): counted, skipped."""
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._command = command
        self._zygote = zygote
        self._clock = clock
        self._process: ForkedWorker | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._final_seen = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Start the process; one that cannot start leaves the call FAILED, saying why."""
        argv, extra_env = self._command(self.request, self.profile)
        try:
            self._process = await self._zygote.spawn(argv, extra_env, MAX_EVENT_LINE)
        except OSError as error:
            self._fail(f"cannot start the worker: {error.strerror or error}", None)
            return
        log.info("call %s: worker %d started", self.record.call_id, self._process.pid)
        self._supervisor = asyncio.create_task(self._supervise(self._process))

    async def command(self, cmd: dict[str, Any]) -> None:
        """Send one command line to the worker; its answer comes back as a `command` event.

        A worker that already ended takes nothing: the call's record tells its outcome.
        """
        process = self._process
        if process is None or process.returncode is not None:
            log.debug("call %s: no worker to take %s", self.record.call_id, cmd.get("command"))
            return
        line = json.dumps(cmd, separators=(",", ":")) + "\n"
        async with self._write_lock:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                process.stdin.write(line.encode())
                await process.stdin.drain()

    async def terminate(self, timeout: float) -> None:
        """Hang up (the worker sends BYE), then SIGTERM after `timeout` seconds, then SIGKILL
        after `term_grace` more; returns once the process is gone and its record is final."""
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            await self.command({"command": "hangup"})
            for sig, grace in ((None, timeout), (signal.SIGTERM, self.term_grace)):
                if sig is not None:
                    self._signal(process, sig)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(process.wait()), grace)
                    break
            else:
                log.warning("call %s: worker ignored hangup and SIGTERM", self.record.call_id)
                self._signal(process, signal.SIGKILL)
        await self.wait()

    async def wait(self) -> None:
        """Until the process has exited and the record holds the call's outcome."""
        if self._supervisor is not None:
            await asyncio.shield(self._supervisor)

    def _signal(self, process: ForkedWorker, sig: signal.Signals) -> None:
        """Signal the worker's whole process group: a helper it started goes too."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)

    async def _supervise(self, process: ForkedWorker) -> None:
        readers = [
            asyncio.create_task(self._read_events(process.stdout)),
            asyncio.create_task(self._read_stderr(process.stderr)),
        ]
        returncode = await process.wait()
        _, pending = await asyncio.wait(readers, timeout=DRAIN_TIMEOUT)
        for reader in pending:
            reader.cancel()
        if self._final_seen:
            log.info("call %s: worker exited (%d)", self.record.call_id, returncode)
            return
        reason = exit_reason(returncode)
        if returncode > 0 and self.stderr_tail:
            reason = f"{reason}: {self.stderr_tail[-1]}"
        log.warning("call %s: %s", self.record.call_id, reason)
        self._fail(reason, returncode if returncode >= 0 else None)

    def _fail(self, reason: str, exit_code: int | None) -> None:
        if self.record.fail(reason, self._clock(), exit_code):
            event = {
                "event": "status",
                "callId": self.record.call_id,
                "status": "FAILED",
                "reason": reason,
                "exitCode": exit_code,
            }
            self._notify(event)

    def _notify(self, event: dict[str, Any]) -> None:
        try:
            self.on_event(self.record, event)
        except Exception:  # an observer's bug must not stop the call's record
            log.exception("call %s: event handler failed", self.record.call_id)

    async def _read_events(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # longer than MAX_EVENT_LINE: the reader dropped it
                self.ignored_lines += 1
                continue
            if not line:
                return
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                self.ignored_lines += 1
                continue
            self._take(event)

    def _take(self, event: dict[str, Any]) -> None:
        if event.get("event") == "status" and event.get("status") in FINAL_STATUSES:
            self._final_seen = True
        self.record.apply_event(event, self._clock())
        self._notify(event)

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:
                continue
            if not line:
                return
            text = line.decode("utf-8", "replace").strip()
            if text:
                self.stderr_tail.append(text[:STDERR_LINE_CHARS])
