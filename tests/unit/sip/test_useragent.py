"""Scripted exchanges fed to the sans-I/O user agent byte for byte, with a fake clock."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest

from sip2rtmp.errors import (
    AuthenticationFailed,
    BusyOrDeclined,
    CalleeNotFound,
    CallFailed,
    NoAnswer,
    SipUnreachable,
)
from sip2rtmp.sip.auth import Credentials, choose_challenge, digest_response, parse_challenges
from sip2rtmp.sip.events import (
    CallAnswered,
    CallAttemptFailed,
    CallEnded,
    CallProgress,
    Event,
    InfoAnswered,
    InfoReceived,
    MessageLogged,
    Registered,
    RegistrationFailed,
    SessionModified,
    Unregistered,
)
from sip2rtmp.sip.message import Headers, Request, Response, parse_message, parse_name_addr
from sip2rtmp.sip.useragent import UserAgent, UserAgentConfig

SERVER = ("192.0.2.10", 5060)
CALLEE = ("192.0.2.10", 5060)
CONFIG = UserAgentConfig(
    user="relay",
    domain="lab.test",
    credentials=Credentials("relay", "s3cret"),
    local_host="192.0.2.1",
    local_port=5062,
    register_expires=600,
)
OFFER = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
ANSWER = b"v=0\r\no=- 7 7 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n"
NONCE = 'Digest realm="lab.test", nonce="n0nce", qop="auth", algorithm=MD5'


def make_ua(config: UserAgentConfig = CONFIG) -> UserAgent:
    counter = itertools.count()
    return UserAgent(config, SERVER, token_factory=lambda: f"tok{next(counter)}")


def sent(ua: UserAgent, now: float = 0.0) -> list[Request | Response]:
    out = []
    for data, addr in ua.data_to_send(now):
        assert addr == SERVER
        out.append(parse_message(data))
    return out


def raw_sent(ua: UserAgent) -> list[bytes]:
    return [data for data, _ in ua.data_to_send(0.0)]


def events(ua: UserAgent) -> list[Any]:
    """Events other than the message log, outcomes made comparable (errors compare by identity)."""
    out = []
    while (event := ua.next_event()) is not None:
        if not isinstance(event, MessageLogged):
            out.append(comparable(event))
    return out


def comparable(event: Event) -> Any:
    outcome = getattr(event, "outcome", None)
    if outcome is None:
        return event
    return type(event).__name__, type(outcome).__name__, vars(outcome)


def reply(
    request: Request,
    status: int,
    reason: str,
    extra: list[tuple[str, str]] | None = None,
    *,
    to_tag: str | None = None,
    body: bytes = b"",
) -> bytes:
    headers = Headers()
    for via in request.headers.get_fields("Via"):
        headers.add("Via", via + (";received=192.0.2.1" if "received" not in via else ""))
    headers.add("From", request.headers.get("From") or "")
    to = request.headers.get("To") or ""
    headers.add("To", to + (f";tag={to_tag}" if to_tag and "tag=" not in to else ""))
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", request.headers.get("CSeq") or "")
    for name, value in extra or []:
        headers.add(name, value)
    return Response(status, reason, headers, body).to_bytes()


def only(messages: list[Request | Response]) -> Request:
    assert len(messages) == 1, messages
    message = messages[0]
    assert isinstance(message, Request)
    return message


# --- registration ---------------------------------------------------------------------------


def test_register_401_then_200_and_refresh_at_half_life() -> None:
    ua = make_ua()
    ua.register(0.0)
    first = only(sent(ua))
    assert first.method == "REGISTER" and first.uri == "sip:lab.test"
    assert first.headers.get("Expires") == "600"
    assert ";rport;" in (first.headers.get("Via") or "")
    ua.receive_data(reply(first, 401, "Unauthorized", [("WWW-Authenticate", NONCE)]), SERVER, 0.1)
    second = only(sent(ua))
    assert second.call_id == first.call_id and second.from_.tag == first.from_.tag
    assert second.cseq == (2, "REGISTER")
    assert second.top_via.branch != first.top_via.branch
    authorization = second.headers.get("Authorization") or ""
    challenge = choose_challenge(parse_challenges([NONCE], proxy=False))
    assert challenge is not None
    cnonce = authorization.split('cnonce="')[1].split('"')[0]
    expected, _ = digest_response(
        challenge, CONFIG.credentials, method="REGISTER", uri="sip:lab.test", cnonce=cnonce
    )
    assert f'response="{expected}"' in authorization
    assert "s3cret" not in authorization
    contact = "<sip:relay@192.0.2.1:5062>;expires=300"
    ua.receive_data(reply(second, 200, "OK", [("Contact", contact)], to_tag="r"), SERVER, 0.2)
    assert events(ua) == [Registered(300)]
    assert ua.registered
    ua.handle_timer(10.0)
    assert ua.get_timer() == pytest.approx(150.2)
    ua.handle_timer(150.2)
    refresh = only(sent(ua))
    assert refresh.cseq == (3, "REGISTER")
    assert "nc=00000002" in (refresh.headers.get("Authorization") or "")


def test_wrong_password_fails_on_the_second_challenge() -> None:
    ua = make_ua()
    ua.register(0.0)
    first = only(sent(ua))
    ua.receive_data(reply(first, 401, "Unauthorized", [("WWW-Authenticate", NONCE)]), SERVER, 0)
    second = only(sent(ua))
    again = 'Digest realm="lab.test", nonce="other", qop="auth"'
    ua.receive_data(reply(second, 401, "Unauthorized", [("WWW-Authenticate", again)]), SERVER, 0)
    assert events(ua) == [comparable(RegistrationFailed(AuthenticationFailed(401)))]
    assert sent(ua) == []
    assert not ua.registered


def test_unregister_sends_expires_zero() -> None:
    ua = make_ua()
    ua.register(0.0)
    first = only(sent(ua))
    ua.receive_data(reply(first, 200, "OK", to_tag="r"), SERVER, 0.1)
    events(ua)
    ua.unregister(1.0)
    bye = only(sent(ua))
    assert bye.headers.get("Expires") == "0" and bye.cseq == (2, "REGISTER")
    ua.receive_data(reply(bye, 200, "OK", to_tag="r"), SERVER, 1.1)
    assert events(ua) == [Unregistered(ok=True)]
    assert (ua.get_timer() or 99.0) <= 1.1 + 5  # only timer K left


def test_register_timeout_is_unreachable() -> None:
    ua = make_ua()
    ua.register(0.0)
    sent(ua)
    ua.handle_timer(32.0)
    assert [e[:2] for e in events(ua)] == [("RegistrationFailed", "SipUnreachable")]


# --- the call ---------------------------------------------------------------------------------

RR = [("Record-Route", "<sip:p2.lab.test;lr>, <sip:p1.lab.test;lr;ftag=x>")]
CONTACT = [("Contact", "<sip:tone@192.0.2.20:5070>")]


def establish(ua: UserAgent) -> tuple[Request, bytes]:
    """INVITE → 407 → INVITE with credentials → 100 → 180 → 200; returns the INVITE and 200."""
    ua.invite(0.0, "tone", OFFER)
    first = only(sent(ua))
    assert first.uri == "sip:tone@lab.test" and first.body == OFFER
    challenge = [("Proxy-Authenticate", NONCE)]
    ua.receive_data(reply(first, 407, "Proxy Auth Required", challenge, to_tag="px"), SERVER, 0.1)
    ack_407, invite = sent(ua)
    assert isinstance(ack_407, Request) and isinstance(invite, Request)
    assert ack_407.method == "ACK" and ack_407.uri == first.uri
    assert ack_407.top_via.branch == first.top_via.branch
    assert ack_407.to.tag == "px" and ack_407.cseq == (1, "ACK")
    assert invite.cseq == (2, "INVITE")
    assert (invite.call_id, invite.from_.tag) == (first.call_id, first.from_.tag)
    assert invite.headers.get("Proxy-Authorization")
    ua.receive_data(reply(invite, 100, "Trying"), SERVER, 0.2)
    ua.receive_data(reply(invite, 180, "Ringing", CONTACT, to_tag="callee"), SERVER, 0.3)
    ok = reply(invite, 200, "OK", RR + CONTACT + [("Content-Type", "application/sdp")],
               to_tag="callee", body=ANSWER)  # fmt: skip
    ua.receive_data(ok, SERVER, 1.0)
    return invite, ok


def test_invite_407_100_180_200_and_the_ack() -> None:
    ua = make_ua()
    invite, ok = establish(ua)
    assert events(ua) == [
        CallProgress(100, "Trying", None),
        CallProgress(180, "Ringing", None),
        CallAnswered(ANSWER),
    ]
    [ack_bytes] = raw_sent(ua)
    ack = parse_message(ack_bytes)
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.uri == "sip:tone@192.0.2.20:5070"
    assert ack.headers.get_all("Route") == ["<sip:p1.lab.test;lr;ftag=x>", "<sip:p2.lab.test;lr>"]
    assert ack.from_.tag == invite.from_.tag and ack.to.tag == "callee"
    assert ack.cseq == (2, "ACK")
    assert ack.top_via.branch != invite.top_via.branch
    assert ack.headers.get("Proxy-Authorization") == invite.headers.get("Proxy-Authorization")
    # A retransmitted 200 gets exactly the same ACK, during and after the transaction.
    ua.receive_data(ok, SERVER, 1.5)
    assert raw_sent(ua) == [ack_bytes]
    ua.handle_timer(40.0)
    ua.receive_data(ok, SERVER, 40.0)
    assert raw_sent(ua) == [ack_bytes]
    assert events(ua) == []


def test_bye_from_us_uses_the_route_set() -> None:
    ua = make_ua()
    _invite, _ = establish(ua)
    sent(ua)
    events(ua)
    ua.bye(5.0)
    bye = only(sent(ua))
    assert bye.method == "BYE" and bye.uri == "sip:tone@192.0.2.20:5070"
    assert bye.headers.get_all("Route") == ["<sip:p1.lab.test;lr;ftag=x>", "<sip:p2.lab.test;lr>"]
    assert bye.cseq == (3, "BYE") and bye.to.tag == "callee"
    ua.receive_data(reply(bye, 200, "OK"), SERVER, 5.1)
    assert events(ua) == [CallEnded(by_remote=False, reason="hangup")]
    assert not ua.in_call


def test_strict_router_fallback() -> None:
    ua = make_ua()
    ua.invite(0.0, "sip:tone@lab.test", OFFER)
    invite = only(sent(ua))
    strict = [("Record-Route", "<sip:strict.lab.test>")]
    ua.receive_data(reply(invite, 200, "OK", strict + CONTACT, to_tag="c"), SERVER, 0.5)
    ack = only(sent(ua))
    assert ack.uri == "sip:strict.lab.test"
    assert ack.headers.get_all("Route") == ["<sip:tone@192.0.2.20:5070>"]


def test_remote_bye_is_answered_and_reported() -> None:
    ua = make_ua()
    invite, _ = establish(ua)
    sent(ua)
    events(ua)
    headers = Headers()
    headers.add("Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKremote1")
    headers.add("From", "<sip:tone@lab.test>;tag=callee")
    headers.add("To", (invite.headers.get("From") or ""))
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", "1 BYE")
    headers.add("Reason", 'Q.850;cause=16;text="Normal call clearing"')
    bye = Request("BYE", "sip:relay@192.0.2.1:5062", headers)
    ua.receive_data(bye.to_bytes(), SERVER, 10.0)
    [response] = sent(ua)
    assert isinstance(response, Response) and response.status == 200
    assert response.to.tag == invite.from_.tag
    assert events(ua) == [CallEnded(by_remote=True, reason="Normal call clearing")]
    # The BYE repeated (our 200 lost) gets the same 200 again.
    ua.receive_data(bye.to_bytes(), SERVER, 10.5)
    [again] = sent(ua)
    assert isinstance(again, Response) and again.status == 200


def _in_dialog(invite: Request, method: str, cseq: int, branch: str, body: bytes = b"") -> Request:
    headers = Headers()
    headers.add("Via", f"SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK{branch}")
    headers.add("From", "<sip:tone@lab.test>;tag=callee")
    headers.add("To", invite.headers.get("From") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{cseq} {method}")
    headers.add("Contact", "<sip:tone@192.0.2.20:5070>")
    if body:
        headers.add("Content-Type", "application/sdp")
    return Request(method, "sip:relay@192.0.2.1:5062", headers, body)


def test_reinvite_is_answered_with_our_sdp_and_retransmitted_until_ack() -> None:
    ua = make_ua()
    invite, _ = establish(ua)
    sent(ua)
    events(ua)
    hold = ANSWER + b"a=sendonly\r\n"
    reinvite = _in_dialog(invite, "INVITE", 2, "reinv", hold)
    ua.receive_data(reinvite.to_bytes(), SERVER, 20.0)
    [ok] = sent(ua)
    assert isinstance(ok, Response) and ok.status == 200 and ok.body == OFFER
    assert ok.headers.get("Contact") == "<sip:relay@192.0.2.1:5062>"
    assert events(ua) == [SessionModified(hold)]
    ua.receive_data(reinvite.to_bytes(), SERVER, 20.1)
    assert [m.status for m in sent(ua) if isinstance(m, Response)] == [200]
    ua.handle_timer(20.5)
    assert [m.status for m in sent(ua) if isinstance(m, Response)] == [200]
    ack = _in_dialog(invite, "ACK", 2, "ackreinv")
    ua.receive_data(ack.to_bytes(), SERVER, 20.6)
    ua.handle_timer(60.0)
    assert sent(ua) == []
    assert ua.in_call


def test_in_dialog_info_options_and_unknown_dialog() -> None:
    ua = make_ua()
    invite, _ = establish(ua)
    sent(ua)
    events(ua)
    info = _in_dialog(invite, "INFO", 2, "info1", b"")
    info.headers.add("Content-Type", "application/dtmf-relay")
    info.body = b"Signal=5\r\nDuration=160\r\n"
    ua.receive_data(info.to_bytes(), SERVER, 3.0)
    options = _in_dialog(invite, "OPTIONS", 3, "opt1")
    ua.receive_data(options.to_bytes(), SERVER, 3.1)
    stranger = _in_dialog(invite, "INFO", 4, "info2")
    stranger.headers.set("Call-ID", "unknown")
    ua.receive_data(stranger.to_bytes(), SERVER, 3.2)
    statuses = [m.status for m in sent(ua) if isinstance(m, Response)]
    assert statuses == [200, 200, 481]
    assert events(ua) == [InfoReceived("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n")]


def test_send_info_picture_fast_update() -> None:
    ua = make_ua()
    establish(ua)
    sent(ua)
    events(ua)
    xml = b"<media_control><vc_primitive><to_encoder><picture_fast_update/>"
    ua.send_info(4.0, "application/media_control+xml", xml)
    info = only(sent(ua))
    assert info.method == "INFO" and info.cseq == (3, "INFO") and info.body == xml
    assert info.headers.get("Content-Type") == "application/media_control+xml"
    ua.receive_data(reply(info, 200, "OK"), SERVER, 4.1)
    assert events(ua) == [InfoAnswered(200, "OK")]


def test_session_timer_refresh_with_update_at_half_interval() -> None:
    ua = make_ua()
    ua.invite(0.0, "tone", OFFER)
    invite = only(sent(ua))
    extra = [
        *CONTACT,
        ("Session-Expires", "90;refresher=uac"),
        ("Require", "timer"),
        ("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE"),
    ]
    ua.receive_data(reply(invite, 200, "OK", extra, to_tag="c", body=ANSWER), SERVER, 1.0)
    sent(ua)
    assert ua.get_timer() is not None
    ua.handle_timer(46.0)
    update = only(sent(ua))
    assert update.method == "UPDATE" and update.headers.get("Session-Expires") == "90;refresher=uac"
    ua.receive_data(reply(update, 200, "OK", extra), SERVER, 46.1)
    ua.handle_timer(91.1)
    assert only(sent(ua)).method == "UPDATE"


def test_session_timer_refresh_by_reinvite_when_update_not_allowed() -> None:
    ua = make_ua()
    ua.invite(0.0, "tone", OFFER)
    invite = only(sent(ua))
    extra = [*CONTACT, ("Session-Expires", "60;refresher=uac")]
    ua.receive_data(reply(invite, 200, "OK", extra, to_tag="c", body=ANSWER), SERVER, 0.0)
    sent(ua)
    ua.handle_timer(30.0)
    refresh = only(sent(ua))
    assert refresh.method == "INVITE" and refresh.body == OFFER and refresh.cseq == (2, "INVITE")
    ok = reply(refresh, 200, "OK", extra, body=ANSWER)
    ua.receive_data(ok, SERVER, 30.1)
    [ack] = raw_sent(ua)
    assert b"ACK" in ack and b"CSeq: 2 ACK" in ack
    ua.receive_data(ok, SERVER, 30.5)
    assert raw_sent(ua) == [ack]
    assert ua.in_call


# --- failures, CANCEL, timers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "outcome"),
    [
        (486, "Busy Here", BusyOrDeclined(486, "Busy Here")),
        (603, "Decline", BusyOrDeclined(603, "Decline")),
        (404, "Not Found", CalleeNotFound(404, "Not Found")),
        (480, "Temporarily Unavailable", CalleeNotFound(480, "Temporarily Unavailable")),
        (403, "Forbidden", AuthenticationFailed(403)),
        (500, "Server Error", CallFailed(500, "Server Error")),
        (408, "Request Timeout", SipUnreachable("lab.test", "408 Request Timeout")),
    ],
)
def test_final_failures_map_to_outcomes(status: int, reason: str, outcome: object) -> None:
    ua = make_ua()
    ua.invite(0.0, "someone", OFFER)
    invite = only(sent(ua))
    ua.receive_data(reply(invite, status, reason, to_tag="x"), SERVER, 0.1)
    ack = only(sent(ua))
    assert ack.method == "ACK" and ack.top_via.branch == invite.top_via.branch
    assert events(ua) == [("CallAttemptFailed", type(outcome).__name__, vars(outcome))]


def test_second_407_means_authentication_failed() -> None:
    ua = make_ua()
    ua.invite(0.0, "tone", OFFER)
    first = only(sent(ua))
    challenge = [("Proxy-Authenticate", NONCE)]
    ua.receive_data(reply(first, 407, "Proxy Auth", challenge, to_tag="a"), SERVER, 0.1)
    _, second = sent(ua)
    assert isinstance(second, Request)
    ua.receive_data(reply(second, 407, "Proxy Auth", challenge, to_tag="b"), SERVER, 0.2)
    assert events(ua) == [comparable(CallAttemptFailed(AuthenticationFailed(407)))]


def test_ring_timeout_sends_cancel_then_acks_487() -> None:
    ua = make_ua()
    ua.invite(0.0, "noanswer", OFFER, ring_timeout=5.0)
    invite = only(sent(ua))
    ua.receive_data(reply(invite, 180, "Ringing", to_tag="n"), SERVER, 0.2)
    events(ua)
    ua.handle_timer(5.0)
    cancel = only(sent(ua, 5.0))
    assert cancel.method == "CANCEL" and cancel.uri == invite.uri
    assert cancel.top_via.branch == invite.top_via.branch
    assert cancel.cseq == (1, "CANCEL") and cancel.to.tag is None
    assert cancel.from_.tag == invite.from_.tag and cancel.call_id == invite.call_id
    ua.receive_data(reply(cancel, 200, "OK", to_tag="n"), SERVER, 5.1)
    ua.receive_data(reply(invite, 487, "Request Terminated", to_tag="n"), SERVER, 5.2)
    ack = only(sent(ua))
    assert ack.method == "ACK" and ack.top_via.branch == invite.top_via.branch
    assert events(ua) == [comparable(CallAttemptFailed(NoAnswer(5.0)))]
    assert not ua.in_call


def test_cancel_waits_for_a_provisional_response() -> None:
    ua = make_ua()
    ua.invite(0.0, "tone", OFFER)
    invite = only(sent(ua))
    ua.cancel(0.1)
    assert sent(ua) == []
    ua.receive_data(reply(invite, 100, "Trying"), SERVER, 0.3)
    assert only(sent(ua)).method == "CANCEL"


def test_answer_racing_the_cancel_is_acked_and_hung_up() -> None:
    ua = make_ua()
    ua.invite(0.0, "tone", OFFER)
    invite = only(sent(ua))
    ua.receive_data(reply(invite, 180, "Ringing", to_tag="c"), SERVER, 0.1)
    ua.cancel(1.0)
    sent(ua)
    ua.receive_data(reply(invite, 200, "OK", CONTACT, to_tag="c", body=ANSWER), SERVER, 1.1)
    assert [m.method for m in sent(ua) if isinstance(m, Request)] == ["ACK", "BYE"]
    assert events(ua)[-1] == comparable(CallAttemptFailed(CallFailed(487, "Request Terminated")))


def test_invite_retransmission_schedule_and_timer_b_over_udp() -> None:
    ua = make_ua()
    ua.invite(0.0, "tone", OFFER)
    assert len(sent(ua)) == 1
    times: list[float] = []
    while (deadline := ua.get_timer()) is not None and times[-1:] != [32.0]:
        ua.handle_timer(deadline)
        if sent(ua):
            times.append(deadline)
        if events(ua):
            times.append(deadline)
            break
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 32.0]
    assert not ua.in_call


def test_register_retransmission_schedule_caps_at_t2() -> None:
    ua = make_ua()
    ua.register(0.0)
    sent(ua)
    times: list[float] = []
    while (deadline := ua.get_timer()) is not None:
        ua.handle_timer(deadline)
        if sent(ua):
            times.append(deadline)
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [e[:2] for e in events(ua)] == [("RegistrationFailed", "SipUnreachable")]


def test_register_after_provisional_retransmits_every_t2() -> None:
    ua = make_ua()
    ua.register(0.0)
    register = only(sent(ua))
    ua.receive_data(reply(register, 100, "Trying"), SERVER, 0.1)
    ua.handle_timer(0.5)
    assert len(sent(ua)) == 1
    assert ua.get_timer() == pytest.approx(4.5)


def test_no_retransmissions_over_tcp_but_timeouts_remain() -> None:
    ua = make_ua(replace(CONFIG, transport="tcp"))
    ua.invite(0.0, "tone", OFFER)
    invite = only(sent(ua))
    assert "SIP/2.0/TCP" in (invite.headers.get("Via") or "")
    assert "transport=tcp" in (invite.headers.get("Contact") or "")
    assert ua.get_timer() == 32.0
    ua.handle_timer(32.0)
    assert sent(ua) == []
    assert [e[:2] for e in events(ua)] == [("CallAttemptFailed", "SipUnreachable")]


def test_every_message_is_logged_both_ways() -> None:
    ua = make_ua()
    ua.register(0.0)
    [(data, _addr)] = ua.data_to_send(0.0)
    response = reply(parse_message(data), 200, "OK", to_tag="r")  # type: ignore[arg-type]
    ua.receive_data(response, SERVER, 0.1)
    logged = []
    while (event := ua.next_event()) is not None:
        if isinstance(event, MessageLogged):
            logged.append(event)
    assert logged == [
        MessageLogged("sent", SERVER, data),
        MessageLogged("received", SERVER, response),
    ]


def test_out_of_dialog_requests() -> None:
    ua = make_ua()
    headers = Headers()
    headers.add("Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKping")
    headers.add("From", "<sip:ping@lab.test>;tag=p")
    headers.add("To", "<sip:relay@lab.test>")
    headers.add("Call-ID", "ping1")
    headers.add("CSeq", "1 OPTIONS")
    ua.receive_data(Request("OPTIONS", "sip:relay@192.0.2.1", headers).to_bytes(), CALLEE, 0)
    headers.set("CSeq", "1 INVITE")
    headers.set("Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKinv")
    ua.receive_data(Request("INVITE", "sip:relay@192.0.2.1", headers).to_bytes(), CALLEE, 0)
    statuses = [m.status for m in sent(ua) if isinstance(m, Response)]
    assert statuses == [200, 603]


def test_garbage_is_logged_and_dropped() -> None:
    ua = make_ua()
    ua.receive_data(b"\x00\xffnot sip", SERVER, 0.0)
    assert sent(ua) == []
    assert isinstance(ua.next_event(), MessageLogged)


def test_contact_learns_received_and_rport() -> None:
    ua = make_ua()
    ua.register(0.0)
    register = only(sent(ua))
    response = (
        reply(register, 200, "OK", to_tag="r")
        .replace(b";rport;", b";rport=40000;")
        .replace(b"received=192.0.2.1", b"received=203.0.113.7")
    )
    ua.receive_data(response, SERVER, 0.1)
    ua.invite(1.0, "tone", OFFER)
    invite = only(sent(ua))
    contact = parse_name_addr(invite.headers.get("Contact") or "").sip_uri()
    assert (contact.host, contact.port) == ("203.0.113.7", 40000)
