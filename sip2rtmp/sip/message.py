"""SIP messages as values: parsing, building and stream framing (RFC 3261 §7, §20, §25).

The parser is strict where a mistake would change what a message means (start line, CSeq,
Content-Length, the addresses in Via/From/To/Contact/Route) and lenient elsewhere: unknown
header fields are kept verbatim, as a UA must (RFC 3261 §8.2.2, RFC 4475 §3.1.1.1).
Every malformed input raises `SipParseError`; nothing else escapes `parse_message`.

Everything here may see bytes from the network, so every step is linear in its input: lines
are split and joined with str methods, and the regular expressions have no two quantifiers
that can take the same character (possessive where they could), so none backtracks. Sizes,
counts and digit strings are capped by the named constants below.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_MESSAGE_SIZE = 65535
"""Largest message accepted: a UDP datagram cannot carry more (RFC 3261 §18.1.1), and a stream
peer sending more in one message is either broken or hostile."""

MAX_HEADER_FIELDS = 256
"""Header fields per message. RFC 4475 §3.1.1.7 (longreq) has 44; 256 leaves room."""

MAX_FIELD_LENGTH = 8192
"""Characters in the start line or in one header field after unfolding. RFC 4475's longest
field (§3.1.1.7) has under 600; an 8 KiB Identity or route list is far beyond real traffic."""

MAX_LIST_ELEMENTS = 64
"""Elements of Via, Route, Record-Route and Contact in one message, all fields of a name
together. RFC 4475 §3.1.1.7 has 34 Vias; Max-Forwards 70 bounds a real path. A longer route
set is refused here so that no dialog can be built on it (a 2,500-entry Record-Route would
otherwise come back in every ACK and BYE)."""

MAX_NUMBER_DIGITS = 10
"""Digits of a numeric field: 2**32-1 has 10. Longer is hostile (RFC 4475 §3.1.2.4), and
int() of 4,300 digits or more raises a plain ValueError in Python 3.11."""

MAX_CSEQ = 2**32 - 1
"""CSeq is a 32-bit unsigned integer (RFC 3261 §8.1.1.5); RFC 4475 §3.1.2.4 must be refused."""

MAX_FORWARDS = 255
"""Largest Max-Forwards accepted: RFC 4475 §3.1.2.4 names 300 as a value to refuse."""

COMPACT_FORMS = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "f": "From",
    "t": "To",
    "v": "Via",
    "k": "Supported",
    "c": "Content-Type",
    "s": "Subject",
    "o": "Event",
    "u": "Allow-Events",
    "x": "Session-Expires",
}
"""RFC 3261 §7.3.3 and §20, plus `o`/`u` (RFC 6665) and `x` (RFC 4028)."""

_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
        "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
        "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
        "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "In-Reply-To",
        "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version", "Organization", "Path",
        "Priority", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck",
        "Reason", "Record-Route", "Reply-To", "Require", "Retry-After", "Route", "RSeq",
        "Server", "Service-Route", "Session-Expires", "Subject", "Supported", "Timestamp", "To",
        "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
    )
}  # fmt: skip

LIST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
        "Call-Info", "Contact", "Content-Encoding", "Content-Language", "Error-Info",
        "In-Reply-To", "Path", "Proxy-Require", "Reason", "Record-Route", "Require", "Route",
        "Service-Route", "Supported", "Unsupported", "Via", "Warning",
    )
)  # fmt: skip
"""Header fields whose value is a comma-separated list (RFC 3261 §7.3.1): several values may
share one line or come as separate lines, with the same meaning."""

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
"""RFC 3261 §25.1 `token`."""
QUOTED_STRING = r'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
"""§25.1 `quoted-string` as a pattern (DOTALL), unrolled and possessive: one way to match,
so no backtracking."""
_QUOTED_RE = re.compile(QUOTED_STRING, re.DOTALL)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
_ELEMENT_RE = {
    ",": re.compile(rf'(?:[^",<]++|{QUOTED_STRING}|<[^>]*+>)*+', re.DOTALL),
    ";": re.compile(rf'(?:[^";]++|{QUOTED_STRING})*+', re.DOTALL),
}
"""One list element (§7.3.1) or parameter: up to the next separator outside quoted strings
(and outside <...> for list elements), or up to a quote or bracket that is never closed."""
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*+:")
_HOST_RE = re.compile(r"[A-Za-z0-9\-.]++|\[[0-9A-Fa-f:.]++\]")
_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")
_FIELD_BREAK_RE = re.compile(r"\n(?![ \t])")
"""A line break that starts a new header field: one not followed by a blank (§7.3.1)."""
_strip_blanks = operator.methodcaller("strip", " \t")
_NOT_CRLF_RE = re.compile(rb"[^\r\n]")
_HEAD_END_MAX = 4
"""Longest match of `_HEAD_END_RE`: a search resumed this many bytes minus one before where
the last one stopped cannot miss a match that straddles two reads."""
_REQUEST_LINE_RE = re.compile(r"([^ ]++) ([^ ]++) SIP/2\.0")
_STATUS_LINE_RE = re.compile(r"SIP/2\.0 ([0-9]{3})(?: (.*))?", re.DOTALL)
_CSEQ_RE = re.compile(r"([0-9]{1,10}+)[ \t]++(\S++)")
_VIA_RE = re.compile(
    r"SIP[ \t]*+/[ \t]*+2\.0[ \t]*+/[ \t]*+([^ \t/;]++)[ \t]++([^ \t:;]++|\[[^\]]*+\])"
    r"(?:[ \t]*+:[ \t]*+([0-9]{1,5}+))?[ \t]*+(;.*)?",
    re.DOTALL | re.IGNORECASE,
)
_ENCODE_FORBIDDEN = ("\r", "\n", "\x00")


class SipParseError(ValueError):
    """The bytes are not a SIP message this UA can accept (RFC 3261 §25, RFC 4475 §3.1.2)."""


class SipEncodeError(ValueError):
    """A message we were asked to send would not mean what its fields say: a CR, LF or NUL in
    a start line or header field would end the line early (header injection), and a header
    name must be a token (RFC 3261 §7.3.1, §25.1)."""


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def bounded_int(text: str | None, maximum: int) -> int | None:
    """`text` as a number if it is 1-10 ASCII digits (LWS around allowed) and at most
    `maximum`, else None: no peer's number may raise or outgrow what its use can hold."""
    if text is None:
        return None
    text = text.strip(" \t")
    if not (0 < len(text) <= MAX_NUMBER_DIGITS and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= maximum else None


def canonical_name(name: str) -> str:
    """The full, conventionally cased header name for `name` (compact forms expanded)."""
    if len(name) == 1 and name.lower() in COMPACT_FORMS:
        return COMPACT_FORMS[name.lower()]
    return _CANONICAL.get(name.lower(), name)


def split_list(value: str, maxsplit: int = -1) -> list[str]:
    """Split a header value at commas outside quoted strings and <...> (RFC 3261 §7.3.1).

    Elements keep their inner text; empty elements are returned as "" for the caller to judge.
    As with str.split, at most `maxsplit` splits are made, the rest left in the last element:
    a caller counting elements against a cap never splits more than it needs.
    """
    parts, _ = _split_unquoted(value, ",", maxsplit)
    return [part.strip() for part in parts]


def _split_unquoted(text: str, separator: str, maxsplit: int = -1) -> tuple[list[str], bool]:
    """Split at `separator` (`,` or `;`) outside quoted strings (RFC 3261 §25.1 quoted-pair
    escapes kept), and outside <...> for `,`; also says whether a quoted string was left open.
    An unclosed quote or bracket takes the rest of the text into its element."""
    if '"' not in text and (separator == ";" or "<" not in text):
        return text.split(separator, maxsplit), False
    element = _ELEMENT_RE[separator]
    parts: list[str] = []
    start = 0
    while len(parts) != maxsplit:
        match = element.match(text, start)
        end = match.end() if match else start
        if end == len(text) or text[end] != separator:
            parts.append(text[start:])
            return parts, text[end : end + 1] == '"'
        parts.append(text[start:end])
        start = end + 1
    parts.append(text[start:])
    return parts, False


class Headers:
    """Ordered, case-insensitive multimap of header fields, compact names stored in full form."""

    def __init__(self, fields: list[tuple[str, str]] | None = None) -> None:
        self._fields: list[tuple[str, str]] = []
        for name, value in fields or ():
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._fields.append((canonical_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        """Put a field first: a UA's own Via goes on top (RFC 3261 §8.1.1.7)."""
        self._fields.insert(0, (canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every field called `name` by one, where the first one was (else at the end)."""
        name = canonical_name(name)
        key = name.lower()
        position = next(
            (i for i, (n, _) in enumerate(self._fields) if n.lower() == key), len(self._fields)
        )
        self.remove(name)
        self._fields.insert(position, (name, value))

    def remove(self, name: str) -> None:
        key = canonical_name(name).lower()
        self._fields = [(n, v) for n, v in self._fields if n.lower() != key]

    def get(self, name: str) -> str | None:
        """The first value: for list headers, the first list element."""
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every value, list headers split at top-level commas, empty elements dropped."""
        key = canonical_name(name).lower()
        raw = [v for n, v in self._fields if n.lower() == key]
        if key not in LIST_HEADERS:
            return raw
        return [item for value in raw for item in split_list(value) if item]

    def get_fields(self, name: str) -> list[str]:
        """The header field values as they were given, one per field line, unsplit."""
        key = canonical_name(name).lower()
        return [v for n, v in self._fields if n.lower() == key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name).lower()
        return any(n.lower() == key for n, _ in self._fields)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._fields))

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


Params = dict[str, str | None]


def parse_params(text: str, *, what: str, uri: bool = False) -> Params:
    """`;name[=value]` pairs with optional LWS, names lowercased, quotes removed (§25.1).

    URI parameter values (`uri=True`) may hold any paramchar (§25.1), so they are only checked
    for being non-empty; the caller has already refused whitespace.
    """
    params: Params = {}
    text = text.strip()
    if not text:
        return params
    if not text.startswith(";"):
        raise SipParseError(f"{what}: expected ';' before parameters in {text[:80]!r}")
    for part in _split_outside_quotes(text[1:], ";"):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not is_token(name):
            raise SipParseError(f"{what}: bad parameter {part.strip()[:80]!r}")
        if not sep:
            params[name.lower()] = None
            continue
        value = value.strip()
        if uri and value:
            params[name.lower()] = value
        elif value.startswith('"'):
            unquoted, rest = _read_quoted(value)
            if rest.strip():
                raise SipParseError(f"{what}: text after quoted parameter {name[:80]!r}")
            params[name.lower()] = unquoted
        elif is_token(value) or _HOST_RE.fullmatch(value):
            params[name.lower()] = value
        else:
            raise SipParseError(f"{what}: bad value for parameter {name[:80]!r}")
    return params


def format_params(params: Params) -> str:
    parts = []
    for name, value in params.items():
        if value is None:
            parts.append(f";{name}")
        elif is_token(value) or _HOST_RE.fullmatch(value):
            parts.append(f";{name}={value}")
        else:
            parts.append(f";{name}={quote(value)}")
    return "".join(parts)


def quote(text: str) -> str:
    """A quoted-string with `"` and `\\` escaped (RFC 3261 §25.1)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read_quoted(text: str) -> tuple[str, str]:
    """Split `"quoted" rest` into the unescaped content and the rest; `text` starts with `"`."""
    match = _QUOTED_RE.match(text)
    if match is None:
        raise SipParseError(f"unterminated quoted string in {text[:40]!r}")
    content = text[1 : match.end() - 1]
    if "\\" in content:
        content = unescape_quoted_pairs(content)
    return content, text[match.end() :]


def unescape_quoted_pairs(text: str) -> str:
    """`text` with each §25.1 quoted-pair replaced by the character it escapes. Splitting on
    the pair, the escaped characters come back as the split's captured groups."""
    return "".join(_QUOTED_PAIR_RE.split(text))


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts, open_quote = _split_unquoted(text, separator)
    if open_quote:
        raise SipParseError(f"unterminated quoted string in {text[:40]!r}")
    return parts


@dataclass
class SipUri:
    """A sip: or sips: URI (RFC 3261 §19.1.1). `user` keeps its escapes and any password."""

    host: str
    user: str | None = None
    port: int | None = None
    scheme: str = "sip"
    params: Params = field(default_factory=dict)
    headers: str = ""

    def __str__(self) -> str:
        userinfo = f"{self.user}@" if self.user is not None else ""
        port = f":{self.port}" if self.port is not None else ""
        headers = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{userinfo}{self.host}{port}{format_params(self.params)}{headers}"

    @property
    def loose_route(self) -> bool:
        """Has `lr`: the element is a loose router (RFC 3261 §19.1.1, §16.12)."""
        return "lr" in self.params


def parse_uri(text: str) -> SipUri:
    """Parse a sip:/sips: URI; no LWS anywhere (RFC 4475 §3.1.2.8)."""
    scheme, sep, rest = text.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips"):
        raise SipParseError(f"not a sip: or sips: URI: {text[:80]!r}")
    if any(c in rest for c in ' \t\r\n<>"'):
        raise SipParseError(f"URI contains whitespace, quotes or angle brackets: {text[:80]!r}")
    user: str | None = None
    if "@" in rest:
        user, rest = rest.split("@", 1)
        if not user:
            raise SipParseError(f"empty user part in {text[:80]!r}")
    rest, _, headers = rest.partition("?")
    hostport, _, param_text = rest.partition(";")
    if hostport.startswith("["):
        host, bracket, port_text = hostport.partition("]")
        host += bracket
        if port_text and not port_text.startswith(":"):
            raise SipParseError(f"bad host in {text[:80]!r}")
        port_text = port_text[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if not _HOST_RE.fullmatch(host):
        raise SipParseError(f"bad host in {text[:80]!r}")
    port: int | None = None
    if port_text or hostport.endswith(":"):
        port = bounded_int(port_text, 65535)
        if port is None:
            raise SipParseError(f"bad port in {text[:80]!r}")
    params = parse_params(";" + param_text, what="URI", uri=True) if param_text else {}
    return SipUri(host=host, user=user, port=port, scheme=scheme.lower(), params=params,
                  headers=headers)  # fmt: skip


def _check_absolute_uri(text: str) -> None:
    """Any URI scheme is legal in a Request-URI or address; sip/sips ones are checked fully."""
    if not _SCHEME_RE.match(text):
        raise SipParseError(f"not a URI: {text[:80]!r}")
    if text.lower().startswith(("sip:", "sips:")):
        parse_uri(text)
    elif any(c in text for c in ' \t<>"'):
        raise SipParseError(f"URI contains whitespace, quotes or angle brackets: {text[:80]!r}")


@dataclass
class NameAddr:
    """A From/To/Contact/Route value: optional display name, URI, header parameters (§20.10)."""

    uri: str
    display_name: str | None = None
    params: Params = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def sip_uri(self) -> SipUri:
        return parse_uri(self.uri)

    def __str__(self) -> str:
        display = f"{quote(self.display_name)} " if self.display_name else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(value: str, *, require_brackets: bool = False) -> NameAddr:
    """Parse `name-addr` or `addr-spec` followed by header parameters (RFC 3261 §20, §25.1).

    In the bare addr-spec form everything after the first `;` is a header parameter, and a URI
    with `?` or `,` must have used angle brackets (§20, RFC 4475 §3.1.2.13).
    """
    text = value.strip()
    display: str | None = None
    if text.startswith('"'):
        display, text = _read_quoted(text)
        text = text.lstrip(" \t")
        if not text.startswith("<"):
            raise SipParseError(f"expected '<' after display name in {value[:80]!r}")
    elif "<" in text:
        name, _, rest = text.partition("<")
        words = name.split()
        if not all(is_token(word) for word in words):
            raise SipParseError(f"display name is neither tokens nor quoted: {name[:80]!r}")
        display = " ".join(words) or None
        text = "<" + rest
    if text.startswith("<"):
        uri, closing, rest = text[1:].partition(">")
        if not closing:
            raise SipParseError(f"missing '>' in {value[:80]!r}")
        _check_absolute_uri(uri)
        return NameAddr(uri=uri, display_name=display, params=parse_params(rest, what="address"))
    if require_brackets:
        raise SipParseError(f"expected <URI> in {value[:80]!r}")
    uri, _, rest = text.partition(";")
    uri = uri.rstrip(" \t")
    if "?" in uri or "," in uri:
        raise SipParseError(f"URI with '?' or ',' needs angle brackets: {value[:80]!r}")
    _check_absolute_uri(uri)
    return NameAddr(uri=uri, params=parse_params(";" + rest, what="address") if rest else {})


@dataclass
class Via:
    """One Via value (RFC 3261 §20.42, RFC 3581 rport)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport.upper()} {self.host}{port}{format_params(self.params)}"


def parse_via(value: str) -> Via:
    match = _VIA_RE.fullmatch(value.strip())
    if not match:
        raise SipParseError(f"bad Via: {value[:80]!r}")
    transport, host, port_text, param_text = match.groups()
    if not is_token(transport) or not _HOST_RE.fullmatch(host):
        raise SipParseError(f"bad Via: {value[:80]!r}")
    port = int(port_text) if port_text else None
    if port is not None and port > 65535:
        raise SipParseError(f"Via port out of range: {value[:80]!r}")
    params = parse_params(param_text or "", what="Via")
    return Via(transport=transport.upper(), host=host, port=port, params=params)


def parse_cseq(value: str) -> tuple[int, str]:
    match = _CSEQ_RE.fullmatch(value.strip())
    if not match or not is_token(match.group(2)):
        raise SipParseError(f"bad CSeq: {value[:80]!r}")
    number = int(match.group(1))
    if number > MAX_CSEQ:
        raise SipParseError(f"CSeq number {number} exceeds 2**32-1")
    return number, match.group(2)


class _Message:
    """What requests and responses share: header access by meaning, and encoding."""

    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.headers.get("CSeq") or "")

    @property
    def top_via(self) -> Via:
        return parse_via(self.headers.get("Via") or "")

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(self.headers.get("From") or "")

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(self.headers.get("To") or "")

    @property
    def sdp(self) -> bytes | None:
        """The body when it is a session description (RFC 3261 §20.15), else None."""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        return self.body if self.body and content_type == "application/sdp" else None

    def _encode(self, start_line: str) -> bytes:
        """Content-Length is always written from the body, never copied (RFC 3261 §20.14).

        Whatever text the fields hold, each one stays one line: a CR, LF or NUL anywhere, a
        header name that is not a token, or text that is neither UTF-8 nor bytes the parser
        escaped raises `SipEncodeError`, naming the field but never its value.
        """
        lines = [start_line]
        for name, value in self.headers:
            if name == "Content-Length":
                continue
            if not is_token(name):
                raise SipEncodeError(f"header name {name[:40]!r} is not a token")
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        text = "\n".join(lines)
        if text.count("\n") != len(lines) - 1 or "\r" in text or "\x00" in text:
            bad = next(line for line in lines if any(c in line for c in _ENCODE_FORBIDDEN))
            where = "the start line" if bad is start_line else repr(bad.partition(":")[0])
            raise SipEncodeError(f"CR, LF or NUL in {where}")
        try:
            head = (text + "\n\n").replace("\n", "\r\n").encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise SipEncodeError("a header field is not encodable as UTF-8") from None
        return head + self.body


@dataclass
class Request(_Message):
    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def to_bytes(self) -> bytes:
        if not is_token(self.method):
            raise SipEncodeError(f"method {self.method[:40]!r} is not a token")
        if not self.uri or " " in self.uri or "\t" in self.uri:
            raise SipEncodeError("the Request-URI is empty or holds whitespace")
        return self._encode(f"{self.method} {self.uri} SIP/2.0")


@dataclass
class Response(_Message):
    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def to_bytes(self) -> bytes:
        if not 100 <= self.status <= 699:
            raise SipEncodeError(f"status code {self.status} is not three digits 1xx-6xx")
        return self._encode(f"SIP/2.0 {self.status} {self.reason}")


def parse_message(data: bytes) -> Request | Response:
    """Parse one whole message (a datagram, or one frame from `StreamFramer`).

    Bytes past Content-Length are dropped (RFC 3261 §18.3; RFC 4475 §3.1.1.8); a body shorter
    than Content-Length is an error (RFC 4475 §3.1.2.2).
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipParseError(
            f"message of {len(data)} bytes exceeds the {MAX_MESSAGE_SIZE}-byte limit"
        )
    data = data.lstrip(b"\r\n")
    end = _HEAD_END_RE.search(data)
    if end is None:
        raise SipParseError("no empty line after the header fields")
    head = data[: end.start()].decode("utf-8", "surrogateescape").replace("\r\n", "\n")
    if "\r" in head:
        raise SipParseError("CR without LF in the header section")
    body = data[end.end() :]
    start_line, _, header_text = head.partition("\n")
    if len(start_line) > MAX_FIELD_LENGTH:
        raise SipParseError(f"start line longer than {MAX_FIELD_LENGTH} characters")
    if "\x00" in start_line:
        raise SipParseError("NUL in the start line")  # neither a URI nor a reason holds one
    headers = _parse_header_fields(header_text)
    message: Request | Response
    if start_line.startswith("SIP/"):
        message = _parse_status_line(start_line, headers)
    else:
        message = _parse_request_line(start_line, headers)
    message.body = _checked_body(headers, body)
    _validate(message)
    return message


def _parse_request_line(line: str, headers: Headers) -> Request:
    match = _REQUEST_LINE_RE.fullmatch(line)
    if not match:
        raise SipParseError(f"bad Request-Line: {line[:100]!r}")
    method, uri = match.groups()
    if not is_token(method):
        raise SipParseError(f"bad method: {method[:40]!r}")
    _check_absolute_uri(uri)
    return Request(method, uri, headers)


def _parse_status_line(line: str, headers: Headers) -> Response:
    match = _STATUS_LINE_RE.fullmatch(line)
    if not match:
        raise SipParseError(f"bad Status-Line: {line[:100]!r}")
    status = int(match.group(1))
    if not 100 <= status <= 699:
        raise SipParseError(f"status code {status} out of range")
    return Response(status, match.group(2) or "", headers)


def _unfold(text: str) -> Iterator[str]:
    """Header fields from header lines (LF-separated): a line starting with SP or HT continues
    the field before it, and the blanks around the line break become one SP (RFC 3261 §7.3.1).
    Fields are cut where a line break is not followed by a blank, and a folded field's lines
    are stripped and joined by str methods: a run of blanks costs its length once, and the
    Python work is per field, which the callers cap."""
    if not text:
        return
    for field_text in _FIELD_BREAK_RE.split(text):
        if "\n" in field_text:
            yield " ".join(filter(None, map(_strip_blanks, field_text.split("\n"))))
        else:
            yield field_text


def _parse_header_fields(text: str) -> Headers:
    if text[:1] in (" ", "\t"):
        raise SipParseError("header continuation line right after the start line")
    headers = Headers()
    for line in _unfold(text):
        if len(headers) >= MAX_HEADER_FIELDS:
            raise SipParseError(f"more than {MAX_HEADER_FIELDS} header fields")
        if len(line) > MAX_FIELD_LENGTH:
            raise SipParseError(f"header field longer than {MAX_FIELD_LENGTH} characters")
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not is_token(name):
            raise SipParseError(f"bad header line: {line[:80]!r}")
        headers.add(name, value.strip(" \t"))
    return headers


def _content_length(headers: Headers) -> int | None:
    values = {v.strip() for v in headers.get_fields("Content-Length")}
    if not values:
        return None
    if len(values) > 1:
        raise SipParseError("conflicting Content-Length header fields")
    (value,) = values
    return _checked_length(value)


def _checked_length(value: str) -> int:
    """Content-Length as a number: any 1-10 digits, so that the caller's size check, not this,
    says when it is too large for the body or the limit."""
    length = bounded_int(value, 10**MAX_NUMBER_DIGITS)
    if length is None:
        raise SipParseError(f"bad Content-Length: {value.strip()[:20]!r}")
    return length


def _checked_body(headers: Headers, body: bytes) -> bytes:
    length = _content_length(headers)
    if length is None:
        return body
    if len(body) < length:
        raise SipParseError(f"body is {len(body)} bytes, Content-Length says {length}")
    return body[:length]


_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")
"""Header fields without which no transaction or dialog can be matched (RFC 3261 §8.1.1)."""


def _validate(message: Request | Response) -> None:
    headers = message.headers
    for name in _REQUIRED:
        if name not in headers:
            raise SipParseError(f"missing {name} header field")
    for name in ("From", "To", "Call-ID", "CSeq", "Max-Forwards"):
        if len(headers.get_fields(name)) > 1:
            raise SipParseError(f"more than one {name} header field")
    for name in ("From", "To"):
        values = split_list(headers.get_fields(name)[0])
        if len(values) != 1:
            raise SipParseError(f"{name} holds more than one address")
        parse_name_addr(values[0])
    call_id = message.call_id
    if not call_id or any(c in call_id for c in " \t"):
        raise SipParseError(f"bad Call-ID: {call_id[:80]!r}")
    _, cseq_method = parse_cseq(headers.get_fields("CSeq")[0])
    if isinstance(message, Request) and cseq_method != message.method:
        raise SipParseError(f"CSeq method {cseq_method!r} differs from {message.method!r}")
    max_forwards = headers.get("Max-Forwards")
    if max_forwards is not None and bounded_int(max_forwards, MAX_FORWARDS) is None:
        raise SipParseError(f"bad Max-Forwards: {max_forwards[:20]!r}")
    for name in ("Via", "Contact", "Route", "Record-Route"):
        count = 0
        for raw in headers.get_fields(name):
            items = split_list(raw, maxsplit=MAX_LIST_ELEMENTS - count)
            count += len(items)
            if count > MAX_LIST_ELEMENTS:
                raise SipParseError(f"more than {MAX_LIST_ELEMENTS} {name} elements")
            if name == "Contact" and items == ["*"]:
                continue
            for item in items:
                if not item:
                    raise SipParseError(f"empty element in {name}: {raw[:80]!r}")
                if name == "Via":
                    parse_via(item)
                else:
                    parse_name_addr(item, require_brackets=name != "Contact")


class StreamFramer:
    """Cuts a TCP/TLS byte stream into whole messages by Content-Length (RFC 3261 §18.3).

    CRLFs between messages are keepalives (RFC 5626 §3.5.1) and are dropped. A missing
    Content-Length counts as zero; a bad one, or a header section past the size limit, raises
    `SipParseError` and the connection cannot be resynchronised: the caller closes it.

    Linear in the stream however it is cut: the search for the end of the header section
    resumes where the last one stopped, and a message's size is worked out once.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._max_size = max_size
        self._searched = 0
        """Bytes at the start of the buffer already searched for the end of the head."""
        self._size: int | None = None
        """Size of the message at the start of the buffer, once its head is complete."""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data if buffer else data.lstrip(b"\r\n")  # CRLF keepalives between messages
        if self._size is None:
            if b"\n" not in data and len(buffer) <= self._max_size:
                return []  # without a new LF, no new end of the header section
        elif len(buffer) < self._size:
            return []  # more of the body to come
        messages: list[bytes] = []
        while buffer:
            size = self._size
            if size is None:
                end = _HEAD_END_RE.search(buffer, max(0, self._searched - _HEAD_END_MAX + 1))
                if end is None:
                    self._searched = len(buffer)
                    if len(buffer) > self._max_size:
                        raise SipParseError(f"header section exceeds {self._max_size} bytes")
                    break
                size = end.end() + _declared_length(bytes(buffer[: end.start()]))
                if size > self._max_size:
                    raise SipParseError(
                        f"message of {size} bytes exceeds the {self._max_size}-byte limit"
                    )
                self._size = size
            if len(buffer) < size:
                break
            messages.append(bytes(buffer[:size]))
            start = _NOT_CRLF_RE.search(buffer, size)
            del buffer[: start.start() if start else len(buffer)]
            self._size = None
            self._searched = 0
        return messages


def _declared_length(head: bytes) -> int:
    """The first Content-Length of a header section (unfolded as the parser does), else 0.
    Past `MAX_HEADER_FIELDS` fields the message is refused, as the parser would."""
    _, _, text = head.decode("latin-1").replace("\r\n", "\n").partition("\n")
    for count, line in enumerate(_unfold(text)):
        if count == MAX_HEADER_FIELDS:
            raise SipParseError(f"more than {MAX_HEADER_FIELDS} header fields")
        name, colon, value = line.partition(":")
        if colon and canonical_name(name.rstrip(" \t")) == "Content-Length":
            return _checked_length(value)
    return 0
