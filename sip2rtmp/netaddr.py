"""Types every layer shares: a transport address and the SIP transports, defined once."""

from __future__ import annotations

from typing import Literal

Address = tuple[str, int]
"""An IP address (or, before resolution, a host name) and a port."""

Transport = Literal["udp", "tcp", "tls"]
"""How SIP messages travel (RFC 3261 §18); TLS is TCP with TLS on top."""


def format_address(address: Address | None) -> str:
    """`host:port`, IPv6 hosts in brackets; empty for no address."""
    if address is None:
        return ""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
