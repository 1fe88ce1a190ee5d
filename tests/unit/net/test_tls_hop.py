"""The RTMPS hop verifies the server before a byte of RTMP reaches it.

A loopback TLS server echoes what it receives with every bit inverted; the hop runs as in a
call (a child process). Its certificate comes from a private CA (trusted through `cafile`),
signs itself, or is for another name: only the first carries bytes both ways, unless
verification is off.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sip2rtmp.net.tls_hop import (
    CertificateRefused,
    TlsHop,
    client_context,
    verify_certificate,
)
from tests.unit.net.test_tls_name import TlsServer, _issue, _openssl, ca  # noqa: F401

KEY = "hop-secret-key"
INVERT = bytes(255 - value for value in range(256))


class EchoServer(TlsServer):
    """Echoes each connection's bytes inverted until it closes."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.received = bytearray()
        super().__init__(cert, key)

    def _serve_one(self) -> None:
        conn, _ = self.sock.accept()
        conn.settimeout(5)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                self.handshakes += 1
                while data := tls.recv(65536):
                    self.received += data
                    tls.sendall(data.translate(INVERT))
        except (ssl.SSLError, OSError):
            self.failed_handshakes += 1


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("self")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "self.key",
        "-subj", "/CN=127.0.0.1", "-days", "2", "-out", "self.pem",
        "-addext", "subjectAltName=IP:127.0.0.1", cwd=directory,
    )  # fmt: skip
    return directory / "self.pem", directory / "self.key"


@pytest.fixture
def servers() -> Iterator[list[EchoServer]]:
    started: list[EchoServer] = []
    yield started
    for server in started:
        server.close()


@pytest.fixture
def hops() -> Iterator[list[TlsHop]]:
    started: list[TlsHop] = []
    yield started
    for hop in started:
        hop.close()


def _hop(port: int, hops: list[TlsHop], cafile: Path | None, insecure: bool = False) -> TlsHop:
    hop = TlsHop(
        f"rtmps://127.0.0.1:{port}/live/{KEY}",
        cafile=str(cafile) if cafile else None,
        insecure=insecure,
        connect_timeout=5,
    )
    hops.append(hop)
    hop.start()
    return hop


def _through(hop: TlsHop, payload: bytes) -> tuple[bytes, bool]:
    """Send ``payload`` into the hop's loopback side: what comes back before the hop closes
    the connection or falls silent for 1 s, and whether it closed."""
    port = int(hop.connect_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        sock.settimeout(1)
        back = bytearray()
        try:
            while data := sock.recv(65536):
                back += data
        except TimeoutError:
            return bytes(back), False
        return bytes(back), True


def test_a_verified_server_gets_the_bytes_and_answers_through_the_hop(
    ca: Path,  # noqa: F811
    servers: list[EchoServer],
    hops: list[TlsHop],
) -> None:
    server = EchoServer(*_issue(ca, "rtmps-good", "IP:127.0.0.1"))
    servers.append(server)
    hop = _hop(server.port, hops, ca / "ca.pem")
    assert hop.connect_url.startswith("rtmp://127.0.0.1:") and hop.connect_url.endswith(
        f"/live/{KEY}"
    )
    payload = bytes(range(256)) * 400  # not RTMP: the rewriter passes it as it is
    back, closed = _through(hop, payload)
    assert bytes(server.received) == payload
    assert back == payload.translate(INVERT), "every byte echoed came back through the hop"
    assert not closed
    assert hop.refusal() is None and hop.upstream_errno() is None


def test_a_self_signed_certificate_is_refused_before_any_byte_reaches_it(
    self_signed: tuple[Path, Path], servers: list[EchoServer], hops: list[TlsHop]
) -> None:
    server = EchoServer(*self_signed)
    servers.append(server)
    hop = _hop(server.port, hops, None)
    back, closed = _through(hop, b"\x03" + bytes(1536))
    assert closed and back == b"", "the loopback connection is closed at once"
    assert hop.refusal() == "certificate verify failed: self-signed certificate"
    assert server.received == b"" and server.handshakes == 0


def test_a_certificate_for_another_name_is_refused_with_the_name(
    ca: Path,  # noqa: F811
    servers: list[EchoServer],
    hops: list[TlsHop],
) -> None:
    server = EchoServer(*_issue(ca, "evil.example", "DNS:evil.example"))
    servers.append(server)
    hop = _hop(server.port, hops, ca / "ca.pem")
    back, closed = _through(hop, b"\x03" + bytes(1536))
    assert closed and back == b""
    refusal = hop.refusal()
    assert refusal is not None and "mismatch" in refusal and "127.0.0.1" in refusal
    assert server.received == b""


def test_insecure_carries_the_bytes_to_a_self_signed_server(
    self_signed: tuple[Path, Path], servers: list[EchoServer], hops: list[TlsHop]
) -> None:
    server = EchoServer(*self_signed)
    servers.append(server)
    hop = _hop(server.port, hops, None, insecure=True)
    back, _ = _through(hop, b"hello RTMPS")
    assert back == b"hello RTMPS".translate(INVERT)
    assert hop.refusal() is None


def test_a_closed_port_is_reported_with_its_errno(hops: list[TlsHop]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    hop = _hop(port, hops, None)
    back, closed = _through(hop, b"\x03")
    assert closed and back == b""
    assert hop.upstream_errno() == errno.ECONNREFUSED
    assert hop.refusal() is None


def test_the_child_goes_when_closed(hops: list[TlsHop]) -> None:
    hop = _hop(1, hops, None)
    process = hop._process
    assert process is not None
    hop.close()
    deadline = time.monotonic() + 5
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.returncode == 0


def test_verify_certificate_describes_a_trusted_one_and_refuses_a_self_signed_one(
    ca: Path,  # noqa: F811
    self_signed: tuple[Path, Path],
    servers: list[EchoServer],
) -> None:
    good = EchoServer(*_issue(ca, "rtmps-described", "IP:127.0.0.1"))
    bad = EchoServer(*self_signed)
    servers += [good, bad]
    context = client_context(str(ca / "ca.pem"))
    described = asyncio.run(verify_certificate("127.0.0.1", good.port, context, 5))
    assert described.startswith("CN=rtmps-described (IP Address:127.0.0.1)")
    assert "issued by CN=sip2rtmp test CA" in described and "valid until" in described
    with pytest.raises(CertificateRefused, match="self-signed certificate"):
        asyncio.run(verify_certificate("127.0.0.1", bad.port, client_context(), 5))
