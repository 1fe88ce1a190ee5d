"""Boundaries and exact rules of the message layer: status-code range, header-field order,
parameter and address rendering, the stream framer's sizes and cuts, and the text of the errors
that reach the log (RFC 3261 §7, §18.3, §20, §25)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sip2rtmp.sip import message as message_module
from sip2rtmp.sip.message import (
    MAX_FIELD_LENGTH,
    MAX_HEADER_FIELDS,
    MAX_MESSAGE_SIZE,
    Headers,
    NameAddr,
    Params,
    Request,
    Response,
    SipEncodeError,
    SipParseError,
    StreamFramer,
    Via,
    bounded_int,
    format_params,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_params,
    parse_uri,
    parse_via,
)
from tests.unit.sip.test_message_hostile import replaced, request

STATUS = (
    "SIP/2.0 {} Reason\r\n"
    "Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-status\r\n"
    "From: <sip:peer@192.0.2.9>;tag=s1\r\n"
    "To: <sip:relay@192.0.2.1>;tag=s2\r\n"
    "Call-ID: status@192.0.2.9\r\n"
    "CSeq: 1 INVITE\r\n"
    "Content-Length: 0\r\n\r\n"
)


# --- status codes: three digits, 1xx to 6xx (RFC 3261 §7.2, §21) ------------------------------


@pytest.mark.parametrize("status", [100, 180, 699])
def test_status_codes_1xx_to_6xx_parse_and_encode(status: int) -> None:
    response = parse_message(STATUS.format(status).encode())
    assert isinstance(response, Response)
    assert (response.status, response.reason) == (status, "Reason")
    assert response.to_bytes().startswith(f"SIP/2.0 {status} Reason\r\n".encode())


@pytest.mark.parametrize("text", ["099", "700", "999"])
def test_three_digit_status_codes_outside_1xx_to_6xx_are_refused(text: str) -> None:
    with pytest.raises(SipParseError, match=f"status code {int(text)} out of range"):
        parse_message(STATUS.format(text).encode())


@pytest.mark.parametrize("status", [99, 700, 1000])
def test_status_codes_outside_1xx_to_6xx_are_never_sent(status: int) -> None:
    with pytest.raises(SipEncodeError, match=f"status code {status} is not three digits"):
        Response(status, "OK", Headers([("Call-ID", "c")])).to_bytes()


# --- header fields: order kept (RFC 3261 §7.3.1) ----------------------------------------------


def test_set_replaces_every_field_of_a_name_where_the_first_one_was() -> None:
    """The relative order of fields of one name matters (§7.3.1): set() keeps the new value
    where the first field of that name stood, and appends a name not yet present."""
    headers = Headers([("Via", "v1"), ("t", "to1"), ("Call-ID", "c"), ("To", "to2")])
    headers.set("TO", "new")
    assert list(headers) == [("Via", "v1"), ("To", "new"), ("Call-ID", "c")]
    headers.set("X-New", "x")
    assert list(headers) == [("Via", "v1"), ("To", "new"), ("Call-ID", "c"), ("X-New", "x")]


# --- parameters and addresses as text (RFC 3261 §20.10, §20.42, §25.1) ------------------------


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"lr": None}, ";lr"),
        ({"tag": "x~y"}, ";tag=x~y"),
        ({"received": "192.0.2.1", "maddr": "[2001:db8::1]"},
         ";received=192.0.2.1;maddr=[2001:db8::1]"),
        ({"x": "a b"}, ';x="a b"'),
        ({"x": 'q"\\'}, ';x="q\\"\\\\"'),
        ({"x": ""}, ';x=""'),
    ],
    ids=["flag", "token", "hosts", "space", "quote-and-backslash", "empty"],
)  # fmt: skip
def test_parameter_values_are_written_bare_when_a_token_or_host_else_quoted(
    params: Params, text: str
) -> None:
    """gen-value = token / host / quoted-string (§25.1): written back, each reads the same."""
    assert format_params(params) == text
    assert parse_params(text, what="test") == params


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (NameAddr("sip:a@b"), "<sip:a@b>"),
        (NameAddr("sip:a@b", display_name=""), "<sip:a@b>"),
        (NameAddr("sip:a@b", "Bob", {"tag": "1"}), '"Bob" <sip:a@b>;tag=1'),
        (NameAddr("sips:a@b", 'J "R" \\', {"q": "0.5"}), '"J \\"R\\" \\\\" <sips:a@b>;q=0.5'),
    ],
    ids=["bare", "empty-display", "display-and-tag", "escaped-display"],
)
def test_name_addr_is_written_as_name_addr_and_reads_back(address: NameAddr, text: str) -> None:
    """name-addr = [display-name] LAQUOT addr-spec RAQUOT (§25.1), the display name quoted."""
    assert str(address) == text
    assert parse_name_addr(text) == NameAddr(address.uri, address.display_name or None,
                                             address.params)  # fmt: skip


@pytest.mark.parametrize(
    ("via", "text"),
    [
        (Via("udp", "192.0.2.1", 5060, {"branch": "z9hG4bK1", "rport": None}),
         "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport"),
        (Via("TCP", "[2001:db8::1]"), "SIP/2.0/TCP [2001:db8::1]"),
    ],
    ids=["port-and-params", "bare"],
)  # fmt: skip
def test_via_is_written_as_sent_protocol_and_sent_by(via: Via, text: str) -> None:
    """via-parm = sent-protocol LWS sent-by *( SEMI via-params ) (§20.42, §25.1); the
    transport is written upper-case, as the parser reads it."""
    assert str(via) == text
    assert parse_via(text) == Via(via.transport.upper(), via.host, via.port, via.params)


# --- sizes at the limit -----------------------------------------------------------------------


def _sized(size: int) -> bytes:
    """A request of exactly `size` bytes, its body filling what the head leaves."""
    head = len(request("Content-Length: 00000"))
    return request(f"Content-Length: {size - head:05d}", body=b"b" * (size - head))


def test_a_message_of_exactly_the_size_limit_parses_one_byte_more_does_not() -> None:
    assert len(parse_message(_sized(MAX_MESSAGE_SIZE)).body) > 65_000
    with pytest.raises(SipParseError, match=f"exceeds the {MAX_MESSAGE_SIZE}-byte limit"):
        parse_message(_sized(MAX_MESSAGE_SIZE + 1))


@pytest.mark.parametrize("size", [1_000, MAX_MESSAGE_SIZE])
def test_framer_takes_a_message_of_exactly_its_limit_and_refuses_one_byte_more(size: int) -> None:
    data = _sized(size)
    assert StreamFramer(max_size=size).feed(data) == [data]
    with pytest.raises(SipParseError, match=f"message of {size} bytes exceeds the {size - 1}-byte"):
        StreamFramer(max_size=size - 1).feed(data)


def test_framer_waits_for_a_head_of_exactly_its_limit_and_refuses_one_byte_more() -> None:
    """The limit is on what the header section exceeds: at the limit nothing is refused yet."""
    head = b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"y" * 100
    framer = StreamFramer(max_size=len(head))
    assert framer.feed(head) == []
    with pytest.raises(SipParseError, match=f"header section exceeds {len(head)} bytes"):
        framer.feed(b"y")


def test_the_header_field_cap_is_the_same_for_parser_and_framer() -> None:
    """`MAX_HEADER_FIELDS` fields are taken, one more is refused by both."""
    base = len(parse_message(request()).headers)
    at_cap = request(*["X: y"] * (MAX_HEADER_FIELDS - base - 1), "Content-Length: 0")
    over = request(*["X: y"] * (MAX_HEADER_FIELDS - base), "Content-Length: 0")
    assert len(parse_message(at_cap).headers) == MAX_HEADER_FIELDS
    assert StreamFramer().feed(at_cap) == [at_cap]
    for parse in (parse_message, StreamFramer().feed):
        with pytest.raises(SipParseError, match=f"more than {MAX_HEADER_FIELDS} header fields"):
            parse(over)


# --- stream framing (RFC 3261 §18.3) ----------------------------------------------------------

FIRST = request("Subject: x", "Content-Length: 3", body=b"abc")
"""Content-Length as the last field: a head end found one byte late would end its value with
the CR of the empty line, which is no number."""
SECOND = request("l: 0")


def test_framer_yields_the_messages_wherever_the_stream_is_cut_in_two() -> None:
    stream = FIRST + SECOND
    for cut in range(len(stream) + 1):
        framer = StreamFramer()
        assert framer.feed(stream[:cut]) + framer.feed(stream[cut:]) == [FIRST, SECOND], cut


def test_framer_yields_the_message_wherever_its_empty_line_is_cut_in_three() -> None:
    end = FIRST.index(b"\r\n\r\n")
    for first in range(end - 2, end + 5):
        for second in range(first, end + 6):
            framer = StreamFramer()
            pieces = (FIRST[:first], FIRST[first:second], FIRST[second:])
            assert [m for piece in pieces for m in framer.feed(piece)] == [FIRST], (first, second)


def test_framer_works_out_each_message_size_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The head is read for its Content-Length once per message, however the body trickles."""
    calls: list[bytes] = []
    declared: Callable[[bytes], int] = message_module._declared_length

    def counted(head: bytes) -> int:
        calls.append(head)
        return declared(head)

    monkeypatch.setattr(message_module, "_declared_length", counted)
    framer = StreamFramer()
    stream = FIRST + SECOND
    out = [m for at in range(len(stream)) for m in framer.feed(stream[at : at + 1])]
    assert out == [FIRST, SECOND]
    assert len(calls) == 2


