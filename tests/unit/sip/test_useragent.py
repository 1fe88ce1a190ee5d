"""Scripted exchanges fed to the sans-I/O user agent byte for byte, with a fake clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sip2rtmp.outcomes import Rejected, RingTimeout, Unanswered, Unreachable, UnusableAnswer
from sip2rtmp.sip.auth import choose_challenge, digest_response, parse_challenges
from sip2rtmp.sip.events import (
    CallAnswered,
    CallAttemptFailed,
    CallEnded,
    CallProgress,
    Event,
    InfoAnswered,
    InfoReceived,
    MessageDropped,
    MessageLogged,
    Registered,
    RegistrationFailed,
    SessionModified,
    Unregistered,
)
from sip2rtmp.sip.message import Headers, Request, Response, parse_message, parse_name_addr
from sip2rtmp.sip.useragent import (
    MAX_CHALLENGES,
    MAX_FORKED_ANSWERS,
    MAX_KEPT_ACKS,
    MAX_SERVER_TRANSACTIONS,
    UserAgent,
)
from tests.unit.sip.exchange import (
    ANSWER,
    CONFIG,
    OFFER,
    SERVER,
    make_ua,
    options_request,
    reply,
    retransmission_times,
)
from tests.unit.sip.exchange import agent_events as events

CALLEE = ("192.0.2.10", 5060)
NONCE = 'Digest realm="lab.test", nonce="n0nce", qop="auth", algorithm=MD5'


def sent(ua: UserAgent, now: float = 0.0) -> list[Request | Response]:
    out = []
    for data, addr in ua.data_to_send(now):
        assert addr == SERVER
        out.append(parse_message(data))
    return out


def raw_sent(ua: UserAgent) -> list[bytes]:
    return [data for data, _ in ua.data_to_send(0.0)]


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
    assert events(ua) == [RegistrationFailed(Rejected("REGISTER", 401, "Unauthorized", "lab.test"))]
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
    assert events(ua) == [RegistrationFailed(Unanswered("REGISTER", "lab.test", 32.0))]


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


def test_a_hold_reinvite_is_answered_recvonly_and_retransmitted_until_ack() -> None:
    """RFC 3264 §8.4: a `sendonly` offer is answered `recvonly`, with the one codec."""
    ua = make_ua()
    invite, _ = establish(ua)
    sent(ua)
    events(ua)
    hold = ANSWER.replace(b"a=sendrecv", b"a=sendonly")
    reinvite = _in_dialog(invite, "INVITE", 2, "reinv", hold)
    ua.receive_data(reinvite.to_bytes(), SERVER, 20.0)
    [ok] = sent(ua)
    assert isinstance(ok, Response) and ok.status == 200
    assert ok.headers.get("Contact") == "<sip:relay@192.0.2.1:5062>"
    answer = ok.body.decode()
    assert "m=audio 40000 RTP/AVP 0 101\r\n" in answer and "a=recvonly" in answer
    assert "PCMA" not in answer and "o=- 1 1 IN IP4" in answer, "the version moved by one"
    [modified] = events(ua)
    assert isinstance(modified, SessionModified) and modified.offer == hold
    assert modified.answer == ok.body and modified.session.audio is not None
    assert modified.session.audio.direction == "sendonly"
    ua.receive_data(reinvite.to_bytes(), SERVER, 20.1)
    assert [m.status for m in sent(ua) if isinstance(m, Response)] == [200]
    ua.handle_timer(20.5)
    assert [m.status for m in sent(ua) if isinstance(m, Response)] == [200]
    ack = _in_dialog(invite, "ACK", 2, "ackreinv")
    ua.receive_data(ack.to_bytes(), SERVER, 20.6)
    ua.handle_timer(60.0)
    assert sent(ua) == []
    assert ua.in_call


def test_a_moved_stream_and_a_new_codec_are_taken_and_reported() -> None:
    ua = make_ua()
    invite, _ = establish(ua)
    sent(ua)
    events(ua)
    moved = (
        ANSWER.replace(b"192.0.2.20", b"192.0.2.21")
        .replace(b"30000 RTP/AVP 0 101", b"31000 RTP/AVP 8 101")
        .replace(b"rtpmap:0 PCMU", b"rtpmap:8 PCMA")
    )
    ua.receive_data(_in_dialog(invite, "INVITE", 2, "move", moved).to_bytes(), SERVER, 5.0)
    [ok] = sent(ua)
    assert isinstance(ok, Response) and ok.status == 200
    assert b"RTP/AVP 8 101" in ok.body and b"a=sendrecv" in ok.body
    [modified] = events(ua)
    assert isinstance(modified, SessionModified) and modified.session.audio is not None
    audio = modified.session.audio
    assert (audio.rtp_address, audio.codec) == (("192.0.2.21", 31000), "PCMA")


def test_an_offer_with_nothing_we_can_take_gets_488_and_the_call_goes_on() -> None:
    ua = make_ua()
    invite, _ = establish(ua)
    sent(ua)
    events(ua)
    g729 = ANSWER.replace(b"RTP/AVP 0 101", b"RTP/AVP 18").replace(b"0 PCMU", b"18 G729")
    ua.receive_data(_in_dialog(invite, "INVITE", 2, "g729", g729).to_bytes(), SERVER, 5.0)
    [refused] = sent(ua)
    assert isinstance(refused, Response) and refused.status == 488
    assert events(ua) == [] and ua.in_call
    hold = ANSWER.replace(b"a=sendrecv", b"a=sendonly")
    ua.receive_data(_in_dialog(invite, "INVITE", 3, "hold", hold).to_bytes(), SERVER, 6.0)
    responses = [m for m in sent(ua) if isinstance(m, Response)]
    assert [m.status for m in responses] == [200], "a later offer is answered as usual"


def test_an_offerless_reinvite_gets_our_sdp_and_its_ack_brings_the_answer() -> None:
    ua = make_ua()
    invite, _ = establish(ua)
    sent(ua)
    events(ua)
    ua.receive_data(_in_dialog(invite, "INVITE", 2, "empty").to_bytes(), SERVER, 5.0)
    [ok] = sent(ua)
    assert isinstance(ok, Response) and ok.status == 200 and ok.body == OFFER
    assert events(ua) == []
    answer = ANSWER.replace(b"30000", b"32000")
    ack = _in_dialog(invite, "ACK", 2, "ackempty", answer)
    ua.receive_data(ack.to_bytes(), SERVER, 5.1)
    [modified] = events(ua)
    assert isinstance(modified, SessionModified) and modified.offer == OFFER
    assert modified.session.audio is not None
    assert modified.session.audio.rtp_address == ("192.0.2.20", 32000)


def test_update_with_an_offer_is_answered_too() -> None:
    ua = make_ua()
    invite, _ = establish(ua)
    sent(ua)
    events(ua)
    inactive = ANSWER.replace(b"a=sendrecv", b"a=inactive")
    ua.receive_data(_in_dialog(invite, "UPDATE", 2, "upd", inactive).to_bytes(), SERVER, 5.0)
    [ok] = sent(ua)
    assert isinstance(ok, Response) and ok.status == 200 and b"a=inactive" in ok.body
    [modified] = events(ua)
    assert isinstance(modified, SessionModified) and modified.session.audio is not None
    assert modified.session.audio.direction == "inactive"


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


SESSION_TIMER = [*CONTACT, ("Session-Expires", "60;refresher=uac")]
"""A 2xx's headers that make us the refresher of a 60 s session (RFC 4028 §7.2)."""


