"""RTMPS whose server certificate is verified: FFmpeg speaks RTMP to a loopback hop, and the hop
speaks TLS to the real server with Python's `ssl`.

PyAV opens an output with `avio_open` and no options, so FFmpeg's `tls_verify` and `ca_file`
never reach its TLS layer and any certificate is accepted. The hop checks the chain against the
system's CAs (or `--rtmps-ca`), the host name (RFC 6125) and sends SNI (RFC 6066 §3); it passes
the client's bytes through `ConnectRewriter`, so `connect` names the real server in its tcUrl.

The hop runs its asyncio loop in a child process: PyAV holds the GIL while FFmpeg performs the
RTMP handshake (measured: another thread gets no time for as long as the server takes to
answer), so a hop in the relay's own process could not answer the handshake it is waiting for.
The child reports on its stdout, one line per fact, written before the loopback connection the
fact concerns is closed: an output that sees FFmpeg fail reads why from the pipe at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import select
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sip2rtmp.net.rtmp_connect import ConnectRewriter

log = logging.getLogger(__name__)

RTMPS_PORT = 443
"""FFmpeg's default for rtmps:// without a port."""
LOOPBACK = "127.0.0.1"
CONNECT_TIMEOUT = 10.0
"""TCP connect plus TLS handshake toward the server."""
START_TIMEOUT = 10.0
READ_SIZE = 64 * 1024
HIGH_WATER = 256 * 1024
"""Bytes a side may have queued before the hop stops reading the other side."""

Report = Callable[[str, str], None]


class CertificateRefused(Exception):
    """The server's certificate did not verify; the message is the reason."""


def client_context(cafile: str | None = None, *, insecure: bool = False) -> ssl.SSLContext:
    """The system's CAs with host name checks; ``cafile``'s CAs in their place; or, when
    ``insecure``, no verification at all."""
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=cafile)


def refusal_reason(error: ssl.SSLCertVerificationError) -> str:
    """One line: OpenSSL's verify message (`self-signed certificate`, `Hostname mismatch,
    certificate is not valid for 'x'`), else the error's own text."""
    message = error.verify_message or error.reason or str(error)
    return f"certificate verify failed: {str(message).rstrip('.')}"


def describe_certificate(peercert: dict[str, Any]) -> str:
    """Subject CN, subjectAltName, issuer and expiry of ``SSLSocket.getpeercert()``."""

    def name(field: str) -> str:
        pairs = [f"{key}={value}" for rdn in peercert.get(field, ()) for key, value in rdn]
        common = [pair for pair in pairs if pair.startswith("commonName=")]
        return (common or pairs or ["?"])[0].replace("commonName=", "CN=")

    names = ", ".join(f"{kind}:{value}" for kind, value in peercert.get("subjectAltName", ()))
    alt = f" ({names})" if names else ""
    expires = peercert.get("notAfter", "?")
    return f"{name('subject')}{alt}, issued by {name('issuer')}, valid until {expires}"


async def verify_certificate(
    host: str, port: int, context: ssl.SSLContext, timeout: float = CONNECT_TIMEOUT
) -> str:
    """Handshake with ``host:port`` and describe the certificate it presented; raises
    `CertificateRefused` with the reason, OSError/TimeoutError when it cannot connect."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host), timeout
        )
    except ssl.SSLCertVerificationError as error:
        raise CertificateRefused(refusal_reason(error)) from None
    try:
        peercert = writer.get_extra_info("peercert") or {}
        return describe_certificate(peercert) if peercert else "not verified"
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


class HopServer:
    """The hop on an asyncio loop: a loopback listener, one TLS connection per client."""

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        server_base: str,
        report: Report,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self._context = context
        self._base = server_base
        """`rtmps://host[:port]` for connect's tcUrl; no path, so no stream key."""
        self._report = report
        self._timeout = connect_timeout
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen on loopback; the port FFmpeg is to connect to."""
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if not peer or peer[0] != LOOPBACK:
            await _close(writer)
            return
        self._report("connecting", "")
        upstream = await self._open_upstream()
        if upstream is None:
            await _close(writer)
            return
        up_reader, up_writer = upstream
        self._report("connected", "")
        rewriter = ConnectRewriter(self._base)
        try:
            await _first_done(
                _pipe(reader, up_writer, rewriter.feed),
                _pipe(up_reader, writer, None),
            )
        except (OSError, ssl.SSLError) as error:
            self._report("error", f"{error.errno or 0} {_text(error)}")
        finally:
            await asyncio.gather(_close(up_writer), _close(writer))

    async def _open_upstream(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """TLS to the server, or None with what went wrong reported."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host, self.port, ssl=self._context, server_hostname=self.host
                ),
                self._timeout,
            )
        except ssl.SSLCertVerificationError as error:
            self._report("refused", refusal_reason(error))
            return None
        except TimeoutError:
            self._report("error", f"{errno.ETIMEDOUT} no TLS connection within {self._timeout:g} s")
            return None
        except ssl.SSLError as error:
            self._report("error", f"0 TLS handshake failed: {_text(error)}")
            return None
        except OSError as error:
            text = os.strerror(error.errno) if error.errno else _text(error)
            self._report("error", f"{error.errno or 0} {text}")
            return None
        writer.transport.set_write_buffer_limits(high=HIGH_WATER)
        return reader, writer


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    rewrite: Callable[[bytes], bytes] | None,
) -> None:
    """Copy until end of stream; `drain` waits while the other side's buffer is high, so
    nothing is read faster than it can be sent."""
    while data := await reader.read(READ_SIZE):
        if rewrite is not None:
            data = rewrite(data)
        if data:
            writer.write(data)
            await writer.drain()


