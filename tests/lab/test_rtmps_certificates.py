"""The lab's RTMPS endpoints present the certificates docs/lab.md says they do, as a verifying
TLS client (Python's `ssl`, with the lab CA as its only trust anchor) sees them."""

from __future__ import annotations

import re
import socket
import ssl

import pytest

from sip2rtmp.lab import (
    RTMP_HOST,
    RTMPS_PORT,
    RTMPS_SELF_SIGNED_PORT,
    RTMPS_WRONG_HOST_PORT,
    WRONG_HOST_NAME,
    Lab,
)

pytestmark = pytest.mark.lab


def handshake(lab: Lab, port: int, server_hostname: str = RTMP_HOST) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(lab.tls_ca))
    raw = socket.create_connection((RTMP_HOST, port), timeout=5)
    try:
        return context.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def test_the_verified_endpoint_passes_verification_for_its_address(lab: Lab) -> None:
    with handshake(lab, RTMPS_PORT) as connection:
        assert connection.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize(
    ("port", "reason"),
    [
        (RTMPS_SELF_SIGNED_PORT, "self-signed certificate"),
        (RTMPS_WRONG_HOST_PORT, "IP address mismatch"),
    ],
    ids=["self-signed", "wrong-host"],
)
def test_the_bad_endpoints_fail_verification_for_their_reason(
    lab: Lab, port: int, reason: str
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match=re.escape(reason)):
        handshake(lab, port).close()


def test_the_wrong_host_certificate_is_the_lab_cas_for_evil_example(lab: Lab) -> None:
    """Only the name is wrong: asked for evil.example, the same endpoint verifies."""
    with handshake(lab, RTMPS_WRONG_HOST_PORT, server_hostname=WRONG_HOST_NAME) as connection:
        assert connection.version() in ("TLSv1.2", "TLSv1.3")