def first_refresh(ua: UserAgent) -> Request:
    """Our refresh of a call answered with SESSION_TIMER, sent at half the interval (RFC 4028
    §10)."""
    ua.invite(0.0, "tone", OFFER)
    invite = only(sent(ua))
    ua.receive_data(reply(invite, 200, "OK", SESSION_TIMER, to_tag="c", body=ANSWER), SERVER, 0.0)
    sent(ua)
    ua.handle_timer(30.0)
    return only(sent(ua))


def test_session_timer_refresh_by_reinvite_when_update_not_allowed() -> None:
    ua = make_ua()
    refresh = first_refresh(ua)
    assert refresh.method == "INVITE" and refresh.body == OFFER and refresh.cseq == (2, "INVITE")
    ok = reply(refresh, 200, "OK", SESSION_TIMER, body=ANSWER)
    ua.receive_data(ok, SERVER, 30.1)
    [ack] = raw_sent(ua)
    assert b"ACK" in ack and b"CSeq: 2 ACK" in ack
    ua.receive_data(ok, SERVER, 30.5)
    assert raw_sent(ua) == [ack]
    assert ua.in_call


# --- failures, CANCEL, timers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "busy"),
    [
        (486, "Busy Here", True),
        (603, "Decline", True),
        (404, "Not Found", False),
        (480, "Temporarily Unavailable", False),
        (403, "Forbidden", False),
        (500, "Server Error", False),
        (408, "Request Timeout", False),
    ],
)
def test_final_failures_map_to_outcomes(status: int, reason: str, busy: bool) -> None:
    """Each final failure is reported as the response it was: status, reason, the server, and
    whether a 180 came first and when (here: no ringing, 2.5 s after the INVITE)."""
    ua = make_ua()
    ua.invite(0.0, "someone", OFFER)
    invite = only(sent(ua))
    ua.receive_data(reply(invite, status, reason, to_tag="x"), SERVER, 2.5)
    ack = only(sent(ua))
    assert ack.method == "ACK" and ack.top_via.branch == invite.top_via.branch
    outcome = Rejected("INVITE", status, reason, "lab.test", rang=False, elapsed=2.5)
    assert events(ua) == [CallAttemptFailed(outcome)]
    assert outcome.busy is busy


