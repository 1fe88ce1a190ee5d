"""SDP security descriptions (RFC 4568): the a=crypto grammar of §9, what makes a line usable
for our SRTP, fresh offer keys, and keys kept out of every text we show."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

import pytest

from sip2rtmp.sip.sdes import (
    KEY_LENGTHS,
    MAX_CRYPTO_LENGTH,
    MAX_CRYPTO_LINES,
    SUITES,
    CryptoAttribute,
    NoUsableCrypto,
    SrtpKeys,
    mask_keys,
    offer_crypto,
    read_crypto,
)
from sip2rtmp.sip.sdp import SrtpOffer, build_offer

KEY_80 = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
"""The RFC 4568 examples' 30-byte key||salt."""
OTHER_KEY = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
GCM_KEY = base64.b64encode(bytes(range(28))).decode()
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{16,}")


def counting_bytes() -> tuple[list[bytes], Callable[[int], bytes]]:
    """A `random_bytes` whose every call returns a new recognisable key, and the keys it gave."""
    given: list[bytes] = []

    def random_bytes(count: int) -> bytes:
        given.append(bytes([len(given) + 1]) * count)
        return given[-1]

    return given, random_bytes


# ---- the grammar (RFC 4568 §9.1, §9.2) ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "lifetime", "mki", "params"),
    [
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^20|1:4", 2**20, (1, 4), ()),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^20|1:32", 2**20, (1, 32), ()),
        (
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^20|1:4 FEC_ORDER=FEC_SRTP",
            2**20,
            (1, 4),
            ("FEC_ORDER=FEC_SRTP",),
        ),
        (
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{OTHER_KEY}|2^20|1:32 KDR=1 UNENCRYPTED_SRTCP",
            2**20,
            (1, 32),
            ("KDR=1", "UNENCRYPTED_SRTCP"),
        ),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}", None, None, ()),
        (f"123456789 AES_CM_128_HMAC_SHA1_32 inline:{KEY_80}|2^31", 2**31, None, ()),
        (f"2 AEAD_AES_128_GCM inline:{GCM_KEY}", None, None, ()),
    ],
    ids=["§4", "mki 32", "§5.1 offer", "session params", "key only", "9-digit tag", "gcm"],
)
def test_rfc4568_lines_parse_and_serialize_back(
    value: str, lifetime: int | None, mki: tuple[int, int] | None, params: tuple[str, ...]
) -> None:
    line = CryptoAttribute.parse(value)
    key_text = value.split("inline:")[1].split("|")[0].split()[0]
    assert line.key == base64.b64decode(key_text)
    assert (line.lifetime, line.mki, line.session_params) == (lifetime, mki, params)
    assert line.serialize() == value
    assert CryptoAttribute.parse(line.serialize()) == line


def test_only_the_first_key_parameter_is_read() -> None:
    """RFC 4568 §5.1's F8 line lists two keys, each with its MKI: the first is the line's."""
    first, second = "MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm", OTHER_KEY
    value = (
        f"2 F8_128_HMAC_SHA1_80 inline:{first}|2^20|1:4;inline:{second}|2^20|2:4 FEC_ORDER=FEC_SRTP"
    )
    line = CryptoAttribute.parse(value)
    assert (line.tag, line.suite, line.key) == (2, "F8_128_HMAC_SHA1_80", base64.b64decode(first))
    assert (line.mki, line.session_params) == ((1, 4), ("FEC_ORDER=FEC_SRTP",))


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|1048576", 2**20),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|1000", 1000),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^0", 1),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^64", 2**64),
        (f"01 AES_CM_128_HMAC_SHA1_80 INLINE:{KEY_80}", None),
    ],
)
def test_lifetimes_and_case(value: str, parsed: int | None) -> None:
    line = CryptoAttribute.parse(value)
    assert line.lifetime == parsed and line.tag == 1
    assert CryptoAttribute.parse(line.serialize()) == line


