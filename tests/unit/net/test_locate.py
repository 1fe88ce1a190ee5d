"""RFC 3263 server location: a stub resolver for every rule, hostile answers, and dnsmasq.

The stub answers NAPTR and SRV queries with real dnspython messages built from zone-file text;
addresses come from an event loop whose getaddrinfo reads a table, so every lookup the code
makes is recorded and no test depends on the machine's resolver. The last tests ask a real
dnsmasq on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest
from dns.rdtypes.IN.SRV import SRV
from hypothesis import event, given
from hypothesis import strategies as st

from sip2rtmp.net.locate import (
    MAX_NAPTR_FOLLOWED,
    MAX_SRV_RECORDS,
    MAX_TARGETS,
    Located,
    LocateError,
    ServerTarget,
    locate,
)
from sip2rtmp.net.records import order_srv
from sip2rtmp.netaddr import Transport

T = TypeVar("T")
RESOLVER = dns.asyncresolver.Resolver
"""dnspython's resolver class, kept for the tests that put a stand-in in its place."""
Records = Sequence[str] | Exception
"""What the stub answers one query with: zone-file rdata lines, or the error to raise."""


def error(kind: type[Exception], **kwargs: Any) -> Exception:
    """A dnspython exception, as its resolver raises it."""
    return kind(**kwargs)


def srv(text: str) -> SRV:
    """An SRV record from its zone-file text, e.g. `10 60 5060 sip1.carrier.test.`."""
    record = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SRV, text)
    assert isinstance(record, SRV)
    return record


TIMEOUT = error(dns.resolver.LifetimeTimeout, timeout=5.0, errors=[])
SERVFAIL = error(
    dns.resolver.NoNameservers, request=dns.message.make_query("carrier.test", "SRV"), errors=[]
)


def add(
    message: dns.message.Message, section: list[dns.rrset.RRset], rrset: dns.rrset.RRset
) -> None:
    """Put `rrset` in a section through the message's index, where dnspython looks."""
    found = message.find_rrset(section, rrset.name, rrset.rdclass, rrset.rdtype, create=True)
    for rdata in rrset:
        found.add(rdata)


