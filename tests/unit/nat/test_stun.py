"""The STUN codec (RFC 5389) against RFC 5769's test vectors, hand-built answers from old and
unusual servers, and hostile bytes."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip2rtmp.nat.stun import (
    StunError,
    binding_request,
    is_stun,
    new_transaction_id,
    parse_binding_response,
)
from tests.unit.rtp.mutations import mutated

COOKIE = bytes.fromhex("2112a442")
VECTOR_TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
VECTOR_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"

# RFC 5769 §2.2: SOFTWARE, XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT
RFC5769_IPV4 = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)
# RFC 5769 §2.3
RFC5769_IPV6 = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c"
)


def attribute(kind: int, value: bytes) -> bytes:
    """A TLV padded to four bytes (RFC 5389 §15)."""
    return struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) % 4)


def address_value(host: str, port: int, tid: bytes | None = None) -> bytes:
    """MAPPED-ADDRESS (§15.1), or XOR-MAPPED-ADDRESS (§15.2) when given the transaction id."""
    raw = ipaddress.ip_address(host).packed
    family = 1 if len(raw) == 4 else 2
    if tid is not None:
        port ^= 0x2112
        raw = bytes(a ^ b for a, b in zip(raw, COOKIE + tid, strict=False))
    return struct.pack("!BBH", 0, family, port) + raw


def message(tid: bytes, *attributes: bytes, kind: int = 0x0101, fingerprint: bool = False) -> bytes:
    """A STUN message of `attributes`, with a correct FINGERPRINT (§15.5) if asked."""
    body = b"".join(attributes)
    if fingerprint:
        head = struct.pack("!HH", kind, len(body) + 8) + COOKIE + tid + body
        crc = zlib.crc32(head) ^ 0x5354554E
        body += attribute(0x8028, crc.to_bytes(4, "big"))
    return struct.pack("!HH", kind, len(body)) + COOKIE + tid + body


def success(host: str, port: int, tid: bytes, *, fingerprint: bool = False) -> bytes:
    """What an RFC 5389 server answers: XOR-MAPPED-ADDRESS."""
    return message(tid, attribute(0x0020, address_value(host, port, tid)), fingerprint=fingerprint)


def error_code(code: int, reason: bytes) -> bytes:
    return attribute(0x0009, struct.pack("!HBB", 0, code // 100, code % 100) + reason)


@pytest.mark.parametrize(
    ("vector", "expected"),
    [
        (RFC5769_IPV4, ("192.0.2.1", 32853)),
        (RFC5769_IPV6, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
    ids=["ipv4", "ipv6"],
)
def test_rfc5769_sample_responses(vector: bytes, expected: tuple[str, int]) -> None:
    # the transcription is RFC 5769's: its MESSAGE-INTEGRITY verifies with the RFC's password
    integrity_at = vector.index(bytes.fromhex("00080014"), 20)
    signed = bytearray(vector[:integrity_at])
    signed[2:4] = (integrity_at + 24 - 20).to_bytes(2, "big")
    digest = hmac.new(VECTOR_PASSWORD, bytes(signed), hashlib.sha1).digest()
    assert vector[integrity_at + 4 : integrity_at + 24] == digest
    assert is_stun(vector)
    assert parse_binding_response(vector, VECTOR_TID) == expected


def test_binding_request_is_a_bare_header() -> None:
    tid = new_transaction_id()
    request = binding_request(tid)
    assert request == bytes.fromhex("00010000") + COOKIE + tid
    assert is_stun(request)
    assert len(tid) == 12 and new_transaction_id() != tid
    with pytest.raises(ValueError, match="12 bytes"):
        binding_request(tid[:11])


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("80000001") + bytes(16),  # RTP, version 2
        bytes.fromhex("80c80006") + bytes(24),  # RTCP sender report
        bytes((22, 0xFE, 0xFD)) + bytes(30),  # DTLS handshake (RFC 7983: 20..63)
        bytes.fromhex("04010000") + COOKIE + bytes(12),  # first byte past 3
        bytes.fromhex("01010000") + bytes.fromhex("2112a443") + bytes(12),  # other cookie
        binding_request(bytes(12))[:19],  # shorter than a header
    ],
    ids=["rtp", "rtcp", "dtls", "first-byte", "cookie", "short"],
)
def test_is_stun_tells_other_protocols_apart(data: bytes) -> None:
    assert not is_stun(data)
    with pytest.raises(StunError, match="not a STUN message"):
        parse_binding_response(data, bytes(12))


def test_rfc3489_server_answers_with_mapped_address() -> None:
    """An RFC 3489 server echoes our id (cookie included) and sends MAPPED-ADDRESS plus its
    SOURCE-ADDRESS and CHANGED-ADDRESS, which are its own and understood (RFC 5389 §18.2)."""
    tid = new_transaction_id()
    answer = message(
        tid,
        attribute(0x0001, address_value("198.51.100.7", 40002)),
        attribute(0x0004, address_value("203.0.113.1", 3478)),
        attribute(0x0005, address_value("203.0.113.2", 3479)),
    )
    assert parse_binding_response(answer, tid) == ("198.51.100.7", 40002)


def test_xor_mapped_address_wins_over_a_rewritten_mapped_address() -> None:
    """A NAT's ALG may rewrite a plain address it finds in a payload: the XOR'd one stands."""
    tid = new_transaction_id()
    answer = message(
        tid,
        attribute(0x0001, address_value("10.0.0.5", 16384)),
        attribute(0x0020, address_value("198.51.100.7", 40002, tid)),
        attribute(0x8022, b"server"),  # SOFTWARE: comprehension-optional
        fingerprint=True,
    )
    assert parse_binding_response(answer, tid) == ("198.51.100.7", 40002)


def test_ipv6_mapped_address_is_xored_with_cookie_and_transaction_id() -> None:
    tid = new_transaction_id()
    answer = success("2001:db8::1:2", 65535, tid)
    assert parse_binding_response(answer, tid) == ("2001:db8::1:2", 65535)


def test_only_the_first_of_repeated_attributes_counts() -> None:
    tid = new_transaction_id()
    first = attribute(0x0020, address_value("198.51.100.7", 1, tid))
    second = attribute(0x0020, address_value("198.51.100.8", 2, tid))
    assert parse_binding_response(message(tid, first, second), tid) == ("198.51.100.7", 1)


def test_attributes_after_message_integrity_are_ignored() -> None:
    """RFC 5389 §15.4: only FINGERPRINT may follow MESSAGE-INTEGRITY."""
    tid = new_transaction_id()
    answer = message(
        tid,
        attribute(0x0001, address_value("198.51.100.7", 40002)),
        attribute(0x0008, bytes(20)),
        attribute(0x0020, address_value("192.0.2.66", 666, tid)),
        fingerprint=True,
    )
    assert parse_binding_response(answer, tid) == ("198.51.100.7", 40002)


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (401, b"Unauthorized", "STUN error 401 Unauthorized"),
        (420, b"Unknown Attribute", "STUN error 420 Unknown Attribute"),
        (500, b"Server\r\nError\x1b[31m", "STUN error 500 Server??Error?[31m"),
        (438, b"", "STUN error 438"),
    ],
)
def test_error_response_names_code_and_reason(code: int, reason: bytes, expected: str) -> None:
    tid = new_transaction_id()
    answer = message(tid, error_code(code, reason), kind=0x0111)
    with pytest.raises(StunError) as raised:
        parse_binding_response(answer, tid)
    assert str(raised.value) == expected


def test_error_reason_is_cut_to_a_line_of_bounded_length() -> None:
    tid = new_transaction_id()
    answer = message(tid, error_code(400, b"x" * 700 + b"\xff\xfe"), kind=0x0111)
    with pytest.raises(StunError) as raised:
        parse_binding_response(answer, tid)
    assert str(raised.value) == "STUN error 400 " + "x" * 128


TID = bytes(range(12))
GOOD = success("198.51.100.7", 40002, TID)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (success("198.51.100.7", 40002, bytes(12)), "another transaction"),
        (message(TID, kind=0x0111), "without ERROR-CODE"),
        (message(TID, attribute(0x0009, b"\x00\x00\x04"), kind=0x0111), "ERROR-CODE of 3"),
        (binding_request(TID), "type 0x0001 is not a Binding response"),
        (GOOD[:1] + b"\x03" + GOOD[2:], "type 0x0103 is not a Binding response"),  # Allocate
        (message(TID), "without XOR-MAPPED-ADDRESS or MAPPED-ADDRESS"),
        (GOOD + b"\x00" * 4, "length 12 does not match"),
        (GOOD[:-2], "length 12 does not match"),
        (GOOD[:2] + b"\x00\x0e" + GOOD[4:] + b"\x00\x00", "14 is not a multiple of 4"),
        (message(TID, b"\x00\x20\x00\x0c" + bytes(8)), "runs past the message"),
        (message(TID, attribute(0x0020, b"\x00\x01\x00")), "XOR-MAPPED-ADDRESS of 3 bytes"),
        (message(TID, attribute(0x0001, bytes(8))), "unknown address family 0x00"),
        (message(TID, attribute(0x0020, b"\x00\x01" + bytes(18))), "of 20 bytes for a 32-bit"),
        (message(TID, attribute(0x0001, b"\x00\x02" + bytes(6))), "of 8 bytes for a 128-bit"),
        (GOOD[:2] + b"\x00\x14" + GOOD[4:] + attribute(0x0030, b"abcd"), "0x0030"),
        (success("198.51.100.7", 40002, TID, fingerprint=True)[:-1] + b"\x00", "FINGERPRINT"),
        (
            message(TID, attribute(0x8028, bytes(4)), attribute(0x0020, GOOD[24:])),
            "FINGERPRINT is not the last",
        ),
        (message(TID, attribute(0x8028, bytes(2))), "FINGERPRINT of 2 bytes"),
    ],
)
def test_unusable_answers_raise_stun_error(data: bytes, why: str) -> None:
    with pytest.raises(StunError, match=why):
        parse_binding_response(data, TID)


def test_a_changed_byte_breaks_the_rfc5769_fingerprint() -> None:
    tampered = RFC5769_IPV4.replace(b"test vector", b"test vectoR")
    with pytest.raises(StunError, match="FINGERPRINT does not match"):
        parse_binding_response(tampered, VECTOR_TID)


def _checked(data: bytes) -> None:
    """Parse `data` as the answer to the transaction it names: only StunError may escape,
    and what comes back is an address a socket can send to."""
    stun = is_stun(data)
    try:
        host, port = parse_binding_response(data, data[8:20])
    except StunError:
        return
    assert stun
    assert ipaddress.ip_address(host) and 0 <= port <= 0xFFFF


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    """Well-formed answers from their fields, for the mutations to start from."""
    tid = draw(st.binary(min_size=12, max_size=12))
    host = draw(st.ip_addresses()).compressed
    port = draw(st.integers(0, 0xFFFF))
    # Optional attributes and required ones a parser must walk past; unknown required ones
    # are the mutations' job.
    kinds = st.integers(0x8000, 0xFFFF) | st.sampled_from([0x0001, 0x0004, 0x0005, 0x0020])
    extra = draw(st.lists(st.tuples(kinds, st.binary(max_size=12)), max_size=3))
    parts = [attribute(kind, value) for kind, value in extra]
    if draw(st.integers(0, 3)) == 0:
        return message(tid, error_code(draw(st.integers(300, 699)), b"Reason"), kind=0x0111)
    kind, mask = draw(st.sampled_from([(0x0020, tid), (0x0001, None)]))
    parts.insert(draw(st.integers(0, len(parts))), attribute(kind, address_value(host, port, mask)))
    return message(tid, *parts, fingerprint=draw(st.booleans()))


@pytest.mark.fuzz
@given(st.binary(max_size=120))
def test_arbitrary_bytes_raise_only_stun_error(data: bytes) -> None:
    _checked(data)


@pytest.mark.fuzz
@given(st.one_of(mutated(st.sampled_from([RFC5769_IPV4, RFC5769_IPV6])), mutated(answers())))
def test_mutated_answers_raise_only_stun_error(data: bytes) -> None:
    _checked(data)


@pytest.mark.fuzz
@given(answers(), st.binary(max_size=40))
def test_attribute_garbage_with_a_correct_length_raises_only_stun_error(
    answer: bytes, garbage: bytes
) -> None:
    """Garbage appended and the header's length kept right, so the attribute walk sees it."""
    body = answer[20:] + garbage + bytes(-len(garbage) % 4)
    _checked(answer[:2] + len(body).to_bytes(2, "big") + answer[4:20] + body)
