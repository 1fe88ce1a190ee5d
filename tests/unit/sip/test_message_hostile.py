"""The message layer against hostile input: linear cost, caps, typed errors only, no header
injection on the way out, and a stream framer that stays linear however the stream is cut.

Cost is measured without a clock (tests/unit/sip/work.py): Python lines executed and the
characters each compiled pattern is handed.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from sip2rtmp.sip import message as message_module
from sip2rtmp.sip.message import (
    MAX_FIELD_LENGTH,
    MAX_LIST_ELEMENTS,
    MAX_MESSAGE_SIZE,
    Headers,
    Request,
    Response,
    SipEncodeError,
    SipParseError,
    StreamFramer,
    bounded_int,
    parse_message,
    parse_name_addr,
    parse_uri,
    split_list,
)
from tests.unit.sip.work import watch

HEAD = (
    "INVITE sip:relay@192.0.2.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-hostile\r\n"
    "From: <sip:peer@192.0.2.9>;tag=h1\r\n"
    "To: <sip:relay@192.0.2.1>\r\n"
    "Call-ID: hostile@192.0.2.9\r\n"
    "CSeq: 1 INVITE\r\n"
)


def request(*extra: str, body: bytes = b"") -> bytes:
    lines = "".join(f"{line}\r\n" for line in extra)
    return (HEAD + lines + "\r\n").encode("utf-8", "surrogateescape") + body


def fill(prefix: str, unit: str, suffix: str = "", size: int = 64_000) -> str:
    """`prefix`, then `unit` repeated to about `size` characters, then `suffix`."""
    return prefix + unit * (size // len(unit)) + suffix


def replaced(old: str, new: str) -> bytes:
    """The base request with one of its own fields or its start line replaced."""
    return request().replace(old.encode(), new.encode(), 1)


# --- linear cost ------------------------------------------------------------------------------

PATHOLOGICAL = {
    "spaces in a value, no newline": request(fill("X: a", " ", "b")),
    "tabs in a value, no newline": request(fill("X: a", "\t", "b")),
    "spaces after a name": request(fill("X", " ", "y")),
    "spaces inside Via": request(fill("Via: SIP/2.0/UDP h", " ", "x")),
    "spaces inside CSeq": replaced("CSeq: 1 INVITE", fill("CSeq: 1", " ", "INVITE x")),
    "folded lines": request(fill("X: a", "\r\n b")),
    "whitespace-only continuation lines": request(fill("X: a", "\r\n ")),
    "commas in Contact": request(fill("Contact: ", ",")),
    "quotes in Contact": request(fill("Contact: ", '"')),
    "quoted pairs in a display name": request(fill('Contact: "', "\\a", '" <sip:a@b>')),
    "open angle brackets": request(fill("Contact: ", "<")),
    "semicolons after an address": request(fill("Contact: <sip:a@b>", ";")),
    "header parameters": request(fill("Contact: <sip:a@b>", ";a=b")),
    "URI parameters": request(fill("Contact: <sip:a@b", ";a=b", ">")),
    "Via parameters": request(fill("Via: SIP/2.0/UDP h", ";a")),
    "Via list": request(fill("Via: SIP/2.0/UDP h", ",SIP/2.0/UDP h")),
    "Record-Route of 5,000": request(fill("Record-Route: <sip:p;lr>", ",<sip:p;lr>")),
    "Max-Forwards digits": request(fill("Max-Forwards: ", "9")),
    "Content-Length digits": request(fill("Content-Length: ", "9")),
    "token display name words": request(fill("Contact: ", "a ", "<sip:a@b>")),
    "long Request-URI": replaced("sip:relay@192.0.2.1 ", fill("sip:", "a", " ")),
    "long display name": replaced("To: <", fill("To: ", "a", " <")),
    "long host": replaced("To: <sip:relay@192.0.2.1>", fill("To: <sip:relay@", "h", "!>")),
    "many header fields": request(*["X: y"] * 10_000),
    "bare CRs": request(fill("X: a", "\r", "b")),
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_64_kb_of_pathological_input_costs_a_bounded_number_of_steps(name: str) -> None:
    """Before, folding was a regex over the whole header section (`[ \\t]*\\r?\\n[ \\t]+`) that
    backtracked quadratically on a run of blanks (60 KB: 22 s), and lists, quoted strings and
    parameters were walked one character per Python step. Now no pattern of unbounded width
    sees more than one header field, and the Python steps do not follow the size."""
    data = PATHOLOGICAL[name][:MAX_MESSAGE_SIZE]
    assert len(data) > 60_000
    with watch(message_module) as work, contextlib.suppress(SipParseError):
        parse_message(data)
    assert work.largest_unbounded() <= MAX_FIELD_LENGTH
    assert work.lines < 20_000


def test_a_long_blank_run_in_a_value_costs_the_same_steps_at_4x_the_size() -> None:
    costs = []
    for size in (2_000, 8_000):
        with watch(message_module) as work:
            message = parse_message(request("X: a" + " " * (size - 4) + "b"))
        assert message.headers.get("X") == "a" + " " * (size - 4) + "b"
        costs.append((work.lines, work.largest_unbounded()))
    assert costs[0] == costs[1]


def _steps(data: bytes) -> int:
    with watch(message_module) as work:
        parse_message(data)
    return work.lines


@pytest.mark.parametrize(
    "build",
    [
        lambda n: request('Contact: "' + "\\q" * n + '" <sip:a@b>'),
        lambda n: request('Contact: <sip:a@b>;p="' + "a,;<" * n + '"'),
        lambda n: request("X: a" + "\r\n " * n + "b"),
    ],
    ids=["quoted-pairs", "separators-in-a-quoted-value", "folds"],
)
def test_text_inside_one_element_costs_no_python_steps(build: Callable[[int], bytes]) -> None:
    """Quoted strings, escapes and continuation lines are handled by str methods and
    possessive patterns: 4x the text, the same number of Python steps."""
    assert _steps(build(400)) == _steps(build(1_600))


@pytest.mark.parametrize("unit", [";a=b", ";flag", ';q="v\\"w"', ";a=1;b"])
def test_parameters_cost_a_bounded_number_of_steps_each(unit: str) -> None:
    """Each parameter costs a bounded number of Python steps, whatever its text: linear, and
    the 32,000 parameters 64 KB can hold take a few milliseconds."""
    small, large = (_steps(request("Contact: <sip:a@b>" + unit * n)) for n in (150, 600))
    assert large - small <= 32 * 450 * unit.count(";")


# --- caps -------------------------------------------------------------------------------------


def test_a_route_set_past_the_cap_is_refused_at_parse_time() -> None:
    """2,500 Record-Route entries used to come back in every ACK (76 KB over UDP)."""
    field = "Record-Route: " + ",".join(["<sip:p;lr>"] * 250)
    with pytest.raises(SipParseError, match=f"more than {MAX_LIST_ELEMENTS} Record-Route"):
        parse_message(request(*[field] * 10))
    routes = [f"<sip:p{n}.example.com;lr>" for n in range(MAX_LIST_ELEMENTS)]
    at_cap = parse_message(request("Record-Route: " + ", ".join(routes)))
    assert at_cap.headers.get_all("Record-Route") == routes


def test_the_list_cap_counts_every_field_of_a_name_together() -> None:
    half = ",".join(["<sip:p;lr>"] * (MAX_LIST_ELEMENTS // 2))
    with pytest.raises(SipParseError, match="Route"):
        parse_message(request(f"Route: {half}", f"Route: {half}", "Route: <sip:q;lr>"))
    parse_message(request(f"Route: {half}", f"Route: {half}"))


def test_a_header_field_past_the_length_cap_is_refused() -> None:
    name = "X-Long: "
    parse_message(request(name + "v" * (MAX_FIELD_LENGTH - len(name))))
    with pytest.raises(SipParseError, match="longer than"):
        parse_message(request(name + "v" * (MAX_FIELD_LENGTH - len(name) + 1)))
    with pytest.raises(SipParseError, match="start line"):
        parse_message(replaced("relay@", "r" * MAX_FIELD_LENGTH + "@"))


@pytest.mark.parametrize(
    "field",
    [
        "Max-Forwards: " + "7" * 4_300,
        "Max-Forwards: 300",
        "Max-Forwards: \u0667\u0660",
        "Content-Length: " + "1" * 4_300,
        "Contact: <sip:a@b:" + "5" * 400 + ">",
        "Contact: <sip:a@b:65536>",
        "Via: SIP/2.0/UDP h:" + "9" * 4_300,
    ],
    ids=["max-forwards-4300", "max-forwards-300", "max-forwards-arabic", "content-length-4300",
         "uri-port-400", "uri-port-65536", "via-port-4300"],
)  # fmt: skip
def test_numbers_of_any_length_are_refused_as_parse_errors(field: str) -> None:
    """int() of 4,300 digits raises a plain ValueError in Python 3.11; nothing but
    SipParseError may leave the parser, and Max-Forwards was not bounded at all."""
    with pytest.raises(SipParseError):
        parse_message(request(field))


def test_bounded_int() -> None:
    assert bounded_int("0068", 255) == 68
    assert bounded_int(" 42\t", 100) == 42
    assert bounded_int("4294967295", 2**32 - 1) == 2**32 - 1
    for text in (None, "", "256", "-1", "+1", "1e3", "12345678901", "9" * 4_300, "\u00b2"):
        assert bounded_int(text, 255) is None


def test_a_bare_cr_in_the_header_section_is_refused() -> None:
    """A lone CR is no line end (RFC 3261 §7.3.1) and is legal nowhere in a header field, not
    even in a quoted-pair (§25.1); kept, it would be echoed into Via/To of our responses."""
    with pytest.raises(SipParseError, match="CR without LF"):
        parse_message(request("X: a\rb"))
    with pytest.raises(SipParseError, match="CR without LF"):
        parse_message(request().replace(b"To: <sip:relay@192.0.2.1>", b"To: <sip:r@h>;tag=\r1"))


def test_folding_joins_continuation_lines_with_one_space() -> None:
    message = parse_message(request("X: a  \r\n \t b\r\n\t \r\n c", "Y:\r\n z"))
    assert message.headers.get("X") == "a b c"
    assert message.headers.get("Y") == "z"
    with pytest.raises(SipParseError, match="continuation"):
        parse_message(request().replace(b"SIP/2.0\r\n", b"SIP/2.0\r\n x\r\n", 1))


# --- splitting --------------------------------------------------------------------------------


def test_split_list_keeps_quotes_brackets_and_open_elements() -> None:
    assert split_list('"a,\\"b" <sip:x;p=1,2>, <sip:y>') == ['"a,\\"b" <sip:x;p=1,2>', "<sip:y>"]
    assert split_list('a, "open, b') == ["a", '"open, b']
    assert split_list("a, <open, b") == ["a", "<open, b"]
    assert split_list("a,,b,") == ["a", "", "b", ""]
    assert split_list("a,b,c,d", maxsplit=2) == ["a", "b", "c,d"]
    assert split_list('"q",b,c', maxsplit=1) == ['"q"', "b,c"]
    assert split_list("a,b", maxsplit=0) == ["a,b"]


def test_quoted_pairs_are_unescaped() -> None:
    address = parse_name_addr('"a\\"b\\\\c\\d" <sip:x@y>;p="v\\"w"')
    assert address.display_name == 'a"b\\cd'
    assert address.params == {"p": 'v"w'}
    with pytest.raises(SipParseError, match="unterminated"):
        parse_name_addr('"a\\" <sip:x@y>')


# --- encoding: no header injection ----------------------------------------------------------


def _headers(**extra: str) -> Headers:
    headers = Headers([("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("Call-ID", "c")])
    for name, value in extra.items():
        headers.add(name.replace("_", "-"), value)
    return headers


@pytest.mark.parametrize(
    "build",
    [
        lambda: Request("INVITE", "sip:1002>\r\nX-Injected:1@h", _headers()),
        lambda: Request("INVITE", "sip:a@h", _headers(To="<sip:1002@h>\r\nX-Injected: 1")),
        lambda: Request("INVITE", "sip:a@h", _headers(From='"x\ny" <sip:a@h>')),
        lambda: Request("INVITE", "sip:a@h", _headers(Subject="nul\x00byte")),
        lambda: Request("INVITE", "sip:a@h", _headers(Subject="cr\ronly")),
        lambda: Request("INVITE", "sip:a@h", Headers([("X-Bad Name", "v")])),
        lambda: Request("INVITE", "sip:a@h", Headers([("X-Bad:Name", "v")])),
        lambda: Request("INVITE", "sip:a@h", Headers([("X\r\nY", "v")])),
        lambda: Request("IN VITE", "sip:a@h", _headers()),
        lambda: Request("INVITE\r\nX", "sip:a@h", _headers()),
        lambda: Request("INVITE", "sip:a@h SIP/2.0\r\nX: y", _headers()),
        lambda: Request("INVITE", "", _headers()),
        lambda: Response(200, "OK\r\nX-Injected: 1", _headers()),
        lambda: Response(1000, "OK", _headers()),
        lambda: Request("INVITE", "sip:a@h", _headers(Subject="lone \ud800 surrogate")),
    ],
    ids=["uri", "to", "lf-in-display", "nul", "cr", "space-in-name", "colon-in-name",
         "crlf-in-name", "space-in-method", "crlf-in-method", "uri-start-line", "empty-uri",
         "reason", "status", "surrogate"],
)  # fmt: skip
def test_nothing_we_encode_can_add_a_header_line(build: object) -> None:
    """`--callee $'1002>\\r\\nX-Injected: 1'` put an X-Injected line into our INVITE."""
    message = build()  # type: ignore[operator]
    with pytest.raises(SipEncodeError):
        message.to_bytes()


def test_non_utf8_bytes_from_a_peer_go_back_out_unchanged() -> None:
    data = request('Subject: caf\xe9 "\xff"'.encode("latin-1").decode("utf-8", "surrogateescape"))
    message = parse_message(data)
    assert b'Subject: caf\xe9 "\xff"\r\n' in message.to_bytes()


# --- stream framing ---------------------------------------------------------------------------


def _framed(size: int, body: int = 0) -> bytes:
    pad = "X-Pad: " + "p" * (size - len(HEAD) - body - 40)
    return request(pad, f"Content-Length: {body}", body=b"b" * body)


def _trickle(framer: StreamFramer, data: bytes, chunk: int = 1) -> list[bytes]:
    out: list[bytes] = []
    for index in range(0, len(data), chunk):
        out += framer.feed(data[index : index + chunk])
    return out


def test_framer_searches_a_trickled_header_section_once() -> None:
    """Fed one byte at a time, the framer searched the whole buffer again on every byte: 64 KB
    took 14 s. Now each byte is searched a bounded number of times."""
    data = _framed(64_000)
    with watch(message_module) as work:
        assert _trickle(StreamFramer(), data) == [data]
    assert sum(work.scanned.values()) <= 4 * len(data)


def test_framer_works_out_a_trickled_message_size_once() -> None:
    """With the head complete and the body trickling in, the head was searched and its
    Content-Length parsed again on every byte."""
    data = _framed(40_000, body=20_000)
    with watch(message_module) as work:
        assert _trickle(StreamFramer(), data) == [data]
    assert sum(work.scanned.values()) <= 4 * len(data)


def test_framer_drops_keepalives_without_rescanning() -> None:
    data = b"\r\n" * 20_000 + _framed(2_000) + b"\r\n" * 20_000 + _framed(2_000, body=10)
    with watch(message_module) as work:
        out = _trickle(StreamFramer(), data)
    assert out == [_framed(2_000), _framed(2_000, body=10)]
    assert sum(work.scanned.values()) <= 4 * len(data)


def test_framer_reads_a_folded_or_compact_content_length_like_the_parser() -> None:
    folded = request("Content-Length:\r\n 3", body=b"abcTAIL")
    compact = request("l: 2", body=b"xy")
    out = StreamFramer().feed(folded[:-4] + compact)
    assert out == [folded[:-4], compact]
    assert parse_message(out[0]).body == b"abc"


@pytest.mark.parametrize(
    "data",
    [
        request("Content-Length: " + "9" * 4_300),
        request("Content-Length: -1"),
        request("Content-Length: 70000"),
        fill("OPTIONS sip:a SIP/2.0\r\nX: ", "y", size=70_000).encode(),
    ],
    ids=["4300-digits", "negative", "over-the-limit", "no-end-of-head"],
)
def test_framer_refuses_what_cannot_be_framed(data: bytes) -> None:
    with pytest.raises(SipParseError):
        _trickle(StreamFramer(), data, chunk=1_400)


# --- properties -------------------------------------------------------------------------------

# Fields are drawn from pools of pre-rendered shapes the grammar allows (RFC 3261 §25.1), made
# once from a seeded generator, so a message is about fifteen draws and 10,000 examples stay
# fast; the pools combine every part below in thousands of ways.
TOKENS = ["a", "x1", "Z-9", "lr", "q", "maddr", "UPPER", "t0k3n", "!%*_+`'~.-"]
TOKEN = st.sampled_from(TOKENS)
HOSTS = ["example.com", "a.b-c.example", "h", "192.0.2.1", "10.0.0.255", "[2001:db8::1]", "[::1]",
         "[::ffff:192.0.2.7]", "proxy-1.example.net."]  # fmt: skip
USERS = ["", "alice@", "1002@", "a%20b@", "+15551234567;phone-context=x@", "u;par=u%40e@",
         "alice:secret@", "$&=+,;?/@", "-_.!~*'()@"]  # fmt: skip
PORTS = ["", ":1", ":5060", ":65535"]
URI_PARAMS = ["", ";lr", ";transport=tcp", ";maddr=192.0.2.1;ttl=5", ";unknown=value;flag",
              ";%6C%72;n%61me=v%61lue%25%34%31", ";a=[2001:db8::1]"]  # fmt: skip
QUOTABLE = ["", "Alice", 'say "hi"', "back\\slash", "caf\udce9", "\udcff\udc80", 'J. "R" \\',
            "tab\there", "\u00fcml\u00e4ut \u2713", "a, b; c=<d>", " spaced  out "]  # fmt: skip
"""Quoted-string content: quotes, backslashes, separators, non-ASCII, and bytes that were not
UTF-8 (as the parser decodes them)."""
DISPLAYS = ["", "Bob", "Bob Smith", "a.b-c!%*_+`'~", *map(message_module.quote, QUOTABLE)]
HEADER_PARAMS = [(), (("expires", "3600"),), (("q", "0.5"), ("flag", None)),
                 (("x", 'quoted "v" \\'), ("+sip.instance", "<urn:uuid:1>")),
                 (("n", "\udcff"), ("m", ""))]  # fmt: skip
LWS = ["", " ", "\t", " \r\n "]
TEXTS = ["", "OK", "Session Progress", "caf\u00e9 \u2713", 'a;b,c<d>"e', "x" * 40]
LIST_STYLES = [", ", ",", " ,\t", ",\r\n\t", "a line each"]
POOL_SIZE = 3_000
_rng = random.Random(4475)


def _uri() -> str:
    parts = (_rng.choice(["sip", "sips", "SIP"]), _rng.choice(USERS), _rng.choice(HOSTS))
    return "{}:{}{}".format(*parts) + _rng.choice(PORTS) + _rng.choice(URI_PARAMS)


def _address() -> str:
    display, lws = _rng.choice(DISPLAYS), _rng.choice(LWS)
    text = f"{display}{lws}<{_uri()}>" if display else f"<{_uri()}>"
    for name, value in _rng.choice(HEADER_PARAMS):
        text += f"{lws};{lws}{name}"
        if value is not None:
            quoted = value if message_module.is_token(value) else message_module.quote(value)
            text += f"{lws}={lws}{quoted}"
    return text


def _via() -> str:
    sep = _rng.choice(["/", " / ", "\t/\t"])
    transport = _rng.choice(["UDP", "TCP", "TLS", "ws"])
    text = f"SIP{sep}2.0{sep}{transport} {_rng.choice(HOSTS)}{_rng.choice(PORTS)}"
    params = _rng.choice(["", ";rport", ";received=192.0.2.9;rport=5062", ";maddr=h;ttl=1;x"])
    return f"{text};branch=z9hG4bK{_rng.choice(TOKENS)}{params}"


def _fields(name: str, make: Callable[[], str], least: int) -> list[str]:
    """A list header's values on one line, several lines, or folded: the same list (§7.3.1)."""
    values = [make() for _ in range(_rng.randint(least, 3))]
    style = _rng.choice(LIST_STYLES)
    if style == "a line each":
        return [f"{name}: {value}" for value in values]
    return [f"{name}: {style.join(values)}"] if values else []


