"""RTCP wire rules at their boundaries (RFC 3550 §6, A.2; RFC 4585 §6; RFC 5104 §4.3.1).

Each malformed datagram is refused with a message naming the part that is wrong; each
well-formed one that ends exactly where a length says is accepted.
"""

from __future__ import annotations

import pytest

from sip2rtmp.rtp.rtcp import (
    Bye,
    FullIntraRequest,
    GenericNack,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtcpParseError,
    SdesChunk,
    SourceDescription,
    parse_compound,
)


@pytest.mark.parametrize(
    ("hex_data", "message"),
    [
        ("80c900", r"RTCP datagram too short \(3 bytes\)"),
        ("80c90001 00000003 80c9", "truncated RTCP header"),
        ("00c90001 00000003", "RTCP version 0, expected 2"),
        ("c0c90001 00000003", "RTCP version 3, expected 2"),
        ("80c90002 00000003", "RTCP packet length runs past the datagram"),
        ("a0c90001 00000004 80c90001 00000004", "padding is only allowed on the last packet"),
        ("a0c90001 00000000", "invalid RTCP padding length 0"),
        ("a0c90001 00000005", "invalid RTCP padding length 5"),
        (
            "80c80005 00000001 00000000 00000000 00000000 00000000",
            "SR shorter than its sender info",
        ),
        ("80c90000", "RR shorter than its SSRC"),
        ("a0c90001 00000004", "RR shorter than its SSRC"),  # padding may fill the whole body
        ("81c90001 00000003", "report blocks run past the end of the packet"),
        ("82ca0002 00000001 00000000", "SDES chunk runs past the end of the packet"),
        ("81ca0002 00000001 01024142", "SDES chunk without END item"),  # item fills the chunk
        ("81ca0002 00000001 01034142", "SDES item runs past the end of the packet"),
        ("81ca0001 00000001", "SDES chunk without END item"),
        ("81ca0002 00000001 01014102", "SDES item runs past the end of the packet"),  # no length
        ("81ca0002 00000001 01000200", "SDES chunk without END item"),  # last item ends at the end
        ("82cb0001 00000001", "BYE source list runs past the end of the packet"),
        ("81cb0002 00000001 04616263", "BYE reason runs past the end of the packet"),
        ("81ce0001 00000001", "feedback packet shorter than its SSRC fields"),
        ("a1cd0003 00000001 00000002 00640002", "generic NACK FCI is not a whole number of words"),
        ("84ce0003 00000001 00000000 00000002", "FIR FCI is not a whole number of entries"),
        ("80630001 00000003", "not an RTCP packet type: 99"),
        ("80e00001 00000003", "not an RTCP packet type: 224"),
        ("80bf0001 00000003", "not an RTCP packet type: 191"),
    ],
)
def test_malformed_datagram_is_refused_naming_the_fault(hex_data: str, message: str) -> None:
    """RFC 3550 A.2 validity checks: the error says which rule the datagram broke."""
    with pytest.raises(RtcpParseError, match=f"^{message}$"):
        parse_compound(bytes.fromhex(hex_data))


@pytest.mark.parametrize(
    ("hex_data", "expected"),
    [
        # a BYE reason that ends exactly at the packet end (RFC 3550 §6.6)
        ("81cb0002 00000001 03616263", [Bye((1,), "abc")]),
        ("81cb0001 00000001", [Bye((1,))]),
        ("80cb0000", [Bye(())]),
        # an SDES item that ends exactly before END and its padding (RFC 3550 §6.5)
        ("81ca0003 00000007 01034142 43000000", [SourceDescription.cname(7, "ABC")]),
        ("81ca0002 00000007 01014100", [SourceDescription.cname(7, "A")]),
        ("80ca0000", [SourceDescription(())]),
        # padding of exactly the rest of the body (RFC 3550 §6.4.1, P bit)
        ("a0c90002 00000003 00000004", [ReceiverReport(3)]),
        # APP (RFC 3550 §6.7) and XR (RFC 3611) are skipped, the rest of the datagram is read
        ("80cc0002 00000001 6e616d65 80c90001 00000003", [ReceiverReport(3)]),
        ("80cf0001 00000001 80c90001 00000003", [ReceiverReport(3)]),
        ("80df0000 80c90001 00000003", [ReceiverReport(3)]),
        ("80c00000 80c90001 00000003", [ReceiverReport(3)]),
    ],
)
def test_packet_ending_exactly_where_its_lengths_say_parses(
    hex_data: str, expected: list[RtcpPacket]
) -> None:
    assert parse_compound(bytes.fromhex(hex_data)) == expected


