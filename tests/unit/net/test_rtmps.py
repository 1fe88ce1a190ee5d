"""RTMPS verifies the server before a byte of RTMP reaches it.

Loopback TLS servers record what they receive. Their certificates come from a private CA
(trusted through `cafile`), sign themselves, or are for another name: only the first gets the
RTMP handshake, unless verification is off.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from sip2rtmp.net.rtmp_socket import RtmpConnection
from sip2rtmp.net.rtmps import CertificateRefused, client_context, verify_certificate
from tests.unit.net.test_tls_name import TlsServer, _issue, _openssl, ca  # noqa: F401

KEY = "rtmps-secret-key"


class RecordingServer(TlsServer):
    """Takes one TLS connection, records its first bytes and hangs up."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.received = bytearray()
        super().__init__(cert, key)

    def _serve_one(self) -> None:
        conn, _ = self.sock.accept()
        conn.settimeout(5)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                self.handshakes += 1
                self.received += tls.recv(65536)
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
def servers() -> Iterator[list[RecordingServer]]:
    started: list[RecordingServer] = []
    yield started
    for server in started:
        server.close()


def _publish(server: RecordingServer, context: ssl.SSLContext | None) -> None:
    RtmpConnection.open(f"rtmps://127.0.0.1:{server.port}/live/{KEY}", timeout=5, tls=context)


def test_a_verified_server_gets_the_rtmp_handshake(
    ca: Path,  # noqa: F811
    servers: list[RecordingServer],
) -> None:
    server = RecordingServer(*_issue(ca, "rtmps-good", "IP:127.0.0.1"))
    servers.append(server)
    with pytest.raises(ConnectionResetError, match="closed"):
        _publish(server, client_context(str(ca / "ca.pem")))
    assert server.handshakes == 1 and server.received[:1] == b"\x03", "C0: RTMP version 3"


def test_a_self_signed_certificate_is_refused_before_any_byte_reaches_it(
    self_signed: tuple[Path, Path], servers: list[RecordingServer]
) -> None:
    server = RecordingServer(*self_signed)
    servers.append(server)
    with pytest.raises(CertificateRefused, match=r"^certificate verify failed: self-signed"):
        _publish(server, None)
    assert server.received == b"" and server.handshakes == 0


def test_a_certificate_for_another_name_is_refused_with_the_name(
    ca: Path,  # noqa: F811
    servers: list[RecordingServer],
) -> None:
    server = RecordingServer(*_issue(ca, "evil.example", "DNS:evil.example"))
    servers.append(server)
    with pytest.raises(CertificateRefused, match=r"mismatch.*127\.0\.0\.1"):
        _publish(server, client_context(str(ca / "ca.pem")))
    assert server.received == b""


def test_insecure_carries_the_handshake_to_a_self_signed_server(
    self_signed: tuple[Path, Path], servers: list[RecordingServer]
) -> None:
    server = RecordingServer(*self_signed)
    servers.append(server)
    with pytest.raises(ConnectionResetError):
        _publish(server, client_context(insecure=True))
    assert server.received[:1] == b"\x03"


def test_verify_certificate_describes_a_trusted_one_and_refuses_a_self_signed_one(
    ca: Path,  # noqa: F811
    self_signed: tuple[Path, Path],
    servers: list[RecordingServer],
) -> None:
    good = RecordingServer(*_issue(ca, "rtmps-described", "IP:127.0.0.1"))
    bad = RecordingServer(*self_signed)
    servers += [good, bad]
    context = client_context(str(ca / "ca.pem"))
    described = asyncio.run(verify_certificate("127.0.0.1", good.port, context, 5))
    assert described.startswith("CN=rtmps-described (IP Address:127.0.0.1)")
    assert "issued by CN=sip2rtmp test CA" in described and "valid until" in described
    with pytest.raises(CertificateRefused, match="self-signed certificate"):
        asyncio.run(verify_certificate("127.0.0.1", bad.port, client_context(), 5))
