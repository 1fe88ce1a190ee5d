"""SIP and tel URIs built from text a person typed: escaped, checked, never more than one URI.

What a user gives (`--callee`, `--sip-login`, `--sip-domain`, a profile key) ends up inside a
request line and inside `<...>` in From, To and Contact. Checked here, once, against the
grammar of RFC 3261 §25.1 (and RFC 3966 for `tel:`), nothing a user types can close the angle
brackets, end the header line or add a URI header:

- control characters (C0, DEL, C1) and whitespace are refused everywhere;
- a user part is escaped (§25.1 `escaped`): kept as typed are `unreserved` and the
  `user-unreserved` characters `& = + $`; everything else, `, ; ? /` included, becomes `%HH`
  of its UTF-8 octets. Those four are legal in a user part but end it for a peer that splits a
  bare addr-spec (§20), so they are sent escaped. A `%` followed by two hex digits is taken as
  an escape already made (`%61lice` is `alice`, RFC 4475 §3.1.1.x), so escaping is idempotent;
- a host is a §25.1 `hostname`, an `IPv4address` or an `IPv6reference` (given with or without
  the brackets), with an optional port 1-65535;
- a full `sip:`/`sips:` URI must parse (`parse_uri`) and match the grammar in every part it
  has; URI headers (`?...`) are refused: a Request-URI must not carry any (§19.1.1, Table 1).

Pure functions; `AddressError` is a `ValueError` whose message names the problem, not a flag.
"""

from __future__ import annotations

import ipaddress
import re

from sip2rtmp.sip.message import SipParseError, parse_uri

MAX_HOSTNAME_LENGTH = 253
"""A DNS name's longest text form (RFC 1035 §2.3.4: 255 octets on the wire)."""

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_WHITESPACE_RE = re.compile(r"\s")
_USER_KEPT = r"A-Za-z0-9\-_.!~*'()&=+$"
"""§25.1 `unreserved` and the `user-unreserved` characters sent as they are."""
_USER_ESCAPE_RE = re.compile(rf"%[0-9A-Fa-f]{{2}}|[^{_USER_KEPT}]")
_URI_USER_RE = re.compile(rf"(?:[{_USER_KEPT},;?/]|%[0-9A-Fa-f]{{2}})+")
"""§25.1 `user`: a user part as it may appear in a URI someone pasted."""
_PARAMCHAR = r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})"
_URI_PARAMS_RE = re.compile(rf"(?:;{_PARAMCHAR}+(?:={_PARAMCHAR}+)?)*")
"""§25.1 `uri-parameters`; `;`, `=` are not paramchars, so this never backtracks."""
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
"""§25.1 `domainlabel`, at most 63 characters (RFC 1035 §2.3.4)."""
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:")
_TEL_GLOBAL_RE = re.compile(r"\+[0-9().\-]+")
_TEL_LOCAL_RE = re.compile(r"[0-9A-Fa-f*#().\-]+")
_TEL_PARAMS_RE = re.compile(rf"(?:;[A-Za-z0-9\-]+(?:={_PARAMCHAR}+)?)*")
"""RFC 3966 §3 `global-number-digits`, `local-number-digits` and `par` (`parameter`,
`extension`, `isdn-subaddress` share the form `;name=value`)."""


class AddressError(ValueError):
    """Text that cannot be made into the address asked for; one line, no flag name."""


class MissingDomainError(AddressError):
    """A bare user part was given with no domain to complete it."""


def check_printable(text: str) -> str:
    """Refuse control characters: CR and LF end a header line, NUL ends a C string, and none
    belongs in a name, a quoted-string (§25.1 `qdtext`) or a URL. Returns `text`."""
    if _CONTROL_RE.search(text):
        raise AddressError("control characters are not allowed")
    return text


def check_text(text: str) -> None:
    """Refuse what no SIP address may hold: nothing, control characters, whitespace, or bytes
    that are not UTF-8 (undecodable command-line bytes arrive as lone surrogates)."""
    if not text:
        raise AddressError("must not be empty")
    check_printable(text)
    if _WHITESPACE_RE.search(text):
        raise AddressError("whitespace is not allowed")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise AddressError("is not valid UTF-8") from None


def escape_user(text: str) -> str:
    """A user part fit for any SIP URI (RFC 3261 §25.1 `user`), escapes already made kept."""
    check_text(text)
    return _USER_ESCAPE_RE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    found = match.group()
    if len(found) == 3:
        return found.upper()
    return "".join(f"%{octet:02X}" for octet in found.encode("utf-8"))


def parse_hostport(text: str) -> tuple[str, int | None]:
    """`host[:port]` as a URI writes it (IPv6 in brackets, compressed), and the port if given.

    A bare IPv6 address (`2001:db8::1`) is accepted too: with more than one colon it cannot be
    a host and a port.
    """
    check_text(text)
    if text.startswith("["):
        inner, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise AddressError(f"{_shown(text)} is not HOST[:PORT]")
        return _ipv6(inner, text), _port(rest[1:], text) if rest else None
    if text.count(":") > 1:
        return _ipv6(text, text), None
    host, colon, port_text = text.partition(":")
    return _host(host, text), _port(port_text, text) if colon else None