def _pool(make: Callable[[], object]) -> st.SearchStrategy[Any]:
    return st.sampled_from([make() for _ in range(POOL_SIZE)])


def _start() -> tuple[str, str]:
    method = _rng.choice(["INVITE", "BYE", "OPTIONS", "INFO", *TOKENS])
    if _rng.random() < 0.5:
        return method, f"{method} {_uri()} SIP/2.0"
    return method, f"SIP/2.0 {_rng.randint(100, 699)} {_rng.choice(TEXTS)}"


STARTS = _pool(_start)
"""(CSeq method, start line): a request line, or a status line of a response to `method`."""
VIAS = _pool(lambda: _fields("Via", _via, least=1))
ADDRESSES = _pool(_address)
FROMS = _pool(lambda: f"{_rng.choice(['From', 'f'])}: {_address()};tag={_rng.choice(TOKENS)}")
TOS = _pool(lambda: f"{_rng.choice(['To', 't'])}: {_address()}")
ROUTES = _pool(lambda: _fields(_rng.choice(["Route", "Record-Route"]), _address, least=0))
CONTACTS = _pool(lambda: _fields("Contact", _address, least=0))
EXTENSIONS = _pool(lambda: [f"X-{_rng.choice(TOKENS)}: {_rng.choice(TEXTS)}"] * _rng.randint(0, 2))
CALL_IDS = _pool(lambda: f"{_rng.choice(TOKENS)}@{_rng.choice(HOSTS)}")


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A well-formed request or response built from random fields."""
    method, start = draw(STARTS)
    fields = [
        *draw(VIAS),
        draw(FROMS),
        draw(TOS),
        f"Call-ID: {draw(CALL_IDS)}",
        f"CSeq: {draw(st.integers(0, 2**32 - 1))} {method}",
        f"Max-Forwards: {draw(st.integers(0, 255))}",
        *draw(ROUTES),
        *draw(CONTACTS),
        *draw(EXTENSIONS),
    ]
    random.Random(draw(st.integers(0, 2**16))).shuffle(fields)
    body = draw(st.binary(max_size=32))
    fields.append(f"{draw(st.sampled_from(['Content-Length', 'l']))}: {len(body)}")
    head = "\r\n".join([start, *fields]) + "\r\n\r\n"
    return head.encode("utf-8", "surrogateescape") + body


def _same(a: Request | Response, b: Request | Response) -> bool:
    """Same start line, fields and body; Content-Length is rewritten from the body."""

    def fields(m: Request | Response) -> list[tuple[str, str]]:
        return [(n, v) for n, v in m.headers if n != "Content-Length"]

    start = (a.method, a.uri) if isinstance(a, Request) else (a.status, a.reason)
    other = (b.method, b.uri) if isinstance(b, Request) else (b.status, b.reason)
    return start == other and fields(a) == fields(b) and a.body == b.body


def _check_parsed(message: Request | Response) -> None:
    """What the UA reads lazily parses too, and encoding round-trips or is refused as typed."""
    assert message.top_via.host and message.cseq[1]
    assert message.from_.uri and message.to.uri
    if isinstance(message, Request) and message.uri.lower().startswith(("sip:", "sips:")):
        parse_uri(message.uri)
    try:
        data = message.to_bytes()
    except SipEncodeError:
        assert any("\x00" in value for _, value in message.headers)
        return
    assert _same(parse_message(data), message)


@pytest.mark.fuzz
@given(messages())
def test_valid_shaped_messages_parse_and_round_trip(data: bytes) -> None:
    _check_parsed(parse_message(data))


LWS_UNITS = [b" ", b"\t", b"\r\n ", b"\r\n\t"]
"""Linear whitespace and folds, inserted only where §25.1 allows LWS: around the HCOLON, SEMI,
EQUAL and COMMA of a header field, outside quoted strings, <...> and [...]. The message keeps
its meaning, so its parse goes to the end and the round trip is checked on unusual spacing."""
HOSTILE_UNITS = [b" \t", b"\t\r\n ", b",", b'"', b"<", b">", b";", b"=", b"9", b"\\", b"\r",
                 b"\n", b"\r\n", b"\x00", b"\xff", b"\xc3", b"SIP/2.0/", b"a", b":", b"@",
                 b"\r\n\r\n", b"Route: <sip:p>,"]  # fmt: skip
"""Units put anywhere, start line included: most make the message invalid somewhere deep."""
SHORT_RUN = 4
"""Most hostile runs are up to this many units: the message around them stays recognisable."""
LONG_RUN = 70_000
"""Longest hostile run in bytes: most long runs stay under `MAX_MESSAGE_SIZE` and reach the
field, list and digit caps; the rest exceed it."""
_SEPARATOR_RE = re.compile(rb'"(?:[^"\\\r\n]|\\.)*+"|<[^>\r\n]*+>|\[[^\]\r\n]*+\]|([:;,=])')
"""A separator of a header field (group 1), quoted strings and bracketed parts skipped whole."""

MUTATIONS = st.lists(
    st.tuples(st.integers(0, 10_000), st.sampled_from(LWS_UNITS), st.integers(1, 3), st.just(0))
    | st.tuples(st.integers(0, 10_000), st.sampled_from(LWS_UNITS), st.integers(1, 3), st.just(0))
    | st.tuples(
        st.integers(0, 10_000),
        st.sampled_from(HOSTILE_UNITS),
        st.integers(0, 9).flatmap(
            lambda tenth: st.integers(0, LONG_RUN) if tenth == 0 else st.integers(1, SHORT_RUN)
        ),
        st.integers(0, 4),
    ),
    min_size=1,
    max_size=3,
)
"""(where, unit, times, bytes replaced): two in three an LWS run where the grammar allows one,
else a run of one hostile unit anywhere: mostly up to `SHORT_RUN` units, one in ten up to
`LONG_RUN` bytes of the unit repeated."""


def _mutate(data: bytes, mutations: list[tuple[int, bytes, int, int]]) -> bytes:
    out = bytearray(data)
    for where, unit, times, replaced in mutations:
        if unit in LWS_UNITS:
            head_end = out.find(b"\r\n\r\n")
            start = out.find(b"\n")
            separators = [
                at
                for match in _SEPARATOR_RE.finditer(out, start + 1, head_end)
                if match.group(1)
                for at in match.span(1)
            ]
            index = separators[where % len(separators)] if separators else where % (len(out) + 1)
        else:
            index = where % (len(out) + 1)
        run = unit * times if times <= SHORT_RUN else (unit * (times // len(unit) + 1))[:times]
        out[index : index + replaced] = run
    return bytes(out)


@pytest.mark.fuzz
@given(messages(), MUTATIONS)
def test_mutated_messages_raise_nothing_but_sip_parse_error(
    data: bytes, mutations: list[tuple[int, bytes, int, int]]
) -> None:
    try:
        message = parse_message(_mutate(data, mutations))
    except SipParseError:
        event("refused")
        return
    event("parsed")
    _check_parsed(message)


CONTENT_LENGTHS = ["Content-Length: {}", "l: {}", "Content-Length:\r\n {}", "L  :\t{} ", None]
"""How a message may declare its body's size to the framer; None: not at all, no body."""


