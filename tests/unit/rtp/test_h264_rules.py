"""H.264 rule by rule: the exp-Golomb reader (H.264 §9.1), each SPS field that changes what
parse_sps returns (§7.3.2.1.1, §7.4.2.1.1), sprop-parameter-sets (RFC 6184 §8.1), Annex B
splitting (H.264 B.2), the avcC record's fields (ISO/IEC 14496-15 §5.2.4.1), the packetizer's
exact payloads and what the depacketizer must drop (RFC 6184 §5.6-§5.8)."""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Sequence

import pytest

from sip2rtmp.rtp.h264 import (
    MAX_ACCESS_UNIT_NALS,
    MAX_PARAMETER_SET_SIZE,
    AccessUnit,
    H264Depacketizer,
    H264ParseError,
    SpsInfo,
    _Bits,
    avc_decoder_configuration_record,
    packetize_h264,
    parse_sprop_parameter_sets,
    parse_sps,
    split_annexb,
    to_avcc,
)
from sip2rtmp.rtp.packet import RtpPacket
from tests.unit.rtp.test_h264 import PPS, BitWriter, read_record


def exactly(message: str) -> str:
    """A pattern for the whole of an error message: what the user reads is all of it."""
    return f"^{re.escape(message)}$"


# ---- exp-Golomb (H.264 §9.1) -----------------------------------------------------------------


