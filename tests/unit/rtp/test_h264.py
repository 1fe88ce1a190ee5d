"""H.264 RTP (RFC 6184) and AVCC helpers, checked against real libx264 output."""

from __future__ import annotations

import base64
import struct
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from sip2rtmp.rtp.frames import MAX_FRAME_BYTES, MAX_FRAME_PACKETS
from sip2rtmp.rtp.h264 import (
    MAX_ACCESS_UNIT_NALS,
    MAX_PARAMETER_SET_SIZE,
    MAX_PARAMETER_SETS,
    NAL_SPS,
    AccessUnit,
    H264Depacketizer,
    H264ParseError,
    SpsInfo,
    _Bits,
    avc_decoder_configuration_record,
    nal_type,
    packetize_h264,
    parse_sprop_parameter_sets,
    parse_sps,
    split_annexb,
    to_avcc,
)
from sip2rtmp.rtp.jitterbuffer import Lost, Resync
from sip2rtmp.rtp.packet import RtpPacket
from tests.unit.rtp.mutations import Fields, damaged, fields, mutated


def encode(
    width: int, height: int, count: int, profile: str = "baseline", preset: str = "ultrafast"
) -> list[bytes]:
    """Annex B access units from libx264 with a keyframe every 10 frames."""
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, 30)
    codec.gop_size = 10
    codec.options = {"preset": preset, "tune": "zerolatency", "profile": profile}
    units = []
    rng = np.random.default_rng(0)
    for index in range(count):
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        units += [bytes(p) for p in codec.encode(frame)]
    units += [bytes(p) for p in codec.encode(None)]
    return units


@pytest.fixture(scope="module")
def stream() -> list[list[bytes]]:
    return [split_annexb(unit) for unit in encode(640, 360, 20)]


def to_packets(
    units: list[list[bytes]], first_seq: int = 65530, first_ts: int = 0
) -> list[RtpPacket]:
    packets = []
    seq = first_seq
    for index, nals in enumerate(units):
        payloads = packetize_h264(nals, max_payload=1000)
        for n, payload in enumerate(payloads):
            last = n == len(payloads) - 1
            timestamp = first_ts + 3000 * index
            packets.append(RtpPacket(96, seq & 0xFFFF, timestamp, 7, payload, marker=last))
            seq += 1
    return packets


def depacketize(depacketizer: H264Depacketizer, items: list[RtpPacket | Lost]) -> list[AccessUnit]:
    out: list[AccessUnit] = []
    for item in items:
        out += depacketizer.push(item)
    return out


def test_sps_size_with_cropping(stream: list[list[bytes]]) -> None:
    sps = next(n for n in stream[0] if nal_type(n) == 7)
    info = parse_sps(sps)
    assert (info.width, info.height) == (640, 360)  # 368 coded rows cropped to 360
    assert info.profile_idc == 66


def test_high_profile_sps_and_config_record() -> None:
    nals = split_annexb(encode(320, 240, 1, profile="high", preset="veryfast")[0])
    sps = next(n for n in nals if nal_type(n) == 7)
    pps = next(n for n in nals if nal_type(n) == 8)
    info = parse_sps(sps)
    assert (info.profile_idc, info.width, info.height) == (100, 320, 240)
    record = avc_decoder_configuration_record([sps], [pps])
    assert record[:5] == bytes((1, 100, sps[2], sps[3], 0xFF))
    assert record[5] == 0xE1
    assert struct.unpack("!H", record[6:8])[0] == len(sps)
    assert record[8 : 8 + len(sps)] == sps
    assert record[8 + len(sps)] == 1
    assert record[-4:] == bytes((0xFD, 0xF8, 0xF8, 0))


def test_round_trip_decodes(stream: list[list[bytes]]) -> None:
    depacketizer = H264Depacketizer()
    units = depacketize(depacketizer, to_packets(stream))  # type: ignore[arg-type]
    assert [list(u.nals) for u in units] == stream
    assert units[0].keyframe and units[10].keyframe and not units[1].keyframe
    assert depacketizer.resolution == (640, 360)
    assert depacketizer.dropped == 0
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = depacketizer.decoder_config()
    frames = []
    for unit in units:
        frames += decoder.decode(av.Packet(to_avcc(unit.nals)))
    frames += decoder.decode(None)
    assert len(frames) == 20
    assert (frames[0].width, frames[0].height) == (640, 360)