def test_cname_is_cut_to_the_255_octets_its_length_byte_can_say() -> None:
    """RFC 3550 §6.5: an SDES item's length is one octet."""
    sdes = SourceDescription.cname(1, "c" * 300)
    assert sdes.chunks[0].items == ((1, b"c" * 255),)
    data = sdes.serialize()
    assert data[8:10] == bytes((1, 255))
    parsed = parse_compound(data)
    assert parsed == [SourceDescription((SdesChunk(1, ((1, b"c" * 255),)),))]


def test_bye_reason_is_cut_to_255_octets_and_padded_with_zeros() -> None:
    """RFC 3550 §6.6: a one-octet length, then padding to a 32-bit boundary."""
    assert Bye((1,), "done").serialize() == bytes.fromhex("81cb0003 00000001 04646f6e 65000000")
    data = Bye((1,), "r" * 300).serialize()
    assert data[8] == 255 and len(data) == 8 + 256
    assert parse_compound(data) == [Bye((1,), "r" * 255)]


@pytest.mark.parametrize(
    ("lost", "fci"),
    [
        ((100,), "0064 0000"),
        ((100, 101), "0064 0001"),  # BLP bit 0 is PID + 1
        ((100, 101, 116), "0064 8001"),  # bit 15 is PID + 16
        ((100, 117), "0064 0000 0075 0000"),  # PID + 17 needs its own FCI
        ((100, 99), "0064 0000 0063 0000"),  # the BLP only reaches forward
        ((100, 100), "0064 0000 0064 0000"),
        ((65535, 0, 15), "ffff 8001"),  # sequence numbers wrap within one BLP
    ],
)
def test_generic_nack_packs_following_losses_into_the_blp(lost: tuple[int, ...], fci: str) -> None:
    """RFC 4585 §6.2.1: PID names a lost packet, BLP bit i the loss of PID + i + 1."""
    data = GenericNack(0xFFFFFFFF, 0x80000000, lost).serialize()
    body = bytes.fromhex("ffffffff 80000000" + fci)
    assert data == bytes((0x81, 205, 0, len(body) // 4)) + body


def test_fir_wire_layout() -> None:
    """RFC 5104 §4.3.1.1: media SSRC field zero, then 8-octet entries of SSRC, 8-bit
    command sequence number and 24 reserved bits."""
    fir = FullIntraRequest(0xFFFFFFFF, ((0x80000001, 7), (2, 0x1FF)))
    assert fir.serialize() == bytes.fromhex(
        "84ce0006 ffffffff 00000000 80000001 07000000 00000002 ff000000"
    )
    assert parse_compound(fir.serialize()) == [
        FullIntraRequest(0xFFFFFFFF, ((0x80000001, 7), (2, 0xFF)))
    ]


@pytest.mark.parametrize(
    "hex_data",
    [
        "83cd0004 00000001 00000002 00000003 00000000",  # TMMBR (RFC 5104 §4.2.1)
        "84cd0004 00000001 00000002 00000003 00000000",  # TMMBN (RFC 5104 §4.2.2)
        "82ce0003 00000001 00000002 00000000",  # SLI (RFC 4585 §6.3.2)
        "8fce0004 00000001 00000000 52454d42 01000000",  # AFB, here REMB (RFC 4585 §6.4)
    ],
)
def test_feedback_we_do_not_act_on_is_skipped(hex_data: str) -> None:
    """RFC 4585 §6.1: FMT is read with the packet type; only generic NACK (RTPFB 1), PLI
    (PSFB 1) and FIR (PSFB 4) are acted on."""
    assert parse_compound(bytes.fromhex(hex_data)) == []


@pytest.mark.parametrize(
    ("cumulative_lost", "wire", "parsed"),
    [
        (0x7FFFFF, "7fffff", 0x7FFFFF),
        (0x800000, "7fffff", 0x7FFFFF),
        (10**9, "7fffff", 0x7FFFFF),
        (-1, "ffffff", -1),  # duplicates can make it negative
        (-0x800000, "800000", -0x800000),
        (-0x800001, "800000", -0x800000),
    ],
)
def test_cumulative_loss_is_a_clamped_24_bit_signed_field(
    cumulative_lost: int, wire: str, parsed: int
) -> None:
    """RFC 3550 §6.4.1: clamped at 0x7fffff for positive loss, 0x800000 for negative."""
    data = ReceiverReport(1, (ReportBlock(2, 0, cumulative_lost, 3, 4, 5, 6),)).serialize()
    assert data[13:16] == bytes.fromhex(wire)
    report = parse_compound(data)[0]
    assert isinstance(report, ReceiverReport)
    assert report.reports[0].cumulative_lost == parsed
