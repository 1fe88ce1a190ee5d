"""Being reachable through NAT and finding a server that answers: the user agent learns its
public address from every response (RFC 3581), keeps the path open (RFC 5626 §4.4), moves to
the next server target on silence, a transport error or 503 (RFC 3263 §4.3), follows 3xx
redirects, and survives a dropped TCP connection with its call. Driven with a fake clock."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from sip2rtmp.netaddr import Address
from sip2rtmp.outcomes import Rejected, Unanswered
from sip2rtmp.sip.context import SILENT_TARGET_TIMEOUT
from sip2rtmp.sip.events import (
    CallAnswered,
    CallAttemptFailed,
    CallEnded,
    ConnectionRestored,
    OptionsAnswered,
    OptionsFailed,
    PublicAddressLearned,
    Registered,
    RegistrationFailed,
    RegistrationRetrying,
    ServerFailedOver,
)
from sip2rtmp.sip.invite import MAX_REDIRECTS
from sip2rtmp.sip.keepalive import PING
from sip2rtmp.sip.message import Request, parse_message
from sip2rtmp.sip.transaction import TIMEOUT
from sip2rtmp.sip.useragent import UserAgent, UserAgentConfig
from tests.unit.sip.exchange import ANSWER, CONFIG, OFFER, SERVER, reply
from tests.unit.sip.exchange import agent_events as events

SECOND: Address = ("192.0.2.11", 5060)
THIRD: Address = ("192.0.2.12", 5060)
PUBLIC = "203.0.113.7"


def agent(config: UserAgentConfig = CONFIG, servers: list[Address] | None = None) -> UserAgent:
    counter = itertools.count()
    return UserAgent(config, servers or [SERVER], token_factory=lambda: f"tok{next(counter)}")


def sent(ua: UserAgent, now: float = 0.0) -> list[tuple[bytes, Address]]:
    return ua.data_to_send(now)


def requests(ua: UserAgent, to: Address = SERVER) -> list[Request]:
    """The requests queued since the last call, every one addressed to `to`."""
    found = []
    for data, addr in sent(ua):
        assert addr == to, f"sent to {addr}, expected {to}"
        message = parse_message(data)
        assert isinstance(message, Request)
        found.append(message)
    return found


def natted(request: Request, status: int, reason: str, **kwargs: object) -> bytes:
    """A response from a server that saw us at PUBLIC:40001 (RFC 3581 §4)."""
    data = reply(request, status, reason, **kwargs)  # type: ignore[arg-type]
    text = data.decode().replace(";rport;", ";rport=40001;received=" + PUBLIC + ";", 1)
    return text.replace(f"received={CONFIG.local_host}", f"received={PUBLIC}", 1).encode()


def registered(ua: UserAgent, now: float = 0.0) -> Request:
    ua.register(now)
    [register] = requests(ua)
    ua.receive_data(reply(register, 200, "OK", [("Expires", "600")], to_tag="r"), SERVER, now)
    assert [e for e in events(ua) if isinstance(e, Registered)] == [Registered(600)]
    return register


def established(ua: UserAgent, now: float = 0.0) -> Request:
    ua.invite(now, "sip:tone@lab.test", OFFER)
    [invite] = requests(ua)
    extra = [("Contact", "<sip:tone@192.0.2.20>"), ("Content-Type", "application/sdp")]
    ua.receive_data(reply(invite, 200, "OK", extra, to_tag="t", body=ANSWER), SERVER, now)
    [ack] = requests(ua)
    assert ack.method == "ACK"
    assert CallAnswered(ANSWER) in events(ua)
    return invite


# ---- the public address (RFC 3581) --------------------------------------------------------


def test_the_address_the_server_saw_becomes_contact_and_the_binding_is_refreshed_with_it() -> None:
    ua = agent()
    ua.register(0.0)
    [first] = requests(ua)
    assert "<sip:relay@192.0.2.1:5062>" in (first.headers.get("Contact") or "")
    ua.receive_data(natted(first, 200, "OK", to_tag="r"), SERVER, 0.1)
    assert events(ua)[:2] == [PublicAddressLearned((PUBLIC, 40001), "received"), Registered(600)]
    assert ua.public_address == (PUBLIC, 40001)
    assert ua.get_timer() == 0.1, "the registrar must learn the public Contact at once"
    ua.handle_timer(0.1)
    [update] = requests(ua)
    assert f"<sip:relay@{PUBLIC}:40001>" in (update.headers.get("Contact") or "")
    assert update.call_id == first.call_id and update.cseq[0] == first.cseq[0] + 1


def test_an_invite_answer_teaches_the_address_on_tcp_too_without_registering() -> None:
    ua = agent(replace(CONFIG, transport="tcp"))
    ua.invite(0.0, "sip:tone@lab.test", OFFER)
    [invite] = requests(ua)
    ua.receive_data(natted(invite, 100, "Trying"), SERVER, 0.1)
    assert PublicAddressLearned((PUBLIC, 40001), "received") in events(ua)
    ua.receive_data(natted(invite, 407, "Proxy Authentication Required", to_tag="x"), SERVER, 0.2)
    for message in requests(ua):
        if message.method == "INVITE":
            assert f"sip:relay@{PUBLIC}:40001;transport=tcp" in (
                message.headers.get("Contact") or ""
            )


def test_nat_off_keeps_the_local_contact() -> None:
    ua = agent(replace(CONFIG, learn_address=False))
    ua.register(0.0)
    [first] = requests(ua)
    ua.receive_data(natted(first, 200, "OK", to_tag="r"), SERVER, 0.1)
    assert events(ua) == [Registered(600)]
    assert ua.public_address is None


def test_a_configured_public_address_is_in_contact_and_via_from_the_start() -> None:
    ua = agent(replace(CONFIG, public_host=PUBLIC))
    ua.register(0.0)
    [first] = requests(ua)
    assert f"<sip:relay@{PUBLIC}:5062>" in (first.headers.get("Contact") or "")
    assert first.top_via.host == PUBLIC and first.top_via.port == 5062
    ua.receive_data(natted(first, 200, "OK", to_tag="r"), SERVER, 0.1)
    assert events(ua) == [Registered(600)], "what the server saw does not override it"


# ---- keep-alives (RFC 5626 §4.4) ------------------------------------------------------------


def test_udp_keepalive_is_a_silent_options_every_interval_while_registered() -> None:
    ua = agent(replace(CONFIG, keepalive=25.0))
    ua.connection_made(0.0, (CONFIG.local_host, CONFIG.local_port))
    assert ua.get_timer() == 25.0
    ua.handle_timer(25.0)
    assert sent(ua) == [], "nothing to keep open before a binding or a call"
    registered(ua, 26.0)
    ua.handle_timer(50.0)
    [ping] = requests(ua)
    assert ping.method == "OPTIONS" and ping.uri == "sip:lab.test"
    ua.receive_data(reply(ping, 200, "OK", to_tag="k"), SERVER, 50.1)
    assert not any(isinstance(e, OptionsAnswered | OptionsFailed) for e in events(ua))
    assert run_until(ua, 75.0) == [75.0]


def run_until(ua: UserAgent, end: float) -> list[float]:
    """Fire every timer up to `end`; the instants at which something was sent."""
    times = []
    while (deadline := ua.get_timer()) is not None and deadline <= end:
        ua.handle_timer(deadline)
        if sent(ua, deadline):
            times.append(deadline)
    return times


def test_tcp_keepalive_is_a_double_crlf() -> None:
    ua = agent(replace(CONFIG, transport="tcp", keepalive=25.0))
    ua.connection_made(0.0, (CONFIG.local_host, CONFIG.local_port))
    established(ua)
    ua.handle_timer(25.0)
    assert sent(ua) == [(PING, SERVER)]


def test_no_keepalive_when_turned_off() -> None:
    ua = agent(replace(CONFIG, keepalive=None))
    ua.connection_made(0.0, (CONFIG.local_host, CONFIG.local_port))
    registered(ua)
    assert run_until(ua, 299.0) == []
    assert ua.get_timer() == 300.0, "only the registration refresh is due"


# ---- server location: the next target (RFC 3263 §4.3) -------------------------------------


def test_a_silent_target_is_given_up_for_the_next_one() -> None:
    ua = agent(servers=[SERVER, SECOND])
    ua.invite(0.0, "sip:tone@lab.test", OFFER)
    [invite] = requests(ua)
    assert ua.get_timer() == 0.5, "retransmissions first"
    while (deadline := ua.get_timer()) is not None and deadline < SILENT_TARGET_TIMEOUT:
        ua.handle_timer(deadline)
        assert {addr for _, addr in sent(ua)} <= {SERVER}
    assert ua.get_timer() == SILENT_TARGET_TIMEOUT
    ua.handle_timer(SILENT_TARGET_TIMEOUT)
    [again] = requests(ua, to=SECOND)
    assert events(ua) == [ServerFailedOver(SERVER, SECOND, "no answer")]
    assert again.call_id == invite.call_id and again.top_via.branch != invite.top_via.branch
    assert ua.server == SECOND
    ua.receive_data(reply(again, 180, "Ringing", to_tag="t"), SECOND, 6.0)
    ua.receive_data(reply(invite, 180, "Ringing", to_tag="t"), SERVER, 6.1)
    assert [e.status for e in events(ua) if hasattr(e, "status")] == [180]


def test_the_last_target_keeps_the_whole_transaction_timeout() -> None:
    ua = agent(servers=[SERVER, SECOND])
    ua.register(0.0)
    requests(ua)
    ua.handle_timer(SILENT_TARGET_TIMEOUT)
    requests(ua, to=SECOND)
    events(ua)
    assert ua.get_timer() != SILENT_TARGET_TIMEOUT * 2, "no third target to move on to"
    run_until(ua, SILENT_TARGET_TIMEOUT + TIMEOUT - 0.01)
    assert events(ua) == []
    run_until(ua, SILENT_TARGET_TIMEOUT + TIMEOUT)
    [failed] = events(ua)
    assert failed == RegistrationFailed(Unanswered("REGISTER", "lab.test", TIMEOUT))


def test_503_with_retry_after_moves_on_at_once_and_rests_the_target() -> None:
    ua = agent(servers=[SERVER, SECOND, THIRD])
    ua.invite(0.0, "sip:tone@lab.test", OFFER)
    [invite] = requests(ua)
    unavailable = reply(invite, 503, "Service Unavailable", [("Retry-After", "120")], to_tag="u")
    ua.receive_data(unavailable, SERVER, 0.1)
    out = sent(ua)
    assert [addr for _, addr in out] == [SERVER, SECOND], "ACK to the first, INVITE to the next"
    assert events(ua) == [ServerFailedOver(SERVER, SECOND, "503 Service Unavailable")]
    again = parse_message(out[1][0])
    assert isinstance(again, Request)
    ua.receive_data(reply(again, 503, "Service Unavailable", to_tag="v"), SECOND, 0.2)
    assert [addr for _, addr in sent(ua)] == [SECOND, THIRD]
    assert events(ua) == [ServerFailedOver(SECOND, THIRD, "503 Service Unavailable")]


def test_503_from_the_only_target_is_the_outcome() -> None:
    ua = agent()
    ua.invite(0.0, "sip:tone@lab.test", OFFER)
    [invite] = requests(ua)
    ua.receive_data(reply(invite, 503, "Service Unavailable", to_tag="u"), SERVER, 0.1)
    [failed] = events(ua)
    assert isinstance(failed, CallAttemptFailed)
    assert isinstance(failed.outcome, Rejected) and failed.outcome.status == 503


def test_a_transport_error_before_any_answer_moves_on() -> None:
    ua = agent(replace(CONFIG, transport="tcp"), servers=[SERVER, SECOND])
    ua.register(0.0)
    requests(ua)
    ua.connection_lost(0.2, "Connection refused")
    [register] = requests(ua, to=SECOND)
    assert register.method == "REGISTER"
    assert events(ua) == [ServerFailedOver(SERVER, SECOND, "Connection refused")]


def test_a_target_that_answered_is_kept_for_the_whole_request() -> None:
    ua = agent(servers=[SERVER, SECOND])
    ua.invite(0.0, "sip:tone@lab.test", OFFER)
    [invite] = requests(ua)
    ua.receive_data(reply(invite, 100, "Trying"), SERVER, 0.1)
    ua.handle_timer(SILENT_TARGET_TIMEOUT + 1)
    assert sent(ua) == [] and ua.server == SERVER


# ---- redirects (RFC 3261 §8.1.3.4) --------------------------------------------------------


def test_a_redirect_is_followed_to_its_preferred_contact() -> None:
    ua = agent()
    ua.invite(0.0, "sip:tone@lab.test", OFFER)
    [invite] = requests(ua)
    contacts = [("Contact", "<sip:a@192.0.2.30>;q=0.2, <sip:b@192.0.2.31>;q=0.9")]
    ua.receive_data(reply(invite, 302, "Moved Temporarily", contacts, to_tag="m"), SERVER, 0.1)
    ack, again = requests(ua)
    assert ack.method == "ACK" and again.method == "INVITE"
    assert again.uri == "sip:b@192.0.2.31" and again.call_id == invite.call_id
    assert again.cseq[0] == invite.cseq[0] + 1


def test_redirects_are_bounded() -> None:
    ua = agent()
    ua.invite(0.0, "sip:tone@lab.test", OFFER)
    [invite] = requests(ua)
    for hop in range(MAX_REDIRECTS + 1):
        contact = [("Contact", f"<sip:hop{hop}@192.0.2.30>")]
        ua.receive_data(reply(invite, 302, "Moved", contact, to_tag=f"m{hop}"), SERVER, 0.1)
        invites = [r for r in requests(ua) if r.method == "INVITE"]
        if hop < MAX_REDIRECTS:
            [invite] = invites
        else:
            assert invites == []
    [failed] = events(ua)
    assert isinstance(failed, CallAttemptFailed)
    assert isinstance(failed.outcome, Rejected) and failed.outcome.status == 302


# ---- a dropped TCP connection (RFC 5626 §4.4.1) --------------------------------------------


def test_a_dropped_connection_is_reopened_and_the_call_goes_on() -> None:
    ua = agent(replace(CONFIG, transport="tcp", keepalive=25.0))
    ua.connection_made(0.0, (CONFIG.local_host, CONFIG.local_port))
    registered(ua)
    established(ua, 1.0)
    ua.connection_lost(10.0, "Connection reset by peer")
    assert not any(isinstance(e, CallEnded) for e in events(ua))
    assert ua.in_call and ua.get_timer() == 10.0
    ua.handle_timer(10.0)
    [refresh] = requests(ua)
    assert refresh.method == "REGISTER", "the registrar learns the new flow at once"
    ua.connection_lost(10.1, "Connection refused")
    assert ua.get_timer() == 11.1, "then again after 1 s, doubling"
    ua.handle_timer(11.1)
    requests(ua)
    ua.connection_lost(11.2, "Connection refused")
    assert ua.get_timer() == pytest.approx(13.2)
    ua.handle_timer(13.2)
    [register] = requests(ua)
    ua.connection_made(13.3, (CONFIG.local_host, 40404))
    assert ConnectionRestored(SERVER) in events(ua)
    ua.receive_data(reply(register, 200, "OK", [("Expires", "600")], to_tag="r"), SERVER, 13.4)
    assert ua.in_call


def test_a_dropped_connection_without_registration_reopens_with_a_ping() -> None:
    ua = agent(replace(CONFIG, transport="tcp"))
    established(ua)
    ua.connection_lost(5.0, "Connection reset by peer")
    ua.handle_timer(5.0)
    assert sent(ua) == [(PING, SERVER)]


def test_a_failed_refresh_over_a_dropped_connection_is_retried() -> None:
    ua = agent(replace(CONFIG, transport="tcp"))
    register = registered(ua)
    ua.handle_timer(300.0)
    [refresh] = requests(ua)
    assert refresh.call_id == register.call_id
    ua.connection_lost(300.1, "Connection reset by peer")
    [retrying] = events(ua)
    assert isinstance(retrying, RegistrationRetrying) and retrying.retry_in == 1.0


def test_an_unanswered_first_request_still_fails() -> None:
    ua = agent()
    ua.options(0.0)
    requests(ua)
    while (deadline := ua.get_timer()) is not None:
        ua.handle_timer(deadline)
        sent(ua)
    assert events(ua) == [OptionsFailed(Unanswered("OPTIONS", "lab.test", TIMEOUT))]
