"""`sip2rtmp check` reports where the SIP server was found and which address it saw us at.

The report's lines are checked on values built by hand; the last test runs the command against
a real dnsmasq serving SRV records that lead to a stub SIP server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import dns.asyncresolver
import pytest

from sip2rtmp.cli.check import Result, check_location, check_public_address
from sip2rtmp.cli.outcomes import ExitCode
from sip2rtmp.net.locate import Located, ServerTarget
from tests.unit.cli.sip_stub import OptionsResponder, invoke_check
from tests.unit.cli.test_check import closed_udp_port
from tests.unit.net.test_locate import running_dnsmasq
from tests.unit.relay.test_core import settings

SRV_NAME = "_sip._udp.carrier.test"
LOCATED = Located(
    targets=(
        ServerTarget(("10.77.0.2", 5060), "udp", f"SRV {SRV_NAME} 10 60 5060 sip1 -> 10.77.0.2"),
        ServerTarget(("2001:db8::3", 5062), "udp", f"SRV {SRV_NAME} 20 0 5062 sip2 -> 2001:db8::3"),
    ),
    tried=("no NAPTR", f"SRV {SRV_NAME}: 2 records", "A/AAAA sip2: 2001:db8::3"),
)


@pytest.fixture
def responder() -> Iterator[OptionsResponder]:
    server = OptionsResponder()
    yield server
    server.close()


def test_the_lookups_and_each_target_in_order_the_one_that_answered_marked() -> None:
    results = check_location(settings(sip_domain="carrier.test"), LOCATED, ("2001:db8::3", 5062))
    assert [result.line() for result in results] == [
        "✓ SIP server location 127.0.0.1:5060: no NAPTR, SRV _sip._udp.carrier.test: 2 records, "
        "A/AAAA sip2: 2001:db8::3",
        "✓ SIP server target udp:10.77.0.2:5060: 1 of 2: SRV _sip._udp.carrier.test 10 60 5060 "
        "sip1 -> 10.77.0.2",
        "✓ SIP server target udp:[2001:db8::3]:5062: 2 of 2: SRV _sip._udp.carrier.test 20 0 "
        "5062 sip2 -> 2001:db8::3 (answered the OPTIONS)",
    ]
    location = results[0].record()
    assert location["tried"] == list(LOCATED.tried)
    assert location["targets"][1] == {
        "address": "[2001:db8::3]:5062",
        "transport": "udp",
        "record": LOCATED.targets[1].record,
    }
    assert [(r.record()["order"], r.record()["answered"]) for r in results[1:]] == [
        (1, False),
        (2, True),
    ]


def test_no_location_adds_no_line() -> None:
    assert check_location(settings(), None, None) == []


@pytest.mark.parametrize(
    ("changes", "public", "result", "detail", "source"),
    [
        (
            {},
            ("203.0.113.7", 40000),
            Result.PASS,
            "the server saw 203.0.113.7:40000 (Via received/rport): behind a NAT",
            "received",
        ),
        (
            {},
            None,
            Result.PASS,
            "same as local (no other address in the answer's Via received/rport)",
            "local",
        ),
        (
            {"public_address": "198.51.100.4"},
            ("198.51.100.4", 5070),
            Result.PASS,
            "198.51.100.4:5070, as --public-address says",
            "configured",
        ),
        (
            {"nat": "off"},
            ("203.0.113.7", 40000),
            Result.SKIP,
            "--nat off: Contact and the SDP offer carry the local address",
            None,
        ),
    ],
    ids=["nat", "same", "configured", "nat-off"],
)
def test_the_public_address_and_where_it_came_from(
    changes: dict[str, object],
    public: tuple[str, int] | None,
    result: Result,
    detail: str,
    source: str | None,
) -> None:
    reported = check_public_address(settings(**changes), ("10.0.0.5", 5070), public)
    assert (reported.target, reported.result, reported.detail) == (
        "udp:10.0.0.5:5070",
        result,
        detail,
    )
    assert reported.record().get("source") == source
    if source is not None:
        assert reported.record()["local"] == "10.0.0.5:5070"
        assert reported.record()["address"] == "{}:{}".format(*(public or ("10.0.0.5", 5070)))


@pytest.mark.lab
def test_check_lists_the_srv_targets_from_a_real_dns_server(
    responder: OptionsResponder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A domain with SRV records only: the first target answers the OPTIONS, the second is
    listed in its place in the order."""
    spare = closed_udp_port()
    records = [
        "--local=/carrier.test/",
        f"--srv-host={SRV_NAME},sip1.carrier.test,{responder.port},10,0",
        f"--srv-host={SRV_NAME},sip2.carrier.test,{spare},20,0",
        "--host-record=sip1.carrier.test,127.0.0.1",
        "--host-record=sip2.carrier.test,127.0.0.1",
    ]
    with running_dnsmasq(records) as dnsmasq:
        monkeypatch.setattr(dns.asyncresolver, "Resolver", dnsmasq.resolver)
        code, stdout = invoke_check(
            "--sip-domain", "carrier.test", "--no-register",
            "--rtmp-url", "rtmp://127.0.0.1:1/live", "--json",
        )  # fmt: skip
    records_out = [json.loads(line) for line in stdout.splitlines()]
    assert code == ExitCode.RTMP_FAILED
    assert responder.requests == [("OPTIONS", None)]
    by_check = {record.get("check"): record for record in records_out}
    assert by_check["SIP server"]["result"] == "pass"
    location = by_check["SIP server location"]
    assert location["target"] == "carrier.test"
    assert location["tried"] == ["no NAPTR", f"SRV {SRV_NAME}: 2 records"]
    assert [target["address"] for target in location["targets"]] == [
        f"127.0.0.1:{responder.port}",
        f"127.0.0.1:{spare}",
    ]
    assert location["targets"][0]["record"] == (
        f"SRV {SRV_NAME} 10 0 {responder.port} sip1.carrier.test -> 127.0.0.1"
    )
    targets = [record for record in records_out if record.get("check") == "SIP server target"]
    assert [(t["order"], t["answered"]) for t in targets] == [(1, True), (2, False)]
