"""Before the answer and who we say we are: reliable provisional responses and PRACK (RFC
3262), an UPDATE in the early dialog (RFC 3311), the caller's identity (RFC 3261 §8.1.1.3,
RFC 3325), and a 403 to an authenticated INVITE told apart from a wrong password."""

from __future__ import annotations

from dataclasses import replace

from sip2rtmp.outcomes import Rejected
from sip2rtmp.sip.events import CallAnswered, CallAttemptFailed, CallProgress, SessionModified
from sip2rtmp.sip.message import Headers, Request, Response, parse_message
from sip2rtmp.sip.useragent import UserAgent
from tests.unit.sip.exchange import ANSWER, CONFIG, OFFER, SERVER, make_ua, reply
from tests.unit.sip.exchange import agent_events as events

NONCE = 'Digest realm="lab.test", nonce="n1", qop="auth"'
RELIABLE = [
    ("Require", "100rel"),
    ("Contact", "<sip:tone@192.0.2.20:5070>"),
    ("Record-Route", "<sip:192.0.2.10;lr>"),
    ("Content-Type", "application/sdp"),
]


def requests(ua: UserAgent) -> list[Request]:
    found = []
    for data, addr in ua.data_to_send(0.0):
        assert addr == SERVER
        message = parse_message(data)
        assert isinstance(message, Request)
        found.append(message)
    return found


def calling(ua: UserAgent) -> Request:
    ua.invite(0.0, "tone", OFFER)
    [invite] = requests(ua)
    return invite


def reliable_183(invite: Request, rseq: int) -> bytes:
    extra = [*RELIABLE, ("RSeq", str(rseq))]
    return reply(invite, 183, "Session Progress", extra, to_tag="t", body=ANSWER)


def test_the_invite_says_it_supports_100rel() -> None:
    invite = calling(make_ua())
    assert "100rel" in {value.strip() for value in invite.headers.get_all("Supported")}
    assert "PRACK" in {value.strip() for value in invite.headers.get_all("Allow")}


def test_a_reliable_183_is_pracked_once_in_its_early_dialog() -> None:
    ua = make_ua()
    invite = calling(ua)
    ua.receive_data(reliable_183(invite, 1), SERVER, 0.1)
    [prack] = requests(ua)
    assert prack.method == "PRACK" and prack.uri == "sip:tone@192.0.2.20:5070"
    assert prack.headers.get("RAck") == f"1 {invite.cseq[0]} INVITE"
    assert prack.headers.get("Route") == "<sip:192.0.2.10;lr>"
    assert prack.to.tag == "t" and prack.cseq[0] == invite.cseq[0] + 1
    assert events(ua) == [CallProgress(183, "Session Progress", ANSWER)]
    ua.receive_data(reliable_183(invite, 1), SERVER, 0.2)
    assert requests(ua) == [] and events(ua) == [], "a repeat needs no new PRACK"
    ua.receive_data(reliable_183(invite, 3), SERVER, 0.3)
    assert requests(ua) == [], "RSeq 2 is missing: 3 waits (RFC 3262 §4)"
    ua.receive_data(reliable_183(invite, 2), SERVER, 0.4)
    [second] = requests(ua)
    assert second.headers.get("RAck") == f"2 {invite.cseq[0]} INVITE"
    assert second.cseq[0] == prack.cseq[0] + 1


def test_the_confirmed_dialog_goes_on_from_the_early_dialogs_cseq() -> None:
    ua = make_ua()
    invite = calling(ua)
    ua.receive_data(reliable_183(invite, 1), SERVER, 0.1)
    [prack] = requests(ua)
    extra = [("Contact", "<sip:tone@192.0.2.20:5070>"), ("Content-Type", "application/sdp")]
    ua.receive_data(reply(invite, 200, "OK", extra, to_tag="t", body=ANSWER), SERVER, 0.5)
    requests(ua)
    assert CallAnswered(ANSWER) in events(ua)
    ua.bye(1.0)
    [bye] = requests(ua)
    assert bye.cseq[0] > prack.cseq[0], "CSeq never repeats in a dialog"


