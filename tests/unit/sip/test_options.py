"""Out-of-dialog OPTIONS through the user agent (RFC 3261 §11): the request, a digest challenge
answered like any other request's, the answer's fields, and the timeout."""

from __future__ import annotations

from dataclasses import replace

from sip2rtmp.outcomes import Unanswered
from sip2rtmp.sip.auth import choose_challenge, digest_response, parse_challenges
from sip2rtmp.sip.events import OptionsAnswered, OptionsFailed
from sip2rtmp.sip.message import Request, parse_message
from sip2rtmp.sip.useragent import UserAgent
from tests.unit.sip.exchange import CONFIG, SERVER, make_ua, reply, retransmission_times
from tests.unit.sip.exchange import agent_events as events

CHALLENGE = 'Digest realm="lab.test", nonce="n0nce", qop="auth", algorithm=MD5'
CAPABILITIES = [
    ("Allow", "INVITE, ACK, CANCEL, OPTIONS, BYE"),
    ("Allow", "REGISTER"),
    ("Supported", "timer, path"),
    ("Server", "kamailio (5.6.3 (x86_64/linux))"),
]


def requests(ua: UserAgent) -> list[Request]:
    out = []
    for data, addr in ua.data_to_send(0.0):
        assert addr == SERVER
        message = parse_message(data)
        assert isinstance(message, Request)
        out.append(message)
    return out


def test_options_to_the_domain_and_its_answer() -> None:
    ua = make_ua()
    ua.options(0.0)
    [options] = requests(ua)
    assert (options.method, options.uri) == ("OPTIONS", "sip:lab.test")
    assert options.to.uri == "sip:lab.test" and options.to.tag is None
    assert options.from_.uri == "sip:relay@lab.test" and options.from_.tag
    assert options.cseq == (1, "OPTIONS")
    assert options.headers.get("Accept") == "application/sdp"
    assert ";rport;branch=z9hG4bK" in (options.headers.get("Via") or "")
    ua.receive_data(reply(options, 100, "Trying"), SERVER, 0.1)
    assert events(ua) == []
    ua.receive_data(reply(options, 200, "OK", CAPABILITIES, to_tag="s"), SERVER, 0.2)
    assert events(ua) == [
        OptionsAnswered(
            200,
            "OK",
            allow=("INVITE", "ACK", "CANCEL", "OPTIONS", "BYE", "REGISTER"),
            supported=("timer", "path"),
            server="kamailio (5.6.3 (x86_64/linux))",
        )
    ]
    assert not ua.registered and not ua.in_call


def test_options_to_a_given_uri_names_a_user_agent_header_as_the_server() -> None:
    ua = make_ua()
    ua.options(0.0, "sip:tone@lab.test")
    [options] = requests(ua)
    assert options.uri == "sip:tone@lab.test" and options.to.uri == "sip:tone@lab.test"
    answer = reply(options, 404, "Not Found", [("User-Agent", "baresip v1.0.0")], to_tag="x")
    ua.receive_data(answer, SERVER, 0.1)
    assert events(ua) == [OptionsAnswered(404, "Not Found", server="baresip v1.0.0")]


def test_a_challenge_is_answered_once_with_the_same_call_id() -> None:
    ua = make_ua()
    ua.options(0.0)
    [first] = requests(ua)
    challenge = [("Proxy-Authenticate", CHALLENGE)]
    ua.receive_data(reply(first, 407, "Proxy Authentication Required", challenge), SERVER, 0.1)
    [second] = requests(ua)
    assert events(ua) == []
    assert (second.call_id, second.from_.tag) == (first.call_id, first.from_.tag)
    assert second.cseq == (2, "OPTIONS")
    assert second.top_via.branch != first.top_via.branch
    parsed = choose_challenge(parse_challenges([CHALLENGE], proxy=True))
    assert parsed is not None
    authorization = second.headers.get("Proxy-Authorization") or ""
    cnonce = authorization.split('cnonce="')[1].split('"')[0]
    expected, _ = digest_response(
        parsed, CONFIG.credentials, method="OPTIONS", uri="sip:lab.test", cnonce=cnonce
    )
    assert f'response="{expected}"' in authorization
    ua.receive_data(reply(second, 484, "Address Incomplete", to_tag="k"), SERVER, 0.2)
    assert events(ua) == [OptionsAnswered(484, "Address Incomplete")]


def test_a_repeated_challenge_is_reported_as_the_answer() -> None:
    """A second challenge for the same credentials means they are refused: the server still
    answered, so OPTIONS reports that answer rather than asking again."""
    ua = make_ua()
    ua.options(0.0)
    [first] = requests(ua)
    challenge = [("Proxy-Authenticate", CHALLENGE)]
    ua.receive_data(reply(first, 407, "Proxy Auth", challenge), SERVER, 0.1)
    [second] = requests(ua)
    again = [("Proxy-Authenticate", CHALLENGE.replace("n0nce", "other"))]
    ua.receive_data(reply(second, 407, "Proxy Auth", again), SERVER, 0.2)
    assert requests(ua) == []
    assert events(ua) == [OptionsAnswered(407, "Proxy Auth")]


def test_no_answer_is_unanswered_after_timer_f_with_retransmissions() -> None:
    ua = make_ua(replace(CONFIG, outbound_proxy="192.0.2.10"))
    ua.options(0.0)
    requests(ua)
    times = retransmission_times(ua)
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert events(ua) == [OptionsFailed(Unanswered("OPTIONS", "192.0.2.10", 32.0))]


def test_no_retransmission_over_tcp_but_the_timeout_remains() -> None:
    ua = make_ua(replace(CONFIG, transport="tcp"))
    ua.options(0.0)
    [options] = requests(ua)
    assert "SIP/2.0/TCP" in (options.headers.get("Via") or "")
    assert ua.get_timer() == 32.0
    ua.handle_timer(32.0)
    assert requests(ua) == []
    assert events(ua) == [OptionsFailed(Unanswered("OPTIONS", "lab.test", 32.0))]


def test_a_user_agent_answering_with_sdp_shows_the_media_it_would_accept() -> None:
    """RFC 3261 §11.2: a user agent may answer OPTIONS with the SDP it would answer an INVITE
    with; only an application/sdp body is reported as such."""
    sdp = b"v=0\r\nm=audio 9 RTP/SAVP 0\r\n"
    for content_type, reported in (("application/sdp", sdp), ("text/plain", None)):
        ua = make_ua()
        ua.options(0.0, "sip:srtp@lab.test")
        [options] = requests(ua)
        extra = [("Content-Type", content_type)]
        ua.receive_data(reply(options, 200, "OK", extra, to_tag="y", body=sdp), SERVER, 0.1)
        assert events(ua) == [OptionsAnswered(200, "OK", sdp=reported)]
