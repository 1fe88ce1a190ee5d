"""RtpPacket parse/serialise (RFC 3550 §5.1)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip2rtmp.rtp.packet import RtpPacket, RtpParseError, is_rtcp
from tests.unit.rtp.mutations import fields, mutated


def test_minimal_header_fields() -> None:
    data = bytes.fromhex("80e0 1234 00000010 deadbeef") + b"abc"
    packet = RtpPacket.parse(data)
    assert packet.payload_type == 0x60
    assert packet.marker
    assert packet.sequence_number == 0x1234
    assert packet.timestamp == 16
    assert packet.ssrc == 0xDEADBEEF
    assert packet.payload == b"abc"
    assert packet.csrc == ()
    assert packet.extension is None
    assert packet.serialize() == data


def test_csrc_extension_and_padding() -> None:
    header = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 2, 8, 7, 160, 1)
    csrc = struct.pack("!II", 10, 11)
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\x10\xaa\x00\x00"
    payload = b"\x01\x02\x03"
    padding = b"\x00\x00\x03"
    packet = RtpPacket.parse(header + csrc + extension + payload + padding)
    assert packet.csrc == (10, 11)
    assert packet.extension_profile == 0xBEDE
    assert packet.extension == b"\x10\xaa\x00\x00"
    assert packet.payload == payload
    again = RtpPacket.parse(packet.serialize())
    assert again == packet


def header(first: int = 0x80, second: int = 0x60) -> bytes:
    """A fixed header (RFC 3550 §5.1): sequence number 1, timestamp 0, SSRC 0."""
    return struct.pack("!BBHII", first, second, 1, 0, 0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", r"^RTP packet too short \(0 bytes\)"),
        (header()[:11], r"^RTP packet too short \(11 bytes\)"),
        (header(0x40), r"^RTP version 1, expected 2"),
        (header(0x81) + bytes(2), r"^CSRC list runs past the end"),
        (header(0x82) + bytes(7), r"^CSRC list runs past the end"),
        (header(0x90) + bytes(3), r"^header extension runs past the end"),
        (header(0x90) + bytes.fromhex("beef0001") + bytes(3), r"^header extension runs past"),
        (header(0xA0), r"^padding bit set on a packet without padding"),
        (header(0xA0) + bytes(4), r"^invalid padding length 0"),
        (header(0xA0) + b"\xff", r"^invalid padding length 255"),
        # a padding count that reaches back into the header
        (header(0xA0) + bytes(1) + b"\x0d", r"^invalid padding length 13"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    """Each malformed packet is refused by the check it is built to fail, which the message
    names (RFC 3550 §5.1: fixed header, CSRC list, extension, padding)."""
    with pytest.raises(RtpParseError, match=message):
        RtpPacket.parse(data)


@pytest.mark.parametrize(
    ("data", "payload"),
    [
        (header(), b""),  # exactly the 12-byte fixed header
        (header(0x81) + struct.pack("!I", 7), b""),  # a CSRC list ending at the packet end
        (header(0x90) + bytes.fromhex("beef0000"), b""),  # an empty extension at the end
        (header(0x90) + bytes.fromhex("beef0001") + b"abcd", b""),  # extension words at the end
        (header(0xA0) + b"xy\x02", b"x"),  # padding count includes itself (§5.1)
        (header(0xA0) + b"\x01", b""),  # padding is the whole payload
    ],
)
def test_fields_ending_exactly_at_the_packet_end_parse(data: bytes, payload: bytes) -> None:
    assert RtpPacket.parse(data).payload == payload


def test_extension_is_padded_to_whole_words_with_zeros() -> None:
    """RFC 3550 §5.3.1 counts the extension in 32-bit words; a profile left unset is 0."""
    data = RtpPacket(96, 1, 2, 3, b"p", extension=b"\x01").serialize()
    assert data[12:] == bytes.fromhex("0000 0001 01000000") + b"p"
    assert RtpPacket(96, 1, 2, 3, extension=b"abc", extension_profile=0xBEDE).serialize()[
        12:
    ] == bytes.fromhex("bede 0001 61626300")


def test_a_packet_built_without_payload_is_the_bare_header() -> None:
    assert RtpPacket(96, 1, 0, 0).serialize() == header(0x80, 96)


@pytest.mark.parametrize(
    ("second", "rtcp"),
    [
        (0, False),
        (191, False),
        (192, True),
        (200, True),
        (223, True),
        (224, False),
        (0x80 | 97, False),  # RTP with the marker bit, dynamic payload type 97
        (255, False),
    ],
)
def test_rtcp_demux_by_packet_type(second: int, rtcp: bool) -> None:
    """RFC 5761 §4: RTCP packet types 192-223 are told from RTP by the second byte."""
    assert is_rtcp(bytes((0x81, second))) is rtcp
    assert not is_rtcp(bytes((second,)))


@pytest.mark.fuzz
@given(st.binary(max_size=80))
def test_parse_arbitrary_bytes(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        return
    assert len(packet.payload) <= len(data) - 12


@st.composite
def packets(draw: st.DrawFn) -> tuple[RtpPacket, bytes]:
    """A packet from its fields, and its wire form with padding (RFC 3550 §5.1, §5.3.1)."""
    f = draw(fields())
    words = f.int(0, 4)
    packet = RtpPacket(
        f.int(0, 127),
        f.int(0, 0xFFFF),
        f.int(0, 0xFFFFFFFF),
        f.int(0, 0xFFFFFFFF),
        f.bytes(0, 64),
        marker=f.flag(),
        csrc=tuple(range(f.int(0, 15))),
        extension_profile=f.int(0, 0xFFFF) if words else None,
        extension=f.bytes(4 * words, 4 * words) if words else None,
    )
    data = packet.serialize()
    pad = f.int(0, 8)
    if pad:
        data = bytes((data[0] | 0x20,)) + data[1:] + bytes(pad - 1) + bytes((pad,))
    return packet, data


@pytest.mark.fuzz
@given(packets())
def test_valid_packets_round_trip(case: tuple[RtpPacket, bytes]) -> None:
    packet, data = case
    assert RtpPacket.parse(data) == packet


@pytest.mark.fuzz
@given(mutated(packets().map(lambda case: case[1])))
def test_mutated_packets_raise_only_rtp_parse_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        return
    header = (
        12
        + 4 * len(packet.csrc)
        + (4 + len(packet.extension or b"") if packet.extension is not None else 0)
    )
    assert header + len(packet.payload) <= len(data)