@pytest.mark.parametrize("prefix", [b" ", b"\t", b"X"])
def test_only_cr_and_lf_between_messages_are_keepalives(prefix: bytes) -> None:
    """A keepalive is CRLF (RFC 5626 §3.5.1); any other byte starts the next message, which
    the parser then judges."""
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n" + prefix + SECOND) == [prefix + SECOND]
    assert framer.feed(b"\r\n" + prefix + SECOND) == [prefix + SECOND]


@pytest.mark.parametrize("name", ["Content-Length\x0c", "Content-Length\x0b", "Content-LengthX"])
def test_a_field_name_that_only_resembles_content_length_sets_no_size(name: str) -> None:
    """Only SP and HT may stand between a field name and its colon (HCOLON, §25.1): the
    parser refuses or ignores these fields, so the framer must not size a frame by them."""
    head = request(f"{name}: 3")
    assert StreamFramer().feed(head + b"abc") == [head]


def test_a_content_length_with_text_after_the_number_cannot_be_framed() -> None:
    with pytest.raises(SipParseError, match="bad Content-Length"):
        StreamFramer().feed(request("Content-Length: 3:4", body=b"abc"))


# --- what the errors say ----------------------------------------------------------------------

LONG_METHOD = "IN VITE " + "x" * 60
BAD_NAME = "X Bad " + "n" * 60
OPEN_QUOTE = '"' + "a" * 60 + " <sip:a@b>"
BAD_STATUS = "SIP/2.0 20 " + "r" * 120


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: Request(LONG_METHOD, "sip:a@h", Headers()).to_bytes(),
         f"method {LONG_METHOD[:40]!r} is not a token"),
        (lambda: Request("INVITE", "sip:a@h x", Headers()).to_bytes(),
         "the Request-URI is empty or holds whitespace"),
        (lambda: Request("INVITE", "sip:a@h\tx", Headers()).to_bytes(),
         "the Request-URI is empty or holds whitespace"),
        (lambda: Request("INVITE", "", Headers()).to_bytes(),
         "the Request-URI is empty or holds whitespace"),
        (lambda: Request("INVITE", "sip:a@h", Headers([(BAD_NAME, "v")])).to_bytes(),
         f"header name {BAD_NAME[:40]!r} is not a token"),
        (lambda: Request("INVITE", "sip:a@h", Headers([("s", "secret\r\nX: 1")])).to_bytes(),
         "CR, LF or NUL in 'Subject'"),
        (lambda: Response(200, "OK\r\nX: 1", Headers([("Subject", "secret")])).to_bytes(),
         "CR, LF or NUL in the start line"),
        (lambda: Request("INVITE", "sip:a@h", Headers([("s", "\ud800")])).to_bytes(),
         "a header field is not encodable as UTF-8"),
        (lambda: parse_name_addr(OPEN_QUOTE),
         f"unterminated quoted string in {OPEN_QUOTE[:40]!r}"),
        (lambda: parse_message(STATUS.replace("SIP/2.0 {} Reason", BAD_STATUS).encode()),
         f"bad Status-Line: {BAD_STATUS[:100]!r}"),
    ],
    ids=["method", "uri-space", "uri-tab", "uri-empty", "header-name", "header-value",
         "start-line", "not-utf-8", "open-quote", "status-line"],
)  # fmt: skip
def test_errors_name_the_fault_and_quote_a_bounded_excerpt(
    call: Callable[[], object], error: str
) -> None:
    """Errors reach the log: each says what is wrong and quotes at most a fixed number of the
    offending characters, so a hostile value cannot flood the log; an encoding error names the
    field, never its value (which may hold a secret)."""
    with pytest.raises((SipParseError, SipEncodeError)) as raised:
        call()
    assert str(raised.value) == error