def bits_of(text: str) -> _Bits:
    """A reader over the bits written as '0'/'1' characters, zero-padded to a byte."""
    text += "0" * (-len(text) % 8)
    return _Bits(int(text, 2).to_bytes(len(text) // 8, "big") if text else b"", "SPS")


@pytest.mark.parametrize(
    ("code", "ue", "se"),
    [
        # Table 9-2 and 9-3: codeNum, and se(v) = (-1)^(k+1) Ceil(k / 2)
        ("1", 0, 0),
        ("010", 1, 1),
        ("011", 2, -1),
        ("00100", 3, 2),
        ("00101", 4, -2),
        ("00110", 5, 3),
        ("00111", 6, -3),
        ("0001000", 7, 4),
        ("0" * 31 + "1" + "0" * 31, 2**31 - 1, 2**30),  # the longest code: 31 leading zeros
        ("0" * 31 + "1" + "1" * 31, 2**32 - 2, -(2**31 - 1)),
    ],
)
def test_exp_golomb_codes(code: str, ue: int, se: int) -> None:
    assert bits_of(code).ue() == ue
    value = bits_of(code).se()
    assert value == se and type(value) is int


def test_exp_golomb_code_over_32_bits_raises() -> None:
    with pytest.raises(H264ParseError, match=exactly("exp-Golomb code longer than 32 bits")):
        bits_of("0" * 32 + "1" + "0" * 32).ue()


def test_bit_reads_end_exactly_at_the_last_bit() -> None:
    bits = bits_of("1010010100001111")
    assert [bits.u(3), bits.u(5), bits.u(4), bits.u(0), bits.u(4)] == [5, 5, 0, 0, 15]
    with pytest.raises(H264ParseError, match=exactly("SPS ends early")):
        bits.u(1)
    spanning = _Bits(b"\x0f\xf0\x81", "SPS")
    assert [spanning.u(4), spanning.u(8), spanning.u(11), spanning.u(1)] == [0, 0xFF, 0x40, 1]
    last = bits_of("00000011")  # a ue(v) of one bit ends the data: its suffix is u(0)
    last.u(7)
    assert last.ue() == 0
    with pytest.raises(H264ParseError, match=exactly("SPS ends early")):
        bits_of("00000001").ue()


# ---- sequence parameter sets (H.264 §7.3.2.1.1) ----------------------------------------------


def sps(
    *,
    profile: int = 66,
    level: int = 30,
    sps_id: int = 0,
    chroma: int = 1,
    separate: int = 0,
    depth: tuple[int, int] = (8, 8),
    scaling: Sequence[int | None] | None = None,
    poc_type: int = 0,
    cycle: int = 0,
    width_mbs: int = 20,
    height_units: int = 15,
    frame_mbs_only: int = 1,
    crop: tuple[int, int, int, int] | None = None,
) -> bytes:
    """An SPS NAL unit written field by field. ``scaling`` is one entry per scaling list:
    None leaves the list out, a number is every delta_scale of it (§7.3.2.1.1.1)."""
    w = BitWriter()
    for value in (profile, 0, level):
        w.u(8, value)
    w.ue(sps_id)
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        w.ue(chroma)
        if chroma == 3:
            w.u(1, separate)
        w.ue(depth[0] - 8)
        w.ue(depth[1] - 8)
        w.u(1, 0)
        w.u(1, scaling is not None)
        for index, delta in enumerate(scaling or ()):
            w.u(1, delta is not None)
            if delta is None:
                continue
            last = next_scale = 8
            for _ in range(16 if index < 6 else 64):
                if next_scale:
                    w.se(delta)
                    next_scale = (last + delta) % 256
                last = next_scale or last
    w.ue(0)  # log2_max_frame_num_minus4
    w.ue(poc_type)
    if poc_type == 0:
        w.ue(2)
    elif poc_type == 1:
        w.u(1, 1)
        w.se(-3)
        w.se(5)
        w.ue(cycle)
        for offset in range(cycle):
            w.se(offset % 7 - 3)
    w.ue(1)  # max_num_ref_frames
    w.u(1, 0)
    w.ue(width_mbs - 1)
    w.ue(height_units - 1)
    w.u(1, frame_mbs_only)
    if not frame_mbs_only:
        w.u(1, 1)  # mb_adaptive_frame_field_flag
    w.u(1, 1)  # direct_8x8_inference_flag
    w.u(1, crop is not None)
    for value in crop or ():
        w.ue(value)
    w.u(1, 0)  # vui_parameters_present_flag
    return w.nal(0x67)


def info(
    width: int,
    height: int,
    *,
    profile: int = 66,
    level: int = 30,
    chroma: int = 1,
    depth: tuple[int, int] = (8, 8),
) -> SpsInfo:
    return SpsInfo(profile, 0, level, chroma, depth[0], depth[1], width, height)


EMULATED = sps(level=0, sps_id=63, width_mbs=1, height_units=1)
"""Constraints 0, level 0, then sps_id 63 give the RBSP bytes 00 00 02: the NAL unit carries
an emulation prevention byte (§7.4.1), 00 00 03 02."""


@pytest.mark.parametrize(
    ("nal", "expected"),
    [
        # CropUnitX/Y (§7.4.2.1.1, Table 6-1): 4:2:0 frames crop in 2x2 units
        (sps(width_mbs=40, height_units=23, crop=(0, 0, 0, 4)), info(640, 360)),
        (sps(crop=(1, 2, 3, 4)), info(320 - 6, 240 - 14)),
        # 4:2:0 fields: frame height is twice the map units, crop rows count 4 apiece
        (sps(frame_mbs_only=0, crop=(1, 0, 1, 2)), info(318, 480 - 12)),
        # monochrome (ChromaArrayType 0): 1 column, 2 - frame_mbs_only rows per unit
        (sps(profile=100, chroma=0, crop=(1, 2, 3, 4)), info(317, 233, profile=100, chroma=0)),
        (
            sps(profile=100, chroma=0, frame_mbs_only=0, crop=(1, 0, 3, 1)),
            info(319, 472, profile=100, chroma=0),
        ),
        # 4:2:2: 2 columns, 1 row; 4:4:4 with or without separate planes: 1 and 1
        (sps(profile=100, chroma=2, crop=(1, 2, 3, 4)), info(314, 233, profile=100, chroma=2)),
        (sps(profile=100, chroma=3, crop=(1, 2, 3, 4)), info(317, 233, profile=100, chroma=3)),
        (
            sps(profile=100, chroma=3, separate=1, crop=(1, 2, 3, 4)),
            info(317, 233, profile=100, chroma=3),
        ),
        (
            sps(profile=100, chroma=3, separate=1, frame_mbs_only=0, crop=(1, 0, 1, 2)),
            info(319, 474, profile=100, chroma=3),
        ),
        # the largest bit depth (bit_depth_*_minus8 = 6)
        (sps(profile=100, depth=(14, 9)), info(320, 240, profile=100, depth=(14, 9))),
        (sps(profile=100, depth=(10, 14)), info(320, 240, profile=100, depth=(10, 14))),
        # scaling lists: 6 of 16 and 2 of 64 coefficients for 4:2:0, 6 of 64 for 4:4:4; a
        # delta that makes nextScale 0 ends the list after one value
        (sps(profile=100, scaling=[0] * 8, crop=(1, 0, 0, 0)), info(318, 240, profile=100)),
        (sps(profile=100, scaling=[None] * 6 + [0, None]), info(320, 240, profile=100)),
        (sps(profile=100, scaling=[None] * 7 + [1]), info(320, 240, profile=100)),
        (sps(profile=100, scaling=[-8, 3, None, 7, -8, 0, -8, 0]), info(320, 240, profile=100)),
        (
            sps(profile=100, chroma=3, scaling=[0] * 12, crop=(1, 0, 0, 0)),
            info(319, 240, profile=100, chroma=3),
        ),
        (
            sps(profile=100, chroma=3, scaling=[None] * 11 + [2]),
            info(320, 240, profile=100, chroma=3),
        ),
        # pic_order_cnt_type 1 with the largest cycle, and type 2
        (sps(poc_type=1, cycle=255), info(320, 240)),
        (sps(poc_type=1, cycle=0), info(320, 240)),
        (sps(poc_type=2), info(320, 240)),
        # the largest picture any level allows: 1055 macroblocks each way (A.3.1 f, g)
        (sps(width_mbs=1055, height_units=1055), info(16 * 1055, 16 * 1055)),
        (EMULATED, info(16, 16, level=0)),
        # cropped to the smallest picture there is, one sample (monochrome crops 1x1 units)
        (
            sps(profile=100, chroma=0, width_mbs=1, height_units=1, crop=(7, 8, 15, 0)),
            info(1, 1, profile=100, chroma=0),
        ),
    ],
)
def test_sps_fields(nal: bytes, expected: SpsInfo) -> None:
    assert parse_sps(nal) == expected


def test_emulation_prevention_bytes_are_removed_before_reading() -> None:
    assert EMULATED[:6] == b"\x67\x42\x00\x00\x03\x02"
    assert parse_sps(EMULATED) == info(16, 16, level=0)


@pytest.mark.parametrize(
    ("nal", "message"),
    [
        (sps(profile=100, chroma=4), "chroma_format_idc 4"),
        (sps(profile=100, depth=(15, 8)), "bit depth 15"),
        (sps(profile=100, depth=(8, 15)), "bit depth 15"),
        (sps(poc_type=3), "pic_order_cnt_type 3"),
        (sps(poc_type=1, cycle=256), "pic_order_cnt cycle of 256 frames"),
        (sps(width_mbs=1056), "SPS picture of 1056x15 macroblocks"),
        (sps(height_units=1056), "SPS picture of 20x1056 macroblocks"),
        (sps(crop=(80, 80, 0, 0)), "SPS crops the picture to 0x240"),
        (sps(crop=(0, 0, 60, 60)), "SPS crops the picture to 320x0"),
        (sps(crop=(0, 0, 60, 61)), "SPS crops the picture to 320x-2"),
        (b"\x68" + sps()[1:], "not an SPS NAL unit"),
        (sps()[:3], "not an SPS NAL unit"),
        (b"\x67" + bytes(MAX_PARAMETER_SET_SIZE), "SPS of 1025 bytes, over 1024"),
    ],
)
def test_sps_values_out_of_range(nal: bytes, message: str) -> None:
    with pytest.raises(H264ParseError, match=exactly(message)):
        parse_sps(nal)


def test_every_cut_of_an_sps_ends_early() -> None:
    """A NAL unit of 4 bytes or more with an SPS header is read as one; cut before the fields
    parse_sps needs, it says so."""
    nal = sps()
    needed = next(size for size in range(len(nal) + 1) if _parses(nal[:size]))
    assert needed > 5
    for size in range(4, needed):
        with pytest.raises(H264ParseError, match=exactly("SPS ends early")):
            parse_sps(nal[:size])


def test_an_sps_of_the_largest_size_parses() -> None:
    padded = sps() + bytes(MAX_PARAMETER_SET_SIZE - len(sps()))  # zero bytes after the RBSP
    assert len(padded) == MAX_PARAMETER_SET_SIZE
    assert parse_sps(padded) == info(320, 240)
    with pytest.raises(H264ParseError, match=exactly("SPS of 1025 bytes, over 1024")):
        parse_sps(padded + b"\x00")


def _parses(nal: bytes) -> bool:
    try:
        parse_sps(nal)
    except H264ParseError:
        return False
    return True


# ---- sprop-parameter-sets (RFC 6184 §8.1) ----------------------------------------------------


def b64(nal: bytes) -> str:
    return base64.b64encode(nal).decode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Z0IAHg,aM4", [b"gB\x00\x1e", b"h\xce"]),  # padding left out, as RFC 6184's examples do
        ("Z0IAHg==,aM4=", [b"gB\x00\x1e", b"h\xce"]),
        (" Z0IAHg , aM4 ", [b"gB\x00\x1e", b"h\xce"]),
        ("Z0IAHg,,aM4,", [b"gB\x00\x1e", b"h\xce"]),  # empty entries name nothing
        ("", []),
        (",".join(["aM4"] * 8), [b"h\xce"] * 8),
        (b64(b"\x68" * MAX_PARAMETER_SET_SIZE), [b"\x68" * MAX_PARAMETER_SET_SIZE]),
    ],
)
def test_sprop_parameter_sets_values(value: str, expected: list[bytes]) -> None:
    assert parse_sprop_parameter_sets(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (",".join(["aM4"] * 9), "sprop-parameter-sets names over 8 sets"),
        # empty entries count too
        (",".join(["aM4"] * 8 + [""]), "sprop-parameter-sets names over 8 sets"),
        ("Z0IAHg,a!M4", "bad base64 in sprop-parameter-sets: 'a!M4'"),
        ("Z0IAH", "bad base64 in sprop-parameter-sets: 'Z0IAH'"),  # no byte count gives 5
        # characters outside the alphabet are refused, not skipped (RFC 4648 §3.3)
        ("Z0IA!!Hg==", "bad base64 in sprop-parameter-sets: 'Z0IA!!Hg=='"),
        ("Z0IA Hg", "bad base64 in sprop-parameter-sets: 'Z0IA Hg'"),
        ("Z0IA" * 12 + "!", "bad base64 in sprop-parameter-sets: '" + "Z0IA" * 10 + "'"),
        # 1,368 characters, the base64 length of 1,024 bytes, also decode to 1,025 or 1,026
        (
            b64(b"\x68" * (MAX_PARAMETER_SET_SIZE + 1)),
            "sprop-parameter-sets entry of 1025 bytes, over 1024",
        ),
        (
            b64(b"\x68" * (MAX_PARAMETER_SET_SIZE + 2)),
            "sprop-parameter-sets entry of 1026 bytes, over 1024",
        ),
        (
            b64(b"\x68" * (MAX_PARAMETER_SET_SIZE + 3)),
            "sprop-parameter-sets entry of 1372 characters",
        ),
    ],
)
def test_sprop_parameter_sets_refused(value: str, message: str) -> None:
    with pytest.raises(H264ParseError, match=exactly(message)):
        parse_sprop_parameter_sets(value)


