"""ReceiveStats (RFC 3550 A.1, A.3, A.8)."""

from __future__ import annotations

from sip2rtmp.rtp.stats import ReceiveStats, SeqVerdict


def feed(stats: ReceiveStats, seqs: list[int], step: float = 0.02) -> list[SeqVerdict]:
    verdicts = []
    for i, seq in enumerate(seqs):
        verdict, _ = stats.update(seq, 160 * i, i * step)
        verdicts.append(verdict)
    return verdicts


def test_loss_and_wraparound() -> None:
    stats = ReceiveStats(1, 8000)
    seqs = [65530, 65531, 65533, 65534, 65535, 0, 1, 3]
    assert all(v is SeqVerdict.NEW for v in feed(stats, seqs))
    assert stats.extended_highest_seq == 65536 + 3
    assert stats.expected == 10
    assert stats.received == 8
    assert stats.lost == 2
    block = stats.report_block(now=1.0)
    assert block.cumulative_lost == 2
    assert block.fraction_lost == (2 << 8) // 10
    assert block.highest_sequence == 65539


def test_duplicates_and_reordering() -> None:
    stats = ReceiveStats(1, 8000)
    verdicts = feed(stats, [10, 12, 11, 11, 12, 13])
    assert verdicts == [
        SeqVerdict.NEW,
        SeqVerdict.NEW,
        SeqVerdict.REORDERED,
        SeqVerdict.DUPLICATE,
        SeqVerdict.DUPLICATE,
        SeqVerdict.NEW,
    ]
    assert stats.duplicates == 2
    assert stats.reordered == 1
    assert stats.lost == 0


def test_fraction_lost_is_per_interval() -> None:
    stats = ReceiveStats(1, 8000)
    feed(stats, [0, 2, 4, 6])
    assert stats.report_block(1.0).fraction_lost == (3 << 8) // 7
    stats.update(7, 0, 1.0)
    stats.update(8, 0, 1.0)
    assert stats.report_block(2.0).fraction_lost == 0


def test_restart_after_confirmed_jump() -> None:
    stats = ReceiveStats(1, 8000)
    feed(stats, [100, 101, 102])
    assert stats.update(30000, 0, 1.0)[0] is SeqVerdict.PROBATION
    assert stats.update(30001, 160, 1.02)[0] is SeqVerdict.RESTART
    assert stats.restarts == 1
    assert stats.expected == 1
    assert stats.update(30002, 320, 1.04)[0] is SeqVerdict.NEW


def test_jitter_constant_delay_is_zero_then_grows() -> None:
    stats = ReceiveStats(1, 8000)
    for i in range(50):
        stats.update(i, 160 * i, 0.5 + 0.02 * i)
    assert stats.jitter < 1e-6
    for i in range(50, 100):
        stats.update(i, 160 * i, 0.5 + 0.02 * i + (0.01 if i % 2 else 0.0))
    assert 60 < stats.jitter <= 80  # converges towards |D| = 80 timestamp units
    assert 7.5 < stats.jitter_ms <= 10


def test_timestamp_jump_does_not_pollute_jitter() -> None:
    stats = ReceiveStats(1, 8000)
    stats.update(1, 0, 0.0)
    stats.update(2, 160, 0.02)
    stats.update(3, 160 + 8000 * 30, 0.04)
    assert stats.jitter == 0


def test_lsr_and_dlsr() -> None:
    stats = ReceiveStats(7, 90000)
    stats.update(1, 0, 0.0)
    stats.note_sender_report(0x1122334455667788, arrival=10.0)
    block = stats.report_block(now=10.5)
    assert block.lsr == 0x33445566
    assert block.dlsr == 32768
