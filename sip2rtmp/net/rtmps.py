"""RTMPS whose server certificate is verified, with Python's `ssl`: the system's CAs (or
`--rtmps-ca`), the host name (RFC 6125), SNI (RFC 6066 §3).

FFmpeg's own RTMPS would accept any certificate (PyAV opens outputs with no options, so its
`tls_verify` never applies); the outputs' RTMP client (`sip2rtmp.net.rtmp_socket`) wraps its
socket in a context from here instead, and `sip2rtmp check` describes the certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

RTMPS_PORT = 443
"""The usual port of rtmps:// without one (FFmpeg's and OBS's default)."""
CONNECT_TIMEOUT = 10.0
"""TCP connect plus TLS handshake toward the server."""


class CertificateRefused(OSError):
    """The server's certificate did not verify; the message is the reason. Another attempt
    would meet the same certificate, so an output that gets it fails for good."""


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