def test_a_failure_after_ringing_says_it_rang() -> None:
    ua = make_ua()
    ua.invite(10.0, "someone", OFFER)
    invite = only(sent(ua))
    ua.receive_data(reply(invite, 180, "Ringing", to_tag="x"), SERVER, 10.5)
    ua.receive_data(reply(invite, 408, "Request Timeout", to_tag="x"), SERVER, 14.0)
    failed = events(ua)[-1]
    outcome = Rejected("INVITE", 408, "Request Timeout", "lab.test", rang=True, elapsed=4.0)
    assert failed == CallAttemptFailed(outcome)


def test_second_407_means_authentication_failed() -> None:
    ua = make_ua()
    ua.invite(0.0, "tone", OFFER)
    first = only(sent(ua))
    challenge = [("Proxy-Authenticate", NONCE)]
    ua.receive_data(reply(first, 407, "Proxy Auth", challenge, to_tag="a"), SERVER, 0.1)
    _, second = sent(ua)
    assert isinstance(second, Request)
    ua.receive_data(reply(second, 407, "Proxy Auth", challenge, to_tag="b"), SERVER, 0.2)
    assert events(ua) == [
        CallAttemptFailed(
            Rejected("INVITE", 407, "Proxy Auth", "lab.test", elapsed=0.2, authenticated=True)
        )
    ]


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
    assert events(ua) == [CallAttemptFailed(RingTimeout(5.0))]
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
    assert events(ua)[-1] == CallAttemptFailed(
        Rejected("INVITE", 487, "Request Terminated", "lab.test")
    )


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
    times = retransmission_times(ua)
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert events(ua) == [RegistrationFailed(Unanswered("REGISTER", "lab.test", 32.0))]


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
    assert events(ua) == [CallAttemptFailed(Unanswered("INVITE", "lab.test", 32.0))]


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


# --- hostile peers: every case here raised, hung or looped before ----------------

HUGE = ["9" * 400, "9" * 4301]
"""400 digits overflow a float timer; over 4,300 digits int() itself refuses the text."""


def dropped(ua: UserAgent) -> list[str]:
    """Reasons of the MessageDropped events, the other events discarded."""
    reasons = []
    while (event := ua.next_event()) is not None:
        if isinstance(event, MessageDropped):
            reasons.append(event.reason)
    return reasons


def registered_with(ua: UserAgent, extra: list[tuple[str, str]]) -> list[Event]:
    ua.register(0.0)
    register = only(sent(ua))
    ua.receive_data(reply(register, 200, "OK", extra, to_tag="r"), SERVER, 0.1)
    return events(ua)


@pytest.mark.parametrize("number", HUGE)
def test_huge_expires_keeps_the_requested_interval(number: str) -> None:
    ua = make_ua()
    assert registered_with(ua, [("Expires", number)]) == [Registered(600)]
    ua.handle_timer(10.0)  # timer K
    assert ua.get_timer() == pytest.approx(300.1)


