"""HTTP Digest for SIP: challenges in, credentials out (RFC 3261 §22, RFC 7616, RFC 8760).

Servers may offer several challenges; the strongest algorithm we implement wins (RFC 7616
§3.7, RFC 8760 §2.4). A wrong password is not always a 403: kamailio, like many registrars,
answers with a fresh challenge, so a second challenge right after we answered one (and not
flagged `stale=true`) means the credentials were refused (RFC 7616 §3.4, RFC 3261 §22.2).

Challenges come from the network: parsing is one regular-expression step per parameter, with
named caps, and raises only `SipParseError`. Text is hashed and echoed as the bytes it came
in (the parser decodes with `surrogateescape`), so a realm that is not UTF-8 is answered with
the digest the server computes over the same bytes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from sip2rtmp.sip.message import (
    QUOTED_STRING,
    SipParseError,
    is_token,
    quote,
    unescape_quoted_pairs,
)

MAX_AUTH_ITEMS = 64
"""Schemes and parameters in the challenge fields of one response. RFC 7616 §3.3 defines nine
Digest parameters, and a server offers a few algorithms."""

MAX_AUTH_PARAM_LENGTH = 1024
"""Characters of one challenge parameter (realm, nonce, opaque...). RFC 7616 §3.3 leaves
their form to the server; real nonces and opaques are well under 200."""

MAX_REMEMBERED_CHALLENGES = 8
"""Challenges (one per proxy flag and realm) a chain keeps answering; the oldest goes first."""

_AUTH_ITEM_RE = re.compile(
    rf'[ \t,]*+([^ \t,="]*+)[ \t]*+(?:(=)[ \t]*+(?:({QUOTED_STRING})|([^ \t,]*+)))?', re.DOTALL
)
"""One `auth-scheme` or `auth-param` (RFC 7235 §2.1) with the separators before it: every
quantifier possessive, so a match is one pass over its characters."""
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""No control character but HT is legal in a challenge, quoted or not (RFC 7235 §2.1, RFC 7230
§3.2.6); realm, nonce and opaque are echoed in our Authorization, which must stay one line."""


def _sha512_256_available() -> bool:
    try:
        hashlib.new("sha512_256")
    except ValueError:
        return False
    return True


_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}
if _sha512_256_available():
    _HASHES["SHA-512-256"] = lambda data: hashlib.new("sha512_256", data).hexdigest()

_STRENGTH = {"MD5": 0, "SHA-256": 1, "SHA-512-256": 2}


@dataclass(frozen=True)
class Credentials:
    """A digest username and password; the password never appears in repr() or str()."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Challenge:
    """One Digest challenge from WWW-Authenticate (401) or Proxy-Authenticate (407)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    """As offered, uppercased, e.g. `SHA-256-SESS`; `MD5` when the server named none."""
    algorithm_given: bool = False
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    userhash: bool = False
    proxy: bool = False

    @property
    def base_algorithm(self) -> str:
        return self.algorithm.removesuffix("-SESS")

    @property
    def session(self) -> bool:
        """`-sess` variants hash the nonce and cnonce into HA1 (RFC 7616 §3.4.2)."""
        return self.algorithm.endswith("-SESS")

    @property
    def supported(self) -> bool:
        qop_ok = not self.qop or bool({"auth", "auth-int"} & set(self.qop))
        return self.base_algorithm in _HASHES and qop_ok


def _parse_auth_fields(values: list[str]) -> list[tuple[str, dict[str, str]]]:
    """Split `Scheme a=b, c="d", Other e=f` into schemes with their parameters (RFC 7235 §2.1).

    A parameter belongs to the last scheme of its own field value. Refused with
    `SipParseError`: control characters, text that is neither UTF-8 nor bytes the parser
    escaped (it could be neither hashed nor sent), a bad token, an unterminated quoted string,
    and anything over the caps.
    """
    results: list[tuple[str, dict[str, str]]] = []
    items = 0
    for value in values:
        if _CONTROL_RE.search(value):
            raise SipParseError("control character in an authentication header")
        try:
            value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise SipParseError("authentication header holds unencodable text") from None
        first, pos, size = len(results), 0, len(value)
        while pos < size:
            match = _AUTH_ITEM_RE.match(value, pos)
            if match is None or not match.group(1):
                if value[pos:].strip(" \t,"):
                    raise SipParseError(f"bad authentication parameter near {value[pos:][:20]!r}")
                break
            pos = match.end()
            word, equals, quoted, plain = match.groups()
            items += 1
            if items > MAX_AUTH_ITEMS:
                raise SipParseError(f"more than {MAX_AUTH_ITEMS} authentication parameters")
            if not is_token(word):
                raise SipParseError(f"bad authentication parameter {word[:20]!r}")
            if equals is None:
                results.append((word, {}))
                continue
            if len(results) == first:
                raise SipParseError("authentication parameter before any scheme")
            if quoted is not None:
                param = unescape_quoted_pairs(quoted[1:-1])
            elif plain.startswith('"'):
                raise SipParseError("unterminated quoted string in authentication header")
            else:
                param = plain
            if len(param) > MAX_AUTH_PARAM_LENGTH:
                raise SipParseError(f"authentication parameter {word[:20]!r} is too long")
            results[-1][1][word.lower()] = param
    return results