class StubResolver(dns.asyncresolver.Resolver):
    """Answers from `zone`, keyed by (name, type) as in a zone file; anything else is
    NXDOMAIN. `additional` holds the A/AAAA lines sent along with an SRV answer, by name."""

    def __init__(
        self,
        zone: Mapping[tuple[str, str], Records],
        additional: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__(configure=False)
        self.zone = zone
        self.additional = additional or {}
        self.queries: list[str] = []

    async def resolve(
        self, qname: dns.name.Name | str, rdtype: Any = "A", *args: Any, **kwargs: Any
    ) -> dns.resolver.Answer:
        name = dns.name.from_text(str(qname))
        kind = dns.rdatatype.RdataType.make(rdtype)
        shown = name.to_text(omit_final_dot=True)
        self.queries.append(f"{dns.rdatatype.to_text(kind)} {shown}")
        records = self.zone.get((shown, dns.rdatatype.to_text(kind)))
        if isinstance(records, Exception):
            raise records
        if records is None:
            raise error(dns.resolver.NXDOMAIN, qnames=[name])
        response = dns.message.make_response(dns.message.make_query(name, kind))
        assert isinstance(response, dns.message.QueryMessage)
        if not records:
            raise error(dns.resolver.NoAnswer, response=response)
        add(response, response.answer, dns.rrset.from_text_list(name, 300, "IN", kind, records))
        for owner, addresses in self.additional.items():
            for line in addresses:
                rdtype_text = "AAAA" if ":" in line else "A"
                address = dns.rrset.from_text(owner, 300, "IN", rdtype_text, line)
                add(response, response.additional, address)
        return dns.resolver.Answer(name, kind, dns.rdataclass.IN, response)


class HostsLoop(asyncio.SelectorEventLoop):
    """An event loop whose getaddrinfo answers from a table, and records each name asked."""

    def __init__(self, hosts: Mapping[str, Sequence[str]]) -> None:
        super().__init__()
        self.hosts = hosts
        self.asked: list[str] = []

    async def getaddrinfo(self, host: Any, port: Any, **kwargs: Any) -> Any:
        name = str(host)
        self.asked.append(name)
        if name not in self.hosts:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family = {4: socket.AF_INET, 6: socket.AF_INET6}
        return [
            (family[ipaddress.ip_address(ip).version], kwargs.get("type", 0), 0, "", (ip, 0))
            for ip in self.hosts[name]
        ]


@dataclass
class World:
    """A DNS zone and a hosts table, and what was asked of each."""

    zone: dict[tuple[str, str], Records] = field(default_factory=dict)
    hosts: dict[str, list[str]] = field(default_factory=dict)
    additional: dict[str, list[str]] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        loop = HostsLoop(self.hosts)
        try:
            return loop.run_until_complete(coroutine)
        finally:
            self.asked += loop.asked
            loop.close()

    def locate(
        self, host: str, port: int | None = None, transport: Transport = "udp", seed: int = 1
    ) -> Located:
        resolver = StubResolver(self.zone, self.additional)
        try:
            return self.run(
                locate(host, port, transport, resolver=resolver, rng=random.Random(seed))
            )
        finally:
            self.queries += resolver.queries

    def error(self, host: str, port: int | None = None, transport: Transport = "udp") -> str:
        with pytest.raises(LocateError) as raised:
            self.locate(host, port, transport)
        assert str(raised.value) == f"{host}: {', '.join(raised.value.tried)}"
        return str(raised.value)


def addresses(located: Located) -> list[str]:
    return [
        f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        for host, port in (target.address for target in located.targets)
    ]


# ---- IP literals and explicit ports (RFC 3263 §4.2) ------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "transport", "expected"),
    [
        ("192.0.2.7", None, "udp", ("192.0.2.7", 5060)),
        ("192.0.2.7", None, "tls", ("192.0.2.7", 5061)),
        ("192.0.2.7", 5080, "tcp", ("192.0.2.7", 5080)),
        ("[2001:db8::7]", None, "udp", ("2001:db8::7", 5060)),
        ("2001:db8::7", 5070, "tls", ("2001:db8::7", 5070)),
    ],
)
def test_an_ip_literal_is_the_one_target_and_nothing_is_looked_up(
    host: str, port: int | None, transport: Transport, expected: tuple[str, int]
) -> None:
    world = World()
    located = world.locate(host, port, transport)
    assert located.targets == (ServerTarget(expected, transport, f"IP address {expected[0]}"),)
    assert located.tried == ()
    assert (world.queries, world.asked) == ([], [])


def test_a_host_with_a_port_is_only_resolved_to_its_addresses() -> None:
    world = World(
        zone={("pbx.test", "NAPTR"): ['10 50 "s" "SIP+D2U" "" _sip._udp.pbx.test.']},
        hosts={"pbx.test": ["192.0.2.1", "2001:db8::1", "192.0.2.1"]},
    )
    located = world.locate("pbx.test", 5080, "udp")
    assert world.queries == []
    assert addresses(located) == ["192.0.2.1:5080", "[2001:db8::1]:5080"]
    assert located.targets[0].record == "A/AAAA pbx.test -> 192.0.2.1"
    assert located.tried == ("A/AAAA: 192.0.2.1, 2001:db8::1",)
    assert World().error("pbx.test", 5080) == "pbx.test: no A/AAAA (Name or service not known)"


# ---- NAPTR (RFC 3263 §4.1) ------------------------------------------------------------------