@pytest.mark.parametrize("number", HUGE)
def test_huge_contact_expires_keeps_the_requested_interval(number: str) -> None:
    ua = make_ua()
    contact = f"<sip:relay@192.0.2.1:5062>;expires={number}"
    assert registered_with(ua, [("Contact", contact)]) == [Registered(600)]


def test_a_grant_of_years_is_refreshed_daily() -> None:
    ua = make_ua()
    assert registered_with(ua, [("Expires", str(2**32 - 1))]) == [Registered(2**32 - 1)]
    ua.handle_timer(10.0)
    assert ua.get_timer() == pytest.approx(0.1 + 86400)


@pytest.mark.parametrize("number", HUGE)
def test_huge_min_expires_fails_the_registration(number: str) -> None:
    ua = make_ua()
    ua.register(0.0)
    register = only(sent(ua))
    ua.receive_data(reply(register, 423, "Too Brief", [("Min-Expires", number)]), SERVER, 0.1)
    assert events(ua) == [RegistrationFailed(Rejected("REGISTER", 423, "Too Brief", "lab.test"))]
    assert sent(ua) == []


@pytest.mark.parametrize(
    ("received", "rport"),
    [
        ("evil.example.com", "40000"),
        ('"203.0.113.7>;x=1"', "40000"),
        ('"fe80::1%eth0"', "40000"),
        ('"203.0.113.7\\r\\nX-Injected: 1"', "40000"),
        ("203.0.113.7", "9" * 4301),
        ("203.0.113.7", "70000"),
        ("203.0.113.7", "0"),
    ],
)
def test_contact_ignores_a_received_or_rport_that_is_not_an_address(
    received: str, rport: str
) -> None:
    ua = make_ua()
    ua.register(0.0)
    register = only(sent(ua))
    response = (
        reply(register, 200, "OK", to_tag="r")
        .replace(b";rport;", f";rport={rport};".encode())
        .replace(b"received=192.0.2.1", f"received={received}".encode())
    )
    ua.receive_data(response, SERVER, 0.1)
    ua.invite(1.0, "tone", OFFER)
    invite = only(sent(ua))
    contact = parse_name_addr(invite.headers.get("Contact") or "").sip_uri()
    good_host = received == "203.0.113.7"
    good_port = rport == "40000"
    assert contact.host == ("203.0.113.7" if good_host else "192.0.2.1")
    assert contact.port == (40000 if good_port else 5062)


def test_contact_learns_an_ipv6_received_in_brackets() -> None:
    ua = make_ua()
    ua.register(0.0)
    register = only(sent(ua))
    response = reply(register, 200, "OK", to_tag="r").replace(
        b"received=192.0.2.1", b'received="2001:db8::7"'
    )
    ua.receive_data(response, SERVER, 0.1)
    ua.invite(1.0, "tone", OFFER)
    assert "<sip:relay@[2001:db8::7]:5062>" in (only(sent(ua)).headers.get("Contact") or "")


def test_a_challenge_with_a_non_utf8_realm_ends_the_registration() -> None:
    ua = make_ua()
    ua.register(0.0)
    register = only(sent(ua))
    challenge = b'Digest realm="\xff\xfe", nonce="n", qop="auth"'
    response = reply(register, 401, "Unauthorized", [("WWW-Authenticate", "CHALLENGE")])
    ua.receive_data(response.replace(b"CHALLENGE", challenge), SERVER, 0.1)
    outcome = events(ua)
    if outcome:  # the challenge was refused
        assert outcome == [
            RegistrationFailed(Rejected("REGISTER", 401, "Unauthorized", "lab.test"))
        ]
        return
    retry = only(sent(ua))  # or answered, and the registration goes on to its end
    ua.receive_data(reply(retry, 200, "OK", to_tag="r"), SERVER, 0.2)
    assert events(ua) == [Registered(600)]


def _answered(
    ua: UserAgent, extra: list[tuple[str, str]], ring: bool = True
) -> tuple[Request, bytes]:
    ua.invite(0.0, "tone", OFFER, ring_timeout=30.0)
    invite = only(sent(ua))
    if ring:
        ua.receive_data(reply(invite, 180, "Ringing", to_tag="callee"), SERVER, 0.1)
    ok = reply(invite, 200, "OK", extra, to_tag="callee", body=ANSWER)
    ua.receive_data(ok, SERVER, 1.0)
    return invite, ok


