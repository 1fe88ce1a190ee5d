"""VP8 over RTP, rule by rule: the boundaries of RFC 7741 §4.2's payload descriptor, RFC 6386
§9.1's key frame header, the packetizer's exact output, and which frames the depacketizer
must drop (RFC 7741 §4.1, §4.2)."""

from __future__ import annotations

import re

import pytest

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
from tests.unit.rtp.test_vp8 import assert_whole


def descriptor(
    size: int,
    *,
    non_reference: bool = False,
    start: bool = False,
    partition_id: int = 0,
    picture_id: int | None = None,
    tl0_pic_idx: int | None = None,
    tid: int | None = None,
    layer_sync: bool = False,
    key_idx: int | None = None,
) -> Vp8Descriptor:
    return Vp8Descriptor(
        non_reference, start, partition_id, picture_id, tl0_pic_idx, tid, layer_sync, key_idx, size
    )


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # |X|R|N|S|R| PID |: without X the low bits are the partition index, nothing follows
        (b"\x01", descriptor(1, partition_id=1)),
        (b"\x07\xff", descriptor(1, partition_id=7)),
        # both R bits "MUST be ignored by the receiver": S with R is still partition 0's start
        (b"\x18", descriptor(1, start=True)),
        (b"\x48", descriptor(1)),
        # X with no optional field: the descriptor ends exactly at the payload's end
        (b"\x80\x00", descriptor(2)),
        # |I|L|T|K| RSV |: the reserved bits announce no field
        (b"\x80\x0f", descriptor(2)),
        (b"\x80\x1f\xff", descriptor(3, key_idx=0x1F)),  # K alone: no TID, no Y
        (b"\x80\x2f\xe5", descriptor(3, tid=3, layer_sync=True)),  # T alone: no KEYIDX
        # a PictureID (7 or 15 bits, M set) and a TL0PICIDX that end exactly at the payload's end
        (b"\x80\x80\x05", descriptor(3, picture_id=5)),
        (b"\x80\x80\x81\x02", descriptor(4, picture_id=0x0102)),
        (b"\x80\x40\x07", descriptor(3, tl0_pic_idx=7)),
    ],
)
def test_descriptor_boundaries(payload: bytes, expected: Vp8Descriptor) -> None:
    assert parse_descriptor(payload) == expected


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty VP8 payload"),
        (b"\x80", "VP8 descriptor truncated after X"),
        (b"\x80\x80", "VP8 descriptor truncated in PictureID"),
        (b"\x80\x80\x81", "VP8 descriptor truncated in PictureID"),  # M: a second byte is due
        (b"\x80\xc0\x05", "VP8 descriptor truncated in TL0PICIDX"),
        (b"\x80\x20", "VP8 descriptor truncated in TID/KEYIDX"),
        (b"\x80\xf0\x81\x02\x07", "VP8 descriptor truncated in TID/KEYIDX"),
    ],
)
def test_truncated_descriptor_names_the_missing_field(payload: bytes, message: str) -> None:
    """One byte short of each field raises, and the message says which field ran out."""
    with pytest.raises(Vp8ParseError, match=f"^{re.escape(message)}$"):
        parse_descriptor(payload)


# RFC 6386 §9.1: a 3-byte frame tag (bit 0 of the first byte is 0 on key frames, bits 1-3 the
# version), then on key frames the start code 9d 01 2a and two little-endian 16-bit fields,
# each a 14-bit size under 2 bits of scaling.
START_CODE = b"\x9d\x01\x2a"


@pytest.mark.parametrize(
    ("frame", "size"),
    [
        (b"\x10\x02\x00" + START_CODE + b"\x40\x01\xb4\x00", (320, 180)),
        (b"\x12\x02\x00" + START_CODE + b"\x40\x01\xb4\x00", (320, 180)),  # version 1
        (b"\x10\x02\x00" + START_CODE + b"\xbc\xca\x34\x52", (0x0ABC, 0x1234)),  # scaled
        (b"\x10\x02\x00" + START_CODE + b"\x40\x01\xb4", None),  # 9 bytes: height cut
        (b"\x11\x02\x00" + START_CODE + b"\x40\x01\xb4\x00", None),  # P=1: an interframe
        (b"\x10\x02\x00\x9d\x01\x2b\x40\x01\xb4\x00", None),  # no start code
    ],
)
def test_keyframe_size(frame: bytes, size: tuple[int, int] | None) -> None:
    assert keyframe_size(frame) == size


@pytest.mark.parametrize(
    ("frame", "max_payload", "picture_id", "payloads"),
    [
        # S on the first packet only, every packet in partition 0 (RFC 7741 §4.2)
        (b"abcdefg", 4, None, [b"\x10abc", b"\x00def", b"\x00g"]),
        # the smallest payload: one descriptor byte and one frame byte
        (b"ab", 2, None, [b"\x10a", b"\x00b"]),
        (b"", 2, None, [b"\x10"]),
        (b"a", 5, 1, [b"\x90\x80\x80\x01a"]),
        # X, I, then M and the 15-bit PictureID, which wraps (RFC 7741 §4.2)
        (
            b"abcdefg",
            7,
            0x8123,
            [b"\x90\x80\x81\x23abc", b"\x80\x80\x81\x23def", b"\x80\x80\x81\x23g"],
        ),
        (b"ab", 5, 0x1234, [b"\x90\x80\x92\x34a", b"\x80\x80\x92\x34b"]),
    ],
)
def test_packetize_exact_payloads(
    frame: bytes, max_payload: int, picture_id: int | None, payloads: list[bytes]
) -> None:
    assert packetize_vp8(frame, max_payload, picture_id) == payloads