NAPTRS = [
    '30 50 "s" "SIP+D2U" "" _sip._udp.third.test.',
    '10 90 "s" "SIP+D2U" "" _sip._udp.second.test.',
    '10 50 "S" "sip+d2u" "" _sip._udp.first.test.',
    '5 50 "s" "SIP+D2T" "" _sip._tcp.carrier.test.',
    '5 50 "s" "SIPS+D2T" "" _sips._tcp.carrier.test.',
    '1 1 "" "SIP+D2U" "" _sip._udp.not-final.test.',
    '1 1 "u" "SIP+D2U" "!.*!sip:x@y!" .',
]


@pytest.mark.parametrize(
    ("transport", "srv_queries"),
    [
        (
            "udp",
            [
                "SRV _sip._udp.first.test",
                "SRV _sip._udp.second.test",
                "SRV _sip._udp.third.test",
                "SRV _sip._udp.carrier.test",
            ],
        ),
        ("tcp", ["SRV _sip._tcp.carrier.test"]),
        ("tls", ["SRV _sips._tcp.carrier.test"]),
    ],
)
def test_naptr_records_of_our_service_with_flag_s_name_the_srv_names_in_order(
    transport: Transport, srv_queries: list[str]
) -> None:
    world = World(zone={("carrier.test", "NAPTR"): NAPTRS})
    world.error("carrier.test", transport=transport)
    assert world.queries == ["NAPTR carrier.test", *srv_queries]


def test_the_first_naptr_comes_before_a_better_srv_priority_of_a_later_one() -> None:
    world = World(
        zone={
            ("carrier.test", "NAPTR"): NAPTRS[:2],
            ("_sip._udp.second.test", "SRV"): ["50 0 5060 late.test."],
            ("_sip._udp.third.test", "SRV"): ["1 0 5060 early.test."],
        },
        hosts={"late.test": ["192.0.2.2"], "early.test": ["192.0.2.3"]},
    )
    located = world.locate("carrier.test")
    assert addresses(located) == ["192.0.2.2:5060", "192.0.2.3:5060"]
    assert located.tried[0] == "NAPTR SIP+D2U: _sip._udp.second.test, _sip._udp.third.test"


def test_naptr_records_for_other_services_only_lead_to_the_usual_srv_name() -> None:
    world = World(zone={("carrier.test", "NAPTR"): NAPTRS[3:5]})
    message = world.error("carrier.test", transport="udp")
    assert world.queries == ["NAPTR carrier.test", "SRV _sip._udp.carrier.test"]
    assert message == (
        "carrier.test: NAPTR: 2 records, none for SIP+D2U, no SRV _sip._udp.carrier.test, "
        "no A/AAAA (Name or service not known)"
    )


def test_a_naptr_whose_srv_name_has_no_records_falls_back_to_the_usual_srv_name() -> None:
    world = World(
        zone={
            ("carrier.test", "NAPTR"): NAPTRS[:1],
            ("_sip._udp.carrier.test", "SRV"): ["10 0 5070 sip.carrier.test."],
        },
        hosts={"sip.carrier.test": ["192.0.2.9"]},
    )
    located = world.locate("carrier.test")
    assert addresses(located) == ["192.0.2.9:5070"]
    assert world.queries[1:] == ["SRV _sip._udp.third.test", "SRV _sip._udp.carrier.test"]


def test_at_most_a_few_naptr_records_are_followed() -> None:
    many = [f'{n} 0 "s" "SIP+D2U" "" _sip._udp.n{n}.test.' for n in range(40)]
    world = World(zone={("carrier.test", "NAPTR"): many})
    world.error("carrier.test")
    queried = [query for query in world.queries if query.startswith("SRV")]
    assert queried == [f"SRV _sip._udp.n{n}.test" for n in range(MAX_NAPTR_FOLLOWED)] + [
        "SRV _sip._udp.carrier.test"
    ]


