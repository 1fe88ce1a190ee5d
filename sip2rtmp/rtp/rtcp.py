"""RTCP compound packets (RFC 3550 §6, RFC 4585 §6, RFC 5104 §4.3.1): parse and build.

Every packet type is a frozen dataclass with ``serialize()``; ``parse_compound`` turns a
datagram into a list of them, skipping APP and types we have no use for.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "Bye",
    "FullIntraRequest",
    "GenericNack",
    "PictureLossIndication",
    "ReceiverReport",
    "ReportBlock",
    "RtcpPacket",
    "RtcpParseError",
    "SdesChunk",
    "SenderReport",
    "SourceDescription",
    "compound",
    "ntp_from_unix",
    "ntp_middle32",
    "parse_compound",
]

SR, RR, SDES, BYE, APP, RTPFB, PSFB = 200, 201, 202, 203, 204, 205, 206
SDES_CNAME = 1
_NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01

_COMMON = struct.Struct("!BBH")
_BLOCK = struct.Struct("!IB3sIIII")
_SR_INFO = struct.Struct("!IQIII")
_SET_BITS = tuple(tuple(bit + 1 for bit in range(8) if byte >> bit & 1) for byte in range(256))
"""For each byte of a NACK's BLP, the offsets from its PID that it marks lost (RFC 4585
§6.2.1): a table, so a 64 KB NACK costs a lookup per byte instead of a test per bit."""


class RtcpParseError(ValueError):
    """The datagram is not a well-formed RTCP compound packet."""


def ntp_from_unix(unix_time: float) -> int:
    """64-bit NTP timestamp for a Unix time (RFC 3550 §4)."""
    return round((unix_time + _NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp, as carried in LSR (RFC 3550 §6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


def _header(count: int, packet_type: int, body_length: int) -> bytes:
    return _COMMON.pack(0x80 | count, packet_type, body_length // 4)


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """Reception report for one source (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int

    def serialize(self) -> bytes:
        lost = max(-0x800000, min(0x7FFFFF, self.cumulative_lost)) & 0xFFFFFF
        return _BLOCK.pack(
            self.ssrc,
            self.fraction_lost,
            lost.to_bytes(3, "big"),
            self.highest_sequence & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.lsr,
            self.dlsr,
        )

    @classmethod
    def _parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        cumulative = int.from_bytes(lost, "big", signed=True)
        return cls(ssrc, fraction, cumulative, highest, jitter, lsr, dlsr)


def _parse_blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    if offset + 24 * count > len(body):
        raise RtcpParseError("report blocks run past the end of the packet")
    return tuple(ReportBlock._parse(body, offset + 24 * i) for i in range(count))


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR (RFC 3550 §6.4.1); ``ntp_timestamp`` with ``rtp_timestamp`` anchors A/V sync."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    def serialize(self) -> bytes:
        body = _SR_INFO.pack(
            self.ssrc,
            self.ntp_timestamp,
            self.rtp_timestamp & 0xFFFFFFFF,
            self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
        )
        body += b"".join(block.serialize() for block in self.reports)
        return _header(len(self.reports), SR, len(body)) + body


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR (RFC 3550 §6.4.2)."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def serialize(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(b.serialize() for b in self.reports)
        return _header(len(self.reports), RR, len(body)) + body


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """Items for one source; ``items`` maps the SDES item type to its raw text."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    @property
    def cname(self) -> str | None:
        for kind, value in self.items:
            if kind == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES (RFC 3550 §6.5)."""

    chunks: tuple[SdesChunk, ...]

    @classmethod
    def cname(cls, ssrc: int, cname: str) -> SourceDescription:
        return cls((SdesChunk(ssrc, ((SDES_CNAME, cname.encode()[:255]),)),))

    def serialize(self) -> bytes:
        body = bytearray()
        for chunk in self.chunks:
            body += struct.pack("!I", chunk.ssrc)
            for kind, value in chunk.items:
                body += bytes((kind, len(value))) + value
            body += b"\x00" * (4 - len(body) % 4)  # END item plus padding to a word
        return _header(len(self.chunks), SDES, len(body)) + bytes(body)


@dataclass(frozen=True, slots=True)
class Bye:
    """BYE (RFC 3550 §6.6)."""

    ssrcs: tuple[int, ...]
    reason: str = ""

    def serialize(self) -> bytes:
        body = b"".join(struct.pack("!I", s) for s in self.ssrcs)
        if self.reason:
            text = self.reason.encode()[:255]
            body += bytes((len(text),)) + text
            body += b"\x00" * (-len(body) % 4)
        return _header(len(self.ssrcs), BYE, len(body)) + body


@dataclass(frozen=True, slots=True)
class GenericNack:
    """Transport-layer generic NACK (RFC 4585 §6.2.1), expanded to sequence numbers."""

    sender_ssrc: int
    media_ssrc: int
    lost: tuple[int, ...]

    def serialize(self) -> bytes:
        pairs: list[tuple[int, int]] = []
        for seq in self.lost:
            if pairs:
                pid, blp = pairs[-1]
                delta = (seq - pid) & 0xFFFF
                if 1 <= delta <= 16:
                    pairs[-1] = (pid, blp | (1 << (delta - 1)))
                    continue
            pairs.append((seq & 0xFFFF, 0))
        body = struct.pack("!II", self.sender_ssrc, self.media_ssrc)
        body += b"".join(struct.pack("!HH", pid, blp) for pid, blp in pairs)
        return _header(1, RTPFB, len(body)) + body


@dataclass(frozen=True, slots=True)
class PictureLossIndication:
    """PLI (RFC 4585 §6.3.1): ask the sender for a decodable picture."""

    sender_ssrc: int
    media_ssrc: int

    def serialize(self) -> bytes:
        return _header(1, PSFB, 8) + struct.pack("!II", self.sender_ssrc, self.media_ssrc)


@dataclass(frozen=True, slots=True)
class FullIntraRequest:
    """FIR (RFC 5104 §4.3.1); ``entries`` are (media SSRC, command sequence number)."""

    sender_ssrc: int
    entries: tuple[tuple[int, int], ...] = field(default=())

    def serialize(self) -> bytes:
        body = struct.pack("!II", self.sender_ssrc, 0)
        body += b"".join(struct.pack("!IB3x", ssrc, seq & 0xFF) for ssrc, seq in self.entries)
        return _header(4, PSFB, len(body)) + body


RtcpPacket = (
    SenderReport
    | ReceiverReport
    | SourceDescription
    | Bye
    | GenericNack
    | PictureLossIndication
    | FullIntraRequest
)


def compound(*packets: RtcpPacket) -> bytes:
    """Concatenate packets into one datagram (RFC 3550 §6.1)."""
    return b"".join(p.serialize() for p in packets)


def _parse_sdes(body: bytes, count: int) -> SourceDescription:
    chunks: list[SdesChunk] = []
    offset = 0
    for _ in range(count):
        if offset + 4 > len(body):
            raise RtcpParseError("SDES chunk runs past the end of the packet")
        ssrc = int.from_bytes(body[offset : offset + 4], "big")
        offset += 4
        items: list[tuple[int, bytes]] = []
        while True:
            if offset >= len(body):
                raise RtcpParseError("SDES chunk without END item")
            kind = body[offset]
            if kind == 0:
                offset += 4 - offset % 4  # END, then pad to the next word
                break
            if offset + 2 > len(body) or offset + 2 + body[offset + 1] > len(body):
                raise RtcpParseError("SDES item runs past the end of the packet")
            size = body[offset + 1]
            items.append((kind, bytes(body[offset + 2 : offset + 2 + size])))
            offset += 2 + size
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def _parse_bye(body: bytes, count: int) -> Bye:
    if 4 * count > len(body):
        raise RtcpParseError("BYE source list runs past the end of the packet")
    ssrcs = struct.unpack_from(f"!{count}I", body)
    reason = ""
    offset = 4 * count
    if offset < len(body):
        size = body[offset]
        if offset + 1 + size > len(body):
            raise RtcpParseError("BYE reason runs past the end of the packet")
        reason = body[offset + 1 : offset + 1 + size].decode("utf-8", "replace")
    return Bye(ssrcs, reason)


def _parse_feedback(packet_type: int, fmt: int, body: bytes) -> RtcpPacket | None:
    if len(body) < 8:
        raise RtcpParseError("feedback packet shorter than its SSRC fields")
    sender, media = struct.unpack_from("!II", body)
    fci = body[8:]
    if packet_type == RTPFB and fmt == 1:
        if len(fci) % 4:
            raise RtcpParseError("generic NACK FCI is not a whole number of words")
        lost: list[int] = []
        for pid, blp in struct.iter_unpack("!HH", fci):
            lost.append(pid)
            lost += [(pid + bit) & 0xFFFF for bit in _SET_BITS[blp & 0xFF]]
            lost += [(pid + 8 + bit) & 0xFFFF for bit in _SET_BITS[blp >> 8]]
        return GenericNack(sender, media, tuple(lost))
    if packet_type == PSFB and fmt == 1:
        return PictureLossIndication(sender, media)
    if packet_type == PSFB and fmt == 4:
        if len(fci) % 8:
            raise RtcpParseError("FIR FCI is not a whole number of entries")
        entries = tuple((ssrc, seq) for ssrc, seq in struct.iter_unpack("!IB3x", fci))
        return FullIntraRequest(sender, entries)
    return None


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Decode every packet in a compound datagram (RFC 3550 §6.1, A.2 validity checks).

    APP, XR and feedback formats we do not act on are skipped; reduced-size RTCP
    (RFC 5506, a lone PLI for instance) is accepted.
    """
    packets: list[RtcpPacket] = []
    offset = 0
    total = len(data)
    if total < 4:
        raise RtcpParseError(f"RTCP datagram too short ({total} bytes)")
    while offset < total:
        if offset + 4 > total:
            raise RtcpParseError("truncated RTCP header")
        first, packet_type, words = _COMMON.unpack_from(data, offset)
        if first >> 6 != 2:
            raise RtcpParseError(f"RTCP version {first >> 6}, expected 2")
        end = offset + 4 + 4 * words
        if end > total:
            raise RtcpParseError("RTCP packet length runs past the datagram")
        body_end = end
        if first & 0x20:
            if end != total:
                raise RtcpParseError("padding is only allowed on the last packet")
            pad = data[end - 1]
            if pad == 0 or pad > 4 * words:
                raise RtcpParseError(f"invalid RTCP padding length {pad}")
            body_end -= pad
        body = bytes(data[offset + 4 : body_end])
        count = first & 0x1F
        parsed = _parse_one(packet_type, count, body)
        if parsed is not None:
            packets.append(parsed)
        offset = end
    return packets


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket | None:
    if packet_type == SR:
        if len(body) < 24:
            raise RtcpParseError("SR shorter than its sender info")
        ssrc, ntp, rtp_ts, packets, octets = _SR_INFO.unpack_from(body)
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, _parse_blocks(body, 24, count))
    if packet_type == RR:
        if len(body) < 4:
            raise RtcpParseError("RR shorter than its SSRC")
        ssrc = int.from_bytes(body[:4], "big")
        return ReceiverReport(ssrc, _parse_blocks(body, 4, count))
    if packet_type == SDES:
        return _parse_sdes(body, count)
    if packet_type == BYE:
        return _parse_bye(body, count)
    if packet_type in (RTPFB, PSFB):
        return _parse_feedback(packet_type, count, body)
    if 192 <= packet_type <= 223:
        return None  # APP, XR and other RTCP types carry nothing we use
    raise RtcpParseError(f"not an RTCP packet type: {packet_type}")