# ---- Annex B byte streams (H.264 B.2) --------------------------------------------------------

A, B, C = b"\x67\x42\x00\x1e", b"\x68\xce\x3c\x80", b"\x65\x88\x84\x0a\x20\x58"


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"\x00\x00\x01" + A, [A]),
        (b"\x00\x00\x00\x01" + A + b"\x00\x00\x00\x01" + B + b"\x00\x00\x01" + C, [A, B, C]),
        # zero_byte and trailing_zero_8bits are the stream's, the last NAL unit's included
        (b"\x00\x00\x00\x00\x01" + A + b"\x00\x00\x00\x00\x01" + B + b"\x00\x00", [A, B]),
        (b"\x00\x00\x01" + C + b"\x00\x00\x01" + C, [C, C]),  # ends in 0x20 and "X": kept
        (b"\x00\x00\x01" + b"\x68\x00\x20\x00" + b"\x00\x00\x01" + A, [b"\x68\x00\x20", A]),
        (b"\x09\x10" + b"\x00\x00\x01" + A, [A]),  # bytes before the first start code
        (b"\x00\x00\x01\x00\x00\x01" + A + b"\x00\x00\x01", [A]),  # empty NAL units
        (A, []),
    ],
)
def test_split_annexb(stream: bytes, expected: list[bytes]) -> None:
    assert split_annexb(stream) == expected


