"""The relay core behind a NAT: the offer's address and ports as the shell found them, and what
the SIP flow goes through (the address the server saw, a failover, a registration refresh
retried, a connection reopened), each reported and none of them touching the call."""

from __future__ import annotations

import pytest

from sip2rtmp.nat.policy import LegPorts, OfferAddress
from sip2rtmp.outcomes import Rejected, Unanswered
from sip2rtmp.relay import actions
from sip2rtmp.relay.core import Phase
from sip2rtmp.relay.events import (
    Failed,
    Finished,
    NatAddress,
    Progress,
    Registered,
    Registering,
    RegistrationRetry,
    RelayEvent,
    SipReconnected,
    SipServerChanged,
    Trying,
)
from sip2rtmp.sip import events as sip
from tests.unit.relay.test_core import Run, established, open_media, start

STUN_OFFER = OfferAddress("203.0.113.5", LegPorts(40000, 40007), LegPorts(40010), "stun")
"""A NAT that maps ports to other numbers, the audio leg's RTCP not next to its RTP."""


def sections(sdp: bytes) -> list[list[str]]:
    """The offer's lines, the session's first, then each media section's."""
    found: list[list[str]] = [[]]
    for line in sdp.decode().split("\r\n"):
        if line.startswith("m="):
            found.append([])
        found[-1].append(line)
    return found


def test_the_offer_advertises_the_public_address_and_ports_it_is_given() -> None:
    """c=/o= carry the public host (RFC 4566 §5.2, §5.7), m= the mapped RTP ports, and a leg
    whose RTCP port is not RTP + 1 says so with a=rtcp (RFC 3605); the event names the
    address and its source before the INVITE leaves."""
    run = start(register=False)
    assert run.take()[0] == [actions.OpenMedia()]
    run.core.media_opened(STUN_OFFER)
    did, said = run.take()
    assert said == [NatAddress("media", "203.0.113.5", "stun"), Trying("sip:tone@lab.example")]
    (invite,) = did
    assert isinstance(invite, actions.Invite)
    session, audio, video = sections(invite.sdp)
    assert "c=IN IP4 203.0.113.5" in session
    assert [line.split()[-1] for line in session if line.startswith("o=")] == ["203.0.113.5"]
    assert audio[0].startswith("m=audio 40000 ") and "a=rtcp:40007" in audio
    assert video[0].startswith("m=video 40010 ")
    assert not [line for line in video if line.startswith("a=rtcp:")]


def test_a_local_offer_names_its_source_too() -> None:
    run = start(register=False, video=False)
    open_media(run, None)
    assert run.take()[1][0] == NatAddress("media", "192.0.2.1", "local")


@pytest.mark.parametrize(
    ("learned", "shown"),
    [
        (sip.PublicAddressLearned(("198.51.100.4", 5062), "received"), "198.51.100.4:5062"),
        (sip.PublicAddressLearned(("2001:db8::4", 5060), "configured"), "[2001:db8::4]:5060"),
    ],
)
def test_the_address_the_server_saw_is_reported_in_any_phase(
    learned: sip.PublicAddressLearned, shown: str
) -> None:
    for run in (start(), established()):
        phase = run.core.phase
        run.take()
        run.sip(learned)
        assert run.take() == ([], [NatAddress("sip", shown, learned.source)])
        assert run.core.phase is phase


def connection_events(run: Run) -> list[RelayEvent]:
    """A failover, a refresh failing twice then succeeding, a connection reopened; then one
    more refresh."""
    unanswered = Unanswered("REGISTER", "198.51.100.9:5060", 32.0)
    rejected = Rejected("REGISTER", 503, "Service Unavailable", "198.51.100.10:5060")
    run.sip(
        sip.ServerFailedOver(("198.51.100.9", 5060), ("198.51.100.10", 5060), "503 Retry-After")
    )
    run.sip(sip.RegistrationRetrying(unanswered, 30.0))
    run.sip(sip.RegistrationRetrying(rejected, 60.0))
    run.sip(sip.Registered(300))
    run.sip(sip.ConnectionRestored(("198.51.100.10", 5060)))
    run.sip(sip.Registered(300))
    did, said = run.take()
    assert did == []
    return said


def test_what_the_sip_flow_goes_through_is_reported_and_leaves_the_call_up() -> None:
    """Each once, in order; a refresh that worked after retries says `registered` again, an
    ordinary refresh says nothing; the call stays in its phase with no status event."""
    run = established()
    said = connection_events(run)
    assert said == [
        SipServerChanged("198.51.100.9:5060", "198.51.100.10:5060", "503 Retry-After"),
        RegistrationRetry(Unanswered("REGISTER", "198.51.100.9:5060", 32.0), 30.0),
        RegistrationRetry(
            Rejected("REGISTER", 503, "Service Unavailable", "198.51.100.10:5060"), 60.0
        ),
        Registered(300),
        SipReconnected("198.51.100.10:5060"),
    ]
    assert run.core.phase is Phase.RELAYING
    assert not [e for e in said if isinstance(e, Trying | Progress | Finished | Failed)]
    run.advance(1.0)
    assert actions.Hangup() not in run.take()[0]


def test_a_retry_while_the_first_registration_runs_calls_once_it_succeeds() -> None:
    """The first REGISTER retried: `registered` once, then the call; the next refresh is
    silent."""
    run = start()
    run.take()
    run.sip(sip.RegistrationRetrying(Unanswered("REGISTER", "127.0.0.1", 32.0), 5.0))
    run.sip(sip.Registered(600))
    did, said = run.take()
    assert did == [actions.OpenMedia()]
    assert [e for e in said if isinstance(e, Registered)] == [Registered(600)]
    run.sip(sip.Registered(600))
    assert run.take() == ([], [])


def test_a_server_found_by_dns_is_announced_as_configured_without_a_port() -> None:
    """A domain given without a port is located by RFC 3263: `registering` names it as given."""
    run = start(sip_outbound_proxy=None)
    assert run.take()[1] == [Registering("lab.example", "udp")]
    run = start(sip_outbound_proxy=None, sip_port=5070)
    assert run.take()[1] == [Registering("lab.example:5070", "udp")]