@pytest.mark.parametrize(
    ("extra", "cause"),
    [
        ([*CONTACT, ("Record-Route", "<tel:+15551234;lr>")], "not a sip: or sips: URI"),
        ([*CONTACT, ("Record-Route", "<sip:p1.lab.test;lr>, <tel:+1555>")], "sip: or sips:"),
        ([("Contact", "*")], "not a URI"),
        ([("Contact", "<tel:+15551234>")], "not a sip: or sips: URI"),
        ([("Contact", "<sip:tone@192.0.2.20;x=" + "a" * 600 + ">")], "Contact URI longer"),
        ([*CONTACT, *[("Record-Route", f"<sip:p{i}.lab.test;lr>") for i in range(17)]], "17"),
    ],
)
def test_an_answer_without_a_usable_dialog_is_acked_hung_up_and_reported(
    extra: list[tuple[str, str]], cause: str
) -> None:
    ua = make_ua()
    invite, ok = _answered(ua, extra)
    ack, bye = sent(ua)
    assert isinstance(ack, Request) and isinstance(bye, Request)
    assert (ack.method, bye.method) == ("ACK", "BYE")
    for request in (ack, bye):
        assert request.uri == invite.uri and "Route" not in request.headers
        assert request.to.tag == "callee" and request.call_id == invite.call_id
    assert ack.cseq == (1, "ACK") and bye.cseq == (2, "BYE")
    [progress, failed] = events(ua)
    assert progress == CallProgress(180, "Ringing", None)
    assert isinstance(failed, CallAttemptFailed)
    assert isinstance(failed.outcome, UnusableAnswer)
    assert failed.outcome.status == 200 and cause in failed.outcome.detail
    assert failed.outcome.detail.startswith("answered with an unusable dialog: ")
    ua.receive_data(ok, SERVER, 1.5)  # the 2xx retransmitted: the same ACK, nothing else
    assert [m.method for m in sent(ua) if isinstance(m, Request)] == ["ACK"]
    ua.receive_data(reply(bye, 200, "OK"), SERVER, 1.6)
    assert events(ua) == []
    assert not ua.in_call


def test_a_huge_record_route_never_makes_a_huge_ack() -> None:
    ua = make_ua()
    routes = ", ".join(f"<sip:10.0.{i // 250}.{i % 250};lr;ftag=abcdef>" for i in range(2500))
    _answered(ua, [*CONTACT, ("Record-Route", routes)])
    out = raw_sent(ua)
    assert all(len(data) < 2048 for data in out)
    outcome = [e for e in events(ua) if not isinstance(e, CallProgress)]
    if out:  # the answer was parsed: ACKed, hung up and reported
        assert isinstance(outcome[0], CallAttemptFailed)
        assert isinstance(outcome[0].outcome, UnusableAnswer)
    else:  # or refused by the parser, as if lost
        assert [type(e) for e in outcome] == [MessageDropped]


def test_the_largest_usable_route_set_still_makes_a_small_ack() -> None:
    ua = make_ua()
    name = "p" * 100
    routes = [("Record-Route", f"<sip:{name}{i}.lab.test;lr>") for i in range(16)]
    _answered(ua, [*CONTACT, *routes])
    [ack] = raw_sent(ua)
    assert ack.count(b"Route: ") == 16
    assert len(ack) < 3000
    assert events(ua)[-1] == CallAnswered(ANSWER)


def test_contact_star_in_a_reinvite_is_refused_and_the_call_goes_on() -> None:
    ua = make_ua()
    invite, _ = establish(ua)
    sent(ua)
    events(ua)
    reinvite = _in_dialog(invite, "INVITE", 2, "star", ANSWER)
    reinvite.headers.set("Contact", "*")
    ua.receive_data(reinvite.to_bytes(), SERVER, 5.0)
    [answer] = sent(ua)
    assert isinstance(answer, Response) and answer.status == 400
    assert events(ua) == []
    ua.bye(6.0)
    assert only(sent(ua)).uri == "sip:tone@192.0.2.20:5070"