# ---- SRV (RFC 2782, RFC 3263 §4.4) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("transport", "name", "port"),
    [
        ("udp", "_sip._udp.carrier.test", 5060),
        ("tcp", "_sip._tcp.carrier.test", 5060),
        ("tls", "_sips._tcp.carrier.test", 5061),
    ],
)
def test_without_naptr_the_srv_name_comes_from_the_transport(
    transport: Transport, name: str, port: int
) -> None:
    world = World(
        zone={(name, "SRV"): [f"10 60 {port} sip1.carrier.test."]},
        hosts={"sip1.carrier.test": ["10.77.0.2"]},
    )
    located = world.locate("carrier.test", transport=transport)
    assert located.targets == (
        ServerTarget(
            ("10.77.0.2", port),
            transport,
            f"SRV {name} 10 60 {port} sip1.carrier.test -> 10.77.0.2",
        ),
    )
    assert located.tried == (
        "no NAPTR",
        f"SRV {name}: 1 record",
        "A/AAAA sip1.carrier.test: 10.77.0.2",
    )
    assert world.queries == ["NAPTR carrier.test", f"SRV {name}"]


def test_every_address_of_every_target_is_a_target_lowest_priority_first() -> None:
    world = World(
        zone={
            ("_sip._udp.carrier.test", "SRV"): [
                "20 0 5062 backup.carrier.test.",
                "10 0 5060 sip1.carrier.test.",
                "30 0 5064 gone.carrier.test.",
            ]
        },
        hosts={
            "sip1.carrier.test": ["10.77.0.2", "2001:db8::2"],
            "backup.carrier.test": ["10.77.0.3"],
        },
    )
    located = world.locate("carrier.test")
    assert addresses(located) == ["10.77.0.2:5060", "[2001:db8::2]:5060", "10.77.0.3:5062"]
    assert "no A/AAAA gone.carrier.test (Name or service not known)" in located.tried


def test_addresses_in_the_additional_section_save_a_lookup() -> None:
    world = World(
        zone={
            ("_sip._udp.carrier.test", "SRV"): [
                "10 0 5060 sip1.carrier.test.",
                "20 0 5060 sip2.carrier.test.",
            ]
        },
        additional={"sip1.carrier.test.": ["10.77.0.2", "2001:db8::2", "10.77.0.4"]},
        hosts={"sip1.carrier.test": ["192.0.2.99"], "sip2.carrier.test": ["10.77.0.3"]},
    )
    located = world.locate("carrier.test")
    assert world.asked == ["sip2.carrier.test"]
    assert addresses(located) == [
        "10.77.0.2:5060",
        "10.77.0.4:5060",
        "[2001:db8::2]:5060",
        "10.77.0.3:5060",
    ]


def test_records_within_a_priority_follow_their_weights() -> None:
    """RFC 2782: a record of weight 60 comes first six times as often as one of weight 10; one
    of weight 0 comes first only when the draw is 0."""
    records = [srv(f"10 {w} 5060 w{w}.test.") for w in (0, 10, 30, 60)]
    firsts = Counter(
        order_srv(records, random.Random(seed), MAX_SRV_RECORDS)[0].weight for seed in range(4000)
    )
    assert firsts[60] / 4000 == pytest.approx(0.6, abs=0.04)
    assert firsts[30] / 4000 == pytest.approx(0.3, abs=0.04)
    assert firsts[10] / 4000 == pytest.approx(0.1, abs=0.03)
    assert firsts[0] / 4000 < 0.02
    lasts = Counter(order_srv(records, random.Random(seed), 4)[-1].weight for seed in range(400))
    assert lasts[0] / 400 > 0.85  # beaten only by draws of 0: about 1/101 + 1/41 + 1/11


def test_a_seeded_random_gives_a_repeatable_order_and_every_record_once() -> None:
    records = [
        srv(f"{p} {w} 5060 h{i}.test.")
        for i, (p, w) in enumerate([(20, 5), (10, 1), (10, 50), (20, 0), (10, 0)])
    ]
    first = order_srv(records, random.Random(7), MAX_SRV_RECORDS)
    assert first == order_srv(records, random.Random(7), MAX_SRV_RECORDS)
    assert sorted(map(id, first)) == sorted(map(id, records))
    assert [record.priority for record in first] == [10, 10, 10, 20, 20]
    orders = {tuple(r.weight for r in order_srv(records, random.Random(s), 5)) for s in range(50)}
    assert len(orders) > 1