def parse_challenges(values: list[str], *, proxy: bool) -> list[Challenge]:
    """Every Digest challenge in the given header field values; other schemes are skipped."""
    challenges = []
    for scheme, params in _parse_auth_fields(values):
        if scheme.lower() != "digest" or "nonce" not in params:
            continue
        qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
        challenges.append(
            Challenge(
                realm=params.get("realm", ""),
                nonce=params["nonce"],
                algorithm=params.get("algorithm", "MD5").upper(),
                algorithm_given="algorithm" in params,
                qop=qop,
                opaque=params.get("opaque"),
                stale=params.get("stale", "").lower() == "true",
                userhash=params.get("userhash", "").lower() == "true",
                proxy=proxy,
            )
        )
    return challenges


def choose_challenge(challenges: list[Challenge]) -> Challenge | None:
    """The supported challenge with the strongest hash; the server's order breaks ties."""
    usable = [c for c in challenges if c.supported]
    if not usable:
        return None
    return max(usable, key=lambda c: _STRENGTH[c.base_algorithm])


def digest_response(
    challenge: Challenge,
    credentials: Credentials,
    *,
    method: str,
    uri: str,
    body: bytes = b"",
    cnonce: str = "",
    nc: int = 1,
) -> tuple[str, str | None]:
    """The `response` value and the qop used, per RFC 7616 §3.4.1-§3.4.3."""
    hash_ = _text_hash(challenge)
    ha1 = hash_(f"{credentials.username}:{challenge.realm}:{credentials.password}")
    if challenge.session:
        ha1 = hash_(f"{ha1}:{challenge.nonce}:{cnonce}")
    qop = "auth" if "auth" in challenge.qop else ("auth-int" if challenge.qop else None)
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + _HASHES[challenge.base_algorithm](body)
    ha2 = hash_(a2)
    if qop is None:
        return hash_(f"{ha1}:{challenge.nonce}:{ha2}"), None
    return hash_(f"{ha1}:{challenge.nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}"), qop


def _text_hash(challenge: Challenge) -> Callable[[str], str]:
    """The challenge's hash over text as the bytes it came in: UTF-8, with the bytes that were
    not UTF-8 restored from their `surrogateescape` code points."""
    hash_ = _HASHES[challenge.base_algorithm]
    return lambda text: hash_(text.encode("utf-8", "surrogateescape"))


def authorization_value(
    challenge: Challenge,
    credentials: Credentials,
    *,
    method: str,
    uri: str,
    body: bytes = b"",
    cnonce: str = "",
    nc: int = 1,
) -> str:
    """An Authorization / Proxy-Authorization value answering `challenge` (RFC 7616 §3.4)."""
    response, qop = digest_response(
        challenge, credentials, method=method, uri=uri, body=body, cnonce=cnonce, nc=nc
    )
    username = credentials.username
    if challenge.userhash:
        username = _text_hash(challenge)(f"{username}:{challenge.realm}")
    parts = [
        f"Digest username={quote(username)}",
        f"realm={quote(challenge.realm)}",
        f"nonce={quote(challenge.nonce)}",
        f"uri={quote(uri)}",
        f"response={quote(response)}",
    ]
    if challenge.algorithm_given:
        parts.append(f"algorithm={challenge.algorithm}")
    if qop is not None or challenge.session:
        parts.append(f"cnonce={quote(cnonce)}")
    if challenge.opaque is not None:
        parts.append(f"opaque={quote(challenge.opaque)}")
    if qop is not None:
        parts.append(f"qop={qop}")
        parts.append(f"nc={nc:08x}")
    if challenge.userhash:
        parts.append("userhash=true")
    return ", ".join(parts)


class DigestClient:
    """Answers the challenges of one request chain (a registration, a call attempt).

    It remembers the last challenges so later requests of the chain (REGISTER refreshes) carry
    credentials up front, counting `nc` per nonce (RFC 7616 §3.4). `accept` says whether a new
    challenge is worth answering or means the credentials were refused.
    """

    def __init__(self, credentials: Credentials, cnonce_factory: Callable[[], str]) -> None:
        self._credentials = credentials
        self._cnonce_factory = cnonce_factory
        self._challenges: dict[tuple[bool, str], Challenge] = {}
        self._nc: dict[tuple[bool, str], int] = {}
        """Requests answered with each remembered challenge's nonce, under the same key."""
        self._fresh = False
        self._sent_fresh = False

    def accept(self, status: int, header_values: list[str]) -> bool:
        """Take a 401/407's challenges; False if they cannot or should not be answered.

        Refused: no supported challenge, or a non-stale challenge right after we answered
        one received on this chain (that is how a wrong password shows).
        """
        proxy = status == 407
        try:
            challenge = choose_challenge(parse_challenges(header_values, proxy=proxy))
        except SipParseError:
            return False
        answered_fresh = self._sent_fresh
        self._sent_fresh = False
        if challenge is None or (answered_fresh and not challenge.stale):
            return False
        key = (proxy, challenge.realm)
        self._challenges.pop(key, None)
        if len(self._challenges) >= MAX_REMEMBERED_CHALLENGES:
            oldest = next(iter(self._challenges))
            del self._challenges[oldest], self._nc[oldest]
        self._challenges[key] = challenge
        self._nc[key] = 0
        self._fresh = True
        return True

    def headers_for(self, method: str, uri: str, body: bytes = b"") -> list[tuple[str, str]]:
        """(Proxy-)Authorization fields for a request of this chain, from remembered challenges."""
        fields = []
        for key, challenge in self._challenges.items():
            proxy, _ = key
            nc = self._nc[key] + 1
            self._nc[key] = nc
            value = authorization_value(
                challenge,
                self._credentials,
                method=method,
                uri=uri,
                body=body,
                cnonce=self._cnonce_factory(),
                nc=nc,
            )
            fields.append(("Proxy-Authorization" if proxy else "Authorization", value))
        self._sent_fresh = self._fresh
        self._fresh = False
        return fields