def test_contact_star_in_a_refresh_answer_keeps_the_target() -> None:
    ua = make_ua()
    refresh = first_refresh(ua)
    star = [("Contact", "*"), ("Session-Expires", "60;refresher=uac")]
    ua.receive_data(reply(refresh, 200, "OK", star, body=ANSWER), SERVER, 30.1)
    assert only(sent(ua)).method == "ACK"
    ua.bye(31.0)
    assert only(sent(ua)).uri == "sip:tone@192.0.2.20:5070"


@pytest.mark.parametrize("number", HUGE)
def test_huge_session_expires_is_ignored(number: str) -> None:
    ua = make_ua()
    _answered(ua, [*CONTACT, ("Session-Expires", f"{number};refresher=uac")])
    sent(ua)
    assert events(ua)[-1] == CallAnswered(ANSWER)
    deadline = ua.get_timer()
    assert deadline is not None and deadline < 100  # transaction timers only


def test_a_session_interval_of_years_is_refreshed_daily() -> None:
    ua = make_ua()
    _answered(ua, [*CONTACT, ("Session-Expires", f"{2**32 - 1};refresher=uac")])
    sent(ua)
    ua.handle_timer(50.0)
    assert ua.get_timer() == pytest.approx(1.0 + 86400)


@pytest.mark.parametrize("number", HUGE)
def test_huge_min_se_fails_the_attempt(number: str) -> None:
    ua = make_ua()
    ua.invite(0.0, "tone", OFFER)
    invite = only(sent(ua))
    ua.receive_data(reply(invite, 422, "Too Small", [("Min-SE", number)], to_tag="x"), SERVER, 0)
    assert only(sent(ua)).method == "ACK"
    assert events(ua) == [CallAttemptFailed(Rejected("INVITE", 422, "Too Small", "lab.test"))]


STALE = 'Digest realm="lab.test", nonce="again", qop="auth", stale=true'


def test_stale_challenges_to_bye_stop_after_max_challenges() -> None:
    ua = make_ua()
    establish(ua)
    sent(ua)
    events(ua)
    ua.bye(5.0)
    byes = 0
    while (messages := sent(ua)) and byes < 50:
        bye = only([m for m in messages if isinstance(m, Request) and m.method == "BYE"])
        byes += 1
        challenge = reply(bye, 401, "Unauthorized", [("WWW-Authenticate", STALE)])
        ua.receive_data(challenge, SERVER, 5.0 + byes)
    assert byes == 1 + MAX_CHALLENGES
    assert events(ua) == [CallEnded(by_remote=False, reason="hangup")]
    assert not ua.in_call


def test_stale_challenges_to_info_stop_after_max_challenges() -> None:
    ua = make_ua()
    establish(ua)
    sent(ua)
    events(ua)
    ua.send_info(5.0, "application/dtmf-relay", b"Signal=1\r\n")
    infos = 0
    while (messages := sent(ua)) and infos < 50:
        info = only(messages)
        infos += 1
        challenge = reply(info, 407, "Proxy Auth", [("Proxy-Authenticate", STALE)])
        ua.receive_data(challenge, SERVER, 5.0 + infos)
    assert infos == 1 + MAX_CHALLENGES
    assert events(ua) == [InfoAnswered(407, "Proxy Auth")]
    assert ua.in_call


def test_a_flood_of_new_branches_keeps_the_server_transactions_bounded() -> None:
    ua = make_ua()
    for index in range(1000):
        ua.receive_data(
            options_request(f"flood{index}", "flood"), ("198.51.100.9", 5060), index / 1000
        )
    assert len(ua._servers) == MAX_SERVER_TRANSACTIONS
    answers = [data for data, _ in ua.data_to_send(1.0)]
    assert len(answers) == 1000 and all(data.startswith(b"SIP/2.0 200") for data in answers)
    # The newest are the ones kept: a retransmission of the last request is absorbed.
    ua.receive_data(options_request("flood999", "flood"), ("198.51.100.9", 5060), 1.0)
    assert len(ua._servers) == MAX_SERVER_TRANSACTIONS


