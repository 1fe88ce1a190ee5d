"""VP8 over RTP (RFC 7741): payload descriptor, frame reassembly and a packetizer.

Like the H.264 side, a frame with a missing packet is dropped whole and
``keyframe_needed`` asks the caller for a PLI.
"""

from __future__ import annotations

from dataclasses import dataclass

from sip2rtmp.rtp.frames import FrameAssembler
from sip2rtmp.rtp.packet import RtpPacket

__all__ = [
    "Vp8Depacketizer",
    "Vp8Descriptor",
    "Vp8Frame",
    "Vp8ParseError",
    "keyframe_size",
    "packetize_vp8",
    "parse_descriptor",
]

_KEYFRAME_START_CODE = b"\x9d\x01\x2a"


class Vp8ParseError(ValueError):
    """A VP8 payload descriptor that cannot be decoded."""


@dataclass(frozen=True, slots=True)
class Vp8Descriptor:
    """RFC 7741 §4.2 payload descriptor; ``size`` is its length in bytes."""

    non_reference: bool
    start: bool
    partition_id: int
    picture_id: int | None
    tl0_pic_idx: int | None
    tid: int | None
    layer_sync: bool
    key_idx: int | None
    size: int


@dataclass(frozen=True, slots=True)
class Vp8Frame:
    """One compressed VP8 frame; the size is known for keyframes (RFC 6386 §9.1)."""

    timestamp: int
    data: bytes
    keyframe: bool
    width: int | None
    height: int | None


def parse_descriptor(payload: bytes) -> Vp8Descriptor:
    """Decode the descriptor at the front of a VP8 RTP payload."""
    length = len(payload)
    if length < 1:
        raise Vp8ParseError("empty VP8 payload")
    first = payload[0]
    offset = 1
    picture_id = tl0 = tid = key_idx = None
    layer_sync = False
    if first & 0x80:
        if length < 2:
            raise Vp8ParseError("VP8 descriptor truncated after X")
        ext = payload[1]
        offset = 2
        if ext & 0x80:
            if offset >= length:
                raise Vp8ParseError("VP8 descriptor truncated in PictureID")
            picture_id = payload[offset] & 0x7F
            if payload[offset] & 0x80:
                if offset + 1 >= length:
                    raise Vp8ParseError("VP8 descriptor truncated in PictureID")
                picture_id = (picture_id << 8) | payload[offset + 1]
                offset += 1
            offset += 1
        if ext & 0x40:
            if offset >= length:
                raise Vp8ParseError("VP8 descriptor truncated in TL0PICIDX")
            tl0 = payload[offset]
            offset += 1
        if ext & 0x30:
            if offset >= length:
                raise Vp8ParseError("VP8 descriptor truncated in TID/KEYIDX")
            byte = payload[offset]
            if ext & 0x20:
                tid = byte >> 6
                layer_sync = bool(byte & 0x20)
            if ext & 0x10:
                key_idx = byte & 0x1F
            offset += 1
    return Vp8Descriptor(
        non_reference=bool(first & 0x20),
        start=bool(first & 0x10),
        partition_id=first & 0x07,  # |X|R|N|S|R| PID |: the bit above PID is reserved
        picture_id=picture_id,
        tl0_pic_idx=tl0,
        tid=tid,
        layer_sync=layer_sync,
        key_idx=key_idx,
        size=offset,
    )


def keyframe_size(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a keyframe's header, or None for an interframe (RFC 7741 §4.3)."""
    if len(frame) < 10 or frame[0] & 0x01 or frame[3:6] != _KEYFRAME_START_CODE:
        return None
    width = (frame[6] | frame[7] << 8) & 0x3FFF
    height = (frame[8] | frame[9] << 8) & 0x3FFF
    return width, height


def packetize_vp8(
    frame: bytes, max_payload: int = 1200, picture_id: int | None = None
) -> list[bytes]:
    """RTP payloads for one frame, all in partition 0; the caller marks the last one."""
    header_size = 1 if picture_id is None else 4
    chunk = max_payload - header_size
    if chunk <= 0:
        raise ValueError("max_payload too small for the VP8 descriptor")
    payloads: list[bytes] = []
    for offset in range(0, max(len(frame), 1), chunk):
        start = 0x10 if offset == 0 else 0
        if picture_id is None:
            descriptor = bytes((start,))
        else:
            pid = picture_id & 0x7FFF
            descriptor = bytes((0x80 | start, 0x80, 0x80 | pid >> 8, pid & 0xFF))
        payloads.append(descriptor + frame[offset : offset + chunk])
    return payloads


class Vp8Depacketizer(FrameAssembler["Vp8Frame"]):
    """Reassembles VP8 frames from ordered RTP packets and loss markers."""

    def __init__(self, *, wait_for_keyframe: bool = True) -> None:
        super().__init__(wait_for_keyframe=wait_for_keyframe)
        self.resolution: tuple[int, int] | None = None
        self._parts: list[bytes] = []

    def _add(self, packet: RtpPacket) -> None:
        try:
            descriptor = parse_descriptor(packet.payload)
        except Vp8ParseError:
            self._damaged = True
            return
        begins = descriptor.start and descriptor.partition_id == 0
        if begins == (self._ts is not None and bool(self._parts)):
            self._damaged = True  # a second frame start, or a frame without its start
        self._parts.append(packet.payload[descriptor.size :])

    def _release(self) -> None:
        self._parts = []

    def _finish(self, out: list[Vp8Frame]) -> None:
        """Close the frame being built; emit it only if every packet made it."""
        data = b"".join(self._parts)
        self._release()
        closed = self._close()
        if closed is None:
            return
        timestamp, damaged = closed
        keyframe = len(data) >= 3 and not data[0] & 0x01
        size = keyframe_size(data) if keyframe else None
        if damaged or len(data) < 3 or (keyframe and size is None):
            self._drop()
            return
        if size is not None:
            self.resolution = size
        width, height = size if size is not None else (None, None)
        self._deliver(Vp8Frame(timestamp, data, keyframe, width, height), out)