async def _first_done(*coroutines: Awaitable[None]) -> None:
    """Run both directions; when one ends, the connection is over (the other is cancelled)."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, asyncio.CancelledError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


def _text(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or getattr(error, "reason", None) or str(error)
    return str(text) or type(error).__name__


class TlsHop:
    """One rtmps:// target's hop, in a child process; ``connect_url`` is what FFmpeg opens.

    Thread-safe: the output threads read ``refusal`` and ``upstream_errno`` while the loop
    starts and closes it.
    """

    def __init__(
        self,
        url: str,
        *,
        cafile: str | None = None,
        insecure: bool = False,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        parts = urlsplit(url)
        self.url = url
        self.host = parts.hostname or ""
        self.port = parts.port or RTMPS_PORT
        self._cafile = cafile
        self._insecure = insecure
        self._timeout = connect_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._local_port = 0
        self._lock = threading.Lock()
        self._pending = b""
        self._refusal: str | None = None
        self._error: tuple[int | None, str] | None = None

    @property
    def connect_url(self) -> str:
        """The real URL with the hop's loopback address in place of the server's."""
        parts = urlsplit(self.url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@" if userinfo else ""
        netloc += f"{LOOPBACK}:{self._local_port}"
        return urlunsplit(("rtmp", netloc, parts.path, parts.query, ""))

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the child and wait until it listens (blocking: from asyncio, use a thread)."""
        base = f"rtmps://{_bracketed(self.host)}"
        if urlsplit(self.url).port:
            base += f":{self.port}"
        argv = [sys.executable, "-m", __name__, self.host, str(self.port), base]
        argv += ["--timeout", str(self._timeout)]
        if self._cafile is not None:
            argv += ["--cafile", self._cafile]
        if self._insecure:
            argv.append("--insecure")
        self._process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert self._process.stdout is not None
        os.set_blocking(self._process.stdout.fileno(), False)
        deadline = time.monotonic() + timeout
        while not self._local_port:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._process.poll() is not None:
                self.close()
                self._error = (errno.EIO, "the TLS hop did not start")
                raise OSError(errno.EIO, f"the TLS hop for {self.host} did not start")
            select.select([self._process.stdout], [], [], min(remaining, 0.1))
            self._poll()

    def refusal(self) -> str | None:
        """Why the server's certificate was refused on the latest connection, if it was."""
        self._poll()
        return self._refusal

    def upstream_errno(self) -> int | None:
        """The errno of the latest connection's failure toward the server, if it had one."""
        self._poll()
        return self._error[0] if self._error else None

    def upstream_error(self) -> str | None:
        """The latest connection's failure toward the server, in words."""
        self._poll()
        return self._error[1] if self._error else None

    def close(self) -> None:
        """Stop the child: its stdin closing is its signal to go."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(2.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._poll(process)
        if process.stdout is not None:
            process.stdout.close()

    def _poll(self, process: subprocess.Popen[bytes] | None = None) -> None:
        """Take every line the child wrote so far, without waiting."""
        process = process or self._process
        if process is None or process.stdout is None or process.stdout.closed:
            return
        with self._lock:
            while True:
                try:
                    data = os.read(process.stdout.fileno(), READ_SIZE)
                except (BlockingIOError, ValueError, OSError):
                    break
                if not data:
                    break
                self._pending += data
            *lines, self._pending = self._pending.split(b"\n")
            for line in lines:
                self._take(line.decode(errors="replace"))

    def _take(self, line: str) -> None:
        kind, _, value = line.partition(" ")
        if kind == "port":
            self._local_port = int(value)
        elif kind == "connecting":
            self._refusal, self._error = None, None
        elif kind == "refused":
            self._refusal = value
            log.info("RTMPS server %s refused: %s", self.host, value)
        elif kind == "error":
            number, _, text = value.partition(" ")
            self._error = (int(number) or None, text)
        elif kind == "log":
            level, _, text = value.partition(" ")
            log.log(int(level), "TLS hop for %s: %s", self.host, text)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _ReportLog(logging.Handler):
    """Carries the child's log records to the parent's log, as report lines."""

    def __init__(self, report: Report) -> None:
        super().__init__(logging.INFO)
        self._report = report

    def emit(self, record: logging.LogRecord) -> None:
        self._report("log", f"{record.levelno} {record.getMessage()}")


def _stdout_report(kind: str, value: str) -> None:
    line = f"{kind} {value}".replace("\n", " ").rstrip() + "\n"
    sys.stdout.buffer.write(line.encode())
    sys.stdout.buffer.flush()


async def _serve_until_stdin_closes(arguments: argparse.Namespace) -> None:
    context = client_context(arguments.cafile, insecure=arguments.insecure)
    hop = HopServer(
        arguments.host,
        arguments.port,
        context,
        arguments.base,
        _stdout_report,
        connect_timeout=arguments.timeout,
    )
    _stdout_report("port", str(await hop.start()))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.buffer.read)
    await hop.close()


def main(argv: list[str] | None = None) -> int:
    """The child: `python -m sip2rtmp.net.tls_hop HOST PORT BASE [--cafile F] [--insecure]`."""
    parser = argparse.ArgumentParser(prog="sip2rtmp.net.tls_hop")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("base")
    parser.add_argument("--cafile")
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--timeout", type=float, default=CONNECT_TIMEOUT)
    arguments = parser.parse_args(argv)
    root = logging.getLogger()
    root.addHandler(_ReportLog(_stdout_report))
    root.setLevel(logging.INFO)
    try:
        asyncio.run(_serve_until_stdin_closes(arguments))
    except (OSError, ssl.SSLError, ValueError) as error:
        _stdout_report("log", f"{logging.ERROR} {_text(error)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
