"""Deadline-driven jitter buffer: media leaves at its playout time, not when packets arrive.

Each packet's playout deadline is the arrival-time image of its RTP timestamp plus a target
depth: ``base + ts / clock + depth``, where ``base`` tracks the smallest transit seen (the
least-delayed packet) and ``depth`` follows the RFC 3550 A.8 jitter estimate between a floor
and a ceiling. ``pop(now)`` hands out, in sequence order, everything whose deadline has
passed, with an explicit ``Lost`` for every hole, so the decoder conceals instead of the
timeline silently shrinking. A timestamp jump, a sequence restart or a new SSRC flushes what
is buffered and emits ``Resync`` so the consumer re-anchors its clock.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from sip2rtmp.rtp.packet import RtpPacket
from sip2rtmp.rtp.stats import ReceiveStats, SeqVerdict

__all__ = ["JitterBuffer", "JitterStats", "Lost", "Playout", "Resync"]

_HALF = 0x80000000
_INF = float("inf")


@dataclass(frozen=True, slots=True)
class Lost:
    """A sequence number whose playout slot passed without the packet (conceal it).

    ``timestamp`` is interpolated between the neighbours, exact for constant-ptime audio.
    """

    seq: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class Resync:
    """The timeline restarts here (new SSRC, timestamp jump or sequence restart)."""

    ssrc: int
    timestamp: int


Playout = RtpPacket | Lost | Resync


@dataclass(frozen=True, slots=True)
class JitterStats:
    """Counters since the buffer was created."""

    received: int
    lost: int
    late: int
    duplicate: int
    reordered: int
    resyncs: int
    jitter_ms: float
    depth_ms: float
    buffered: int


class JitterBuffer:
    """One stream's playout queue; feed ``push``, drain ``pop`` at ``next_deadline``."""

    def __init__(
        self,
        clock_rate: int,
        *,
        min_depth: float = 0.04,
        max_depth: float = 0.3,
        jitter_factor: float = 3.0,
        resync_threshold: float = 1.0,
        rise_time: float = 0.5,
        fall_time: float = 5.0,
        drift_time: float = 20.0,
    ) -> None:
        if not 0 < min_depth <= max_depth:
            raise ValueError("need 0 < min_depth <= max_depth")
        self.clock_rate = clock_rate
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.jitter_factor = jitter_factor
        self.resync_threshold = resync_threshold
        self._rise_time = rise_time
        self._fall_time = fall_time
        self._drift_time = drift_time
        self._depth = min_depth
        self._ssrc: int | None = None
        self._retired_ssrc: int | None = None
        self._tracker = ReceiveStats(0, clock_rate)
        self._pending: dict[int, tuple[RtpPacket, int]] = {}
        self._heap: list[int] = []
        self._next = 0
        self._played = False
        self._last_ts = 0
        self._ts_raw = 0
        self._ts_ext = 0
        self._base = 0.0
        self._last_arrival = 0.0
        self._ready: list[Playout] = []
        self._ready_deadline = 0.0
        self._received = 0
        self._lost = 0
        self._late = 0
        self._duplicate = 0
        self._reordered = 0
        self._resyncs = 0

    @property
    def depth(self) -> float:
        """Current target depth in seconds."""
        return self._depth

    @property
    def stats(self) -> JitterStats:
        return JitterStats(
            received=self._received,
            lost=self._lost,
            late=self._late,
            duplicate=self._duplicate,
            reordered=self._reordered,
            resyncs=self._resyncs,
            jitter_ms=self._tracker.jitter_ms,
            depth_ms=1000.0 * self._depth,
            buffered=len(self._pending),
        )

    def _deadline(self, ext_ts: int) -> float:
        return self._base + ext_ts / self.clock_rate + self._depth

    def _anchor(self, packet: RtpPacket, arrival: float, ext_seq: int, *, fresh: bool) -> None:
        """Start a timeline at ``packet``; a fresh stream also accepts earlier stragglers."""
        self._ts_raw = packet.timestamp
        self._ts_ext = packet.timestamp
        self._last_ts = packet.timestamp
        self._base = arrival - packet.timestamp / self.clock_rate
        self._next = ext_seq
        self._played = not fresh

    def _flush(self, packet: RtpPacket, arrival: float) -> None:
        """Queue everything buffered for immediate output, then a ``Resync``."""
        self._drain(_INF, self._ready)
        self._ready.append(Resync(packet.ssrc, packet.timestamp))
        self._ready_deadline = arrival
        self._resyncs += 1

    def push(self, packet: RtpPacket, arrival: float) -> None:
        """Accept one packet that arrived at ``arrival`` (seconds, monotonic)."""
        if packet.ssrc != self._ssrc:
            if packet.ssrc == self._retired_ssrc:
                self._late += 1
                return
            if self._ssrc is not None:
                self._flush(packet, arrival)
                self._retired_ssrc = self._ssrc
            self._ssrc = packet.ssrc
            self._tracker = ReceiveStats(packet.ssrc, self.clock_rate)
            verdict, ext_seq = self._tracker.update(
                packet.sequence_number, packet.timestamp, arrival
            )
            self._anchor(packet, arrival, ext_seq, fresh=True)
            self._last_arrival = arrival
        else:
            verdict, ext_seq = self._tracker.update(
                packet.sequence_number, packet.timestamp, arrival
            )
            if verdict is SeqVerdict.DUPLICATE:
                self._duplicate += 1
                return
            if verdict is SeqVerdict.PROBATION:
                return
            if verdict is SeqVerdict.RESTART:
                self._flush(packet, arrival)
                self._anchor(packet, arrival, ext_seq, fresh=False)
            elif ext_seq < self._next:
                if self._played:
                    self._late_packet(packet, arrival)
                    return
                self._next = ext_seq
        delta = ((packet.timestamp - self._ts_raw + _HALF) & 0xFFFFFFFF) - _HALF
        ext_ts = self._ts_ext + delta
        transit = arrival - ext_ts / self.clock_rate
        if abs(transit - self._base) > self.resync_threshold:
            self._flush(packet, arrival)
            self._anchor(packet, arrival, ext_seq, fresh=False)
            ext_ts = packet.timestamp
            transit = self._base
        elif delta > 0:
            self._ts_raw = packet.timestamp
            self._ts_ext = ext_ts
        if verdict is SeqVerdict.REORDERED:
            self._reordered += 1
        self._received += 1
        self._pending[ext_seq] = (packet, ext_ts)
        heapq.heappush(self._heap, ext_seq)
        self._adapt(transit, arrival)

    def _late_packet(self, packet: RtpPacket, arrival: float) -> None:
        """Drop a packet whose slot already played; widen the buffer a little."""
        self._late += 1
        self._tracker.note_late()
        delta = ((packet.timestamp - self._ts_raw + _HALF) & 0xFFFFFFFF) - _HALF
        lateness = arrival - self._deadline(self._ts_ext + delta)
        if lateness > 0:
            self._depth = min(self.max_depth, self._depth + min(lateness, 0.01))

    def _adapt(self, transit: float, arrival: float) -> None:
        """Track the least-delayed transit and steer depth towards factor × jitter."""
        dt = min(1.0, max(0.0, arrival - self._last_arrival))
        self._last_arrival = arrival
        if transit < self._base:
            self._base = transit
        elif transit > self._base + self._depth:
            # Came after its own deadline with nothing played in its place: the sender fell
            # behind its timestamps (a clock running slow, a stalled sender that does not
            # catch up). Move the schedule so it plays now, rather than every later packet
            # running later and later against a deadline already past.
            self._base = transit - self._depth
        else:
            self._base += (transit - self._base) * min(1.0, dt / self._drift_time)
        jitter = self._tracker.jitter / self.clock_rate
        target = min(self.max_depth, max(self.min_depth, self.jitter_factor * jitter))
        tau = self._rise_time if target > self._depth else self._fall_time
        self._depth += (target - self._depth) * min(1.0, dt / tau)

    def _slot_ts(self, first: int) -> int:
        """Timestamp of the hole at ``self._next``, interpolated up to packet ``first``."""
        ext_ts = self._pending[first][1]
        return self._last_ts + (ext_ts - self._last_ts) // (first - self._next + 1)

    def _drain(self, now: float, out: list[Playout]) -> None:
        heap = self._heap
        pending = self._pending
        while heap:
            first = heap[0]
            if first == self._next:
                packet, ext_ts = pending[first]
                if self._deadline(ext_ts) > now:
                    return
                heapq.heappop(heap)
                del pending[first]
                out.append(packet)
                self._last_ts = ext_ts
            else:
                slot_ts = self._slot_ts(first)
                if self._deadline(slot_ts) > now:
                    return
                out.append(Lost(self._next & 0xFFFF, slot_ts & 0xFFFFFFFF))
                self._lost += 1
                self._last_ts = slot_ts
            self._next += 1
            self._played = True

    @property
    def last_deadline(self) -> float:
        """When the item popped last was due: its scheduled time, which a late pop (a busy
        caller) does not move. Earlier items of the same pop were due earlier by their
        timestamp difference."""
        return self._deadline(self._last_ts)

    def deadline_of(self, timestamp: int) -> float:
        """When an item of the latest pop with RTP ``timestamp`` was due: ``last_deadline``
        less its timestamp distance back from the last item (modulo 2^32)."""
        back = (self._last_ts - timestamp) & 0xFFFFFFFF
        return self.last_deadline - back / self.clock_rate

    def pop(self, now: float) -> list[Playout]:
        """Everything due at ``now``, in order; holes come out as ``Lost``."""
        out: list[Playout] = []
        if self._ready:
            out.extend(self._ready)
            self._ready.clear()
        self._drain(now, out)
        return out

    def next_deadline(self) -> float | None:
        """When ``pop`` next has something to return, or None while the buffer is empty."""
        if self._ready:
            return self._ready_deadline
        if not self._heap:
            return None
        first = self._heap[0]
        if first == self._next:
            return self._deadline(self._pending[first][1])
        return self._deadline(self._slot_ts(first))