def test_a_key_without_its_base64_padding_is_read() -> None:
    line = CryptoAttribute.parse(f"1 AEAD_AES_128_GCM inline:{GCM_KEY.rstrip('=')}")
    assert line.key == bytes(range(28)) and line.usable
    assert line.serialize().endswith(GCM_KEY)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "without a tag"),
        ("1 AES_CM_128_HMAC_SHA1_80", "without a tag"),
        (f"x AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}", "bad tag"),
        (f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}", "bad tag"),
        (f"-1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}", "bad tag"),
        (f"1 AES-CM inline:{KEY_80}", "bad suite"),
        (f"1 {'A' * 65} inline:{KEY_80}", "bad suite"),
        (f"1 AES_CM_128_HMAC_SHA1_80 {KEY_80}", "no inline key"),
        (f"1 AES_CM_128_HMAC_SHA1_80 uri:{KEY_80}", "no inline key"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80[:-1]}*", "not base64"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}A", "not base64"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:", "not base64"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^65", "lifetime"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|{'9' * 21}", "lifetime"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^", "lifetime"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|1:0", "MKI length"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|1:129", "MKI length"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|256:1", "MKI value"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|1:4|2^20", "key parameter"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|1:4|1:4", "key parameter"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^20|2^20", "key parameter"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|1|2|3", "key parameter"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80} {'X' * MAX_CRYPTO_LENGTH}", "characters"),
        (f"1 {KEY_80} {KEY_80}", "no inline key"),
    ],
)
def test_malformed_lines_raise_without_the_key(value: str, message: str) -> None:
    with pytest.raises(NoUsableCrypto, match=message) as caught:
        CryptoAttribute.parse(value)
    assert not BASE64_RUN.search(str(caught.value)), str(caught.value)


def test_the_length_cap_is_inclusive() -> None:
    value = f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80} "
    value += "X" * (MAX_CRYPTO_LENGTH - len(value))
    assert len(CryptoAttribute.parse(value).session_params[0]) > 900
    with pytest.raises(NoUsableCrypto):
        CryptoAttribute.parse(value + "X")


# ---- what our SRTP can use -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}", None),
        (f"1 AES_CM_128_HMAC_SHA1_32 inline:{KEY_80}|2^31", None),
        (f"1 AEAD_AES_128_GCM inline:{GCM_KEY}", None),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{GCM_KEY}", "28 bytes, not 30"),
        (f"1 AEAD_AES_128_GCM inline:{KEY_80}", "30 bytes, not 28"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^20|1:4", "MKI"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80} KDR=1", "session parameters .*KDR"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80} UNENCRYPTED_SRTP", "UNENCRYPTED_SRTP"),
        (f"1 F8_128_HMAC_SHA1_80 inline:{KEY_80}", "F8_128_HMAC_SHA1_80.*suite we do not do"),
        (f"1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_80}", "suite we do not do"),
    ],
)
def test_usable_lines(value: str, problem: str | None) -> None:
    line = CryptoAttribute.parse(value)
    assert line.usable is (problem is None)
    if problem is not None:
        assert line.problem is not None and re.search(problem, line.problem)
        assert not BASE64_RUN.search(line.problem)


def test_a_key_in_the_place_of_a_name_is_not_quoted() -> None:
    line = CryptoAttribute.parse(f"7 {OTHER_KEY} inline:{KEY_80} {OTHER_KEY}=1")
    assert line.problem == "crypto line 7 (?): a suite we do not do"
    session = CryptoAttribute(7, "AES_CM_128_HMAC_SHA1_80", line.key, None, None, (OTHER_KEY,))
    assert session.problem is not None and OTHER_KEY not in session.problem


