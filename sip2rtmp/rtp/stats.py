"""Per-source reception statistics (RFC 3550 §6.4.1, A.1, A.3, A.8).

One ``ReceiveStats`` per remote SSRC. It extends 16-bit sequence numbers, tells new,
reordered and duplicate packets apart, estimates interarrival jitter and produces the
report block for our RR/SR.
"""

from __future__ import annotations

from enum import IntEnum

from sip2rtmp.rtp.rtcp import ReportBlock

__all__ = ["ReceiveStats", "SeqVerdict"]

MAX_DROPOUT = 3000  # RFC 3550 A.1: forward jump still taken as loss
MAX_MISORDER = 100  # RFC 3550 A.1: backward jump still taken as reordering
SEQ_MOD = 1 << 16


class SeqVerdict(IntEnum):
    """What a packet's sequence number means relative to what came before."""

    NEW = 0
    REORDERED = 1
    DUPLICATE = 2
    RESTART = 3
    PROBATION = 4


class ReceiveStats:
    """Sequence tracking, loss and jitter for one SSRC; all times in seconds."""

    __slots__ = (
        "_bad_seq",
        "_base_seq",
        "_cycles",
        "_expected_prior",
        "_last_transit",
        "_max_seq",
        "_received_prior",
        "_seen",
        "_sr_arrival",
        "_sr_middle32",
        "_started",
        "clock_rate",
        "duplicates",
        "fraction_lost",
        "jitter",
        "late",
        "received",
        "reordered",
        "restarts",
        "ssrc",
    )

    def __init__(self, ssrc: int, clock_rate: int) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.received = 0
        self.duplicates = 0
        self.reordered = 0
        self.late = 0
        self.restarts = 0
        self.jitter = 0.0
        self.fraction_lost = 0
        self._started = False
        self._base_seq = 0
        self._max_seq = 0
        self._cycles = 0
        self._bad_seq = SEQ_MOD + 1
        self._received_prior = 0
        self._expected_prior = 0
        self._last_transit: float | None = None
        self._seen = bytearray(SEQ_MOD)
        self._sr_middle32 = 0
        self._sr_arrival = 0.0

    @property
    def extended_highest_seq(self) -> int:
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        return self.extended_highest_seq - self._base_seq + 1 if self._started else 0

    @property
    def lost(self) -> int:
        """Packets never received; duplicates are not counted, so this is never negative."""
        return max(0, self.expected - self.received)

    @property
    def jitter_ms(self) -> float:
        return 1000.0 * self.jitter / self.clock_rate

    def _init_seq(self, seq: int) -> None:
        self._started = True
        self._base_seq = seq
        self._max_seq = seq
        self._cycles = 0
        self._bad_seq = SEQ_MOD + 1
        self.received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._seen[:] = bytes(SEQ_MOD)
        self._seen[seq] = 1

    def _clear(self, start: int, count: int) -> None:
        """Forget seen-flags for ``count`` sequence numbers from ``start`` (they are new)."""
        if count >= SEQ_MOD:
            self._seen[:] = bytes(SEQ_MOD)
            return
        end = start + count
        if end <= SEQ_MOD:
            self._seen[start:end] = bytes(count)
        else:
            self._seen[start:] = bytes(SEQ_MOD - start)
            self._seen[: end - SEQ_MOD] = bytes(end - SEQ_MOD)

    def update(self, seq: int, timestamp: int, arrival: float) -> tuple[SeqVerdict, int]:
        """Account for one packet; returns its verdict and extended sequence number.

        The sequence logic is RFC 3550 A.1 without probation: a jump beyond MAX_DROPOUT
        restarts tracking once the next packet confirms it.
        """
        if not self._started:
            self._init_seq(seq)
            verdict = SeqVerdict.NEW
        else:
            udelta = (seq - self._max_seq) & 0xFFFF
            if udelta == 0:
                self.duplicates += 1
                return SeqVerdict.DUPLICATE, self.extended_highest_seq
            if udelta < MAX_DROPOUT:
                if seq < self._max_seq:
                    self._cycles += SEQ_MOD
                self._clear((self._max_seq + 1) & 0xFFFF, udelta - 1)
                self._max_seq = seq
                self._seen[seq] = 1
                verdict = SeqVerdict.NEW
            elif udelta <= SEQ_MOD - MAX_MISORDER:
                if seq != self._bad_seq:
                    self._bad_seq = (seq + 1) & 0xFFFF
                    return SeqVerdict.PROBATION, self._cycles + seq
                self._init_seq(seq)
                self.restarts += 1
                self._last_transit = None
                verdict = SeqVerdict.RESTART
            else:
                extended = self._cycles + seq - (SEQ_MOD if seq > self._max_seq else 0)
                if self._seen[seq]:
                    self.duplicates += 1
                    return SeqVerdict.DUPLICATE, extended
                self._seen[seq] = 1
                self._base_seq = min(self._base_seq, extended)
                self.reordered += 1
                self.received += 1
                self._update_jitter(timestamp, arrival)
                return SeqVerdict.REORDERED, extended
        self.received += 1
        self._update_jitter(timestamp, arrival)
        return verdict, self.extended_highest_seq

    def _update_jitter(self, timestamp: int, arrival: float) -> None:
        """RFC 3550 A.8; a gap over one second is a timeline jump, not jitter."""
        transit = arrival * self.clock_rate - timestamp
        last = self._last_transit
        self._last_transit = transit
        if last is None:
            return
        delta = abs(transit - last)
        if delta > 0x80000000:
            delta = abs(delta - 0x100000000)
        if delta > self.clock_rate:
            return
        self.jitter += (delta - self.jitter) / 16.0

    def note_late(self) -> None:
        """Count a packet that arrived after its playout slot (reported by the jitter buffer)."""
        self.late += 1

    def note_sender_report(self, ntp_timestamp: int, arrival: float) -> None:
        """Remember the source's last SR for LSR/DLSR (RFC 3550 §6.4.1)."""
        self._sr_middle32 = (ntp_timestamp >> 16) & 0xFFFFFFFF
        self._sr_arrival = arrival

    def report_block(self, now: float) -> ReportBlock:
        """Report block for the interval since the previous call (RFC 3550 A.3)."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            self.fraction_lost = 0
        else:
            self.fraction_lost = (lost_interval << 8) // expected_interval
        dlsr = 0
        if self._sr_middle32:
            dlsr = min(0xFFFFFFFF, max(0, int((now - self._sr_arrival) * 65536)))
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=min(255, self.fraction_lost),
            cumulative_lost=expected - self.received,
            highest_sequence=self.extended_highest_seq,
            jitter=int(self.jitter),
            lsr=self._sr_middle32,
            dlsr=dlsr,
        )