def test_to_avcc_prefixes_four_byte_lengths() -> None:
    big = b"\x65" + bytes(70_000)
    assert to_avcc([A, big]) == b"\x00\x00\x00\x04" + A + b"\x00\x01\x11\x71" + big


# ---- AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.2.4.1) --------------------------------


SPS = sps()


@pytest.mark.parametrize(
    ("profile", "extension"),
    [
        (66, b""),
        (77, b""),
        (88, b""),
        # chroma_format, bit depths: only for the profiles §5.2.4.1.1 names
        (100, bytes((0xFC | 1, 0xF8 | 2, 0xF8 | 4, 0))),
        (110, bytes((0xFC | 1, 0xF8 | 2, 0xF8 | 4, 0))),
        (122, bytes((0xFC | 1, 0xF8 | 2, 0xF8 | 4, 0))),
        (144, bytes((0xFD, 0xF8, 0xF8, 0))),  # parse_sps reads 144's SPS as 4:2:0, 8 bits
    ],
)
def test_record_extension_by_profile(profile: int, extension: bytes) -> None:
    nal = sps(profile=profile, depth=(10, 12))
    record = avc_decoder_configuration_record([nal], [PPS])
    assert read_record(record) == (bytes((profile, 0, 30)), [nal], [PPS], extension)