def format_hostport(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


def _host(host: str, text: str) -> str:
    """§25.1 `hostname` or `IPv4address`: a top label starts with a letter, so a name of
    digit-only labels must be an IPv4 address."""
    name = host.removesuffix(".")  # a final dot (the root) is not counted (RFC 1035 §2.3.4)
    labels = name.split(".")
    if len(name) <= MAX_HOSTNAME_LENGTH and all(_LABEL_RE.fullmatch(label) for label in labels):
        if labels[-1][0].isalpha():
            return host
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            pass
    raise AddressError(f"{_shown(text)} is not a host name, IPv4 address or [IPv6] address")


def _ipv6(inner: str, text: str) -> str:
    """§25.1 `IPv6reference`; a zone (`%eth0`) is no part of its grammar."""
    try:
        if "%" in inner:
            raise ValueError(inner)
        return f"[{ipaddress.IPv6Address(inner).compressed}]"
    except ValueError:
        raise AddressError(f"{_shown(text)} is not a valid IPv6 address") from None


def _port(port_text: str, text: str) -> int:
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        raise AddressError(f"{_shown(text)} has an invalid port")
    port = int(port_text)
    if not 0 < port < 65536:
        raise AddressError(f"{_shown(text)} has an invalid port")
    return port


def callee_uri(text: str, domain: str | None) -> str:
    """The URI to call: a user part or number completed with `domain` (`1002`, `+4930123`,
    `conf*12#`), `user@host[:port]`, a full `sip:`/`sips:` URI, or a `tel:` URI (RFC 3966).

    `domain` is a host[:port] as `parse_hostport` returns it.
    """
    check_text(text)
    scheme = _SCHEME_RE.match(text)
    if scheme:
        name = scheme.group()[:-1].lower()
        if name in ("sip", "sips"):
            return sip_uri(text)
        if name == "tel":
            return tel_uri(text)
        raise AddressError(f"{_shown(text)}: only sip:, sips: and tel: URIs can be called")
    user, at, hostport = text.rpartition("@")
    if at and not user:
        raise AddressError(f"{_shown(text)} has an empty user part")
    if at:
        return f"sip:{escape_user(user)}@{format_hostport(*parse_hostport(hostport))}"
    if not domain:
        raise MissingDomainError(f"{_shown(text)} has no host")
    return f"sip:{escape_user(text)}@{domain}"


def sip_uri(text: str) -> str:
    """A full sip:/sips: URI checked part by part (§25.1 `SIP-URI`), in normal form: scheme in
    lower case, IPv6 compressed."""
    check_text(text)
    try:
        uri = parse_uri(text)
    except SipParseError:
        raise AddressError(f"{_shown(text)} is not a valid SIP URI") from None
    if uri.user is not None and not _URI_USER_RE.fullmatch(uri.user):
        raise AddressError(f"{_shown(text)}: the user part needs escaping (RFC 3261 §25.1)")
    rest = text.split(":", 1)[1]
    location, question, _ = (rest.split("@", 1)[1] if uri.user is not None else rest).partition("?")
    if question:
        raise AddressError("URI headers ('?...') are not allowed in a Request-URI")
    hostport, _, params = location.partition(";")
    if params and not _URI_PARAMS_RE.fullmatch(";" + params):
        raise AddressError(f"{_shown(text)} has malformed URI parameters")
    user = f"{uri.user}@" if uri.user is not None else ""
    semicolon = ";" if params else ""
    return f"{uri.scheme}:{user}{format_hostport(*parse_hostport(hostport))}{semicolon}{params}"


def tel_uri(text: str) -> str:
    """A `tel:` URI (RFC 3966 §3): `+` and digits with visual separators, or a local number
    that names its `phone-context` (§5.1.5)."""
    check_text(text)
    number, semicolon, params = text[len("tel:") :].partition(";")
    if semicolon and not _TEL_PARAMS_RE.fullmatch(";" + params):
        raise AddressError(f"{_shown(text)} has malformed parameters")
    if number.startswith("+"):
        valid = _TEL_GLOBAL_RE.fullmatch(number) is not None and any(c.isdigit() for c in number)
    else:
        valid = _TEL_LOCAL_RE.fullmatch(number) is not None and number.strip("().-") != ""
        contexts = [p for p in params.split(";") if p.lower().startswith("phone-context=")]
        if valid and not contexts:
            raise AddressError(f"{_shown(text)}: a local number needs ;phone-context= (RFC 3966)")
    if not valid:
        raise AddressError(f"{_shown(text)} is not a telephone number (RFC 3966)")
    return "tel:" + text[len("tel:") :]


def _shown(text: str) -> str:
    """The text in an error message: quoted, and cut short."""
    return repr(text if len(text) <= 64 else text[:61] + "...")