def _framer_input() -> bytes:
    """A message as the framer sees it: a header section, one way of giving Content-Length,
    CRLF or bare LF line ends (which the parser tolerates), a body."""
    style = _rng.choice(CONTENT_LENGTHS)
    body = _rng.randbytes(_rng.randint(0, 40)) if style else b""
    fields = [_rng.choice(["Subject: x", "X-A: b, c", "m: <sip:a@b>"])]
    if style:
        fields.insert(_rng.randint(0, 1), style.format(len(body)))
    data = request(*fields)
    return (data.replace(b"\r\n", b"\n") if _rng.random() < 0.5 else data) + body


FRAMED = _pool(_framer_input)
STREAM_ITEMS = st.lists(FRAMED | st.sampled_from([b"\r\n", b"\r\n\r\n", b"\n"]), max_size=5)


@pytest.mark.fuzz
@given(STREAM_ITEMS, st.lists(st.integers(0, 2_000), max_size=8))
def test_framer_yields_exactly_the_messages_however_the_stream_is_cut(
    items: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(items)
    cuts = sorted(cut % (len(stream) + 1) for cut in cuts)
    framer = StreamFramer()
    out: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += framer.feed(stream[start:end])
    assert out == [item for item in items if item.strip(b"\r\n")]
    for message in out:
        parse_message(message)


@pytest.mark.fuzz
@given(st.lists(st.binary(max_size=200) | FRAMED, max_size=6), MUTATIONS)
def test_framer_fed_garbage_raises_nothing_but_sip_parse_error(
    chunks: list[bytes], mutations: list[tuple[int, bytes, int, int]]
) -> None:
    stream = _mutate(b"".join(chunks), mutations)
    framer = StreamFramer()
    try:
        for start in range(0, len(stream), 1_400):
            for message in framer.feed(stream[start : start + 1_400]):
                assert len(message) <= MAX_MESSAGE_SIZE
    except SipParseError:
        event("connection closed")
