"""SDP security descriptions for SRTP (RFC 4568 SDES): the ``a=crypto`` attribute, the keys it
carries, and the choice of one line from an offer or an answer.

Each side names in its own ``a=crypto`` line the master key and salt it encrypts what it
sends with (RFC 4568 §6.1): the key in our offer or answer protects our RTP and RTCP, the
key in the peer's protects theirs. The tag of the line the answer accepts ties the two.

Keys are secrets: `mask_keys` takes them out of any SDP before it is logged or shown.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "KEY_LENGTHS",
    "MAX_CRYPTO_LENGTH",
    "MAX_CRYPTO_LINES",
    "SUITES",
    "CryptoAttribute",
    "NoUsableCrypto",
    "SrtpKeys",
    "mask_keys",
    "offer_crypto",
    "read_crypto",
]

SUITES: tuple[str, ...] = (
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
    "AEAD_AES_128_GCM",
)
"""What we offer, in our order of preference (RFC 4568 §6.2, RFC 7714 §12 for GCM)."""

KEY_LENGTHS: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": 30,
    "AES_CM_128_HMAC_SHA1_32": 30,
    "AEAD_AES_128_GCM": 28,
}
"""Master key plus master salt, in bytes: 16 + 14 for AES-CM (RFC 3711 §8.2), 16 + 12 for
AES-GCM (RFC 7714 §12)."""


MAX_CRYPTO_LINES = 16
"""``a=crypto`` lines read per m= section: we offer three, and an offer listing more than a
dozen suites is not one a real peer sends."""
MAX_CRYPTO_LENGTH = 1024
"""Characters in one ``a=crypto`` value: a line with a key, a lifetime, an MKI and every
RFC 4568 §6.3 session parameter is under 200."""
_MAX_TAG_DIGITS = 9  # RFC 4568 §9.1: tag = 1*9DIGIT
_MAX_LIFETIME_EXPONENT = 64
_MAX_LIFETIME_DIGITS = 20  # 2^64 in decimal
_MAX_MKI_LENGTH = 128  # RFC 4568 §9.1: mki-length = 1*3DIGIT, 1 to 128
_MAX_SUITE_LENGTH = 64
_SUITE = re.compile(r"[A-Za-z0-9_]+")
_NAME = re.compile(r"[A-Za-z0-9]{1,15}(?:_[A-Za-z0-9]{1,15}){0,7}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")

_INLINE_KEY = re.compile(
    r"inline:(?!\*\*\*)[A-Za-z0-9+/=_-]*(?:\|(?:[0-9]*:[0-9]*|(?:2\^)?[0-9]*)){0,2}", re.IGNORECASE
)


class NoUsableCrypto(ValueError):
    """An SRTP answer or offer that names no ``a=crypto`` line we can use (none at all, an
    unknown suite, a key of the wrong length, MKI or session parameters we do not do).

    Its message names tags and suites, never a key."""


def _shown(name: str) -> str:
    """A suite or parameter name as a message may quote it. Names look like
    ``AES_CM_128_HMAC_SHA1_80``: a longer run of letters and digits may be a key written in
    the wrong place, and is not quoted."""
    return name if _NAME.fullmatch(name) else "?"


def _digits(text: str, limit: int) -> bool:
    return 0 < len(text) <= limit and text.isascii() and text.isdigit()


def _lifetime(text: str, where: str) -> int:
    """``["2^"] 1*DIGIT`` (RFC 4568 §9.1), bounded before it is converted."""
    if text.startswith("2^"):
        exponent = text[2:]
        if _digits(exponent, 2) and int(exponent) <= _MAX_LIFETIME_EXPONENT:
            return 1 << int(exponent)
    elif _digits(text, _MAX_LIFETIME_DIGITS):
        return int(text)
    raise NoUsableCrypto(f"{where} with a bad key lifetime")


def _mki(text: str, where: str) -> tuple[int, int]:
    """``mki-value ":" mki-length`` (RFC 4568 §9.1): the value must fit its length in bytes."""
    value, _, length = text.partition(":")
    if not (_digits(length, 3) and 1 <= int(length) <= _MAX_MKI_LENGTH):
        raise NoUsableCrypto(f"{where} with a bad MKI length")
    if not (_digits(value, 3 * _MAX_MKI_LENGTH) and int(value) < 256 ** int(length)):
        raise NoUsableCrypto(f"{where} with a bad MKI value")
    return int(value), int(length)


def _key(text: str, where: str) -> bytes:
    """The base64 key||salt (RFC 4568 §6.1, RFC 3548 §3); missing padding is tolerated."""
    if not _BASE64.fullmatch(text):
        raise NoUsableCrypto(f"{where} with a key that is not base64")
    padded = text + "=" * (-len(text) % 4) if "=" not in text else text
    try:
        return base64.b64decode(padded, validate=True)
    except binascii.Error:
        raise NoUsableCrypto(f"{where} with a key that is not base64") from None


def _power_of_two(value: int) -> int | None:
    return value.bit_length() - 1 if value > 0 and value & (value - 1) == 0 else None


@dataclass(frozen=True, slots=True)
class CryptoAttribute:
    """One ``a=crypto:<tag> <suite> inline:<key||salt base64>[|lifetime][|MKI:length]``
    line with its session parameters (RFC 4568 §9.1)."""

    tag: int
    suite: str
    key: bytes = field(repr=False)
    """Master key followed by master salt; left out of ``repr``."""
    lifetime: int | None = None
    mki: tuple[int, int] | None = None
    """(value, length in bytes) when the line names an MKI."""
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """The attribute's value (after ``crypto:``); `NoUsableCrypto` when malformed.

        Only the first key parameter is read (RFC 4568 §9.1 allows several, each with its
        own MKI; we do not use MKIs). A line can parse and still not be `usable`."""
        if len(value) > MAX_CRYPTO_LENGTH:
            raise NoUsableCrypto(f"crypto line of {len(value)} characters")
        parts = value.split()
        if len(parts) < 3:
            raise NoUsableCrypto("crypto line without a tag, a suite and a key")
        tag_text, suite, key_params, *session_params = parts
        if not _digits(tag_text, _MAX_TAG_DIGITS):
            raise NoUsableCrypto("crypto line with a bad tag")
        tag = int(tag_text)
        if len(suite) > _MAX_SUITE_LENGTH or not _SUITE.fullmatch(suite):
            raise NoUsableCrypto(f"crypto line {tag} with a bad suite")
        where = f"crypto line {tag} ({_shown(suite)})"
        method, _, info = key_params.split(";", 1)[0].partition(":")
        if method.lower() != "inline":
            raise NoUsableCrypto(f"{where} has no inline key")
        key_text, *options = info.split("|")
        if len(options) > 2:
            raise NoUsableCrypto(f"{where} with a bad key parameter")
        lifetime = mki = None
        for option in options:
            if ":" in option and mki is None:
                mki = _mki(option, where)
            elif ":" not in option and lifetime is None and mki is None:
                lifetime = _lifetime(option, where)
            else:
                raise NoUsableCrypto(f"{where} with a bad key parameter")
        key = _key(key_text, where)
        return cls(tag, suite, key, lifetime, mki, tuple(session_params))

    def serialize(self) -> str:
        """The attribute's value, as `parse` reads it (a power-of-two lifetime as ``2^n``)."""
        key = "inline:" + base64.b64encode(self.key).decode("ascii")
        if self.lifetime is not None:
            exponent = _power_of_two(self.lifetime)
            key += f"|2^{exponent}" if exponent is not None else f"|{self.lifetime}"
        if self.mki is not None:
            key += f"|{self.mki[0]}:{self.mki[1]}"
        return " ".join((str(self.tag), self.suite, key, *self.session_params))

    @property
    def problem(self) -> str | None:
        """Why we cannot use this line (tag and suite named, never the key), or None."""
        expected = KEY_LENGTHS.get(self.suite)
        where = f"crypto line {self.tag} ({_shown(self.suite)})"
        if expected is None:
            return f"{where}: a suite we do not do"
        if len(self.key) != expected:
            return f"{where}: a key of {len(self.key)} bytes, not {expected}"
        if self.mki is not None:
            return f"{where}: an MKI, which we do not use"
        if self.session_params:
            names = ", ".join(_shown(param.split("=", 1)[0]) for param in self.session_params[:4])
            return f"{where}: session parameters we do not do ({names})"
        return None

    @property
    def usable(self) -> bool:
        """Whether our SRTP can run with this line: a suite of `KEY_LENGTHS`, a key of its
        length, no MKI and no session parameters (RFC 4568 §6.3: KDR, unencrypted or
        unauthenticated SRTP, FEC order, window size)."""
        return self.problem is None


