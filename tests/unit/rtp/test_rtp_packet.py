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


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00",  # 11 bytes
        bytes.fromhex("40000001000000000000000000"),  # version 1
        bytes.fromhex("8100000100000000000000000000"),  # CSRC count past the end
        bytes.fromhex("9000000100000000000000000000"),  # extension header cut
        bytes.fromhex("a0000001000000000000000000000000"),  # padding count 0
        bytes.fromhex("a00000010000000000000000ff"),  # padding longer than packet
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(RtpParseError):
        RtpPacket.parse(data)


def test_rtcp_demux_by_packet_type() -> None:
    assert is_rtcp(bytes((0x80, 200)))
    assert is_rtcp(bytes((0x81, 206)))
    assert not is_rtcp(bytes((0x80, 0)))
    assert not is_rtcp(bytes((0x80, 0x80 | 96)))


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