def test_a_target_of_dot_means_the_service_is_not_offered() -> None:
    world = World(
        zone={("_sip._udp.carrier.test", "SRV"): ["0 0 0 ."]},
        hosts={"carrier.test": ["192.0.2.1"]},
    )
    assert world.error("carrier.test") == (
        "carrier.test: no NAPTR, SRV _sip._udp.carrier.test: 1 record, service not offered "
        '(target ".")'
    )
    assert world.asked == []


def test_a_record_with_port_0_is_skipped() -> None:
    world = World(
        zone={("_sip._udp.carrier.test", "SRV"): ["1 0 0 sip1.test.", "2 0 5060 sip2.test."]},
        hosts={"sip1.test": ["192.0.2.1"], "sip2.test": ["192.0.2.2"]},
    )
    assert addresses(world.locate("carrier.test")) == ["192.0.2.2:5060"]
    assert world.asked == ["sip2.test"]


def test_srv_targets_that_do_not_resolve_fail_without_trying_the_bare_host() -> None:
    world = World(
        zone={("_sip._udp.carrier.test", "SRV"): ["10 0 5060 sip1.carrier.test."]},
        hosts={"carrier.test": ["192.0.2.1"]},
    )
    assert world.error("carrier.test") == (
        "carrier.test: no NAPTR, SRV _sip._udp.carrier.test: 1 record, "
        "no A/AAAA sip1.carrier.test (Name or service not known)"
    )
    assert world.asked == ["sip1.carrier.test"]


def test_without_srv_the_host_addresses_with_the_default_port() -> None:
    world = World(hosts={"pbx.test": ["192.0.2.1", "192.0.2.2"]})
    located = world.locate("pbx.test", transport="tls")
    assert addresses(located) == ["192.0.2.1:5061", "192.0.2.2:5061"]
    assert located.tried == (
        "no NAPTR",
        "no SRV _sips._tcp.pbx.test",
        "A/AAAA: 192.0.2.1, 192.0.2.2",
    )


def test_many_srv_records_and_addresses_are_cut_to_the_bounds() -> None:
    records = [f"{n} 0 5060 h{n}.test." for n in range(100)]
    hosts = {f"h{n}.test": [f"10.0.{n}.{i}" for i in range(1, 4)] for n in range(100)}
    world = World(zone={("_sip._udp.carrier.test", "SRV"): records}, hosts=hosts)
    located = world.locate("carrier.test")
    assert len(located.targets) == MAX_TARGETS
    assert addresses(located)[:4] == [
        "10.0.0.1:5060",
        "10.0.0.2:5060",
        "10.0.0.3:5060",
        "10.0.1.1:5060",
    ]
    assert len(world.asked) == MAX_SRV_RECORDS
    assert "SRV _sip._udp.carrier.test: 100 records, first 16 used" in located.tried


# ---- failures are "nothing there" --------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "why"),
    [
        (error(dns.resolver.NXDOMAIN), ""),
        (error(dns.resolver.NoAnswer), ""),
        (TIMEOUT, " (timed out)"),
        (SERVFAIL, " (DNS server failed)"),
        (error(dns.resolver.NoResolverConfiguration), " (no resolver configured)"),
        (error(dns.name.LabelTooLong), " (LabelTooLong)"),
    ],
    ids=["nxdomain", "noanswer", "timeout", "servfail", "no-resolv-conf", "bad-name"],
)
def test_a_failed_naptr_or_srv_lookup_moves_on_and_is_named(failure: Exception, why: str) -> None:
    world = World(
        zone={("carrier.test", "NAPTR"): failure, ("_sip._udp.carrier.test", "SRV"): failure},
        hosts={"carrier.test": ["192.0.2.1"]},
    )
    located = world.locate("carrier.test")
    assert addresses(located) == ["192.0.2.1:5060"]
    assert located.tried == (
        f"no NAPTR{why}",
        f"no SRV _sip._udp.carrier.test{why}",
        "A/AAAA: 192.0.2.1",
    )


