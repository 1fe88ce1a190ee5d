"""VP8 RTP (RFC 7741): descriptor vectors and a libvpx round trip."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip2rtmp.rtp.jitterbuffer import Lost
from sip2rtmp.rtp.packet import RtpPacket
from sip2rtmp.rtp.vp8 import (
    Vp8Depacketizer,
    Vp8Frame,
    Vp8ParseError,
    packetize_vp8,
    parse_descriptor,
)


def test_descriptor_all_fields() -> None:
    # X S | I L T K | M + 15-bit PictureID | TL0PICIDX | TID=1 Y KEYIDX=3
    payload = bytes((0x90, 0xF0, 0x80 | 0x12, 0x34, 0x05, 0b0110_0011)) + b"frame"
    d = parse_descriptor(payload)
    assert d.start and not d.non_reference and d.partition_id == 0
    assert d.picture_id == 0x1234
    assert d.tl0_pic_idx == 5
    assert (d.tid, d.layer_sync, d.key_idx) == (1, True, 3)
    assert payload[d.size :] == b"frame"


def test_descriptor_short_forms() -> None:
    assert parse_descriptor(b"\x10").size == 1
    d = parse_descriptor(bytes((0xA3, 0x80, 0x7F)))  # X N PID=3, 7-bit PictureID
    assert (d.non_reference, d.start, d.partition_id, d.picture_id, d.size) == (
        True,
        False,
        3,
        0x7F,
        3,
    )
    d = parse_descriptor(bytes((0x80, 0x10, 0x1F)))  # K only: KEYIDX without TID
    assert (d.tid, d.key_idx) == (None, 0x1F)


@pytest.mark.parametrize("payload", [b"", b"\x80", b"\x80\x80", b"\x80\x80\x80", b"\x80\x40"])
def test_descriptor_truncated(payload: bytes) -> None:
    with pytest.raises(Vp8ParseError):
        parse_descriptor(payload)


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = 320, 180
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, 30)
    codec.gop_size = 10
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    rng = np.random.default_rng(0)
    out = []
    for index in range(20):
        image = rng.integers(0, 255, (180, 320, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        out += [bytes(p) for p in codec.encode(frame)]
    out += [bytes(p) for p in codec.encode(None)]
    return out


def to_packets(frames: list[bytes]) -> list[RtpPacket]:
    packets = []
    seq = 65500
    for index, frame in enumerate(frames):
        payloads = packetize_vp8(frame, max_payload=800, picture_id=index)
        for n, payload in enumerate(payloads):
            marker = n == len(payloads) - 1
            packets.append(RtpPacket(98, seq & 0xFFFF, 3000 * index, 3, payload, marker=marker))
            seq += 1
    return packets


def test_round_trip(frames: list[bytes]) -> None:
    depacketizer = Vp8Depacketizer()
    out: list[Vp8Frame] = []
    for packet in to_packets(frames):
        out += depacketizer.push(packet)
    assert [f.data for f in out] == frames
    assert out[0].keyframe and (out[0].width, out[0].height) == (320, 180)
    assert not out[1].keyframe and out[1].width is None
    assert depacketizer.resolution == (320, 180)
    decoder = av.CodecContext.create("vp8", "r")
    decoded = []
    for frame in out:
        decoded += decoder.decode(av.Packet(frame.data))
    assert len(decoded) == len(frames)


def test_loss_drops_frame_until_keyframe(frames: list[bytes]) -> None:
    packets = to_packets(frames)
    victim = next(p for p in packets if p.timestamp == 3000 * 2)
    depacketizer = Vp8Depacketizer()
    out: list[Vp8Frame] = []
    for packet in packets:
        item = Lost(packet.sequence_number, packet.timestamp) if packet is victim else packet
        out += depacketizer.push(item)
    assert [f.timestamp // 3000 for f in out] == [0, 1, *range(10, 20)]
    assert depacketizer.dropped == 8


@given(
    st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.integers(0, 3), st.booleans(), st.binary(max_size=30)),
        max_size=40,
    )
)
def test_depacketizer_arbitrary_payloads(packets: list[tuple[int, int, bool, bytes]]) -> None:
    depacketizer = Vp8Depacketizer(wait_for_keyframe=False)
    for seq, ts, marker, payload in packets:
        depacketizer.push(RtpPacket(98, seq, ts, 1, payload, marker=marker))


@given(st.binary(max_size=12))
def test_descriptor_arbitrary(payload: bytes) -> None:
    try:
        d = parse_descriptor(payload)
    except Vp8ParseError:
        return
    assert 1 <= d.size <= len(payload)