def test_forked_answers_are_acked_and_a_flood_of_tags_stays_bounded() -> None:
    ua = make_ua()
    invite, _ = establish(ua)
    sent(ua)
    events(ua)
    for index in range(3 * MAX_FORKED_ANSWERS):
        fork = reply(invite, 200, "OK", CONTACT, to_tag=f"fork{index}", body=ANSWER)
        ua.receive_data(fork, SERVER, 1.1)
    methods = [m.method for m in sent(ua) if isinstance(m, Request)]
    assert methods.count("ACK") == 3 * MAX_FORKED_ANSWERS
    assert methods.count("BYE") == MAX_FORKED_ANSWERS
    again = reply(invite, 200, "OK", CONTACT, to_tag="fork0", body=ANSWER)
    ua.receive_data(again, SERVER, 1.2)
    assert [m.method for m in sent(ua) if isinstance(m, Request)] == ["ACK"]
    assert events(ua) == []


def test_a_header_with_nul_or_bare_cr_is_dropped() -> None:
    ua = make_ua()
    for bad in (b'"a\\\x00b" <sip:ping@lab.test>;tag=p', b'"a\rb" <sip:ping@lab.test>;tag=p'):
        message = options_request("nul", "flood").replace(b"<sip:flood@198.51.100.9>;tag=nul", bad)
        ua.receive_data(message, SERVER, 0.0)
    assert sent(ua) == []  # our answer would echo From, and the encoder refuses NUL and CR
    reasons = dropped(ua)
    assert len(reasons) == 2 and "NUL or CR in a From header field" in reasons


def test_garbage_is_reported_as_dropped() -> None:
    ua = make_ua()
    ua.receive_data(b"\x00\xffnot sip", SERVER, 0.0)
    assert len(dropped(ua)) == 1


def test_a_session_timer_armed_while_hanging_up_never_stalls_the_timers() -> None:
    """The peer's UPDATE asks us to refresh while our BYE is out: no deadline may be reported
    that handle_timer then ignores, or the shell's timer fires again and again at once."""
    ua = make_ua()
    invite, _ = establish(ua)
    sent(ua)
    events(ua)
    ua.bye(2.0)
    sent(ua)
    update = _in_dialog(invite, "UPDATE", 2, "upd")
    update.headers.add("Session-Expires", "20;refresher=uas")  # a refresh due before 34 s
    ua.receive_data(update.to_bytes(), SERVER, 3.0)
    steps = 0
    while (deadline := ua.get_timer()) is not None and steps < 100:
        ua.handle_timer(deadline)
        assert ua.get_timer() != deadline
        steps += 1
    assert ua.get_timer() is None and not ua.in_call
    assert events(ua) == [CallEnded(by_remote=False, reason="hangup (BYE unanswered)")]


def test_acks_kept_for_refresh_reinvites_stay_bounded() -> None:
    """A peer asking for a refresh every second makes one re-INVITE and ACK a second; only the
    latest ACKs are kept for retransmitted 2xx."""
    ua = make_ua()
    ua.invite(0.0, "tone", OFFER)
    invite = only(sent(ua))
    extra = [*CONTACT, ("Session-Expires", "2;refresher=uac")]
    ua.receive_data(reply(invite, 200, "OK", extra, to_tag="c", body=ANSWER), SERVER, 0.0)
    sent(ua)
    now = 0.0
    for _ in range(20):
        now += 1.0
        ua.handle_timer(now)
        refresh = only([m for m in sent(ua) if isinstance(m, Request)])
        ok = reply(refresh, 200, "OK", extra, body=ANSWER)
        ua.receive_data(ok, SERVER, now)
        [ack] = raw_sent(ua)
    assert ua._invite.call is not None and len(ua._invite.call.acks) == MAX_KEPT_ACKS
    ua.receive_data(ok, SERVER, now + 0.5)  # the latest 2xx again: the same ACK
    assert raw_sent(ua) == [ack]


def test_a_transport_error_fails_what_waits_at_once_and_only_once() -> None:
    """RFC 3261 §8.1.3.1: a transport error is final for the request, not a wait of 64*T1."""
    ua = make_ua()
    ua.register(0.0)
    ua.invite(0.0, "tone", OFFER)
    sent(ua)
    ua.connection_lost(0.1, "Connection refused")
    unreachable = Unreachable("lab.test", "Connection refused")
    assert events(ua) == [RegistrationFailed(unreachable), CallAttemptFailed(unreachable)]
    assert not ua.in_call
    while (deadline := ua.get_timer()) is not None:  # the UDP retransmissions run out
        ua.handle_timer(deadline)
    assert events(ua) == [], "the late timeouts report nothing more"