def test_read_crypto_reads_at_most_sixteen_lines_and_says_why_others_were_refused() -> None:
    values = [f"{tag} AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}" for tag in range(1, 21)]
    parsed, refused = read_crypto(["1 AES_CM_128_HMAC_SHA1_80 inline:*", *values])
    assert [line.tag for line in parsed] == list(range(1, MAX_CRYPTO_LINES))
    assert refused == [
        "crypto line 1 (AES_CM_128_HMAC_SHA1_80) with a key that is not base64",
        f"more than {MAX_CRYPTO_LINES} crypto lines, the rest unread",
    ]


# ---- our keys ----------------------------------------------------------------------------


def test_offer_crypto_tags_suites_in_order_with_a_key_each() -> None:
    given, random_bytes = counting_bytes()
    lines = offer_crypto(random_bytes=random_bytes)
    assert [(line.tag, line.suite) for line in lines] == list(enumerate(SUITES, start=1))
    assert [line.key for line in lines] == given
    assert [len(line.key) for line in lines] == [KEY_LENGTHS[suite] for suite in SUITES]
    assert all(line.usable for line in lines)
    assert [line.tag for line in offer_crypto(["AEAD_AES_128_GCM"])] == [1]


def test_offer_crypto_keys_are_fresh_for_each_call() -> None:
    first, second = offer_crypto(), offer_crypto()
    keys = {line.key for line in first + second}
    assert len(keys) == 2 * len(SUITES)


@pytest.mark.parametrize(
    ("suites", "random_bytes", "message"),
    [
        (["F8_128_HMAC_SHA1_80"], bytes, "unknown SRTP suite"),
        (SUITES, lambda count: bytes(count - 1), "29 random bytes"),
    ],
)
def test_offer_crypto_refuses_what_it_cannot_offer(
    suites: list[str], random_bytes: Callable[[int], bytes], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        offer_crypto(suites, random_bytes)


def test_reprs_leave_the_keys_out() -> None:
    line = CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}")
    keys = SrtpKeys(line.suite, line.key, line.key)
    for text in (repr(line), repr(keys), repr(SrtpOffer("RTP/SAVP", (line,), ()))):
        assert repr(line.key)[2:12] not in text and KEY_80 not in text
    assert "AES_CM_128_HMAC_SHA1_80" in repr(keys)


# ---- masking -----------------------------------------------------------------------------


def srtp_offer_text() -> tuple[str, list[str]]:
    audio, video = offer_crypto(), offer_crypto()
    sdp = build_offer(
        "192.0.2.10", 40000, 40002, session_id=1, srtp=SrtpOffer("RTP/SAVP", audio, video)
    )
    keys = [base64.b64encode(line.key).decode() for line in audio + video]
    return sdp, keys


def test_mask_keys_leaves_no_key_of_a_whole_sdp() -> None:
    sdp, keys = srtp_offer_text()
    assert all(key in sdp for key in keys)
    masked = mask_keys(sdp)
    assert not any(key[:8] in masked for key in keys)
    assert masked.count("inline:***") == len(keys)
    assert not BASE64_RUN.search(masked.replace("level-asymmetry-allowed", ""))
    unmasked_lines = [line for line in sdp.split("\r\n") if "inline:" not in line]
    assert [line for line in masked.split("\r\n") if "inline:" not in line] == unmasked_lines


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"a=crypto:1 S inline:{KEY_80}|2^20|1:4 KDR=1", "a=crypto:1 S inline:*** KDR=1"),
        (f"inline:{KEY_80}|2^20;inline:{OTHER_KEY}|1:4", "inline:***;inline:***"),
        (f"repr: 'inline:{KEY_80}\\r\\na=ptime:20'", "repr: 'inline:***\\r\\na=ptime:20'"),
        (f"INLINE:{GCM_KEY} and Inline:{KEY_80}|1048576", "inline:*** and inline:***"),
        ("inline:", "inline:***"),
        ("no keys here", "no keys here"),
    ],
)
def test_mask_keys(text: str, masked: str) -> None:
    assert mask_keys(text) == masked
