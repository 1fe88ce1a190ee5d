"""The parent of `sip2rtmp serve`'s call workers: one process that loads a call's code once
and forks a worker for each call.

Started afresh, a `sip2rtmp call` spends about 0.25 CPU-s and 0.3 s before its call does
anything: the interpreter, click and the signalling core, then PyAV, numpy and the media
stack. A server starting dozens of calls pays that for each, and at one call a second the
start-ups alone keep a CPU busy (docs/performance.md). The zygote pays it once. Each worker
is a fork of it with all of that loaded, and runs `sip2rtmp call` from there as if exec'd:
its own session, environment, stdin, stdout and stderr. A command that is not `sip2rtmp`
itself is exec'd by the fork.

The server and the zygote talk over one SOCK_SEQPACKET socket pair, one JSON message per
packet:

- server to zygote: ``{"argv": [...], "env": {...}}`` (``env`` on top of the zygote's own),
  with the worker's stdin, stdout and stderr attached (SCM_RIGHTS);
- zygote to server: ``{"pid": N}`` or ``{"error": "why"}``, one per request, in their order;
  and ``{"exited": N, "returncode": R}`` once worker N has ended (R < 0: killed by signal -R),
  never before its ``pid`` message.

The zygote ends when the server closes its end or dies (PR_SET_PDEATHSIG), and its workers
then get SIGTERM, which they take as a hangup.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import gc
import importlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, NoReturn

log = logging.getLogger("sip2rtmp.server.zygote")

PRELOAD = ("sip2rtmp.cli.main", "sip2rtmp.relay.runner", "sip2rtmp.relay.media")
"""What a call loads before it makes the call: the command line, the relay, the media stack."""
SIP2RTMP = ("-m", "sip2rtmp")
"""argv[1:3] of a worker that runs in the fork itself rather than exec'ing."""
MAX_MESSAGE = 1 << 16
"""Largest request: a call's argv and environment take a few KiB."""
STDIO = 3  # stdin, stdout, stderr

WORKER_NAME = b"sip2rtmp-call"
"""The name a worker running a call goes by (its argv stays the zygote's)."""

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PR_SET_NAME = 15
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


_Reply = tuple[dict[str, Any], "asyncio.Future[int] | None"]
"""The zygote's answer to a request, and for a worker it started, the future of its exit."""


class ZygoteGone(OSError):
    """The zygote ended: no worker can start until a new one is up."""


@dataclass(eq=False)
class ForkedWorker:
    """A worker the zygote forked: what the server supervises, shaped like an
    `asyncio.subprocess.Process`."""

    pid: int
    stdin: asyncio.StreamWriter
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader
    exited: asyncio.Future[int] = field(repr=False)

    @property
    def returncode(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    async def wait(self) -> int:
        returncode = await asyncio.shield(self.exited)
        self.stdin.close()
        return returncode


class Zygote:
    """The server's end: starts the zygote, has it fork workers, learns when they end."""

    def __init__(self, preload: tuple[str, ...] = PRELOAD) -> None:
        self.preload = preload
        self._channel: socket.socket | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._replies: collections.deque[asyncio.Future[_Reply]] = collections.deque()
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._starting = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        """Start the zygote unless it runs; it loads the call's code while the server goes on."""
        async with self._starting:  # two calls at once start one zygote
            if self._channel is None:
                await self._start()

    async def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                __name__,
                str(theirs.fileno()),
                *self.preload,
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._channel = ours
        asyncio.get_running_loop().add_reader(ours, self._receive)
        log.info("worker zygote %d started", self._process.pid)

    async def spawn(self, argv: list[str], env: dict[str, str], limit: int) -> ForkedWorker:
        """A worker running ``argv`` with ``env`` on top of the server's environment, its
        stdout and stderr read with lines of up to ``limit`` bytes; OSError when it cannot
        start."""
        await self.start()
        assert self._channel is not None
        loop = asyncio.get_running_loop()
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        ours = (stdin_w, stdout_r, stderr_r)
        pid = None
        try:
            request = json.dumps({"argv": argv, "env": env}).encode()
            try:
                socket.send_fds(self._channel, [request], [stdin_r, stdout_w, stderr_w])
            finally:
                for fd in (stdin_r, stdout_w, stderr_w):
                    os.close(fd)
            reply: asyncio.Future[_Reply] = loop.create_future()
            self._replies.append(reply)
            try:
                answer, exited = await asyncio.shield(reply)
            except asyncio.CancelledError:  # the worker may start all the same: end it then
                reply.add_done_callback(_end_unwanted)
                raise
            if exited is None:
                raise OSError(str(answer.get("error")))
            pid = int(answer["pid"])
            stdout = await _reader(stdout_r, limit)
            stderr = await _reader(stderr_r, limit)
            stdin = await _writer(stdin_w)
        except BaseException:
            for fd in ours:
                _close_quietly(fd)
            if pid is not None:
                _end(pid)
            raise
        return ForkedWorker(pid, stdin, stdout, stderr, exited)

    async def close(self) -> None:
        """Stop the zygote (after the calls ended: their workers would take it as a hangup)."""
        self.stop()
        if self._process is not None:
            await self._process.wait()

    def stop(self) -> None:
        """Close the server's end, which ends the zygote; no need of a running loop."""
        channel, self._channel = self._channel, None
        if channel is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop that watched it has closed
            asyncio.get_running_loop().remove_reader(channel)
        channel.close()
        self._lost()

    def _receive(self) -> None:
        assert self._channel is not None
        while True:
            try:
                data = self._channel.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                log.error("the worker zygote ended; the next call starts a new one")
                self.stop()
                return
            self._take(json.loads(data))

    def _take(self, message: dict[str, Any]) -> None:
        if "exited" in message:
            exited = self._exits.pop(int(message["exited"]), None)
            if exited is not None and not exited.done():
                exited.set_result(int(message["returncode"]))
            return
        exited = None
        if "pid" in message:
            exited = asyncio.get_running_loop().create_future()
            self._exits[int(message["pid"])] = exited
        reply = self._replies.popleft()
        if not reply.done():
            reply.set_result((message, exited))

    def _lost(self) -> None:
        """The zygote is gone: requests fail, and its workers, which got SIGTERM, count as
        ended by it (their exit status went with the zygote)."""
        while self._replies:
            reply = self._replies.popleft()
            if not reply.done():
                reply.set_exception(ZygoteGone("the worker zygote ended"))
        for exited in self._exits.values():
            if not exited.done():
                exited.set_result(-signal.SIGTERM)
        self._exits.clear()


async def _reader(fd: int, limit: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    pipe = os.fdopen(fd, "rb", buffering=0)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe)
    return reader


async def _writer(fd: int) -> asyncio.StreamWriter:
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(fd, "wb", buffering=0)
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), loop=loop), pipe
    )
    return asyncio.StreamWriter(transport, protocol, None, loop)