L = "x" * 120
"""Longer than any excerpt an error quotes."""


def _msg(old: str, new: str) -> Callable[[], object]:
    return lambda: parse_message(replaced(old, new))


def _add(*fields: str) -> Callable[[], object]:
    return lambda: parse_message(request(*fields))


def _q(text: str, width: int = 80) -> str:
    """The excerpt of `text` an error quotes."""
    return repr(text[:width])


DISPLAY_NO_BRACKET = '"Bob" sip:a@b' + L
OPEN_PARAM = 'a="' + L
VT_NAME = "Subject\x0b: v"
PARSE_ERRORS: dict[str, tuple[Callable[[], object], str]] = {
    "uri-scheme": (
        lambda: parse_uri("http:" + L),
        f"not a sip: or sips: URI: {_q('http:' + L)}",
    ),
    "uri-space": (
        lambda: parse_uri("sip:a b" + L),
        f"URI contains whitespace, quotes or angle brackets: {_q('sip:a b' + L)}",
    ),
    "uri-user": (lambda: parse_uri("sip:@h" + L), f"empty user part in {_q('sip:@h' + L)}"),
    "uri-host": (lambda: parse_uri("sip:h!" + L), f"bad host in {_q('sip:h!' + L)}"),
    "uri-v6-host": (lambda: parse_uri("sip:[::1]x" + L), f"bad host in {_q('sip:[::1]x' + L)}"),
    "uri-port": (lambda: parse_uri("sip:h:65536;" + L), f"bad port in {_q('sip:h:65536;' + L)}"),
    "not-a-uri": (lambda: parse_name_addr(f"<1{L}>"), f"not a URI: {_q('1' + L)}"),
    "other-uri-space": (
        lambda: parse_name_addr(f"<tel:1 {L}>"),
        f"URI contains whitespace, quotes or angle brackets: {_q('tel:1 ' + L)}",
    ),
    "display-no-bracket": (
        lambda: parse_name_addr(DISPLAY_NO_BRACKET),
        f"expected '<' after display name in {_q(DISPLAY_NO_BRACKET)}",
    ),
    "display-not-token": (
        lambda: parse_name_addr(f"B;{L} <sip:a@b>"),
        f"display name is neither tokens nor quoted: {_q('B;' + L + ' ')}",
    ),
    "no-closing-bracket": (
        lambda: parse_name_addr(f"<sip:a@b{L}"),
        f"missing '>' in {_q('<sip:a@b' + L)}",
    ),
    "brackets-required": (
        lambda: parse_name_addr(f"sip:a@b{L}", require_brackets=True),
        f"expected <URI> in {_q('sip:a@b' + L)}",
    ),
    "bare-uri-with-query": (
        lambda: parse_name_addr(f"sip:a@b?{L}"),
        f"URI with '?' or ',' needs angle brackets: {_q('sip:a@b?' + L)}",
    ),
    "via": (lambda: parse_via(f"SIP/2.0/UDP {L} x"), f"bad Via: {_q('SIP/2.0/UDP ' + L + ' x')}"),
    "via-port": (
        lambda: parse_via(f"SIP/2.0/UDP h:65536;{L}"),
        f"Via port out of range: {_q('SIP/2.0/UDP h:65536;' + L)}",
    ),
    "cseq": (lambda: parse_cseq(f"1 INVITE {L}"), f"bad CSeq: {_q('1 INVITE ' + L)}"),
    "cseq-number": (
        lambda: parse_cseq("4294967296 INVITE"),
        "CSeq number 4294967296 exceeds 2**32-1",
    ),
    "params-start": (
        lambda: parse_params("a=b", what="Via"),
        "Via: expected ';' before parameters in 'a=b'",
    ),
    "param-name": (lambda: parse_params(";a b", what="URI"), "URI: bad parameter 'a b'"),
    "param-after-quote": (
        lambda: parse_params(';a="q" x', what="address"),
        "address: text after quoted parameter 'a'",
    ),
    "param-value": (
        lambda: parse_params(";a=b c", what="Via"),
        "Via: bad value for parameter 'a'",
    ),
    "param-open-quote": (
        lambda: parse_params(";" + OPEN_PARAM, what="Via"),
        f"unterminated quoted string in {_q(OPEN_PARAM, 40)}",
    ),
    "request-line": (
        _msg("INVITE sip:", f"INVITE  sip:{L}"),
        f"bad Request-Line: {_q('INVITE  sip:' + L + 'relay@192.0.2.1 SIP/2.0', 100)}",
    ),
    "method": (_msg("INVITE sip:", f"I@{L} sip:"), f"bad method: {_q('I@' + L, 40)}"),
    "header-line": (_add(f"Bad Name{L}: v"), f"bad header line: {_q('Bad Name' + L + ': v')}"),
    "content-length": (
        _add(f"Content-Length: 1x{L}"),
        f"bad Content-Length: {_q('1x' + L, 20)}",
    ),
    "short-body": (_add("Content-Length: 5"), "body is 0 bytes, Content-Length says 5"),
    "no-via": (
        _msg("Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-hostile\r\n", ""),
        "missing Via header field",
    ),
    "two-cseq": (_add("CSeq: 2 INVITE"), "more than one CSeq header field"),
    "two-froms": (
        _msg("From: <sip:peer@192.0.2.9>;tag=h1", "From: <sip:a@b>, <sip:c@d>"),
        "From holds more than one address",
    ),
    "call-id": (
        _msg("Call-ID: hostile@192.0.2.9", f"Call-ID: a b{L}"),
        f"bad Call-ID: {_q('a b' + L)}",
    ),
    "cseq-method": (
        _msg("CSeq: 1 INVITE", "CSeq: 1 BYE"),
        "CSeq method 'BYE' differs from 'INVITE'",
    ),
    "max-forwards": (_add(f"Max-Forwards: 1x{L}"), f"bad Max-Forwards: {_q('1x' + L, 20)}"),
    "empty-element": (
        _add(f"Contact: <sip:a{L}@b>,,<sip:c@d>"),
        f"empty element in Contact: {_q('<sip:a' + L + '@b>,,<sip:c@d>')}",
    ),
    "no-empty-line": (
        lambda: parse_message(request()[:-2]),
        "no empty line after the header fields",
    ),
    "bare-cr": (_add("X: a\rb"), "CR without LF in the header section"),
    "nul-in-start-line": (_msg("relay@", "re\x00lay@"), "NUL in the start line"),
    "continuation": (
        _msg("SIP/2.0\r\n", "SIP/2.0\r\n x\r\n"),
        "header continuation line right after the start line",
    ),
    "two-content-lengths": (
        _add("Content-Length: 0", "l: 1"),
        "conflicting Content-Length header fields",
    ),
    "params-start-long": (
        lambda: parse_params("a" + L, what="Via"),
        f"Via: expected ';' before parameters in {_q('a' + L)}",
    ),
    "param-name-long": (
        lambda: parse_params(";a b" + L, what="URI"),
        f"URI: bad parameter {_q('a b' + L)}",
    ),
    "param-after-quote-long": (
        lambda: parse_params(f';{L}="q" x', what="address"),
        f"address: text after quoted parameter {_q(L)}",
    ),
    "param-value-long": (
        lambda: parse_params(f";{L}=b c", what="Via"),
        f"Via: bad value for parameter {_q(L)}",
    ),
    "via-param": (lambda: parse_via("SIP/2.0/UDP h;a b"), "Via: bad parameter 'a b'"),
    "via-transport": (
        lambda: parse_via(f"SIP/2.0/U@P h;{L}"),
        f"bad Via: {_q('SIP/2.0/U@P h;' + L)}",
    ),
    "address-param": (
        lambda: parse_name_addr("<sip:a@b>;a b"),
        "address: bad parameter 'a b'",
    ),
    "bare-address-param": (
        lambda: parse_name_addr("sip:a@b;a b"),
        "address: bad parameter 'a b'",
    ),
    "bare-uri-with-comma": (
        lambda: parse_name_addr(f"sip:a,b@c{L}"),
        f"URI with '?' or ',' needs angle brackets: {_q('sip:a,b@c' + L)}",
    ),
    "sips-port": (lambda: parse_name_addr("<sips:h:65536>"), "bad port in 'sips:h:65536'"),
    "two-from-fields": (_add("From: <sip:a@b>"), "more than one From header field"),
    "two-to-fields": (_add("t: <sip:a@b>"), "more than one To header field"),
    "two-call-ids": (_add("i: other@b"), "more than one Call-ID header field"),
    "two-max-forwards": (
        _add("Max-Forwards: 70", "Max-Forwards: 70"),
        "more than one Max-Forwards header field",
    ),
    "two-tos": (
        _msg("To: <sip:relay@192.0.2.1>", "To: <sip:a@b>, <sip:c@d>"),
        "To holds more than one address",
    ),
    "contact-after-star": (
        _add("Contact: *", "Contact: <sip:a@b"),
        "missing '>' in '<sip:a@b'",
    ),
    "bare-route": (_add("Route: sip:p@h;lr"), "expected <URI> in 'sip:p@h;lr'"),
    "bare-record-route": (
        _add("Record-Route: sip:p@h;lr"),
        "expected <URI> in 'sip:p@h;lr'",
    ),
    "uri-param-name": (lambda: parse_uri("sip:h;=x"), "URI: bad parameter '=x'"),
    "uri-empty-port": (lambda: parse_uri("sip:h:"), "bad port in 'sip:h:'"),
    "uri-v6-port": (lambda: parse_uri("sip:[::1]:5]"), "bad port in 'sip:[::1]:5]'"),
    "header-name-vt": (_add("Subject\x0b: v"), f"bad header line: {_q(VT_NAME)}"),
    "continuation-tab": (
        _msg("SIP/2.0\r\n", "SIP/2.0\r\n\tx\r\n"),
        "header continuation line right after the start line",
    ),
}


