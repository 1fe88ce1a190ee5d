"""H.264 RTP (RFC 6184) and AVCC helpers, checked against real libx264 output."""

from __future__ import annotations

import base64
import contextlib
import struct
from fractions import Fraction

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip2rtmp.rtp.h264 import (
    AccessUnit,
    H264Depacketizer,
    H264ParseError,
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


def to_packets(units: list[list[bytes]], first_seq: int = 65530) -> list[RtpPacket]:
    packets = []
    seq = first_seq
    for index, nals in enumerate(units):
        payloads = packetize_h264(nals, max_payload=1000)
        for n, payload in enumerate(payloads):
            last = n == len(payloads) - 1
            packets.append(RtpPacket(96, seq & 0xFFFF, 3000 * index, 7, payload, marker=last))
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


@given(st.binary(max_size=64))
def test_parse_sps_arbitrary(data: bytes) -> None:
    with contextlib.suppress(H264ParseError):
        parse_sps(b"\x67" + data)


@given(
    st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.integers(0, 5), st.booleans(), st.binary(max_size=40)),
        max_size=40,
    )
)
def test_depacketizer_arbitrary_payloads(packets: list[tuple[int, int, bool, bytes]]) -> None:
    depacketizer = H264Depacketizer(wait_for_keyframe=False)
    for seq, ts, marker, payload in packets:
        for unit in depacketizer.push(RtpPacket(96, seq, ts, 1, payload, marker=marker)):
            assert unit.nals and all(unit.nals)
