"""A stub SIP server and a `sip2rtmp check` runner shared by the CLI tests."""

from __future__ import annotations

import os
import socket
import threading

from click.testing import CliRunner

from sip2rtmp.cli.check import check
from sip2rtmp.sip.message import Headers, Request, Response, parse_message


class OptionsResponder:
    """A UDP SIP server that answers every request `200 <reason>` and records (method, Expires)."""

    def __init__(self, reason: str = "OK") -> None:
        self.reason = reason
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests: list[tuple[str, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
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

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def invoke_check(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str]:
    """Run `sip2rtmp check` in-process, free of the caller's SIP2RTMP_* settings."""
    clean: dict[str, str | None] = {key: None for key in os.environ if key.startswith("SIP2RTMP_")}
    clean.update(env or {})
    result = CliRunner().invoke(check, list(args), standalone_mode=False, env=clean)
    if result.exception is not None:
        raise result.exception
    return int(result.return_value), result.stdout
