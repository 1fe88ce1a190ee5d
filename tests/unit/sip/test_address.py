"""Addresses built from user input: RFC 3261 §25.1 escaping and checks, RFC 3966 tel: URIs."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from sip2rtmp.sip.address import (
    AddressError,
    MissingDomainError,
    callee_uri,
    check_printable,
    escape_user,
    parse_hostport,
)
from sip2rtmp.sip.message import parse_uri

FORBIDDEN = re.compile(r'[\s<>"\x00-\x1f\x7f-\x9f]')
"""What would let a URI end a header line, leave its angle brackets or split its header."""
INJECTION = "1002>\r\nX-Injected: 1"


# ---- RFC vectors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "user"),
    [
        ("sip:%61lice@atlanta.com", "alice"),  # RFC 3261 §19.1.4: equal to sip:alice@...
        ("sip:sips%3Auser%40example.com@example.net", "sips:user@example.com"),  # RFC 4475 §3.1.1.3
        ("sip:%75se%72@example.com", "user"),  # RFC 4475 §3.1.1.3, its To
        ("sip:null-%00-null@example.com", "null-\x00-null"),  # RFC 4475 §3.1.1.4
    ],
)
def test_escaped_user_parts_of_the_rfcs_are_accepted_as_they_are(uri: str, user: str) -> None:
    called = callee_uri(uri, None)
    assert called == uri
    parsed_user = parse_uri(called).user
    assert parsed_user is not None and unquote(parsed_user) == user


def test_rfc_4475_escaped_uri_parameters_are_accepted() -> None:
    uri = "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31"  # §3.1.1.3 Contact
    assert callee_uri(uri, None) == uri


def test_an_escape_a_user_typed_is_kept_so_escaping_is_idempotent() -> None:
    assert escape_user("%61lice") == "%61lice"
    assert unquote(escape_user("%61lice")) == unquote(escape_user("alice")) == "alice"
    assert escape_user("100%") == "100%25"
    assert escape_user("%zz") == "%25zz"


# ---- the callee's forms ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "domain", "uri"),
    [
        ("1002", "pbx.test", "sip:1002@pbx.test"),
        ("+4930123", "pbx.test", "sip:+4930123@pbx.test"),
        ("conf*1234#", "pbx.test", "sip:conf*1234%23@pbx.test"),
        ("alice", "pbx.test:5080", "sip:alice@pbx.test:5080"),
        ("a,b;c?d/e", "pbx.test", "sip:a%2Cb%3Bc%3Fd%2Fe@pbx.test"),
        ("jürgen", "pbx.test", "sip:j%C3%BCrgen@pbx.test"),
        ("conference@bridge.test", None, "sip:conference@bridge.test"),
        ("bob@10.0.0.1:5062", None, "sip:bob@10.0.0.1:5062"),
        ("bob@[2001:db8::1]:5070", None, "sip:bob@[2001:db8::1]:5070"),
        ("bob@2001:DB8:0::1", None, "sip:bob@[2001:db8::1]"),
        ("SIP:Bob@Host.test;transport=tcp", None, "sip:Bob@Host.test;transport=tcp"),
        ("sips:9@x.test;transport=tls", None, "sips:9@x.test;transport=tls"),
        ("sip:bridge.test", None, "sip:bridge.test"),
        ("tel:+49-30-1234(5)", None, "tel:+49-30-1234(5)"),
        ("tel:7042;phone-context=example.com", None, "tel:7042;phone-context=example.com"),
        ("tel:+1-201-555-0123;ext=1234", None, "tel:+1-201-555-0123;ext=1234"),
    ],
)
def test_callee_forms(text: str, domain: str | None, uri: str) -> None:
    assert callee_uri(text, domain) == uri


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (INJECTION, "control characters"),
        ("1002\x00", "control characters"),
        ("1002\x1b[2J", "control characters"),
        ("10\u008502", "control characters"),  # C1 NEL
        ("1002 X", "whitespace"),
        ("1002\u00a0", "whitespace"),
        ("", "empty"),
        ("\udcff", "UTF-8"),  # an undecodable command-line byte
        ("1002>@pbx.test>", "not a host"),
        ("@pbx.test", "empty user"),
        ("bob@host_1.test", "not a host"),
        ("bob@-h.test", "not a host"),
        ("bob@1.2.3.256", "not a host"),
        ("bob@h.123", "not a host"),
        ("bob@" + "a" * 64 + ".test", "not a host"),
        ("bob@[fe80::1%eth0]", "IPv6"),
        ("bob@[::1", "HOST[:PORT]"),
        ("bob@h.test:0", "port"),
        ("bob@h.test:65536", "port"),
        ("bob@h.test:" + "9" * 400, "port"),
        ("sip:bob@h.test?X-Injected=1", "URI headers"),
        ("sip:bob@h.test>", "not a valid SIP URI"),
        ("sip:alice:secret@h.test", "needs escaping"),
        ("sip:a#b@h.test", "needs escaping"),
        ("sip:bob@h.test;x=a,b", "parameters"),
        ("http://h.test/", "only sip:"),
        ("tel:7042", "phone-context"),
        ("tel:+", "telephone number"),
        ("tel:+49 30", "whitespace"),
        ("tel:+4930;ext=1,2", "parameters"),
    ],
)
def test_callee_refusals(text: str, why: str) -> None:
    with pytest.raises(AddressError, match=re.escape(why)):
        callee_uri(text, "pbx.test")


def test_a_bare_user_needs_a_domain() -> None:
    with pytest.raises(MissingDomainError):
        callee_uri("1002", None)


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("pbx.test", "pbx.test", None),
        ("pbx.test.", "pbx.test.", None),
        ("PBX.test:5080", "PBX.test", 5080),
        ("192.0.2.1:5060", "192.0.2.1", 5060),
        ("[2001:db8::1]", "[2001:db8::1]", None),
        ("[2001:db8::1]:5061", "[2001:db8::1]", 5061),
        ("2001:db8::1", "[2001:db8::1]", None),
        ("localhost", "localhost", None),
    ],
)
def test_parse_hostport(text: str, host: str, port: int | None) -> None:
    assert parse_hostport(text) == (host, port)


def test_check_printable_refuses_controls_only() -> None:
    assert check_printable('Ann "A\\B" Smith') == 'Ann "A\\B" Smith'
    for bad in ("a\r\nb", "a\x00", "a\tb", "a\x7f", "a\x9b"):
        with pytest.raises(AddressError):
            check_printable(bad)


# ---- properties -----------------------------------------------------------------------------

USER_CHARS = st.sampled_from("0123456789+*#-._!~'()&=$abcxyzABC,;?/ü")
HOSTILE = st.sampled_from(["\r\n", "\n", "\r", "\x00", ">", "<", '"', " ", "\t", "\x1b", "\u0085"])
ALNUM = "abcxyz0189"
LABELS = st.text(ALNUM, min_size=1, max_size=6) | st.builds(
    "{}-{}".format, st.text(ALNUM, min_size=1, max_size=4), st.text(ALNUM, min_size=1, max_size=4)
)
TOP_LABELS = st.builds(str.__add__, st.sampled_from("abcxyz"), st.text(ALNUM, max_size=6))
HOSTS = st.one_of(
    st.builds(
        lambda labels, top: ".".join([*labels, top]), st.lists(LABELS, max_size=3), TOP_LABELS
    ),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
PORTS = st.none() | st.integers(1, 65535)


@st.composite
def typed_callees(draw: st.DrawFn) -> tuple[str, str]:
    """A callee as a person types one (`user`, `user@host:port`, a sip: URI) and its user."""
    user = draw(st.text(USER_CHARS, min_size=1, max_size=20))
    host = draw(HOSTS)
    port = draw(PORTS)
    hostport = host if port is None else f"{host}:{port}"
    form = draw(st.sampled_from(["bare", "at", "uri"]))
    if form == "bare":
        return user, user
    if form == "at":
        return f"{user}@{hostport}", user
    return f"sip:{escape_user(user)}@{hostport}", user


def assert_safe(uri: str) -> None:
    assert not FORBIDDEN.search(uri), uri
    if uri.startswith(("sip:", "sips:")):
        parse_uri(uri)
    else:
        assert uri.startswith("tel:")


@pytest.mark.fuzz
@given(typed_callees(), st.integers(0, 100), HOSTILE)
def test_a_typed_callee_keeps_its_user_and_a_mutated_one_is_refused_or_safe(
    callee: tuple[str, str], position: int, hostile: str
) -> None:
    """The valid shape must always become a URI naming the same user; the same text with one
    hostile character inserted anywhere must be refused or still become a safe URI."""
    text, user = callee
    uri = callee_uri(text, "pbx.test")
    assert_safe(uri)
    parsed_user = parse_uri(uri).user
    assert parsed_user is not None
    assert unquote(parsed_user, errors="strict") == user
    at = position % (len(text) + 1)
    try:
        uri = callee_uri(text[:at] + hostile + text[at:], "pbx.test")
    except AddressError:
        event("mutation refused")
        return
    event("mutation accepted")
    assert_safe(uri)


@pytest.mark.fuzz
@given(st.text(), st.sampled_from(["pbx.test", None]))
def test_any_text_is_refused_or_made_a_safe_uri(text: str, domain: str | None) -> None:
    try:
        uri = callee_uri(text, domain)
    except AddressError:
        return
    assert_safe(uri)


@pytest.mark.fuzz
@given(
    st.text(
        st.characters(exclude_categories=["Cc", "Cs", "Zs", "Zl", "Zp"], exclude_characters='<>"'),
        min_size=1,
    )
)
def test_escaping_round_trips(text: str) -> None:
    escaped = escape_user(text)
    assert re.fullmatch(r"(?:[A-Za-z0-9\-_.!~*'()&=+$]|%[0-9A-F]{2})+", escaped)
    assert escape_user(escaped) == escaped
    if "%" not in text:
        assert unquote(escaped, errors="strict") == text


# ---- boundaries and messages ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("::1", "[::1]", None),  # two colons: an IPv6 address, not host "" and port ":1"
        ("pbx.x.", "pbx.x.", None),  # a one-letter top label, then the root's dot
        ("pbx.test:1", "pbx.test", 1),  # ports are 1-65535 (§25.1 `port`, RFC 768)
        ("pbx.test:65535", "pbx.test", 65535),
        ("[::1]:1", "[::1]", 1),
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61, None, None),  # 253
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61 + ".", None, None),
    ],
)
def test_parse_hostport_boundaries(text: str, host: str | None, port: int | None) -> None:
    """A host name may have 253 characters, not counting a final dot (RFC 1035 §2.3.4)."""
    assert parse_hostport(text) == (host or text, port)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 62, "not a host name"),  # 254
        ("pbx.test-.", "not a host name"),  # a label may not end in '-', final dot or not
        ("h_1.test.", "not a host name"),
        ("pbx.test:0", "invalid port"),
        ("pbx.test:005060", "invalid port"),  # at most five digits, whatever their value
        ("[::1]:0", "invalid port"),
        ("[::1]:x", "invalid port"),
        ("[::1]]", "is not HOST[:PORT]"),
        ("[::1]x", "is not HOST[:PORT]"),
        ("1:2:3", "'1:2:3' is not a valid IPv6 address"),
    ],
)
def test_parse_hostport_refusals(text: str, why: str) -> None:
    with pytest.raises(AddressError, match=re.escape(why)):
        parse_hostport(text)


@pytest.mark.parametrize(
    ("text", "uri"),
    [
        ("first.last@example.com@pbx.test", "sip:first.last%40example.com@pbx.test"),
        ("tel:7042;ext=12;phone-context=example.com", "tel:7042;ext=12;phone-context=example.com"),
        ("tel:#31#;PHONE-CONTEXT=+4930", "tel:#31#;PHONE-CONTEXT=+4930"),
    ],
)
def test_callee_edge_forms(text: str, uri: str) -> None:
    """The host follows the last '@', an '@' before it is part of the user (escaped, §25.1);
    `phone-context` may come after other parameters and in any case (RFC 3966 §3)."""
    assert callee_uri(text, None) == uri


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("sip:bob@h.test;x=a@b", "malformed URI parameters"),  # '@' is no paramchar (§25.1)
        ("tel:+49a30", "not a telephone number"),  # global numbers: digits and separators
        ("tel:7g42;phone-context=example.com", "not a telephone number"),  # hex digits only
        ("tel:().-;phone-context=example.com", "not a telephone number"),  # separators only
        ("tel:-;phone-context=example.com", "not a telephone number"),
        ("tel:7042;phone-context", "needs ;phone-context="),  # a context has a value
        ("tel:7042;ext=1", "needs ;phone-context="),
    ],
)
def test_callee_edge_refusals(text: str, why: str) -> None:
    with pytest.raises(AddressError, match=re.escape(why)):
        callee_uri(text, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must not be empty"),
        ("10 02", "whitespace is not allowed"),
        ("1002\r\nX: 1", "control characters are not allowed"),
        ("\udcff", "is not valid UTF-8"),
        ("sip:bob@h.test?X=1", "URI headers ('?...') are not allowed in a Request-URI"),
        ("1002", "'1002' has no host"),
    ],
)
def test_refusals_read_as_one_plain_sentence(text: str, message: str) -> None:
    """The message follows the flag's name (`--callee: whitespace is not allowed`): exactly the
    problem, in one line."""
    with pytest.raises(AddressError) as caught:
        callee_uri(text, None)
    assert str(caught.value) == message


@pytest.mark.parametrize("length", [7, 64, 65, 300])
def test_a_refused_text_is_quoted_and_cut_after_64_characters(length: int) -> None:
    """The refused text is shown quoted; past 64 characters, its first 61 and `...`."""
    text = "http://" + "a" * (length - 7)
    shown = text if length <= 64 else text[:61] + "..."
    with pytest.raises(AddressError) as caught:
        callee_uri(text, None)
    assert str(caught.value) == f"{shown!r}: only sip:, sips: and tel: URIs can be called"
