"""HTTP Digest for SIP: challenges in, credentials out (RFC 3261 §22, RFC 7616, RFC 8760).

Servers may offer several challenges; the strongest algorithm we implement wins (RFC 7616
§3.7, RFC 8760 §2.4). A wrong password is not always a 403: kamailio, like many registrars,
answers with a fresh challenge, so a second challenge right after we answered one (and not
flagged `stale=true`) means the credentials were refused (RFC 7616 §3.4, RFC 3261 §22.2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from sip2rtmp.sip.message import SipParseError, is_token, quote


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


def _parse_auth_fields(value: str) -> list[tuple[str, dict[str, str]]]:
    """Split `Scheme a=b, c="d", Other e=f` into schemes with their parameters (RFC 7235 §2.1)."""
    results: list[tuple[str, dict[str, str]]] = []
    pos, size = 0, len(value)
    while pos < size:
        while pos < size and value[pos] in " \t,":
            pos += 1
        if pos >= size:
            break
        start = pos
        while pos < size and value[pos] not in " \t,=":
            pos += 1
        word = value[start:pos]
        if not is_token(word):
            raise SipParseError(f"bad authentication parameter near {value[start : start + 20]!r}")
        while pos < size and value[pos] in " \t":
            pos += 1
        if pos >= size or value[pos] != "=":
            results.append((word, {}))
            continue
        if not results:
            raise SipParseError("authentication parameter before any scheme")
        pos += 1
        while pos < size and value[pos] in " \t":
            pos += 1
        if pos < size and value[pos] == '"':
            chars: list[str] = []
            pos += 1
            while pos < size and value[pos] != '"':
                if value[pos] == "\\" and pos + 1 < size:
                    pos += 1
                chars.append(value[pos])
                pos += 1
            if pos >= size:
                raise SipParseError("unterminated quoted string in authentication header")
            pos += 1
            param = "".join(chars)
        else:
            start = pos
            while pos < size and value[pos] not in " \t,":
                pos += 1
            param = value[start:pos]
        results[-1][1][word.lower()] = param
    return results


def parse_challenges(values: list[str], *, proxy: bool) -> list[Challenge]:
    """Every Digest challenge in the given header field values; other schemes are skipped."""
    challenges = []
    for value in values:
        for scheme, params in _parse_auth_fields(value):
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
    hash_ = _HASHES[challenge.base_algorithm]
    realm = challenge.realm
    ha1 = hash_(f"{credentials.username}:{realm}:{credentials.password}".encode())
    if challenge.session:
        ha1 = hash_(f"{ha1}:{challenge.nonce}:{cnonce}".encode())
    qop = "auth" if "auth" in challenge.qop else ("auth-int" if challenge.qop else None)
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + hash_(body)
    ha2 = hash_(a2.encode())
    if qop is None:
        return hash_(f"{ha1}:{challenge.nonce}:{ha2}".encode()), None
    return hash_(f"{ha1}:{challenge.nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}".encode()), qop


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
        username = _HASHES[challenge.base_algorithm](f"{username}:{challenge.realm}".encode())
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
        self._nc: dict[str, int] = {}
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
        self._challenges[(proxy, challenge.realm)] = challenge
        self._nc[challenge.nonce] = 0
        self._fresh = True
        return True

    def headers_for(self, method: str, uri: str, body: bytes = b"") -> list[tuple[str, str]]:
        """(Proxy-)Authorization fields for a request of this chain, from remembered challenges."""
        fields = []
        for (proxy, _), challenge in self._challenges.items():
            nc = self._nc.get(challenge.nonce, 0) + 1
            self._nc[challenge.nonce] = nc
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