@pytest.mark.parametrize(("max_payload", "picture_id"), [(1, None), (4, 0)])
def test_packetize_refuses_a_payload_with_no_room_for_data(
    max_payload: int, picture_id: int | None
) -> None:
    message = "max_payload too small for the VP8 descriptor"
    with pytest.raises(ValueError, match=f"^{message}$"):
        packetize_vp8(b"frame", max_payload, picture_id)


@pytest.mark.parametrize("picture_id", [None, 7])
def test_packetize_fills_1200_byte_payloads_by_default(picture_id: int | None) -> None:
    """1200 bytes of payload keep a packet, with its IP, UDP and RTP headers, inside a 1280-byte
    IPv6 minimum MTU."""
    payloads = packetize_vp8(bytes(3000), picture_id=picture_id)
    assert [len(p) for p in payloads[:-1]] == [1200, 1200]


# A key frame of 320x180 and an interframe, as the frame tag and header make them.
KEYFRAME = b"\x10\x02\x00" + START_CODE + b"\x40\x01\xb4\x00" + bytes(20)
INTERFRAME = b"\x11\x02\x00" + bytes(20)


def push_all(depacketizer: Vp8Depacketizer, items: list[RtpPacket | Lost]) -> list[Vp8Frame]:
    out: list[Vp8Frame] = []
    for item in items:
        out += depacketizer.push(item)
    assert_whole(out, items)
    return out


def packet(seq: int, timestamp: int, payload: bytes, marker: bool = False) -> RtpPacket:
    return RtpPacket(98, seq, timestamp, 1, payload, marker=marker)


def test_resolution_is_unknown_until_a_keyframe() -> None:
    depacketizer = Vp8Depacketizer(wait_for_keyframe=False)
    assert depacketizer.resolution is None
    push_all(depacketizer, [packet(1, 0, b"\x10" + INTERFRAME, marker=True)])
    assert depacketizer.resolution is None
    push_all(depacketizer, [packet(2, 3000, b"\x10" + KEYFRAME, marker=True)])
    assert depacketizer.resolution == (320, 180)


@pytest.mark.parametrize(
    "payloads",
    [
        # a descriptor that cannot be read loses what its packet carried
        [b"\x10" + KEYFRAME[:10], b"\x80", b"\x00" + KEYFRAME[10:]],
        [b"\x10" + KEYFRAME[:10], b"", b"\x00" + KEYFRAME[10:]],
        # the first packet of a frame has S=1 and PID=0 (§4.2): no start, or not partition 0
        [b"\x00" + KEYFRAME],
        [b"\x11" + KEYFRAME],
        [b"\x00" + KEYFRAME[:10], b"\x00" + KEYFRAME[10:]],
        # and no other packet of it does: a second start means the two are not one frame
        [b"\x10" + KEYFRAME[:10], b"\x10" + KEYFRAME[10:]],
    ],
)
def test_a_frame_with_a_bad_packet_is_dropped(payloads: list[bytes]) -> None:
    depacketizer = Vp8Depacketizer(wait_for_keyframe=False)
    items: list[RtpPacket | Lost] = [
        packet(seq, 0, payload, marker=seq == len(payloads) - 1)
        for seq, payload in enumerate(payloads)
    ]
    assert push_all(depacketizer, items) == []
    assert (depacketizer.dropped, depacketizer.keyframe_needed) == (1, True)
    follow = push_all(depacketizer, [packet(len(payloads), 3000, b"\x10" + KEYFRAME, True)])
    assert [frame.timestamp for frame in follow] == [3000]


@pytest.mark.parametrize(
    ("data", "emitted"),
    [
        (b"", False),
        (b"\x11\x02", False),  # shorter than the 3-byte frame tag
        (b"\x11\x02\x00", True),  # an interframe's tag alone is a frame
        (b"\x10\x02\x00", False),  # a key frame's header is 10 bytes
        (KEYFRAME[:9], False),
        (KEYFRAME[:10], True),
    ],
)
def test_frame_header_length(data: bytes, emitted: bool) -> None:
    """RFC 6386 §9.1: a frame holds its 3-byte tag, a key frame its 10-byte header; a shorter
    one is dropped and a key frame asked for."""
    depacketizer = Vp8Depacketizer(wait_for_keyframe=False)
    out = push_all(depacketizer, [packet(1, 0, b"\x10" + data, marker=True)])
    assert [frame.data for frame in out] == ([data] if emitted else [])
    assert depacketizer.dropped == (0 if emitted else 1)


def test_a_frame_whose_marker_is_lost_is_dropped() -> None:
    """The next timestamp closes a frame whose marker packet was lost, but the frame may miss
    its tail (RFC 7741 §4.1): it is dropped, and the stream resumes at the next whole frame."""
    depacketizer = Vp8Depacketizer()
    items: list[RtpPacket | Lost] = [
        packet(1, 0, b"\x10" + KEYFRAME),
        Lost(2, 0),
        packet(3, 3000, b"\x10" + KEYFRAME, marker=True),
        packet(4, 6000, b"\x10" + KEYFRAME, marker=True),
    ]
    out = push_all(depacketizer, items)
    assert 0 not in [frame.timestamp for frame in out]
    assert [frame.timestamp for frame in out][-1:] == [6000]
    assert depacketizer.dropped >= 1