@pytest.mark.parametrize("name", sorted(PARSE_ERRORS))
def test_parse_errors_name_the_fault_and_quote_a_bounded_excerpt(name: str) -> None:
    """What a peer sent wrong reaches the log as the error's text: it names the rule broken
    and quotes a bounded excerpt (RFC 3261 §25; RFC 4475 §3.1.2 for the cases)."""
    call, error = PARSE_ERRORS[name]
    with pytest.raises(SipParseError) as raised:
        call()
    assert str(raised.value) == error


@pytest.mark.parametrize("value", ['"Bob"\x0c<sip:a@b>', '"Bob"\x0b<sip:a@b>', '"Bob"X<sip:a@b>'])
def test_only_lws_may_follow_a_quoted_display_name(value: str) -> None:
    """name-addr = [display-name] LAQUOT addr-spec RAQUOT, LAQUOT = SWS "<" (§25.1): between
    the quoted name and "<" only SP and HT."""
    with pytest.raises(SipParseError, match="expected '<' after display name"):
        parse_name_addr(value)
    assert parse_name_addr(value[:5] + " \t" + value[6:]).display_name == "Bob"


def test_cseq_numbers_up_to_2_32_minus_1_parse() -> None:
    """The CSeq number is a 32-bit unsigned integer (RFC 3261 §8.1.1.5)."""
    assert parse_cseq("4294967295 INVITE") == (2**32 - 1, "INVITE")
    assert parse_cseq("0 ACK") == (0, "ACK")


