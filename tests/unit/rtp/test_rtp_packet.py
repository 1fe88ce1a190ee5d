"""RtpPacket parse/serialise (RFC 3550 §5.1)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip2rtmp.rtp.packet import RtpPacket, RtpParseError, is_rtcp


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


@given(st.binary(max_size=80))
def test_parse_arbitrary_bytes(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        return
    assert len(packet.payload) <= len(data) - 12


@given(
    st.integers(0, 127),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=64),
    st.booleans(),
    st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
)
def test_round_trip(
    pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool, csrc: list[int]
) -> None:
    packet = RtpPacket(pt, seq, ts, ssrc, payload, marker=marker, csrc=tuple(csrc))
    assert RtpPacket.parse(packet.serialize()) == packet