def _end_unwanted(reply: asyncio.Future[_Reply]) -> None:
    """The reply to a request whose caller left: a worker it started has no one to watch it."""
    if reply.cancelled() or reply.exception() is not None:
        return
    answer, exited = reply.result()
    if exited is not None:
        _end(int(answer["pid"]))


def _end(pid: int) -> None:
    """SIGTERM to a worker no one will supervise, which takes it as a hangup. To the process,
    not its group: a worker just forked may not have its own session yet."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


# ---- the zygote process -------------------------------------------------------------------


def main(argv: list[str]) -> NoReturn:
    """``python -m sip2rtmp.server.zygote FD MODULE...``: load the modules, then fork a
    worker for each request on socket FD until the server closes it."""
    channel = socket.socket(fileno=int(argv[0]))
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when calls end
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `sip2rtmp.cli.main` does
    for module in argv[1:]:
        importlib.import_module(module)
    # What is loaded now stays: collections in the workers need not walk it.
    gc.freeze()
    signal.signal(signal.SIGCHLD, lambda signum, frame: _reap(channel))
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(channel, MAX_MESSAGE, STDIO)
        except OSError:
            break
        if not message:
            break
        _spawn(channel, message, fds)
    os._exit(0)


def _spawn(channel: socket.socket, message: bytes, fds: list[int]) -> None:
    """Fork one worker, and tell the server its pid before it can learn of its exit."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        argv, env, executable = _request(message, fds)
        pid = os.fork()
        if pid == 0:
            _become_worker(channel, argv, env, executable, fds)
        _send(channel, {"pid": pid})
    except (OSError, ValueError) as error:
        _send(channel, {"error": getattr(error, "strerror", None) or str(error)})
    finally:
        for fd in fds:
            _close_quietly(fd)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})


def _request(message: bytes, fds: list[int]) -> tuple[list[str], dict[str, str], str | None]:
    """argv, env and, for a command that is not sip2rtmp, the program to exec."""
    request = json.loads(message)
    if not isinstance(request, dict):
        raise ValueError("malformed worker request")
    argv, env = request.get("argv"), request.get("env")
    if (
        len(fds) != STDIO
        or not isinstance(argv, list)
        or not argv
        or not all(isinstance(arg, str) for arg in argv)
        or not isinstance(env, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    ):
        raise ValueError("malformed worker request")
    if tuple(argv[1:3]) == SIP2RTMP:
        return argv, env, None
    executable = shutil.which(argv[0], path=env.get("PATH", os.environ.get("PATH")))
    if executable is None:
        raise FileNotFoundError(2, f"{argv[0]}: no such program")
    return argv, env, executable


def _become_worker(
    channel: socket.socket,
    argv: list[str],
    env: dict[str, str],
    executable: str | None,
    fds: list[int],
) -> NoReturn:
    """In the fork: a process of its own session with the request's stdio and environment,
    running `sip2rtmp` from what is loaded, or exec'ing the program."""
    code = 1
    try:
        channel.close()
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        os.setsid()
        # SIGTERM when the zygote ends, as it does when the server dies: no call outlives it.
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.update(env)
        if executable is not None:
            for signum in (signal.SIGPIPE, signal.SIGXFSZ):  # as subprocess restores them
                signal.signal(signum, signal.SIG_DFL)
            os.execv(executable, argv)
        _LIBC.prctl(_PR_SET_NAME, WORKER_NAME, 0, 0, 0)  # what ps and top show for it
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stderr = open(  # noqa: SIM115
            2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1
        )
        sys.argv = [argv[0], *argv[3:]]
        from sip2rtmp.cli.main import main as run_cli

        run_cli(argv[3:])
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:
        os.write(2, traceback.format_exc().encode(errors="replace"))
        code = 127 if executable is not None else 1
    os._exit(code)


def _reap(channel: socket.socket) -> None:
    """Tell the server about every worker that ended (from SIGCHLD)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(channel, {"exited": pid, "returncode": os.waitstatus_to_exitcode(status)})


def _send(channel: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the server is gone; so will we be, at the next request
        channel.send(json.dumps(message).encode())


if __name__ == "__main__":
    main(sys.argv[1:])
