"""RTP fixed header parse/serialise (RFC 3550 §5.1), kept cheap for the per-packet path."""

from __future__ import annotations

import struct

__all__ = ["RtpPacket", "RtpParseError", "is_rtcp"]

_HEADER = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HH")


class RtpParseError(ValueError):
    """The datagram is not a well-formed RTP packet."""


def is_rtcp(data: bytes) -> bool:
    """Tell RTCP from RTP on a shared port by the second byte (RFC 5761 §4)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


class RtpPacket:
    """One RTP packet: header fields plus payload, padding already removed."""

    __slots__ = (
        "csrc",
        "extension",
        "extension_profile",
        "marker",
        "payload",
        "payload_type",
        "sequence_number",
        "ssrc",
        "timestamp",
    )

    def __init__(
        self,
        payload_type: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        payload: bytes = b"",
        *,
        marker: bool = False,
        csrc: tuple[int, ...] = (),
        extension_profile: int | None = None,
        extension: bytes | None = None,
    ) -> None:
        self.payload_type = payload_type
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload = payload
        self.marker = marker
        self.csrc = csrc
        self.extension_profile = extension_profile
        self.extension = extension

    def __repr__(self) -> str:
        return (
            f"RtpPacket(pt={self.payload_type}, seq={self.sequence_number}, "
            f"ts={self.timestamp}, ssrc={self.ssrc:#010x}, marker={self.marker}, "
            f"payload={len(self.payload)}B)"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RtpPacket):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Decode a datagram; the header extension is kept opaque (RFC 3550 §5.3.1)."""
        length = len(data)
        if length < 12:
            raise RtpParseError(f"RTP packet too short ({length} bytes)")
        first, second, seq, ts, ssrc = _HEADER.unpack_from(data)
        if first >> 6 != 2:
            raise RtpParseError(f"RTP version {first >> 6}, expected 2")
        offset = 12
        cc = first & 0x0F
        csrc: tuple[int, ...] = ()
        if cc:
            end = offset + 4 * cc
            if end > length:
                raise RtpParseError("CSRC list runs past the end of the packet")
            csrc = struct.unpack_from(f"!{cc}I", data, offset)
            offset = end
        profile: int | None = None
        extension: bytes | None = None
        if first & 0x10:
            if offset + 4 > length:
                raise RtpParseError("header extension runs past the end of the packet")
            profile, words = _EXTENSION.unpack_from(data, offset)
            end = offset + 4 + 4 * words
            if end > length:
                raise RtpParseError("header extension runs past the end of the packet")
            extension = bytes(data[offset + 4 : end])
            offset = end
        end = length
        if first & 0x20:
            if length == offset:
                raise RtpParseError("padding bit set on a packet without padding")
            pad = data[-1]
            if pad == 0 or pad > length - offset:
                raise RtpParseError(f"invalid padding length {pad}")
            end -= pad
        return cls(
            second & 0x7F,
            seq,
            ts,
            ssrc,
            bytes(data[offset:end]),
            marker=bool(second & 0x80),
            csrc=csrc,
            extension_profile=profile,
            extension=extension,
        )

    def serialize(self) -> bytes:
        """Encode without padding (nothing we send needs block alignment)."""
        first = 0x80 | len(self.csrc)
        parts = [b""]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            first |= 0x10
            ext = self.extension + b"\x00" * (-len(self.extension) % 4)
            parts.append(_EXTENSION.pack(self.extension_profile or 0, len(ext) // 4))
            parts.append(ext)
        parts[0] = _HEADER.pack(
            first,
            (0x80 if self.marker else 0) | self.payload_type,
            self.sequence_number,
            self.timestamp,
            self.ssrc,
        )
        if len(parts) == 1:
            return parts[0] + self.payload
        parts.append(self.payload)
        return b"".join(parts)