@pytest.mark.parametrize("chroma", [0, 1, 2, 3])
def test_record_chroma_format(chroma: int) -> None:
    nal = sps(profile=100, chroma=chroma)
    record = avc_decoder_configuration_record([nal], [PPS])
    assert record[-4:] == bytes((0xFC | chroma, 0xF8, 0xF8, 0))


def test_record_counts_fill_their_fields() -> None:
    """numOfSequenceParameterSets is 5 bits, numOfPictureParameterSets 8."""
    two = sps(sps_id=1)
    record = avc_decoder_configuration_record([SPS, two], [PPS, b"\x68\xee"])
    assert record[5] == 0xE2
    assert read_record(record) == (SPS[1:4], [SPS, two], [PPS, b"\x68\xee"], b"")
    most = avc_decoder_configuration_record([SPS] * 31, [PPS] * 255)
    assert read_record(most) == (SPS[1:4], [SPS] * 31, [PPS] * 255, b"")
    with pytest.raises(H264ParseError, match=exactly("32 SPS and 1 PPS do not fit the record")):
        avc_decoder_configuration_record([SPS] * 32, [PPS])
    with pytest.raises(H264ParseError, match=exactly("1 SPS and 256 PPS do not fit the record")):
        avc_decoder_configuration_record([SPS], [PPS] * 256)


@pytest.mark.parametrize(("sps_list", "pps_list"), [([], [PPS]), ([SPS], []), ([], [])])
def test_record_needs_both_parameter_sets(sps_list: list[bytes], pps_list: list[bytes]) -> None:
    with pytest.raises(H264ParseError, match=exactly("need at least one SPS and one PPS")):
        avc_decoder_configuration_record(sps_list, pps_list)


