"""The DNS walk of RFC 3263 §4 for one name: NAPTR, SRV (RFC 2782 order), then addresses.

`locate.locate` hands a name here once it knows a lookup is needed; the limits, the targets
and the error are `locate`'s.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver
from dns.rdtypes.IN.NAPTR import NAPTR
from dns.rdtypes.IN.SRV import SRV

from sip2rtmp.net.locate import (
    DEFAULT_PORTS,
    MAX_NAPTR_FOLLOWED,
    MAX_SRV_RECORDS,
    MAX_TARGETS,
    NAPTR_SERVICES,
    SRV_PREFIXES,
    Located,
    LocateError,
    ServerTarget,
)
from sip2rtmp.netaddr import Transport

Name = dns.name.Name | str
"""A DNS name as dnspython takes it; a string is parsed at the query, where a malformed one
fails like any other lookup."""


def order_srv(records: Sequence[SRV], rng: random.Random, limit: int) -> list[SRV]:
    """RFC 2782's order: lowest priority first; within a priority, pick one at a time at
    random with a chance in proportion to its weight, those of weight 0 placed first so that
    they are picked only by a draw of 0 or when nothing heavier is left. At most `limit`."""
    by_priority: dict[int, list[SRV]] = {}
    for record in records:
        by_priority.setdefault(record.priority, []).append(record)
    ordered: list[SRV] = []
    for priority in sorted(by_priority):
        group = sorted(by_priority[priority], key=lambda record: record.weight != 0)
        while group and len(ordered) < limit:
            draw = rng.randint(0, sum(record.weight for record in group))
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= draw:
                    ordered.append(group.pop(index))
                    break
    return ordered


def _shown(name: Name) -> str:
    """A name as messages show it: no final dot; dnspython escapes anything unprintable."""
    if isinstance(name, dns.name.Name):
        return name.to_text(omit_final_dot=True)
    return name.removesuffix(".")


def _why(error: Exception) -> str:
    """Why a lookup found nothing, in a few words; empty when the name has no such record."""
    if isinstance(error, dns.resolver.NXDOMAIN | dns.resolver.NoAnswer):
        return ""
    if isinstance(error, dns.exception.Timeout | TimeoutError):
        return " (timed out)"
    if isinstance(error, dns.resolver.NoNameservers):
        return " (DNS server failed)"
    if isinstance(error, dns.resolver.NoResolverConfiguration):
        return " (no resolver configured)"
    if isinstance(error, OSError) and error.strerror:
        return f" ({error.strerror})"
    return f" ({type(error).__name__})"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _additional_addresses(response: dns.message.Message) -> dict[dns.name.Name, list[str]]:
    """A and AAAA records sent along with an SRV answer (RFC 2782, "Additional data"), by
    owner name, A before AAAA, at most `MAX_TARGETS` per name."""
    found: dict[dns.name.Name, dict[str, None]] = {}
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        for rrset in response.additional:
            if rrset.rdtype == rdtype:
                addresses = found.setdefault(rrset.name, {})
                for record in rrset:
                    if len(addresses) < MAX_TARGETS:
                        addresses[str(record.address)] = None
    return {name: list(addresses) for name, addresses in found.items()}


class Lookup:
    """One location; `tried` grows with each lookup, in order."""

    def __init__(
        self,
        host: str,
        transport: Transport,
        resolver: dns.asyncresolver.Resolver | None,
        lifetime: float,
        rng: random.Random,
    ) -> None:
        self.host = host
        self.transport = transport
        self.lifetime = lifetime
        self.rng = rng
        self.tried: list[str] = []
        self._resolver = resolver

    async def by_records(self) -> Located:
        """§4.1 and §4.2: NAPTR, then SRV, then the host's own addresses."""
        srv_names = await self._naptr_srv_names()
        conventional = SRV_PREFIXES[self.transport] + self.host
        chosen = await self._srv_records(srv_names)
        if not chosen and not any(_shown(name) == _shown(conventional) for name in srv_names):
            chosen = await self._srv_records([conventional])
        if not chosen:
            return await self.host_addresses(DEFAULT_PORTS[self.transport])
        return await self._srv_targets(chosen)

    async def _naptr_srv_names(self) -> list[Name]:
        """The SRV names of the host's NAPTR records that offer our transport with flag "s",
        best first (order, then preference: RFC 3403 §4.1)."""
        answer = await self._query(self.host, dns.rdatatype.NAPTR, "NAPTR")
        if answer is None:
            return []
        service = NAPTR_SERVICES[self.transport]
        records = [record for record in answer if isinstance(record, NAPTR)]
        usable = sorted(
            (
                record
                for record in records
                if record.flags.lower() == b"s"
                and record.service.upper() == service.encode()
                and record.replacement != dns.name.root
            ),
            key=lambda record: (record.order, record.preference),
        )
        names: list[Name] = []
        for record in usable:
            if record.replacement not in names and len(names) < MAX_NAPTR_FOLLOWED:
                names.append(record.replacement)
        if names:
            self.tried.append(f"NAPTR {service}: {', '.join(map(_shown, names))}")
        else:
            self.tried.append(f"NAPTR: {_count(len(records), 'record')}, none for {service}")
        return names

    async def _srv_records(
        self, names: list[Name]
    ) -> list[tuple[Name, SRV, dict[dns.name.Name, list[str]]]]:
        """Each name's SRV records in RFC 2782's order, the names in the order given (NAPTR
        order comes before SRV priority), with the additional section's addresses. A name
        whose only record has the target "." does not offer the service: `LocateError`."""
        chosen: list[tuple[Name, SRV, dict[dns.name.Name, list[str]]]] = []
        for name in names:
            answer = await self._query(name, dns.rdatatype.SRV, f"SRV {_shown(name)}")
            if answer is None:
                continue
            records = [record for record in answer if isinstance(record, SRV)]
            # Port 0 reaches nothing: such a record is skipped like a target that does not
            # resolve.
            offered = [r for r in records if r.target != dns.name.root and r.port != 0]
            room = MAX_SRV_RECORDS - len(chosen)
            note = f", first {room} used" if len(offered) > room else ""
            self.tried.append(f"SRV {_shown(name)}: {_count(len(records), 'record')}{note}")
            if records and all(record.target == dns.name.root for record in records):
                self.tried.append('service not offered (target ".")')
                raise LocateError(self.host, self.tried)
            additional = _additional_addresses(answer.response)
            chosen += [(name, srv, additional) for srv in order_srv(offered, self.rng, room)]
        return chosen

    async def _srv_targets(
        self, chosen: list[tuple[Name, SRV, dict[dns.name.Name, list[str]]]]
    ) -> Located:
        """Every address of every chosen SRV target, in order (§4.4)."""
        missing = list(
            dict.fromkeys(
                srv.target for _, srv, additional in chosen if srv.target not in additional
            )
        )
        looked_up = await asyncio.gather(*(self._addresses(_shown(name)) for name in missing))
        resolved = dict(zip(missing, looked_up, strict=True))
        targets: list[ServerTarget] = []
        for name, srv, additional in chosen:
            target = _shown(srv.target)
            line = f"SRV {_shown(name)} {srv.priority} {srv.weight} {srv.port} {target}"
            for ip in additional.get(srv.target) or resolved.get(srv.target, []):
                if len(targets) < MAX_TARGETS:
                    targets.append(ServerTarget((ip, srv.port), self.transport, f"{line} -> {ip}"))
        if not targets:
            raise LocateError(self.host, self.tried)
        return Located(tuple(targets), tuple(self.tried))

    async def host_addresses(self, port: int) -> Located:
        """§4.2: the host's own addresses, with `port`."""
        addresses = await self._addresses(self.host, own=True)
        if not addresses:
            raise LocateError(self.host, self.tried)
        targets = tuple(
            ServerTarget((ip, port), self.transport, f"A/AAAA {self.host} -> {ip}")
            for ip in addresses
        )
        return Located(targets, tuple(self.tried))

    async def _addresses(self, name: str, *, own: bool = False) -> list[str]:
        """The addresses of `name` through getaddrinfo (RFC 6724 order, /etc/hosts first),
        duplicates removed, at most `MAX_TARGETS`."""
        kind = socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM
        what = "A/AAAA" if own else f"A/AAAA {name}"
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(name, None, type=kind), self.lifetime
            )
        except (OSError, TimeoutError, UnicodeError, ValueError) as error:
            self.tried.append(f"no {what}{_why(error)}")
            return []
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))[:MAX_TARGETS]
        self.tried.append(f"{what}: {', '.join(addresses)}")
        return addresses

    async def _query(
        self, name: Name, rdtype: dns.rdatatype.RdataType, what: str
    ) -> dns.resolver.Answer | None:
        """A NAPTR or SRV answer; None, with `no <what> (why)` in `tried`, for anything else,
        a missing resolver configuration included."""
        try:
            if self._resolver is None:
                self._resolver = dns.asyncresolver.Resolver()
            return await self._resolver.resolve(name, rdtype, lifetime=self.lifetime)
        except dns.exception.DNSException as error:
            self.tried.append(f"no {what}{_why(error)}")
            return None
