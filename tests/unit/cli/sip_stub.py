"""A stub SIP server and in-process `sip2rtmp check` and `call` runners shared by the CLI tests."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from click.testing import CliRunner

import sip2rtmp.cli.call as call_module
from sip2rtmp.cli.check import check
from sip2rtmp.config import CallSettings
from sip2rtmp.relay.options import MediaOptions
from sip2rtmp.sip.message import Headers, Request, Response, parse_message


class LoopbackServer:
    """A bound loopback socket served on a daemon thread until `close()`.

    Subclasses set their own state, then call `__init__`, which starts the thread; each
    `_serve_one` handles one datagram or connection and may time out, so the loop sees
    `close()` within 0.2 s.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                self._serve_one()
            except TimeoutError:
                continue

    def _serve_one(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class OptionsResponder(LoopbackServer):
    """A UDP SIP server that answers every request `200 <reason>` and records (method, Expires)."""

    def __init__(self, reason: str = "OK") -> None:
        self.reason = reason
        self.requests: list[tuple[str, str | None]] = []
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        super().__init__(sock)

    def _serve_one(self) -> None:
        data, addr = self.sock.recvfrom(65536)
        request = parse_message(data)
        assert isinstance(request, Request)
        expires = request.headers.get("Expires")
        self.requests.append((request.method, expires))
        headers = Headers()
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            headers.add(name, request.headers.get(name) or "")
        if expires is not None:
            headers.add("Expires", expires)
        self.sock.sendto(Response(200, self.reason, headers).to_bytes(), addr)


def invoke_check(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str]:
    """Run `sip2rtmp check` in-process, free of the caller's SIP2RTMP_* settings."""
    clean: dict[str, str | None] = {key: None for key in os.environ if key.startswith("SIP2RTMP_")}
    clean.update(env or {})
    result = CliRunner().invoke(check, list(args), standalone_mode=False, env=clean)
    if result.exception is not None:
        raise result.exception
    return int(result.return_value), result.stdout


def call_with_env(
    args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch, stdin: str = ""
) -> tuple[CallSettings, MediaOptions, str]:
    """Run `call` in process up to the relay with exactly `env` as its SIP2RTMP_* settings;
    returns what the relay got and what went to stderr."""
    taken: list[tuple[CallSettings, MediaOptions]] = []
    monkeypatch.setattr(
        call_module,
        "run_relay",
        lambda settings, sink, media, control: taken.append((settings, media)),
    )
    clean: dict[str, str | None] = {key: None for key in os.environ if key.startswith("SIP2RTMP_")}
    clean.update(env)
    result = CliRunner().invoke(
        call_module.call, [*args, "--json"], input=stdin, standalone_mode=False, env=clean
    )
    if result.exception is not None:
        raise result.exception
    return taken[0][0], taken[0][1], result.stderr