def read_crypto(values: Iterable[str]) -> tuple[list[CryptoAttribute], list[str]]:
    """The ``a=crypto`` values of one m= section, read up to `MAX_CRYPTO_LINES`: the lines
    that parse, and why each one that does not was refused (no key material in either)."""
    parsed: list[CryptoAttribute] = []
    refused: list[str] = []
    for count, value in enumerate(values):
        if count == MAX_CRYPTO_LINES:
            refused.append(f"more than {MAX_CRYPTO_LINES} crypto lines, the rest unread")
            break
        try:
            parsed.append(CryptoAttribute.parse(value))
        except NoUsableCrypto as error:
            refused.append(str(error))
    return parsed, refused


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """The SRTP of one negotiated stream: the suite, our sending key and the peer's."""

    suite: str
    local_key: bytes
    """Master key || salt we protect our RTP/RTCP with (the one in our SDP)."""
    remote_key: bytes
    """Master key || salt the peer protects its RTP/RTCP with (the one in its SDP)."""

    def __repr__(self) -> str:
        return f"SrtpKeys(suite={self.suite!r}, keys=***)"


def offer_crypto(
    suites: Sequence[str] = SUITES, random_bytes: Callable[[int], bytes] = secrets.token_bytes
) -> tuple[CryptoAttribute, ...]:
    """Fresh ``a=crypto`` lines for one stream of an offer, tags 1, 2, … in ``suites``
    order, each with its own key from ``random_bytes``."""
    lines = []
    for tag, suite in enumerate(suites, start=1):
        if suite not in KEY_LENGTHS:
            raise ValueError(f"unknown SRTP suite {suite!r}")
        key = random_bytes(KEY_LENGTHS[suite])
        if len(key) != KEY_LENGTHS[suite]:
            raise ValueError(f"{len(key)} random bytes for {suite}, not {KEY_LENGTHS[suite]}")
        lines.append(CryptoAttribute(tag, suite, key))
    return tuple(lines)


def mask_keys(text: str) -> str:
    """``text`` with every ``inline:`` key (and its lifetime/MKI) replaced by ``***``."""
    return _INLINE_KEY.sub("inline:***", text)