def test_nothing_anywhere_names_every_lookup() -> None:
    world = World(hosts={})
    assert world.error("carrier.test") == (
        "carrier.test: no NAPTR, no SRV _sip._udp.carrier.test, "
        "no A/AAAA (Name or service not known)"
    )


def test_a_missing_resolv_conf_is_no_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """dnspython raises NoResolverConfiguration when /etc/resolv.conf cannot be read."""

    def no_configuration() -> dns.asyncresolver.Resolver:
        return RESOLVER(filename="/nonexistent/resolv.conf")

    monkeypatch.setattr(dns.asyncresolver, "Resolver", no_configuration)
    world = World(hosts={"pbx.test": ["192.0.2.1"]})
    located = world.run(locate("pbx.test", None, "udp"))
    assert addresses(located) == ["192.0.2.1:5060"]
    assert located.tried == (
        "no NAPTR (no resolver configured)",
        "no SRV _sip._udp.pbx.test (no resolver configured)",
        "A/AAAA: 192.0.2.1",
    )


# ---- hostile answers --------------------------------------------------------------------

POOL = ["a.test", "b.test", "c.test", "carrier.test", "_sip._udp.carrier.test"]
"""Names the generated records point at, so that they meet each other."""
names = st.sampled_from(POOL)
naptr_lines = st.builds(
    '{} {} "{}" "{}" "" {}'.format,
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.sampled_from(["s", "S", "", "u", "a", "sx"]),
    st.sampled_from(["SIP+D2U", "sip+d2u", "SIP+D2T", "SIPS+D2T", "E2U+sip", "SIP+D2U+x"]),
    st.sampled_from([".", *(f"{name}." for name in POOL)]),
)
srv_lines = st.builds(
    "{} {} {} {}".format,
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.sampled_from([".", *(f"{name}." for name in POOL)]),
)
failures = st.sampled_from(
    [
        error(dns.resolver.NXDOMAIN),
        TIMEOUT,
        SERVFAIL,
        error(dns.exception.FormError),
    ]
)
answers: st.SearchStrategy[Records] = st.one_of(
    failures, st.lists(naptr_lines, max_size=60), st.lists(srv_lines, max_size=60)
)
ips = st.ip_addresses().map(str)


@pytest.mark.fuzz
@given(
    zone=st.dictionaries(st.tuples(names, st.sampled_from(["NAPTR", "SRV"])), answers),
    hosts=st.dictionaries(names, st.lists(ips, max_size=40)),
    additional=st.dictionaries(names.map(lambda n: n + "."), st.lists(ips, max_size=40)),
    transport=st.sampled_from(["udp", "tcp", "tls"]),
    seed=st.integers(0, 2**32),
)
def test_hostile_answers_give_bounded_targets_or_locate_error(
    zone: dict[tuple[str, str], Records],
    hosts: dict[str, list[str]],
    additional: dict[str, list[str]],
    transport: Transport,
    seed: int,
) -> None:
    world = World(zone=zone, hosts=hosts, additional=additional)
    try:
        located = world.locate("carrier.test", transport=transport, seed=seed)
    except LocateError as error:
        event("LocateError")
        assert "\n" not in str(error)
    else:
        event(f"{len(located.targets)} targets")
        assert 1 <= len(located.targets) <= MAX_TARGETS
        for target in located.targets:
            ipaddress.ip_address(target.address[0])
            assert 0 <= target.address[1] <= 65535
            assert target.transport == transport
    assert len(world.queries) <= 2 + MAX_NAPTR_FOLLOWED
    assert len(world.asked) <= MAX_SRV_RECORDS + 1


# ---- a real DNS server --------------------------------------------------------------------


