"""security.md: SIP over TLS verifies the server certificate's name, not only its CA.

A loopback TLS server presents a certificate from a CA the run trusts (`--sip-tls-ca`). Issued
for another name, it is refused with exit 7 (exit-codes.md) and one line naming the
certificate; issued for the address dialled, the same CA lets the handshake complete.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.cli.sip_stub import LoopbackServer
from tests.unit.cli.test_contract import SIP2RTMP, clean_env


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to issue the test certificates (Debian package openssl)")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _issue(ca: Path, name: str, san: str) -> tuple[Path, Path]:
    """A server certificate signed by the CA in `ca` for subjectAltName `san`."""
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-subj", f"/CN={name}", "-out", f"{name}.csr", cwd=ca,
    )  # fmt: skip
    (ca / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        cwd=ca,
    )  # fmt: skip
    return ca / f"{name}.pem", ca / f"{name}.key"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private CA the runs trust through `--sip-tls-ca`."""
    directory = tmp_path_factory.mktemp("ca")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        "-subj", "/CN=sip2rtmp test CA", "-days", "2", "-out", "ca.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory,
    )  # fmt: skip
    return directory


class TlsServer(LoopbackServer):
    """Accepts TLS connections on loopback and counts the handshakes that completed."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.handshakes = 0
        self.failed_handshakes = 0
        super().__init__(socket.create_server(("127.0.0.1", 0)))

    def _serve_one(self) -> None:
        conn, _ = self.sock.accept()
        conn.settimeout(5)
        try:
            with self.context.wrap_socket(conn, server_side=True):
                self.handshakes += 1
        except (ssl.SSLError, OSError):
            self.failed_handshakes += 1


@pytest.fixture
def serve() -> Iterator[list[TlsServer]]:
    servers: list[TlsServer] = []
    yield servers
    for server in servers:
        server.close()


def _command(server: TlsServer, ca: Path) -> list[str]:
    return [
        SIP2RTMP, "call", "--json", "--no-register", "--callee", "sip:peer@127.0.0.1",
        "--sip-login", "relay", "--sip-transport", "tls",
        "--sip-outbound-proxy", f"127.0.0.1:{server.port}",
        "--sip-tls-ca", str(ca / "ca.pem"), "--rtmp-url", "rtmp://127.0.0.1:1/live",
        "--max-duration", "3",
    ]  # fmt: skip


def test_a_trusted_certificate_for_another_name_is_refused(
    ca: Path, serve: list[TlsServer]
) -> None:
    server = TlsServer(*_issue(ca, "other", "DNS:sip.other.test"))
    serve.append(server)
    run = subprocess.run(
        _command(server, ca),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=clean_env(),
    )  # fmt: skip
    assert run.returncode == 7, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "certificate" in lines[0].lower()
    assert "mismatch" in lines[0], "refused for its name, not its issuer"
    assert "127.0.0.1" in lines[0], "the line names the address the name was checked for"
    assert server.handshakes == 0


def test_the_same_ca_with_the_dialled_name_completes_the_handshake(
    ca: Path, serve: list[TlsServer]
) -> None:
    """The control: the refusal above is the name's, not the CA's or the server's."""
    server = TlsServer(*_issue(ca, "right", "IP:127.0.0.1"))
    serve.append(server)
    run = subprocess.Popen(
        _command(server, ca),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL, env=clean_env(),
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while server.handshakes == 0 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    handshakes, failed = server.handshakes, server.failed_handshakes
    run.kill()  # the server speaks no SIP: the run would wait out its INVITE's timeout
    _, stderr = run.communicate(timeout=10)
    # The server closes each connection after its handshake, so the client may open another
    # to send its INVITE; one killed mid-handshake by run.kill() is not the client's doing.
    assert handshakes >= 1, stderr
    assert failed == 0