@pytest.mark.parametrize(("size", "fits"), [(0, False), (1, True), (1024, True), (1025, False)])
def test_record_parameter_set_sizes(size: int, fits: bool) -> None:
    """The record carries a PPS as it is; the 16-bit length field is capped at our limit."""
    pps = (b"\x68" + b"\xee" * (size - 1))[:size]
    if fits:
        assert read_record(avc_decoder_configuration_record([SPS], [pps]))[2] == [pps]
    else:
        with pytest.raises(H264ParseError, match=exactly("empty or oversized parameter set")):
            avc_decoder_configuration_record([SPS], [pps])


# ---- packetization-mode 1 payloads (RFC 6184 §5.6-§5.8) --------------------------------------


def nal(header: int, size: int) -> bytes:
    """A NAL unit of ``size`` bytes after a ``header`` byte."""
    return bytes((header,)) + bytes(index % 251 + 1 for index in range(size - 1))


def stap_a(nri: int, *nals: bytes) -> bytes:
    return bytes((nri | 24,)) + b"".join(struct.pack("!H", len(n)) + n for n in nals)


@pytest.mark.parametrize(
    ("nals", "max_payload", "expected"),
    [
        # aggregation fills a STAP-A to exactly max_payload: 1 + (2 + 45) + (2 + 50) = 100
        ([nal(0x61, 45), nal(0x61, 50)], 100, [stap_a(0x60, nal(0x61, 45), nal(0x61, 50))]),
        ([nal(0x61, 45), nal(0x61, 51)], 100, [nal(0x61, 45), nal(0x61, 51)]),
        # after a flush the next STAP-A starts from its one-byte header again
        (
            [nal(0x61, 90), nal(0x61, 45), nal(0x61, 50)],
            100,
            [nal(0x61, 90), stap_a(0x60, nal(0x61, 45), nal(0x61, 50))],
        ),
        # every aggregated unit's length counts: 1 + 3 * 32 = 97, a fourth of 12 would be 109
        (
            [nal(0x41, 30)] * 3 + [nal(0x41, 10)],
            100,
            [stap_a(0x40, *[nal(0x41, 30)] * 3), nal(0x41, 10)],
        ),
        (
            [nal(0x41, 10)] * 9 + [nal(0x41, 20)],
            120,
            [stap_a(0x40, *[nal(0x41, 10)] * 9), nal(0x41, 20)],
        ),
        # NRI is the largest of the aggregated units' (§5.7.1), read from their headers
        ([b"\x06\x60\x60", b"\x21\x00"], 100, [stap_a(0x20, b"\x06\x60\x60", b"\x21\x00")]),
        ([b"\x06\x7f", b"\x06\x7f"], 100, [stap_a(0x00, b"\x06\x7f", b"\x06\x7f")]),
        # empty units are left out, not the end of the access unit
        ([b"\x67\x42", b"", b"\x68\xce"], 100, [stap_a(0x60, b"\x67\x42", b"\x68\xce")]),
        # a unit of exactly max_payload goes alone, one byte more is fragmented
        ([nal(0x65, 100)], 100, [nal(0x65, 100)]),
        (
            [b"\x06" + bytes(range(1, 7))],
            4,
            [b"\x1c\x86\x01\x02", b"\x1c\x06\x03\x04", b"\x1c\x46\x05\x06"],
        ),
        # FU-A: F and NRI in the indicator, S on the first, E on the last (§5.8), two bytes
        # of headers per fragment, the type in every FU header
        (
            [b"\x7a" + bytes(range(1, 8))],
            5,
            [b"\x7c\x9a\x01\x02\x03", b"\x7c\x1a\x04\x05\x06", b"\x7c\x5a\x07"],
        ),
        ([b"\x65\x01\x02\x03"], 3, [b"\x7c\x85\x01", b"\x7c\x05\x02", b"\x7c\x45\x03"]),
    ],
)
def test_packetizer_payloads(nals: list[bytes], max_payload: int, expected: list[bytes]) -> None:
    assert packetize_h264(nals, max_payload=max_payload) == expected


