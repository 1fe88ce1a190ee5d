"""RTCP compound parse/build (RFC 3550 §6, RFC 4585 §6, RFC 5104 §4.3.1)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip2rtmp.rtp.rtcp import (
    Bye,
    FullIntraRequest,
    GenericNack,
    PictureLossIndication,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtcpParseError,
    SdesChunk,
    SenderReport,
    SourceDescription,
    compound,
    ntp_from_unix,
    ntp_middle32,
    parse_compound,
)
from tests.unit.rtp.mutations import Fields, fields, mutated

BLOCK = ReportBlock(0x11223344, 25, -3, 0x0001FFFF, 120, 0xAABBCCDD, 65536)


def test_sr_sdes_bye_round_trip() -> None:
    packets: list[RtcpPacket] = [
        SenderReport(1, ntp_from_unix(1_700_000_000.5), 1234, 10, 1600, (BLOCK,)),
        SourceDescription.cname(1, "sip2rtmp@example"),
        Bye((1,), "done"),
    ]
    data = compound(*packets)
    assert len(data) % 4 == 0
    assert parse_compound(data) == packets
    sdes = parse_compound(data)[1]
    assert isinstance(sdes, SourceDescription)
    assert sdes.chunks[0].cname == "sip2rtmp@example"


def test_sr_wire_layout() -> None:
    data = SenderReport(0x01020304, 0x1122334455667788, 5, 6, 7).serialize()
    assert data == bytes.fromhex("80c80006 01020304 1122334455667788 00000005 00000006 00000007")


def test_report_block_wire_layout() -> None:
    data = ReceiverReport(9, (BLOCK,)).serialize()
    assert data[:8] == bytes.fromhex("81c90007 00000009")
    assert data[8:] == bytes.fromhex("11223344 19 fffffd 0001ffff 00000078 aabbccdd 00010000")


def test_feedback_round_trip() -> None:
    packets: list[RtcpPacket] = [
        ReceiverReport(5),
        PictureLossIndication(5, 6),
        FullIntraRequest(5, ((6, 3),)),
        GenericNack(5, 6, (100, 101, 116, 65535, 0)),
    ]
    assert parse_compound(compound(*packets)) == packets


def test_pli_wire_layout() -> None:
    assert PictureLossIndication(1, 2).serialize() == bytes.fromhex("81ce0002 00000001 00000002")


def test_app_is_skipped() -> None:
    app = bytes.fromhex("80cc0002 00000001") + b"name"
    rr = ReceiverReport(3).serialize()
    assert parse_compound(rr + app) == [ReceiverReport(3)]


def test_padding_on_last_packet() -> None:
    padded = bytes.fromhex("a0c90002 00000003 00000004")
    assert parse_compound(padded) == [ReceiverReport(3)]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes.fromhex("00c90001 00000003"),  # version 0
        bytes.fromhex("80c90005 00000003"),  # length past the end
        bytes.fromhex("81c90001 00000003"),  # report count past the end
        bytes.fromhex("80630001 00000003"),  # not RTCP
        bytes.fromhex("80c80001 00000003"),  # SR without sender info
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(RtcpParseError):
        parse_compound(data)


def test_ntp_middle_bits() -> None:
    ntp = ntp_from_unix(0.0)
    assert ntp >> 32 == 2_208_988_800
    assert ntp_middle32(0x1122334455667788) == 0x33445566


@pytest.mark.fuzz
@given(st.binary(max_size=120))
def test_parse_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(RtcpParseError):
        parse_compound(data)


@pytest.mark.fuzz
@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=40))
def test_nack_expansion(seqs: list[int]) -> None:
    nack = GenericNack(1, 2, tuple(seqs))
    parsed = parse_compound(nack.serialize())[0]
    assert isinstance(parsed, GenericNack)
    assert set(parsed.lost) == set(seqs)


def rtcp_packet(f: Fields) -> RtcpPacket:
    """A packet of a type we parse, from its fields (RFC 3550 §6, RFC 4585 §6)."""

    def u32() -> int:
        return f.int(0, 0xFFFFFFFF)

    def blocks() -> tuple[ReportBlock, ...]:
        return tuple(
            ReportBlock(
                u32(), f.int(0, 255), f.int(-0x800000, 0x7FFFFF), u32(), u32(), u32(), u32()
            )
            for _ in range(f.int(0, 2))
        )

    kind = f.int(0, 6)
    if kind == 0:
        return SenderReport(u32(), f.int(0, 2**64 - 1), u32(), u32(), u32(), blocks())
    if kind == 1:
        return ReceiverReport(u32(), blocks())
    if kind == 2:
        chunks = (
            SdesChunk(u32(), tuple((f.int(1, 8), f.bytes(0, 20)) for _ in range(f.int(0, 2))))
            for _ in range(f.int(1, 2))
        )
        return SourceDescription(tuple(chunks))
    if kind == 3:
        reason = "".join(f.pick("abc xyz") for _ in range(f.int(0, 20)))
        return Bye(tuple(u32() for _ in range(f.int(0, 4))), reason)
    if kind == 4:
        return GenericNack(u32(), u32(), tuple(f.int(0, 0xFFFF) for _ in range(f.int(0, 20))))
    if kind == 5:
        return PictureLossIndication(u32(), u32())
    return FullIntraRequest(u32(), tuple((u32(), f.int(0, 255)) for _ in range(f.int(0, 3))))


COMPOUNDS = fields(4096).map(lambda f: [rtcp_packet(f) for _ in range(f.int(1, 4))])


def comparable(packet: RtcpPacket) -> object:
    """A NACK's list is regrouped on the wire: compare the set of sequence numbers it names."""
    if isinstance(packet, GenericNack):
        return (packet.sender_ssrc, packet.media_ssrc, frozenset(packet.lost))
    return packet


@pytest.mark.fuzz
@given(COMPOUNDS)
def test_valid_compounds_round_trip(packets: list[RtcpPacket]) -> None:
    parsed = parse_compound(compound(*packets))
    assert [comparable(p) for p in parsed] == [comparable(p) for p in packets]


@pytest.mark.fuzz
@given(mutated(COMPOUNDS.map(lambda packets: compound(*packets))))
def test_mutated_compounds_raise_only_rtcp_parse_error(data: bytes) -> None:
    with contextlib.suppress(RtcpParseError):
        parse_compound(data)