def test_packetizer_uses_stap_a_and_fu_a(stream: list[list[bytes]]) -> None:
    payloads = packetize_h264(stream[0], max_payload=1000)
    assert payloads[0][0] & 0x1F == 24  # SPS + PPS (+ SEI) aggregated
    assert any(p[0] & 0x1F == 28 for p in payloads)
    assert all(len(p) <= 1000 for p in payloads)


def test_missing_packet_drops_the_access_unit_and_waits_for_keyframe(
    stream: list[list[bytes]],
) -> None:
    packets = to_packets(stream)
    frame_of = {id(p): p.timestamp // 3000 for p in packets}
    victim = next(p for p in packets if frame_of[id(p)] == 3 and not p.marker)
    items: list[RtpPacket | Lost] = [
        Lost(p.sequence_number, p.timestamp) if p is victim else p for p in packets
    ]
    depacketizer = H264Depacketizer()
    units = depacketize(depacketizer, items)
    emitted = [u.timestamp // 3000 for u in units]
    assert emitted == [0, 1, 2, *range(10, 20)]
    assert depacketizer.dropped == 7
    assert not depacketizer.keyframe_needed


def test_gap_without_marker_drops_both_sides(stream: list[list[bytes]]) -> None:
    packets = to_packets(stream)
    marker_of_frame_4 = next(p for p in packets if p.timestamp == 12000 and p.marker)
    kept = [p for p in packets if p is not marker_of_frame_4]
    depacketizer = H264Depacketizer(wait_for_keyframe=False)
    before_idr = [p for p in kept if p.timestamp < 30000]
    units = depacketize(depacketizer, before_idr)  # type: ignore[arg-type]
    emitted = [u.timestamp // 3000 for u in units]
    assert emitted == [0, 1, 2, 3, 6, 7, 8, 9]  # frame 5 could have lost its head
    assert depacketizer.keyframe_needed
    units = depacketize(depacketizer, kept[len(before_idr) :])  # type: ignore[arg-type]
    assert units[0].keyframe and not depacketizer.keyframe_needed


def test_resync_requires_a_keyframe(stream: list[list[bytes]]) -> None:
    depacketizer = H264Depacketizer()
    packets = to_packets(stream)
    units = depacketize(depacketizer, packets[: len(packets) // 4])  # type: ignore[arg-type]
    assert units
    assert depacketizer.push(Resync(8, 0)) == []
    assert depacketizer.keyframe_needed


def test_sprop_parameter_sets() -> None:
    sps, pps = b"\x67\x42\xc0\x1e\xd9", b"\x68\xcb\x8c\xb2"
    value = f"{base64.b64encode(sps).decode()},{base64.b64encode(pps).decode()}"
    assert parse_sprop_parameter_sets(value) == [sps, pps]
    assert parse_sprop_parameter_sets("Z0IAHg,aM4") == [b"gB\x00\x1e", b"h\xce"]
    with pytest.raises(H264ParseError):
        parse_sprop_parameter_sets("not base64!")


def test_single_nal_and_stap_a_by_hand() -> None:
    idr = b"\x65" + b"\x11" * 10
    stap = (
        bytes((0x78,)) + struct.pack("!H", 3) + b"\x67\x01\x02" + struct.pack("!H", 2) + b"\x68\x03"
    )
    depacketizer = H264Depacketizer()
    out = depacketizer.push(RtpPacket(96, 1, 0, 1, stap))
    out += depacketizer.push(RtpPacket(96, 2, 0, 1, idr, marker=True))
    assert out == [AccessUnit(0, (b"\x67\x01\x02", b"\x68\x03", idr), True)]
    assert depacketizer.sps == b"\x67\x01\x02" and depacketizer.pps == b"\x68\x03"


def test_fu_a_by_hand() -> None:
    nal = b"\x65" + bytes(range(30))
    fragments = [
        bytes((0x7C, 0x85)) + nal[1:11],
        bytes((0x7C, 0x05)) + nal[11:21],
        bytes((0x7C, 0x45)) + nal[21:],
    ]
    depacketizer = H264Depacketizer()
    out = []
    for seq, fragment in enumerate(fragments):
        out += depacketizer.push(RtpPacket(96, seq, 90, 1, fragment, marker=seq == 2))
    assert out == [AccessUnit(90, (nal,), True)]
    # the same fragments without the start are never emitted
    depacketizer = H264Depacketizer(wait_for_keyframe=False)
    out = []
    for seq, fragment in enumerate(fragments[1:]):
        out += depacketizer.push(RtpPacket(96, seq, 180, 1, fragment, marker=seq == 1))
    assert out == [] and depacketizer.dropped == 1


def assert_plausible(info: SpsInfo, nal: bytes) -> None:
    """What any SPS parse must give: the three bytes after the header read as profile,
    constraint flags and level (H.264 §7.3.2.1.1), and a picture the level limits allow."""
    rbsp = nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")
    assert (info.profile_idc, info.constraint_flags, info.level_idc) == tuple(rbsp[:3])
    assert 0 <= info.chroma_format_idc <= 3
    assert min(info.bit_depth_luma, info.bit_depth_chroma) >= 8
    assert max(info.bit_depth_luma, info.bit_depth_chroma) <= 14
    assert 0 < info.width <= 16 * 1055 and 0 < info.height <= 32 * 1055


def read_record(record: bytes) -> tuple[bytes, list[bytes], list[bytes], bytes]:
    """An AVCDecoderConfigurationRecord read per ISO/IEC 14496-15 §5.2.4.1: (profile,
    compatibility and level bytes, SPSs, PPSs, the bytes after the PPSs)."""
    assert record[0] == 1, "configurationVersion"
    assert record[4] == 0xFF, "reserved bits and lengthSizeMinusOne = 3"
    assert record[5] & 0xE0 == 0xE0, "reserved bits before numOfSequenceParameterSets"
    offset = 6
    sets: list[list[bytes]] = [[], []]
    for index, count in enumerate((record[5] & 0x1F, None)):
        if count is None:
            count = record[offset]
            offset += 1
        for _ in range(count):
            (size,) = struct.unpack_from("!H", record, offset)
            sets[index].append(record[offset + 2 : offset + 2 + size])
            offset += 2 + size
    return record[1:4], sets[0], sets[1], record[offset:]


def assert_record(record: bytes, sps: bytes, pps: bytes) -> None:
    """The record carries the one SPS and PPS, profile and level from the SPS, and for the
    high profiles chroma format and bit depths (§5.2.4.1.1)."""
    info = parse_sps(sps)
    head, sps_list, pps_list, rest = read_record(record)
    assert (head, sps_list, pps_list) == (sps[1:4], [sps], [pps])
    high = info.profile_idc in (100, 110, 122, 144)
    extension = (
        0xFC | info.chroma_format_idc,
        0xF8 | info.bit_depth_luma - 8,
        0xF8 | info.bit_depth_chroma - 8,
        0,
    )
    assert rest == (bytes(extension) if high else b"")


def parse_sps_checked(nal: bytes) -> SpsInfo | None:
    """`parse_sps` on untrusted bytes: H264ParseError or a plausible SpsInfo, nothing else."""
    try:
        info = parse_sps(nal)
    except H264ParseError:
        event("rejected: H264ParseError")
        return None
    event("parsed")
    assert_plausible(info, nal)
    return info


@pytest.mark.fuzz
@given(st.binary(max_size=64))
def test_parse_sps_arbitrary(data: bytes) -> None:
    parse_sps_checked(b"\x67" + data)


@pytest.mark.fuzz
@given(st.lists(st.binary(max_size=40), max_size=16), fields())
def test_depacketizer_arbitrary_payloads(payloads: list[bytes], f: Fields) -> None:
    depacketizer = H264Depacketizer(wait_for_keyframe=False)
    emitted = 0
    for payload in payloads:
        packet = RtpPacket(96, f.int(0, 0xFFFF), f.int(0, 5), 1, payload, marker=f.flag())
        for unit in depacketizer.push(packet):
            emitted += 1
            assert unit.nals and all(unit.nals)
            assert len(unit.nals) <= MAX_ACCESS_UNIT_NALS
    event("emitted an access unit" if emitted else "emitted nothing")
    assert depacketizer.emitted == emitted


# ---- parameter sets from fields --------------------------------------------------------------


class BitWriter:
    """Writes an RBSP the way H.264 §7.2 reads it: u(n), ue(v), se(v)."""

    def __init__(self) -> None:
        self.bits: list[str] = []

    def u(self, count: int, value: int) -> None:
        if count:
            self.bits.append(format(value, f"0{count}b"))

    def ue(self, value: int) -> None:
        code = format(value + 1, "b")
        self.bits.append("0" * (len(code) - 1) + code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def nal(self, header: int) -> bytes:
        """The NAL unit: trailing bits (§7.3.2.11), emulation prevention (§7.4.1)."""
        bits = "".join(self.bits) + "1"
        bits += "0" * (-len(bits) % 8)
        rbsp = int(bits, 2).to_bytes(len(bits) // 8, "big")
        out = bytearray((header,))
        zeros = 0
        for byte in rbsp:
            if zeros >= 2 and byte <= 3:
                out.append(3)
                zeros = 0
            out.append(byte)
            zeros = zeros + 1 if byte == 0 else 0
        return bytes(out)


@st.composite
def sps_nals(draw: st.DrawFn) -> tuple[bytes, SpsInfo]:
    """A valid SPS from its fields (H.264 §7.3.2.1.1), and what parse_sps must read from it."""
    f = draw(fields(2048))
    w = BitWriter()
    profile = f.pick((66, 77, 88, 100, 110, 122, 244))
    constraints, level = f.int(0, 255), f.int(0, 255)
    w.u(8, profile)
    w.u(8, constraints)
    w.u(8, level)
    w.ue(f.int(0, 31))
    chroma, separate, depth_luma, depth_chroma = 1, 0, 8, 8
    if profile >= 100:
        chroma = f.int(0, 3)
        w.ue(chroma)
        if chroma == 3:
            separate = f.int(0, 1)
            w.u(1, separate)
        depth_luma, depth_chroma = f.int(8, 14), f.int(8, 14)
        w.ue(depth_luma - 8)
        w.ue(depth_chroma - 8)
        w.u(1, f.int(0, 1))
        matrix = f.flag()
        w.u(1, matrix)
        for index in range(8 if chroma != 3 else 12) if matrix else ():
            deltas = [f.int(-128, 127) for _ in range(f.int(0, 3))]  # [] leaves it out
            w.u(1, bool(deltas))
            last = next_scale = 8
            for position in range(16 if index < 6 else 64) if deltas else ():
                if next_scale:
                    delta = deltas[position % len(deltas)]
                    w.se(delta)
                    next_scale = (last + delta) % 256
                last = next_scale or last
    w.ue(f.int(0, 12))
    poc_type = f.int(0, 2)
    w.ue(poc_type)
    if poc_type == 0:
        w.ue(f.int(0, 12))
    elif poc_type == 1:
        w.u(1, f.int(0, 1))
        w.se(f.int(-1000, 1000))
        w.se(f.int(-1000, 1000))
        cycle = [f.int(-1000, 1000) for _ in range(f.int(0, 8))]
        w.ue(len(cycle))
        for offset in cycle:
            w.se(offset)
    w.ue(f.int(0, 16))
    w.u(1, f.int(0, 1))
    width_mbs, height_units = f.int(1, 240), f.int(1, 135)
    w.ue(width_mbs - 1)
    w.ue(height_units - 1)
    frame_mbs_only = f.int(0, 1)
    w.u(1, frame_mbs_only)
    if not frame_mbs_only:
        w.u(1, f.int(0, 1))
    w.u(1, f.int(0, 1))
    array_type = 0 if separate else chroma
    unit_x = 2 if array_type in (1, 2) else 1
    unit_y = (2 if array_type == 1 else 1) * (2 - frame_mbs_only)
    full_width, full_height = 16 * width_mbs, 16 * height_units * (2 - frame_mbs_only)
    crop_x = f.int(0, (full_width - 1) // unit_x)
    crop_y = f.int(0, (full_height - 1) // unit_y)
    w.u(1, 1 if crop_x or crop_y else 0)
    if crop_x or crop_y:
        left = f.int(0, crop_x)
        top = f.int(0, crop_y)
        for value in (left, crop_x - left, top, crop_y - top):
            w.ue(value)
    w.u(1, 0)  # vui_parameters_present_flag
    info = SpsInfo(
        profile,
        constraints,
        level,
        chroma,
        depth_luma,
        depth_chroma,
        full_width - unit_x * crop_x,
        full_height - unit_y * crop_y,
    )
    return w.nal(0x67), info


PPS = b"\x68\xce\x38\x80"


@pytest.mark.fuzz
@given(sps_nals())
def test_valid_sps_round_trip(case: tuple[bytes, SpsInfo]) -> None:
    nal, info = case
    assert len(nal) <= MAX_PARAMETER_SET_SIZE
    assert parse_sps(nal) == info
    record = avc_decoder_configuration_record([nal], [PPS])
    assert record[8 : 8 + len(nal)] == nal


MUTATED_SPS = mutated(sps_nals().map(lambda case: case[0]))
"""Valid SPS NAL units with one to three edits."""


@pytest.mark.fuzz
@given(MUTATED_SPS)
def test_mutated_sps_raise_only_h264_parse_error(nal: bytes) -> None:
    if parse_sps_checked(nal) is not None:
        assert_record(avc_decoder_configuration_record([nal], [PPS]), nal, PPS)


NAL_SETS = st.lists(
    fields().map(lambda f: bytes((f.pick((0x67, 0x68, 0x06)),)) + f.bytes(0, 40)),
    max_size=MAX_PARAMETER_SETS,
)


@pytest.mark.fuzz
@given(NAL_SETS)
def test_valid_sprop_parameter_sets_round_trip(nals: list[bytes]) -> None:
    value = ",".join(base64.b64encode(nal).decode().rstrip("=") for nal in nals)
    assert parse_sprop_parameter_sets(value) == nals


BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
HOSTILE = b",= \t\x00\xff!-_"
"""Bytes an edit keeps as they are: separators, padding, space and what base64 refuses."""
TO_BASE64 = bytes(
    byte if byte in BASE64 or byte in HOSTILE else BASE64[byte % 64] for byte in range(256)
)
SPROP_VALUES = mutated(
    NAL_SETS.map(lambda nals: b",".join(base64.b64encode(nal) for nal in nals))
).map(lambda value: value.translate(TO_BASE64))
"""fmtp values with one to three edits, most of them to other base64 characters: an edit to
random bytes almost always stops at the base64 check, before a set is decoded."""


@pytest.mark.fuzz
@given(SPROP_VALUES, st.sampled_from(("ascii", "latin-1")))
def test_mutated_sprop_parameter_sets_raise_only_h264_parse_error(
    value: bytes, encoding: str
) -> None:
    try:
        nals = parse_sprop_parameter_sets(value.decode(encoding, "replace"))
    except H264ParseError:
        event("rejected: H264ParseError")
        return
    event("parsed")
    assert len(nals) <= MAX_PARAMETER_SETS
    assert all(0 < len(nal) <= MAX_PARAMETER_SET_SIZE for nal in nals)
    depacketizer = H264Depacketizer(nals)
    # the last SPS and PPS named are the ones in force (RFC 6184 §8.4)
    assert depacketizer.sps == next((n for n in reversed(nals) if nal_type(n) == 7), None)
    assert depacketizer.pps == next((n for n in reversed(nals) if nal_type(n) == 8), None)


# ---- access units through the depacketizer ------------------------------------------------


@st.composite
def h264_streams(draw: st.DrawFn) -> tuple[list[list[bytes]], list[RtpPacket]]:
    """Access units of plausible NAL units, a keyframe with SPS/PPS first, packetized in
    mode 1 (single NAL, STAP-A, FU-A) with markers."""
    f = draw(fields(1024))

    def nal(kind: int, max_size: int) -> bytes:
        return bytes((0x60 | kind,)) + f.bytes(1, max_size)

    units = [[nal(7, 20), nal(8, 8), nal(5, 1000)]]
    for _ in range(f.int(0, 3)):
        units.append([nal(f.pick((1, 1, 5, 6, 9)), 500) for _ in range(f.int(1, 3))])
    max_payload = f.int(100, 1400)
    seq = f.int(0, 0xFFFF)
    packets = []
    for index, nals in enumerate(units):
        payloads = packetize_h264(nals, max_payload=max_payload)
        for n, payload in enumerate(payloads):
            marker = n == len(payloads) - 1
            packets.append(RtpPacket(96, seq & 0xFFFF, 3000 * index, 7, payload, marker=marker))
            seq += 1
    return units, packets


@pytest.mark.fuzz
@given(h264_streams())
def test_valid_streams_round_trip(stream: tuple[list[list[bytes]], list[RtpPacket]]) -> None:
    units, packets = stream
    depacketizer = H264Depacketizer()
    emitted = depacketize(depacketizer, packets)  # type: ignore[arg-type]
    assert [list(unit.nals) for unit in emitted] == units
    assert depacketizer.dropped == 0 and depacketizer.sps == units[0][0]


@st.composite
def damaged_h264_streams(draw: st.DrawFn) -> list[RtpPacket | Lost]:
    """A valid stream with packets lost, payloads mutated and markers moved."""
    _, packets = draw(h264_streams())
    return draw(damaged(packets))


@pytest.mark.fuzz
@given(damaged_h264_streams())
def test_damaged_streams_emit_only_whole_access_units(items: list[RtpPacket | Lost]) -> None:
    depacketizer = H264Depacketizer(wait_for_keyframe=False)
    for unit in depacketize(depacketizer, items):
        assert unit.nals and all(unit.nals)
        assert len(unit.nals) <= MAX_ACCESS_UNIT_NALS
    for parameter_set in (depacketizer.sps, depacketizer.pps):
        assert parameter_set is None or len(parameter_set) <= MAX_PARAMETER_SET_SIZE
    sps, pps = depacketizer.sps, depacketizer.pps
    try:
        info = parse_sps(sps) if sps is not None else None
    except H264ParseError:
        info = None
    assert depacketizer.resolution == (None if info is None else (info.width, info.height))
    config = depacketizer.decoder_config()
    if info is None or pps is None:
        assert config is None
    else:
        assert config is not None and sps is not None
        assert_record(config, sps, pps)


# ---- hostile input ----------------------------------------------------------------------


def counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the width of every read parse_sps makes."""
    reads: list[int] = []
    original = _Bits.u

    def u(bits: _Bits, count: int) -> int:
        reads.append(count)
        return original(bits, count)

    monkeypatch.setattr(_Bits, "u", u)
    return reads


def big_sps(size: int) -> bytes:
    """Baseline SPS with pic_order_cnt_type 1 and a 2^20-frame cycle, then all ones: a parser
    that believes the cycle reads a se(v) per bit to the end."""
    w = BitWriter()
    for value in (66, 0, 30):
        w.u(8, value)
    w.ue(0)
    w.ue(0)
    w.ue(1)
    w.u(1, 0)
    w.se(0)
    w.se(0)
    w.ue(2**20 - 1)
    head = w.nal(0x67)[:-1]
    return head + b"\xff" * (size - len(head))


def test_oversized_sps_is_refused_before_a_bit_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = counted_reads(monkeypatch)
    with pytest.raises(H264ParseError, match="over"):
        parse_sps(big_sps(64 * 1024))
    assert reads == []  # the old reader went through all 524,000 bits, each a 64 KB shift


def test_pic_order_cnt_cycle_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = counted_reads(monkeypatch)
    with pytest.raises(H264ParseError, match="cycle"):
        parse_sps(big_sps(MAX_PARAMETER_SET_SIZE))
    assert len(reads) < 100


def test_bit_reader_touches_only_the_bytes_it_reads() -> None:
    class CountingBytes(bytes):
        touched = 0

        def __getitem__(self, key: Any) -> Any:
            value = super().__getitem__(key)
            CountingBytes.touched += len(value) if isinstance(value, bytes) else 1
            return value

    def touched_reading(size: int) -> int:
        CountingBytes.touched = 0
        bits = _Bits(CountingBytes(b"\xa5" * size), "SPS")
        for _ in range(size):
            bits.u(3)
            bits.u(5)
        return CountingBytes.touched

    small, large = touched_reading(4096), touched_reading(4 * 4096)
    assert 4096 <= small <= 2 * 2 * 4096  # two reads per byte, each within two bytes
    assert large == 4 * small


def test_sps_values_out_of_range_raise_h264_parse_error() -> None:
    w = BitWriter()
    for value in (100, 0, 30):
        w.u(8, value)
    w.ue(0)
    w.ue(1)
    w.ue(40)  # bit_depth_luma_minus8: the record's 3-bit field would not take it
    w.ue(0)
    w.u(1, 0)
    w.u(1, 0)
    with pytest.raises(H264ParseError, match="bit depth"):
        avc_decoder_configuration_record([w.nal(0x67) + bytes(8)], [PPS])


def test_configuration_record_refuses_what_its_fields_cannot_hold() -> None:
    sps = next(n for n in split_annexb(encode(64, 64, 1)[0]) if nal_type(n) == NAL_SPS)
    with pytest.raises(H264ParseError):
        avc_decoder_configuration_record([sps] * 32, [PPS])
    with pytest.raises(H264ParseError):
        avc_decoder_configuration_record([sps], [PPS] * 256)
    with pytest.raises(H264ParseError):
        avc_decoder_configuration_record([sps], [b"\x68" + bytes(70_000)])


def test_sprop_parameter_sets_are_bounded() -> None:
    one = base64.b64encode(PPS).decode()
    assert len(parse_sprop_parameter_sets(",".join([one] * MAX_PARAMETER_SETS))) == 8
    with pytest.raises(H264ParseError):
        parse_sprop_parameter_sets(",".join([one] * (MAX_PARAMETER_SETS + 1)))
    with pytest.raises(H264ParseError):
        parse_sprop_parameter_sets(base64.b64encode(b"\x67" + bytes(64 * 1024)).decode())


def fu_a(nal: bytes, seq: int, ts: int, marker: bool, chunk: int = 1200) -> list[RtpPacket]:
    body = nal[1:]
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    packets = []
    for index, piece in enumerate(pieces):
        header = nal[0] & 0x1F | (0x80 if index == 0 else 0)
        header |= 0x40 if index == len(pieces) - 1 else 0
        last = marker and index == len(pieces) - 1
        indicator = (nal[0] & 0xE0) | 28
        packets.append(
            RtpPacket(96, seq + index, ts, 1, bytes((indicator, header)) + piece, marker=last)
        )
    return packets


def test_fu_a_sps_over_the_cap_is_never_kept(stream: list[list[bytes]]) -> None:
    depacketizer = H264Depacketizer()
    first = to_packets(stream[:1])
    depacketize(depacketizer, first)  # type: ignore[arg-type]
    sps = depacketizer.sps
    packets = fu_a(big_sps(64 * 1024), first[-1].sequence_number + 1, 90_000, marker=True)
    held = 0
    for packet in packets:
        depacketizer.push(packet)
        held = max(held, len(depacketizer._fragment or b""))
    assert held <= MAX_PARAMETER_SET_SIZE + 1200
    assert depacketizer.sps == sps and depacketizer.dropped == 1
    assert depacketizer.resolution == (640, 360)


def held_bytes(depacketizer: H264Depacketizer) -> int:
    return sum(map(len, depacketizer._nals)) + len(depacketizer._fragment or b"")


def test_an_access_unit_without_a_marker_is_capped_released_and_dropped(
    stream: list[list[bytes]],
) -> None:
    depacketizer = H264Depacketizer()
    held = 0
    for seq in range(20_000):
        header = 0x85 if seq == 0 else 0x05
        depacketizer.push(RtpPacket(96, seq, 0, 1, bytes((0x7C, header)) + bytes(1400)))
        held = max(held, held_bytes(depacketizer))
    assert held <= MAX_FRAME_BYTES  # the old assembler held 28 MB by the end, and growing
    assert held_bytes(depacketizer) == 0  # released when it went over, not at the next frame
    keyframe = to_packets(stream[:1], first_seq=20_000, first_ts=3000)
    units = depacketize(depacketizer, keyframe)  # type: ignore[arg-type]
    assert depacketizer.dropped == 1 and [u.keyframe for u in units] == [True]


def test_nal_units_per_access_unit_are_capped() -> None:
    depacketizer = H264Depacketizer(wait_for_keyframe=False)
    stap_a = b"\x78" + b"\x00\x01\x41" * 400
    most = 0
    for seq in range(100):
        depacketizer.push(RtpPacket(96, seq, 0, 1, stap_a))
        most = max(most, len(depacketizer._nals))
    assert most <= MAX_ACCESS_UNIT_NALS  # the old one kept all 40,000
    assert depacketizer.push(RtpPacket(96, 100, 0, 1, b"\x41", marker=True)) == []
    assert depacketizer.dropped == 1


def test_frame_packet_cap() -> None:
    depacketizer = H264Depacketizer(wait_for_keyframe=False)
    for seq in range(MAX_FRAME_PACKETS + 1):
        depacketizer.push(RtpPacket(96, seq, 0, 1, b"\x41"))
    assert depacketizer._nals == []
    depacketizer.push(RtpPacket(96, MAX_FRAME_PACKETS + 1, 0, 1, b"\x41", marker=True))
    assert (depacketizer.dropped, depacketizer.emitted) == (1, 0)
