"""What every video depacketizer shares: cutting an ordered packet stream into frames.

A frame is the packets of one RTP timestamp, closed by the marker bit or by the next
timestamp (RFC 3550 §5.1, RFC 6184 §5.1, RFC 7741 §4.1). A gap in sequence numbers, or a lost
slot reported by the jitter buffer, damages the frame it falls into: a damaged frame is
dropped whole, never emitted half.

Memory stays bounded whatever arrives: a frame over `MAX_FRAME_BYTES` or `MAX_FRAME_PACKETS`
(a sender that never sets the marker and never moves the timestamp, for one) is damaged, its
buffers are released at once, and nothing more of it is kept until the next frame begins.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, Protocol, TypeVar

from sip2rtmp.rtp.jitterbuffer import Lost, Playout, Resync
from sip2rtmp.rtp.packet import RtpPacket

MAX_FRAME_BYTES = 4 * 1024 * 1024
"""Payload bytes per frame. The largest 1080p picture any H.264 level allows is 1.6 MB
(384 bytes per macroblock at MinCR 2, Annex A.3.1), 783 KB at levels 3.1 to 4.2; the offer asks
for level 3.1, whose 720p pictures stay under 350 KB."""
MAX_FRAME_PACKETS = 4096
"""Packets per frame: `MAX_FRAME_BYTES` in payloads of 1 KB; real senders fill 1,100 to 1,400
bytes. Bounds the per-packet overhead that tiny payloads would otherwise pile up."""


class _Frame(Protocol):
    @property
    def keyframe(self) -> bool: ...


FrameT = TypeVar("FrameT", bound=_Frame)


class FrameAssembler(ABC, Generic[FrameT]):
    """Sequencing, damage tracking and size caps; subclasses parse payloads and build frames."""

    def __init__(self, *, wait_for_keyframe: bool = True) -> None:
        self.wait_for_keyframe = wait_for_keyframe
        self.keyframe_needed = True
        self.dropped = 0
        """Frames not emitted: damaged ones, and delta frames while a keyframe is awaited."""
        self.damaged = 0
        """Frames that lost a packet (or grew past the caps): each one a loss seen."""
        self.emitted = 0
        self._ts: int | None = None
        self._damaged = False
        self._gap = False
        self._expected_seq: int | None = None
        self._packets = 0
        self._bytes = 0

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
        if not self._damaged:
            self._add(item)
            self._packets += 1
            self._bytes += len(item.payload)
            if self._packets > MAX_FRAME_PACKETS or self._bytes > MAX_FRAME_BYTES:
                self._damaged = True
            if self._damaged:
                self._release()  # it will be dropped: hold nothing of it until then
        self._ts = item.timestamp
        if item.marker:
            self._finish(out)
        return out

    def _close(self) -> tuple[int, bool] | None:
        """End the frame being built: its timestamp and whether it is damaged, or None if no
        frame was open. Clears the shared state; the caller takes its own buffers first."""
        timestamp = self._ts
        if timestamp is None:
            return None
        damaged = self._damaged
        self._ts = None
        self._damaged = False
        self._packets = self._bytes = 0
        return timestamp, damaged

    def _drop(self) -> None:
        """Count a damaged frame and ask for a keyframe, since what follows depends on it."""
        self.dropped += 1
        self.damaged += 1
        self.keyframe_needed = True

    def _deliver(self, frame: FrameT, out: list[FrameT]) -> None:
        """Emit a whole frame, unless it is a delta frame while a keyframe is awaited."""
        if frame.keyframe:
            self.keyframe_needed = False
        elif self.keyframe_needed and self.wait_for_keyframe:
            self.dropped += 1
            return
        self.emitted += 1
        out.append(frame)

    @abstractmethod
    def _add(self, packet: RtpPacket) -> None:
        """Take one packet's payload into the frame being built (mark it damaged if bad)."""

    @abstractmethod
    def _release(self) -> None:
        """Let go of everything kept of the frame being built."""

    @abstractmethod
    def _finish(self, out: list[FrameT]) -> None:
        """Close the frame being built; append it to `out` only if it is whole."""