def test_an_unreliable_183_gets_no_prack() -> None:
    ua = make_ua()
    invite = calling(ua)
    extra = [("Contact", "<sip:tone@192.0.2.20:5070>"), ("Content-Type", "application/sdp")]
    ua.receive_data(reply(invite, 183, "Progress", extra, to_tag="t", body=ANSWER), SERVER, 0.1)
    assert requests(ua) == []


def test_an_update_in_the_early_dialog_is_answered_and_reported_as_early() -> None:
    ua = make_ua()
    invite = calling(ua)
    ua.receive_data(reliable_183(invite, 1), SERVER, 0.1)
    requests(ua)
    events(ua)
    headers = Headers()
    headers.add("Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKupd")
    headers.add("From", f"{invite.headers.get('To')};tag=t")
    headers.add("To", invite.headers.get("From") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", "5 UPDATE")
    headers.add("Contact", "<sip:tone@192.0.2.20:5070>")
    headers.add("Content-Type", "application/sdp")
    moved = ANSWER.replace(b"30000", b"30500")
    ua.receive_data(Request("UPDATE", "sip:relay@192.0.2.1:5062", headers, moved).to_bytes(),
                    SERVER, 0.2)  # fmt: skip
    [ok] = [parse_message(data) for data, _ in ua.data_to_send(0.2)]
    assert isinstance(ok, Response) and ok.status == 200 and b"m=audio 40000" in ok.body
    [modified] = events(ua)
    assert isinstance(modified, SessionModified) and modified.early
    assert modified.session.audio is not None
    assert modified.session.audio.rtp_address == ("192.0.2.20", 30500)


def test_display_name_caller_id_and_asserted_identity_go_into_the_invite() -> None:
    config = replace(
        CONFIG,
        display_name="Studio A",
        caller_id="4930123",
        asserted_identity="sip:+4930123@carrier.test",
        identity_header="P-Asserted-Identity",
    )
    invite = calling(make_ua(config))
    assert (invite.headers.get("From") or "").startswith('"Studio A" <sip:4930123@lab.test>;tag=')
    assert invite.headers.get("P-Asserted-Identity") == "<sip:+4930123@carrier.test>"
    plain = calling(make_ua(replace(config, identity_header="P-Preferred-Identity")))
    assert plain.headers.get("P-Preferred-Identity") == "<sip:+4930123@carrier.test>"
    assert plain.headers.get("P-Asserted-Identity") is None


def test_the_registration_still_names_the_login() -> None:
    ua = make_ua(replace(CONFIG, caller_id="4930123"))
    ua.register(0.0)
    [register] = requests(ua)
    assert "sip:relay@lab.test" in (register.headers.get("From") or "")


def test_a_403_after_the_challenge_was_answered_says_so() -> None:
    ua = make_ua()
    first = calling(ua)
    challenge = [("Proxy-Authenticate", NONCE)]
    ua.receive_data(reply(first, 407, "Proxy Auth", challenge, to_tag="a"), SERVER, 0.1)
    second = next(r for r in requests(ua) if r.method == "INVITE")
    ua.receive_data(reply(second, 403, "Forbidden", to_tag="b"), SERVER, 0.2)
    [failed] = [e for e in events(ua) if isinstance(e, CallAttemptFailed)]
    assert isinstance(failed.outcome, Rejected) and failed.outcome.authenticated


def test_a_403_to_an_unauthenticated_invite_is_not_marked() -> None:
    ua = make_ua()
    first = calling(ua)
    ua.receive_data(reply(first, 403, "Forbidden", to_tag="a"), SERVER, 0.1)
    [failed] = [e for e in events(ua) if isinstance(e, CallAttemptFailed)]
    assert isinstance(failed.outcome, Rejected) and not failed.outcome.authenticated


def test_a_2xx_without_sdp_after_a_183_with_sdp_is_answered_by_the_183() -> None:
    """RFC 3262 §5: the answer in a reliable 183 is the answer; the 2xx need not repeat it."""
    ua = make_ua()
    invite = calling(ua)
    ua.receive_data(reliable_183(invite, 1), SERVER, 0.1)
    requests(ua)
    events(ua)
    contact = [("Contact", "<sip:tone@192.0.2.20:5070>")]
    ua.receive_data(reply(invite, 200, "OK", contact, to_tag="t"), SERVER, 0.5)
    assert events(ua) == [CallAnswered(ANSWER)]
