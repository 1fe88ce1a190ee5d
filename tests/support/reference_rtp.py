"""Reference readers of captured RTP, written from the RFCs and sharing no code with sip2rtmp.

They judge what the relay did with a callee's video, so they must not repeat the relay's own
depacketizers: a bug copied on both sides would cancel out. They are deliberately plain and
strict: a capture they cannot read whole fails the test rather than being guessed at.

- RTP fixed header: RFC 3550 §5.1; RTP and RTCP on one port told apart by RFC 5761 §4.
- H.264 payloads: RFC 6184 §5.6 (single NAL unit), §5.7.1 (STAP-A), §5.8 (FU-A); an access
  unit is every NAL unit of one RTP timestamp (§5.1), the marker bit on its last packet.
- FLV/MP4 H.264 samples: 4-byte length-prefixed NAL units and the AVCDecoderConfigurationRecord
  (ISO/IEC 14496-15 §5.2.4.1).
- VP8 payloads: RFC 7741 §4.2 (payload descriptor), §4.3 (payload header); the key frame's size
  from its uncompressed data chunk (RFC 6386 §9.1).
- RTCP feedback: PLI (RFC 4585 §6.3.1) and FIR (RFC 5104 §4.3.1) by packet type and FMT.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable
from dataclasses import dataclass

NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
STAP_A = 24
FU_A = 28
RTCP_PSFB = 206
"""Payload-specific feedback (RFC 4585 §6.1); FMT 1 is PLI, FMT 4 is FIR (RFC 5104 §4.3.1)."""
PLI = 1
FIR = 4


class CaptureError(ValueError):
    """The capture holds something the reference reader refuses to interpret."""


@dataclass(frozen=True)
class Rtp:
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload_type: int
    payload: bytes


def is_rtcp(datagram: bytes) -> bool:
    """RFC 5761 §4: with RTP and RTCP on one port, RTCP's second octet is 192..223."""
    return len(datagram) >= 2 and 192 <= datagram[1] <= 223


def parse_rtp(datagram: bytes) -> Rtp:
    """RFC 3550 §5.1: version 2, CSRCs (CC), a header extension (X) and padding (P) removed."""
    if len(datagram) < 12 or datagram[0] >> 6 != 2:
        raise CaptureError(f"not RTP version 2: {datagram[:12].hex()}")
    first, second, sequence, timestamp, ssrc = struct.unpack_from("!BBHII", datagram)
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if len(datagram) < offset + 4:
            raise CaptureError("truncated header extension")
        offset += 4 + 4 * struct.unpack_from("!H", datagram, offset + 2)[0]
    end = len(datagram) - (datagram[-1] if first & 0x20 else 0)
    if end < offset:
        raise CaptureError("header, extension and padding longer than the datagram")
    return Rtp(sequence, timestamp, ssrc, bool(second & 0x80), second & 0x7F, datagram[offset:end])


def in_order(datagrams: Iterable[bytes]) -> list[Rtp]:
    """The RTP packets of one stream (RTCP left out), checked to be complete and in order:
    each sequence number one more than the last (mod 2^16), one SSRC."""
    packets = [parse_rtp(d) for d in datagrams if not is_rtcp(d)]
    for before, after in itertools.pairwise(packets):
        if after.ssrc != before.ssrc:
            raise CaptureError(f"SSRC changed from {before.ssrc:#x} to {after.ssrc:#x}")
        if after.sequence != (before.sequence + 1) & 0xFFFF:
            raise CaptureError(f"sequence {before.sequence} followed by {after.sequence}")
    return packets


@dataclass(frozen=True)
class H264AccessUnit:
    timestamp: int
    nals: tuple[bytes, ...]

    @property
    def keyframe(self) -> bool:
        return any(nal[0] & 0x1F == NAL_IDR for nal in self.nals)

    @property
    def sample(self) -> bytes:
        """The access unit as an FLV/MP4 sample: each NAL unit after its 4-byte length."""
        return b"".join(len(nal).to_bytes(4, "big") + nal for nal in self.nals)


def h264_nals(payload: bytes, fragment: bytearray | None) -> tuple[list[bytes], bytearray | None]:
    """The NAL units one RTP payload completes, and the FU-A fragment still being built."""
    if not payload:
        raise CaptureError("empty H.264 payload")
    kind = payload[0] & 0x1F
    if kind != FU_A and fragment is not None:
        raise CaptureError("an FU-A fragment was left unfinished")
    if 1 <= kind <= 23:  # §5.6: the payload is the NAL unit
        return [payload], None
    if kind == STAP_A:  # §5.7.1: 16-bit size, NAL unit, repeated
        nals, offset = [], 1
        while offset < len(payload):
            (size,) = struct.unpack_from("!H", payload, offset)
            nal = payload[offset + 2 : offset + 2 + size]
            if size == 0 or len(nal) != size:
                raise CaptureError("STAP-A aggregation unit runs past the payload")
            nals.append(nal)
            offset += 2 + size
        return nals, None
    if kind == FU_A:  # §5.8: FU indicator, FU header (S, E, R, type), fragment
        if len(payload) < 3:
            raise CaptureError("FU-A shorter than its two header octets")
        start, end, nal_type = payload[1] & 0x80, payload[1] & 0x40, payload[1] & 0x1F
        if start:
            if fragment is not None:
                raise CaptureError("FU-A start inside an unfinished fragment")
            fragment = bytearray([payload[0] & 0xE0 | nal_type])
        elif fragment is None:
            raise CaptureError("FU-A continuation without a start")
        fragment += payload[2:]
        return ([bytes(fragment)], None) if end else ([], fragment)
    raise CaptureError(f"NAL unit type {kind} is not allowed in packetization-mode 1")