def test_a_non_str_key_is_never_a_header_field() -> None:
    """`in` on Headers answers for header names only; any other key is simply absent."""
    headers = Headers([("None", "x"), ("1", "y")])
    assert "none" in headers
    assert None not in headers
    assert 1 not in headers


def test_x_is_an_ordinary_character_of_call_ids_and_other_uris() -> None:
    """callid = word ["@" word] and an absoluteURI may hold letters anywhere (§25.1); only
    LWS (and, in addresses, quotes and angle brackets) is refused."""
    parsed = parse_message(replaced("Call-ID: hostile@", "Call-ID: X@"))
    assert parsed.call_id == "X@192.0.2.9"
    assert parse_name_addr("<urn:X:Y>").uri == "urn:X:Y"


@pytest.mark.parametrize(
    ("value", "uri"),
    [("sip:a@hX ;tag=1", "sip:a@hX"), ("sip:a@h \t;tag=1", "sip:a@h")],
)
def test_a_bare_addr_spec_loses_only_the_lws_before_its_parameters(value: str, uri: str) -> None:
    """In `addr-spec *( SEMI param )` only LWS may stand before the `;` (§25.1, §7.3.1)."""
    assert parse_name_addr(value).uri == uri


@pytest.mark.parametrize("space", ["\x0b", "\x0c", "\u00a0"])
def test_a_bare_addr_spec_followed_by_non_lws_space_is_refused(space: str) -> None:
    """LWS is SP and HT only (§25.1): other white space stays in the URI, which refuses it."""
    with pytest.raises(SipParseError, match="sip:a@h"):
        parse_name_addr(f"sip:a@h{space};tag=1")