def test_packetizer_default_payload_is_1200_bytes() -> None:
    assert packetize_h264([nal(0x65, 1200)]) == [nal(0x65, 1200)]
    payloads = packetize_h264([nal(0x65, 1201)])
    assert [len(p) for p in payloads] == [1200, 4]


def test_packetizer_needs_room_for_the_fu_headers() -> None:
    with pytest.raises(ValueError, match=exactly("max_payload too small for FU-A")):
        packetize_h264([b"\x65\x01\x02"], max_payload=2)


def test_stap_a_sizes_are_unsigned_16_bit() -> None:
    big, small = nal(0x41, 40_000), nal(0x41, 10)
    assert packetize_h264([big, small], max_payload=65_000) == [stap_a(0x40, big, small)]


# ---- depacketizing (RFC 6184 §5.4-§5.8) ------------------------------------------------------


def receive(
    units: Sequence[Sequence[bytes]], depacketizer: H264Depacketizer | None = None
) -> tuple[list[tuple[bytes, ...]], H264Depacketizer]:
    """Push each access unit's payloads with consecutive sequence numbers, its own
    timestamp and the marker on its last; the NAL units of what comes out."""
    depacketizer = depacketizer or H264Depacketizer(wait_for_keyframe=False)
    out: list[AccessUnit] = []
    seq = 0
    for index, payloads in enumerate(units):
        for n, payload in enumerate(payloads):
            marker = n == len(payloads) - 1
            out += depacketizer.push(RtpPacket(96, seq, 3000 * index, 1, payload, marker=marker))
            seq += 1
    return [unit.nals for unit in out], depacketizer


SLICE, IDR = b"\x41\x9a\x02", b"\x65\x88\x84"


@pytest.mark.parametrize(
    ("payloads", "nals"),
    [
        ([SLICE], (SLICE,)),
        ([b"\x17\x01"], (b"\x17\x01",)),  # type 23, the last single NAL unit type
        # the undefined types 0, 30 and 31 (RFC 6184 Table 3) add nothing
        ([b"\x00\x01", SLICE, b"\x1e\x01", b"\x1f\x01"], (SLICE,)),
        ([stap_a(0x60, IDR, SLICE)], (IDR, SLICE)),
        ([b"\x78", SLICE], (SLICE,)),  # a STAP-A holding nothing
        ([b"\x7c\x85\x01", b"\x7c\x05\x02", b"\x7c\x45\x03"], (b"\x65\x01\x02\x03",)),
        # the NAL header: F and NRI from the FU indicator, the type from the FU header
        ([b"\x5c\x81\x01", b"\x5c\x41\x02"], (b"\x41\x01\x02",)),
        ([b"\x1c\x86\x01", b"\x1c\x46\x02"], (b"\x06\x01\x02",)),
        # a fragment left open when the access unit ends was lost in part: dropped
        ([SLICE, b"\x7c\x85\x01"], None),
        ([b"\x7c\x85\x01", SLICE], None),  # a whole unit inside a fragmented one
        ([b"\x7c\x85\x01", b"\x7c\x85\x02", b"\x7c\x45\x03"], None),  # a second start
        ([b"\x7c\x05\x01", b"\x7c\x45\x02"], None),  # no start
        ([b"\x7c\xc5\x01", SLICE], None),  # S and E both set (§5.8: MUST NOT)
        ([SLICE, b"\x7c\x85\x01", b"\x7c\x45"], None),  # an FU without a payload
        ([SLICE, b"\x7c"], None),
        ([SLICE, b""], None),  # an empty payload
        ([SLICE, b"\xc1\x9a"], None),  # forbidden_zero_bit (§5.3)
        ([stap_a(0xE0, SLICE)], None),
        # STAP-A sizes: cut in the middle, zero, past the end
        ([stap_a(0x60, SLICE) + b"\x00"], None),
        ([stap_a(0x60, SLICE) + b"\x00\x00"], None),
        ([stap_a(0x60, SLICE) + b"\x00\x04\x41\x01\x02"], None),
        # the interleaved mode's STAP-B, MTAP16, MTAP24 and FU-B
        ([SLICE, b"\x79\x00\x00"], None),
        ([SLICE, b"\x7a\x00\x00"], None),
        ([SLICE, b"\x7b\x00\x00"], None),
        ([SLICE, b"\x7d\x85\x00\x00\x01"], None),
    ],
)
def test_depacketizer_access_units(payloads: list[bytes], nals: tuple[bytes, ...] | None) -> None:
    """Each row is one access unit followed by a whole one, which must always come out."""
    out, depacketizer = receive([payloads, [SLICE]])
    assert out == ([] if nals is None else [nals]) + [(SLICE,)]
    assert depacketizer.dropped == (nals is None)