@dataclass(frozen=True)
class Dnsmasq:
    port: int

    def resolver(self) -> dns.asyncresolver.Resolver:
        resolver = RESOLVER(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        return resolver


DNSMASQ_RECORDS = [
    "--local=/example.test/",
    "--srv-host=_sip._udp.example.test,sip1.example.test,5070,10,60",
    "--srv-host=_sip._udp.example.test,sip2.example.test,5080,20,0",
    "--host-record=sip1.example.test,127.0.0.2",
    "--host-record=sip2.example.test,127.0.0.3",
    "--naptr-record=example.test,10,50,s,SIP+D2T,,_sip._tcp.example.test",
    "--srv-host=_sip._tcp.example.test,localhost,5090,10,0",
    "--srv-host=_sip._udp.closed.test,.",
]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_dnsmasq(records: Sequence[str]) -> Iterator[Dnsmasq]:
    """dnsmasq on a free loopback port, serving `records` (its command-line options) and
    nothing else: no upstream server, no /etc/hosts."""
    program = shutil.which("dnsmasq") or shutil.which("/usr/sbin/dnsmasq")
    if program is None:
        pytest.fail("dnsmasq is missing: scripts/bootstrap installs dnsmasq-base", pytrace=False)
    port = free_udp_port()
    command = [program, "--no-daemon", f"--port={port}", "--listen-address=127.0.0.1"]
    command += ["--bind-interfaces", "--no-resolv", "--no-hosts", "--pid-file=", *records]
    command.append("--txt-record=ready.probe,ready")
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    server = Dnsmasq(port)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                asyncio.run(server.resolver().resolve("ready.probe", "TXT", lifetime=0.5))
                break
            except dns.exception.DNSException:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"dnsmasq did not start: {process.communicate()[1]}")
        yield server
    finally:
        process.terminate()
        process.wait(5)


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[Dnsmasq]:
    with running_dnsmasq(DNSMASQ_RECORDS) as server:
        yield server


@pytest.mark.lab
def test_dnsmasq_srv_records_give_targets_in_priority_order(dnsmasq: Dnsmasq) -> None:
    located = asyncio.run(locate("example.test", None, "udp", resolver=dnsmasq.resolver()))
    assert [target.address for target in located.targets] == [
        ("127.0.0.2", 5070),
        ("127.0.0.3", 5080),
    ]
    assert located.targets[0].record == (
        "SRV _sip._udp.example.test 10 60 5070 sip1.example.test -> 127.0.0.2"
    )
    assert located.tried == (
        "NAPTR: 1 record, none for SIP+D2U",
        "SRV _sip._udp.example.test: 2 records",
    )


@pytest.mark.lab
def test_dnsmasq_naptr_leads_to_srv_whose_target_is_in_etc_hosts(dnsmasq: Dnsmasq) -> None:
    located = asyncio.run(locate("example.test", None, "tcp", resolver=dnsmasq.resolver()))
    assert located.targets[0] == ServerTarget(
        ("127.0.0.1", 5090), "tcp", "SRV _sip._tcp.example.test 10 0 5090 localhost -> 127.0.0.1"
    )
    assert located.tried[:2] == (
        "NAPTR SIP+D2T: _sip._tcp.example.test",
        "SRV _sip._tcp.example.test: 1 record",
    )


@pytest.mark.lab
def test_dnsmasq_no_records_and_a_refused_service(dnsmasq: Dnsmasq) -> None:
    with pytest.raises(LocateError) as nothing:
        asyncio.run(locate("nowhere.example.test", None, "udp", resolver=dnsmasq.resolver()))
    assert str(nothing.value).startswith(
        "nowhere.example.test: no NAPTR, no SRV _sip._udp.nowhere.example.test, no A/AAAA"
    )
    with pytest.raises(LocateError, match=r'service not offered \(target "\."\)'):
        asyncio.run(locate("closed.test", None, "udp", resolver=dnsmasq.resolver()))
