"""VP8 RTP (RFC 7741): descriptor vectors and a libvpx round trip."""

from __future__ import annotations

import struct
from fractions import Fraction

import av
import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from sip2rtmp.rtp.frames import MAX_FRAME_BYTES
from sip2rtmp.rtp.jitterbuffer import Lost
from sip2rtmp.rtp.packet import RtpPacket
from sip2rtmp.rtp.vp8 import (
    Vp8Depacketizer,
    Vp8Descriptor,
    Vp8Frame,
    Vp8ParseError,
    keyframe_size,
    packetize_vp8,
    parse_descriptor,
)
from tests.unit.rtp.mutations import Fields, damaged, fields, mutated


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


def whole_frames(items: list[RtpPacket | Lost]) -> list[tuple[int, bytes]]:
    """Every (timestamp, data) a correct depacketizer may emit from ``items`` (RFC 7741 §4.1,
    §4.2): the payloads, descriptors removed, of a run of packets with one timestamp and
    consecutive sequence numbers, the first starting partition 0 (S=1, PID=0) and no other,
    every descriptor whole, the run closed by its marker or by the next timestamp."""
    frames = []
    for first, item in enumerate(items):
        if not isinstance(item, RtpPacket):
            continue
        parts: list[bytes] = []
        for index in range(first, len(items)):
            packet = items[index]
            if not isinstance(packet, RtpPacket) or packet.timestamp != item.timestamp:
                break
            if (
                index > first
                and packet.sequence_number
                != (
                    items[index - 1].sequence_number + 1  # type: ignore[union-attr]
                )
                & 0xFFFF
            ):
                break
            try:
                descriptor = parse_descriptor(packet.payload)
            except Vp8ParseError:
                break
            if (descriptor.start and descriptor.partition_id == 0) != (index == first):
                break
            parts.append(packet.payload[descriptor.size :])
            following = items[index + 1] if index + 1 < len(items) else None
            closed = isinstance(following, RtpPacket) and following.timestamp != item.timestamp
            if packet.marker or closed:
                frames.append((item.timestamp, b"".join(parts)))
                break
    return frames


def assert_whole(frames: list[Vp8Frame], items: list[RtpPacket | Lost]) -> None:
    """Emitted frames are whole frames of the input, in order, with the keyframe flag and
    size their first bytes give (RFC 6386 §9.1)."""
    possible = iter(whole_frames(items))
    for frame in frames:
        assert (frame.timestamp, frame.data) in possible, "a frame that is not a whole frame"
        assert len(frame.data) >= 3
        assert frame.keyframe == (not frame.data[0] & 0x01)
        size = keyframe_size(frame.data) if frame.keyframe else None
        assert (frame.width, frame.height) == (size or (None, None))


@pytest.mark.fuzz
@given(st.lists(st.binary(max_size=40), max_size=16), fields())
def test_depacketizer_arbitrary_payloads(payloads: list[bytes], f: Fields) -> None:
    depacketizer = Vp8Depacketizer(wait_for_keyframe=False)
    items: list[RtpPacket | Lost] = []
    frames: list[Vp8Frame] = []
    seq = f.int(0, 0xFFFF)
    for payload in payloads:
        seq = (seq + 1 + f.pick((0, 0, 0, 1, 7))) & 0xFFFF  # mostly in order, some gaps
        packet = RtpPacket(98, seq, f.int(0, 3), 1, payload, marker=f.flag())
        items.append(packet)
        frames += depacketizer.push(packet)
    event("emitted a frame" if frames else "emitted nothing")
    assert_whole(frames, items)
    assert depacketizer.emitted == len(frames)


@pytest.mark.fuzz
@given(st.binary(max_size=12))
def test_descriptor_arbitrary(payload: bytes) -> None:
    try:
        d = parse_descriptor(payload)
    except Vp8ParseError:
        event("rejected: Vp8ParseError")
        return
    event("parsed")
    assert 1 <= d.size <= len(payload)


@st.composite
def descriptors(draw: st.DrawFn) -> tuple[Vp8Descriptor, bytes]:
    """A payload descriptor from its fields (RFC 7741 §4.2), and its bytes with a payload."""
    f = draw(fields())

    def field(maximum: int) -> int | None:
        return f.int(0, maximum) if f.flag() else None

    picture_id, tl0, tid, key_idx = field(0x7FFF), field(255), field(3), field(31)
    layer_sync = tid is not None and f.flag()
    extended = f.flag() or any(x is not None for x in (picture_id, tl0, tid, key_idx))
    non_reference, start, partition = f.flag(), f.flag(), f.int(0, 7)
    data = bytearray((0x80 * extended | 0x20 * non_reference | 0x10 * start | partition,))
    if extended:
        flags = (picture_id, tl0, tid, key_idx)
        data.append(sum(0x80 >> i for i, f in enumerate(flags) if f is not None))
    if picture_id is not None:
        long_id = picture_id > 0x7F or f.flag()
        data += (
            bytes((0x80 | picture_id >> 8, picture_id & 0xFF)) if long_id else bytes((picture_id,))
        )
    if tl0 is not None:
        data.append(tl0)
    if tid is not None or key_idx is not None:
        data.append((tid or 0) << 6 | 0x20 * layer_sync | (key_idx or 0))
    descriptor = Vp8Descriptor(
        non_reference, start, partition, picture_id, tl0, tid, layer_sync, key_idx, len(data)
    )
    return descriptor, bytes(data) + f.bytes(0, 8)


