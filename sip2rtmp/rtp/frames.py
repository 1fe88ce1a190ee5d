"""What every video depacketizer shares: cutting an ordered packet stream into frames.

A frame is the packets of one RTP timestamp, closed by the marker bit or by the next
timestamp (RFC 3550 §5.1, RFC 6184 §5.1, RFC 7741 §4.1). A gap in sequence numbers, or a lost
slot reported by the jitter buffer, damages the frame it falls into: a damaged frame is
dropped whole, never emitted half.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, TypeVar

from sip2rtmp.rtp.jitterbuffer import Lost, Playout, Resync
from sip2rtmp.rtp.packet import RtpPacket

FrameT = TypeVar("FrameT")


class FrameAssembler(ABC, Generic[FrameT]):
    """Sequencing and damage tracking; subclasses parse payloads and build frames."""

    def __init__(self, *, wait_for_keyframe: bool = True) -> None:
        self.wait_for_keyframe = wait_for_keyframe
        self.keyframe_needed = True
        self.dropped = 0
        self.emitted = 0
        self._ts: int | None = None
        self._damaged = False
        self._gap = False
        self._expected_seq: int | None = None

    def push(self, item: Playout) -> list[FrameT]:
        """Feed one jitter-buffer item; returns the frames completed by it."""
        out: list[FrameT] = []
        if isinstance(item, Lost):
            self._gap = True
            self._expected_seq = (item.seq + 1) & 0xFFFF
            return out
        if isinstance(item, Resync):
            self._finish(out)
            self._gap = False
            self._expected_seq = None
            self.keyframe_needed = True
            return out
        seq = item.sequence_number
        if self._expected_seq is not None and seq != self._expected_seq:
            self._gap = True
        self._expected_seq = (seq + 1) & 0xFFFF
        if self._ts is not None and item.timestamp != self._ts:
            self._damaged |= self._gap
            self._finish(out)
        if self._gap:
            self._damaged = True
            self._gap = False
        self._add(item)
        self._ts = item.timestamp
        if item.marker:
            self._finish(out)
        return out

    @abstractmethod
    def _add(self, packet: RtpPacket) -> None:
        """Take one packet's payload into the frame being built (mark it damaged if bad)."""

    @abstractmethod
    def _finish(self, out: list[FrameT]) -> None:
        """Close the frame being built; append it to `out` only if it is whole."""