def h264_access_units(packets: Iterable[Rtp]) -> list[H264AccessUnit]:
    """Access units (§5.1) of a complete, ordered stream; each must end on its marker bit."""
    units: list[H264AccessUnit] = []
    nals: list[bytes] = []
    fragment: bytearray | None = None
    timestamp: int | None = None
    for packet in packets:
        if timestamp is not None and packet.timestamp != timestamp:
            raise CaptureError(f"timestamp {timestamp} ended without a marker bit")
        timestamp = packet.timestamp
        completed, fragment = h264_nals(packet.payload, fragment)
        nals += completed
        if packet.marker:
            if fragment is not None:
                raise CaptureError("marker bit inside an FU-A fragment")
            units.append(H264AccessUnit(packet.timestamp, tuple(nals)))
            nals, timestamp = [], None
    return units


@dataclass(frozen=True)
class AvcConfig:
    """The fields of an AVCDecoderConfigurationRecord a player needs (§5.2.4.1)."""

    profile: bytes
    """AVCProfileIndication, profile_compatibility, AVCLevelIndication."""
    length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]


def parse_avcc(record: bytes) -> AvcConfig:
    """An AVCDecoderConfigurationRecord read field by field."""
    if len(record) < 7 or record[0] != 1:
        raise CaptureError(f"not an AVCDecoderConfigurationRecord: {record[:8].hex()}")
    offset = 5
    sets: list[tuple[bytes, ...]] = []
    for count_mask in (0x1F, 0xFF):
        count = record[offset] & count_mask
        offset += 1
        found = []
        for _ in range(count):
            (size,) = struct.unpack_from("!H", record, offset)
            found.append(record[offset + 2 : offset + 2 + size])
            offset += 2 + size
        sets.append(tuple(found))
    return AvcConfig(record[1:4], (record[4] & 0x03) + 1, sets[0], sets[1])


@dataclass(frozen=True)
class Vp8Frame:
    timestamp: int
    data: bytes

    @property
    def keyframe(self) -> bool:
        """RFC 6386 §9.1: bit 0 of the frame tag is 0 for a key frame."""
        return not self.data[0] & 0x01

    @property
    def size(self) -> tuple[int, int]:
        """A key frame's width and height: 14 bits each after the start code 9d 01 2a."""
        if not self.keyframe or self.data[3:6] != b"\x9d\x01\x2a":
            raise CaptureError("not a VP8 key frame")
        width, height = struct.unpack_from("<HH", self.data, 6)
        return width & 0x3FFF, height & 0x3FFF


def vp8_payload(payload: bytes) -> tuple[bool, bytes]:
    """RFC 7741 §4.2: whether the packet starts a frame (S=1, PID=0), and its VP8 data."""
    if not payload:
        raise CaptureError("empty VP8 payload")
    offset = 1
    if payload[0] & 0x80:  # X: the extension octet I L T K follows
        extension = payload[1]
        offset = 2
        if extension & 0x80:  # I: picture ID, 15 bits when its M bit is set
            offset += 2 if payload[offset] & 0x80 else 1
        if extension & 0x40:  # L: TL0PICIDX
            offset += 1
        if extension & 0x30:  # T or K: TID/Y/KEYIDX
            offset += 1
    starts = bool(payload[0] & 0x10) and payload[0] & 0x07 == 0
    return starts, payload[offset:]


def vp8_frames(packets: Iterable[Rtp]) -> list[Vp8Frame]:
    """Frames of a complete, ordered stream: from a packet with S=1 to the marker bit."""
    frames: list[Vp8Frame] = []
    data: bytearray | None = None
    for packet in packets:
        starts, chunk = vp8_payload(packet.payload)
        if starts:
            data = bytearray()
        if data is None:
            raise CaptureError("VP8 data before the first frame's start")
        data += chunk
        if packet.marker:
            frames.append(Vp8Frame(packet.timestamp, bytes(data)))
            data = None
    return frames


def feedback_requests(datagrams: Iterable[bytes]) -> int:
    """PLI and FIR messages in (compound) RTCP datagrams (RFC 3550 §6.1, RFC 4585 §6.1)."""
    requests = 0
    for datagram in datagrams:
        offset = 0
        while is_rtcp(datagram[offset:]) and offset + 4 <= len(datagram):
            fmt, kind = datagram[offset] & 0x1F, datagram[offset + 1]
            if kind == RTCP_PSFB and fmt in (PLI, FIR):
                requests += 1
            offset += 4 * (struct.unpack_from("!H", datagram, offset + 2)[0] + 1)
    return requests