@pytest.mark.parametrize("text", ["\x0b7", "7\x0c", "X7", "7X", "", " \t"])
def test_a_number_is_digits_with_only_lws_around(text: str) -> None:
    """Numbers in header fields are 1*DIGIT with LWS around (§25.1, §7.3.1): any other
    character, white space other than SP and HT included, makes them no number."""
    assert bounded_int(text, 255) is None
    assert bounded_int(" \t7\t ", 255) == 7


@pytest.mark.parametrize("prefix", [b" ", b"\x0b", b"X"])
def test_only_cr_and_lf_may_precede_the_start_line(prefix: bytes) -> None:
    """Empty lines before the start line are ignored (§7.5); nothing else is."""
    assert parse_message(b"\r\n\r\n" + request()).call_id == "hostile@192.0.2.9"
    with pytest.raises(SipParseError):
        parse_message(prefix + request())


def test_a_start_line_of_exactly_the_field_limit_parses_one_byte_more_does_not() -> None:
    """The start line is bounded like any header field (MAX_FIELD_LENGTH)."""
    line = "INVITE sip:relay@192.0.2.1 SIP/2.0"
    user = "u" * (MAX_FIELD_LENGTH - len(line) + len("relay"))
    exact = replaced("relay@192.0.2.1 SIP", f"{user}@192.0.2.1 SIP")
    assert len(exact.split(b"\r\n")[0]) == MAX_FIELD_LENGTH
    assert isinstance(parse_message(exact), Request)
    with pytest.raises(SipParseError, match="start line"):
        parse_message(replaced("relay@192.0.2.1 SIP", f"{user}u@192.0.2.1 SIP"))


def test_header_values_lose_only_lws_at_their_ends_and_at_folds() -> None:
    """LWS around a value and at a fold is not part of it (§7.3.1); other white space and
    runs of spaces inside it are."""
    parsed = parse_message(request("Subject: \x0ba  b\x0c", "X-Folded: a  b\r\n \t c"))
    assert parsed.headers.get("Subject") == "\x0ba  b\x0c"
    assert parsed.headers.get("X-Folded") == "a  b c"