def test_keyframe_is_an_access_unit_with_an_idr_slice() -> None:
    depacketizer = H264Depacketizer()
    out = []
    for seq, payload in enumerate((SLICE, stap_a(0x60, SLICE, IDR), SLICE)):
        out += depacketizer.push(RtpPacket(96, seq, 3000 * seq, 1, payload, marker=True))
    assert [(u.keyframe, u.timestamp) for u in out] == [(True, 3000), (False, 6000)]
    assert depacketizer.dropped == 1  # the slice before the first keyframe


@pytest.mark.parametrize("count", [MAX_ACCESS_UNIT_NALS, MAX_ACCESS_UNIT_NALS + 1])
def test_nal_units_per_access_unit(count: int) -> None:
    payloads = [stap_a(0x40, *[b"\x41"] * 500) for _ in range(count // 500)]
    payloads.append(stap_a(0x40, *[b"\x41"] * (count % 500)))
    out, _ = receive([payloads])
    assert [len(nals) for nals in out] == ([count] if count <= MAX_ACCESS_UNIT_NALS else [])


def sps_of_size(size: int) -> bytes:
    return SPS + bytes(size - len(SPS))


@pytest.mark.parametrize("size", [MAX_PARAMETER_SET_SIZE, MAX_PARAMETER_SET_SIZE + 1])
@pytest.mark.parametrize("carried", ["single", "STAP-A", "FU-A"])
def test_parameter_set_size_cap(size: int, carried: str) -> None:
    parameter_set = sps_of_size(size)
    if carried == "single":
        payloads = [parameter_set]
    elif carried == "STAP-A":
        payloads = [stap_a(0x60, parameter_set, PPS)]
    else:
        payloads = packetize_h264([parameter_set], max_payload=300)
    out, depacketizer = receive([[*payloads, IDR]])
    fits = size <= MAX_PARAMETER_SET_SIZE
    assert depacketizer.sps == (parameter_set if fits else None)
    assert depacketizer.dropped == (not fits)
    assert [nals[0] for nals in out] == ([parameter_set] if fits else [])


def test_parameter_sets_given_up_front() -> None:
    other = sps(width_mbs=40)
    depacketizer = H264Depacketizer([b"", SPS, b"\x68", sps_of_size(1025), other, PPS])
    assert (depacketizer.sps, depacketizer.pps) == (other, PPS)
    assert H264Depacketizer([sps_of_size(1024)]).sps == sps_of_size(1024)
    fresh = H264Depacketizer()
    assert fresh.sps is None and fresh.pps is None
    assert fresh.keyframe_needed and fresh.wait_for_keyframe


def test_decoder_config_and_resolution_need_a_readable_sps() -> None:
    assert H264Depacketizer([SPS]).decoder_config() is None
    assert H264Depacketizer([PPS]).decoder_config() is None
    assert H264Depacketizer([PPS]).resolution is None
    record = H264Depacketizer([SPS, PPS]).decoder_config()
    assert record == avc_decoder_configuration_record([SPS], [PPS])
    assert H264Depacketizer([SPS, PPS]).resolution == (320, 240)
    unreadable = SPS[:5]
    assert H264Depacketizer([unreadable, PPS]).decoder_config() is None
    assert H264Depacketizer([unreadable, PPS]).resolution is None
