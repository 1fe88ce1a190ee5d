"""Finding the SIP server of a domain: RFC 3263 §4 (NAPTR → SRV → A/AAAA) with dnspython.

An IP literal is used as it is; a host given with a port is only resolved to its addresses
(§4.2). Otherwise the host's NAPTR records that offer our transport point at SRV names; without
them the SRV name is built from the transport (`_sip._udp.`, `_sip._tcp.`, `_sips._tcp.`). SRV
records are tried by priority and, within one priority, in RFC 2782's weighted random order;
each address of each target is one target to try (§4.4). No SRV record at all means the host's
own addresses with the transport's default port.

dnspython asks for NAPTR and SRV; addresses come from the SRV answer's additional section when
the server sent them, else from the loop's getaddrinfo, which honours /etc/hosts like every
other name the program resolves. What a DNS answer can make us do is bounded (the `MAX_*`
constants), and a failed lookup only moves on to the next step: `LocateError` comes only when no
address is left, and its message names every lookup made.

This module is the entry and its types; the DNS walk itself is `records`, loaded (with
dnspython) only when a name has to be looked up, never for an IP literal.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sip2rtmp.netaddr import Address, Transport

if TYPE_CHECKING:
    import dns.asyncresolver

DEFAULT_PORTS: dict[Transport, int] = {"udp": 5060, "tcp": 5060, "tls": 5061}
"""RFC 3261 §19.1.2: 5060 for sip, 5061 for sips (TLS)."""
NAPTR_SERVICES: dict[Transport, str] = {"udp": "SIP+D2U", "tcp": "SIP+D2T", "tls": "SIPS+D2T"}
"""The NAPTR service field that offers each transport (RFC 3263 §4.1)."""
SRV_PREFIXES: dict[Transport, str] = {
    "udp": "_sip._udp.",
    "tcp": "_sip._tcp.",
    "tls": "_sips._tcp.",
}
"""The SRV name of each transport when no NAPTR record names one (RFC 3263 §4.1)."""

MAX_NAPTR_FOLLOWED = 4
"""NAPTR records of our service whose SRV names are looked up: a real domain has one per
transport, and each one followed costs a query."""
MAX_SRV_RECORDS = 16
"""SRV records used, over every SRV name, in the order they are to be tried; the rest of a
longer answer is ignored."""
MAX_TARGETS = 16
"""Addresses returned in all: enough for any real failover chain, few enough that trying each
for a transaction timeout stays bounded."""


@dataclass(frozen=True)
class ServerTarget:
    """One address to send to, and the record that led there."""

    address: Address
    """An IP literal and port, ready for a socket."""
    transport: Transport
    record: str
    """How it was found, e.g. `SRV _sip._udp.carrier.test 10 60 5060 sip1.carrier.test ->
    10.77.0.2`."""


@dataclass(frozen=True)
class Located:
    targets: tuple[ServerTarget, ...]
    """In the order to try them; never empty."""
    tried: tuple[str, ...]
    """Every lookup made and its result, e.g. `no NAPTR`, `SRV _sip._udp.carrier.test: 2
    records`."""


class LocateError(Exception):
    """No address to send to; the message is one line naming every lookup made."""

    def __init__(self, host: str, tried: Sequence[str]) -> None:
        self.host = host
        self.tried = tuple(tried)
        super().__init__(f"{host}: {', '.join(self.tried)}")


async def locate(
    host: str,
    port: int | None,
    transport: Transport,
    *,
    resolver: dns.asyncresolver.Resolver | None = None,
    lifetime: float = 5.0,
    rng: random.Random | None = None,
) -> Located:
    """The server targets for `host` (a name or an IP literal, brackets allowed) in the order
    to try them. `lifetime` bounds each lookup; `rng` orders SRV records of one priority
    (RFC 2782), a fresh `random.Random` unless given. Raises `LocateError`."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    literal = _ip_literal(bare)
    if literal is not None:
        address = (literal, port or DEFAULT_PORTS[transport])
        return Located((ServerTarget(address, transport, f"IP address {literal}"),), ())
    from sip2rtmp.net.records import Lookup  # dnspython loads only for a name to look up

    lookup = Lookup(bare, transport, resolver, lifetime, rng or random.Random())
    if port is not None:
        return await lookup.host_addresses(port)
    return await lookup.by_records()


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None