@pytest.mark.fuzz
@given(descriptors())
def test_valid_descriptors_round_trip(case: tuple[Vp8Descriptor, bytes]) -> None:
    descriptor, payload = case
    assert parse_descriptor(payload) == descriptor


MUTATED_DESCRIPTORS = mutated(descriptors().map(lambda case: case[1]))
"""Valid payload descriptors, with a payload, after one to three edits."""


@pytest.mark.fuzz
@given(MUTATED_DESCRIPTORS)
def test_mutated_descriptors_raise_only_vp8_parse_error(payload: bytes) -> None:
    try:
        descriptor = parse_descriptor(payload)
    except Vp8ParseError:
        event("rejected: Vp8ParseError")
        return
    event("parsed")
    assert 1 <= descriptor.size <= len(payload)
    frame = payload[descriptor.size :]
    size = keyframe_size(frame)
    # RFC 6386 §9.1: a key frame (P=0) has the start code 9d 01 2a, then 14-bit width and
    # height, little-endian, each under 2 bits of scaling
    is_keyframe = len(frame) >= 10 and not frame[0] & 0x01 and frame[3:6] == b"\x9d\x01\x2a"
    assert size == (
        (
            struct.unpack_from("<H", frame, 6)[0] & 0x3FFF,
            struct.unpack_from("<H", frame, 8)[0] & 0x3FFF,
        )
        if is_keyframe
        else None
    )


def vp8_frame(f: Fields, keyframe: bool) -> bytes:
    """A keyframe with its start code and size (RFC 6386 §9.1), or an interframe."""
    body = f.bytes(1, 300)
    if keyframe:
        size = struct.pack("<HH", f.int(1, 0x3FFF), f.int(1, 0x3FFF))
        return b"\x10\x02\x00\x9d\x01\x2a" + size + body
    return b"\x11\x02\x00" + body


@st.composite
def vp8_streams(draw: st.DrawFn) -> tuple[list[bytes], list[RtpPacket]]:
    """Frames, starting with a keyframe, packetized as a sender would with markers."""
    f = draw(fields(1024))
    frames = [vp8_frame(f, keyframe=index == 0 or f.flag()) for index in range(f.int(1, 4))]
    max_payload = f.int(40, 200)
    seq = f.int(0, 0xFFFF)
    packets = []
    for index, frame in enumerate(frames):
        picture_id = f.int(0, 0x7FFF) if f.flag() else None
        payloads = packetize_vp8(frame, max_payload, picture_id)
        for n, payload in enumerate(payloads):
            marker = n == len(payloads) - 1
            packets.append(RtpPacket(98, seq & 0xFFFF, 3000 * index, 3, payload, marker=marker))
            seq += 1
    return frames, packets


@pytest.mark.fuzz
@given(vp8_streams())
def test_valid_streams_round_trip(stream: tuple[list[bytes], list[RtpPacket]]) -> None:
    frames, packets = stream
    depacketizer = Vp8Depacketizer()
    out: list[Vp8Frame] = []
    for packet in packets:
        out += depacketizer.push(packet)
    assert [frame.data for frame in out] == frames


@st.composite
def damaged_vp8_streams(draw: st.DrawFn) -> list[RtpPacket | Lost]:
    """A valid stream with packets lost, payloads mutated and markers moved."""
    _, packets = draw(vp8_streams())
    return draw(damaged(packets))


@pytest.mark.fuzz
@given(damaged_vp8_streams())
def test_damaged_streams_emit_only_whole_frames(items: list[RtpPacket | Lost]) -> None:
    depacketizer = Vp8Depacketizer(wait_for_keyframe=False)
    frames: list[Vp8Frame] = []
    for item in items:
        frames += depacketizer.push(item)
    event(f"emitted {min(len(frames), 3)}{'+' if len(frames) > 3 else ''} frames")
    assert_whole(frames, items)


def test_a_frame_without_a_marker_is_capped_released_and_dropped() -> None:
    depacketizer = Vp8Depacketizer()
    payload = b"\x00" + bytes(1400)
    held = 0
    for seq in range(20_000):
        first = b"\x10" + bytes(1400) if seq == 0 else payload
        depacketizer.push(RtpPacket(98, seq, 0, 1, first))
        held = max(held, sum(len(part) for part in depacketizer._parts))
    assert held <= MAX_FRAME_BYTES
    assert depacketizer._parts == []  # released once over the cap, not at the next frame
    keyframe = b"\x10\x10\x02\x00\x9d\x01\x2a\x40\x01\xf0\x00"
    out = depacketizer.push(RtpPacket(98, 20_000, 3000, 1, keyframe, marker=True))
    assert depacketizer.dropped == 1
    assert [frame.keyframe for frame in out] == [True]
