"""Deadline-driven jitter buffer: ordering, loss markers, adaptation and resync."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from sip2rtmp.rtp.jitterbuffer import JitterBuffer, Lost, Playout, Resync
from sip2rtmp.rtp.packet import RtpPacket

CLOCK = 8000
STEP = 160  # 20 ms at 8 kHz


def audio(seq: int, ts: int, ssrc: int = 1) -> RtpPacket:
    return RtpPacket(0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, b"x")


def run(
    buffer: JitterBuffer, arrivals: list[tuple[float, RtpPacket]]
) -> list[tuple[float, Playout]]:
    """Drive the buffer like the asyncio shell: pop exactly at each next_deadline."""
    out: list[tuple[float, Playout]] = []

    def drain(until: float) -> None:
        while (deadline := buffer.next_deadline()) is not None and deadline <= until:
            items = buffer.pop(deadline)
            assert items, "next_deadline promised output"
            out.extend((deadline, item) for item in items)

    for arrival, packet in sorted(arrivals, key=lambda pair: pair[0]):
        drain(arrival)
        buffer.push(packet, arrival)
    drain(math.inf)
    return out


def seq_of(item: Playout) -> int:
    assert not isinstance(item, Resync)
    return item.seq if isinstance(item, Lost) else item.sequence_number


def test_packet_waits_for_its_deadline() -> None:
    buffer = JitterBuffer(CLOCK, min_depth=0.05)
    assert buffer.next_deadline() is None
    buffer.push(audio(1, 0), 10.0)
    assert buffer.next_deadline() == pytest.approx(10.05)
    assert buffer.pop(10.04) == []
    assert [p.sequence_number for p in buffer.pop(10.05)] == [1]  # type: ignore[union-attr]
    assert buffer.next_deadline() is None


def test_reordering_is_undone() -> None:
    buffer = JitterBuffer(CLOCK)
    buffer.push(audio(1, 0), 0.0)
    buffer.push(audio(3, 320), 0.04)
    buffer.push(audio(2, 160), 0.041)
    assert [seq_of(i) for i in buffer.pop(1.0)] == [1, 2, 3]
    assert buffer.stats.reordered == 1
    assert buffer.stats.lost == 0


def test_hole_becomes_lost_at_its_own_deadline_then_late_packet_is_dropped() -> None:
    buffer = JitterBuffer(CLOCK, min_depth=0.04)
    buffer.push(audio(1, 1000), 0.0)
    buffer.push(audio(3, 1320), 0.04)
    assert buffer.pop(0.04) == [audio(1, 1000)]
    assert buffer.next_deadline() == pytest.approx(0.06)  # slot of seq 2, ts 1160
    assert buffer.pop(0.06) == [Lost(2, 1160)]
    buffer.push(audio(2, 1160), 0.065)
    assert buffer.depth > 0.04  # a late packet widens the buffer a little
    assert buffer.pop(0.1) == [audio(3, 1320)]
    assert buffer.stats.late == 1
    assert buffer.stats.lost == 1


def test_duplicates_are_dropped() -> None:
    buffer = JitterBuffer(CLOCK)
    for arrival in (0.0, 0.001, 0.002):
        buffer.push(audio(5, 0), arrival)
    assert buffer.pop(1.0) == [audio(5, 0)]
    buffer.push(audio(5, 0), 1.1)
    assert buffer.pop(2.0) == []
    assert buffer.stats.duplicate == 3


def test_early_stragglers_before_first_playout_are_kept() -> None:
    buffer = JitterBuffer(CLOCK)
    buffer.push(audio(10, 1600), 0.0)
    buffer.push(audio(9, 1440), 0.005)
    assert [seq_of(i) for i in buffer.pop(1.0)] == [9, 10]


def test_ssrc_change_flushes_and_resyncs() -> None:
    buffer = JitterBuffer(CLOCK)
    buffer.push(audio(1, 0), 0.0)
    buffer.push(audio(2, 160), 0.02)
    buffer.push(audio(500, 90000, ssrc=2), 0.03)
    items = buffer.pop(0.03)
    assert items == [audio(1, 0), audio(2, 160), Resync(2, 90000)]
    assert [seq_of(i) for i in buffer.pop(1.0)] == [500]
    buffer.push(audio(3, 320), 0.5)  # straggler from the old source
    assert buffer.stats.late == 1
    assert buffer.stats.resyncs == 1


def test_timestamp_jump_resyncs_but_dtx_silence_does_not() -> None:
    buffer = JitterBuffer(CLOCK)
    buffer.push(audio(1, 0), 0.0)
    buffer.push(audio(2, 160), 0.02)
    # five seconds of DTX: timestamps and the wall clock both move on
    buffer.push(audio(3, 160 + 5 * CLOCK), 5.02)
    items = buffer.pop(10.0)
    assert [seq_of(i) for i in items] == [1, 2, 3]
    # the sender's timestamp leaps 100 s while only 20 ms pass
    buffer.push(audio(4, 200 * CLOCK), 5.04)
    items = buffer.pop(5.04)
    assert items == [Resync(1, 200 * CLOCK)]
    assert [seq_of(i) for i in buffer.pop(6.0)] == [4]


def test_sequence_restart_resyncs() -> None:
    buffer = JitterBuffer(CLOCK)
    for i in range(3):
        buffer.push(audio(100 + i, 160 * i), 0.02 * i)
    buffer.push(audio(40000, 480), 0.06)  # probation: dropped until confirmed
    buffer.push(audio(40001, 640), 0.08)
    items = buffer.pop(1.0)
    assert [seq_of(i) for i in items if not isinstance(i, Resync)] == [100, 101, 102, 40001]
    assert any(isinstance(i, Resync) for i in items)


def test_video_packets_share_a_deadline() -> None:
    buffer = JitterBuffer(90000)
    for frame in range(3):
        for part in range(4):
            packet = RtpPacket(96, frame * 4 + part, frame * 3000, 9, b"v")
            buffer.push(packet, frame / 30 + part * 0.001)
    out = run(buffer, [])
    assert [seq_of(i) for _, i in out] == list(range(12))
    times = sorted({t for t, _ in out})
    assert len(times) == 3


def simulate(
    *,
    count: int,
    jitter: float,
    loss: float = 0.0,
    duplicate: float = 0.0,
    seed: int = 1,
    first_seq: int = 65000,
    first_ts: int = 0xFFFFFFFF - 20 * STEP,
) -> tuple[JitterBuffer, list[tuple[float, Playout]], set[int]]:
    rng = random.Random(seed)
    arrivals: list[tuple[float, RtpPacket]] = []
    dropped: set[int] = set()
    for i in range(count):
        packet = audio(first_seq + i, first_ts + STEP * i)
        sent = 100.0 + 0.02 * i
        if rng.random() < loss and 0 < i < count - 1:
            dropped.add(packet.sequence_number)
            continue
        arrivals.append((sent + 0.03 + rng.uniform(0, jitter), packet))
        if rng.random() < duplicate:
            arrivals.append((sent + 0.03 + rng.uniform(0, jitter), packet))
    buffer = JitterBuffer(CLOCK, min_depth=0.04, max_depth=0.3)
    return buffer, run(buffer, arrivals), dropped


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_timeline_is_continuous_under_loss_duplication_reordering_and_wrap(seed: int) -> None:
    buffer, out, dropped = simulate(count=1500, jitter=0.06, loss=0.05, duplicate=0.03, seed=seed)
    items = [item for _, item in out]
    assert not any(isinstance(item, Resync) for item in items)
    seqs = [seq_of(item) for item in items]
    expected = [(65000 + i) & 0xFFFF for i in range(1500)]
    assert seqs == expected  # every slot covered, in order, across the 16-bit wrap
    timestamps = [item.timestamp for item in items]
    assert all((b - a) & 0xFFFFFFFF == STEP for a, b in itertools.pairwise(timestamps))
    lost = {item.seq for item in items if isinstance(item, Lost)}
    assert dropped <= lost
    stats = buffer.stats
    assert stats.lost == len(lost) == len(dropped) + stats.late
    assert stats.late < 0.01 * 1500
    assert stats.duplicate > 0 and stats.reordered > 0
    # playout is paced by deadlines: output times never go backwards
    times = [t for t, _ in out]
    assert times == sorted(times)


def test_depth_adapts_to_jitter_and_back() -> None:
    calm, _, _ = simulate(count=500, jitter=0.0)
    assert calm.depth == pytest.approx(0.04)
    rough, _, _ = simulate(count=1500, jitter=0.06)
    assert 0.05 < rough.depth < 0.3
    assert rough.stats.jitter_ms > 10

    # after the jitter stops, depth falls back smoothly towards the floor
    buffer = JitterBuffer(CLOCK)
    rng = random.Random(5)
    depths = []
    for i in range(3000):
        extra = rng.uniform(0, 0.06) if i < 1000 else 0.0
        buffer.push(audio(i, STEP * i), 0.02 * i + extra)
        buffer.pop(0.02 * i + extra)
        depths.append(buffer.depth)
    assert max(depths[:1000]) > 0.05
    assert depths[-1] < 0.045
    steps = [abs(b - a) for a, b in itertools.pairwise(depths)]
    assert max(steps) < 0.015  # no jumps: adaptation is gradual


def test_large_jitter_is_capped_at_the_ceiling() -> None:
    buffer, _, _ = simulate(count=1000, jitter=1.5, seed=4)
    assert buffer.depth <= 0.3


def test_a_late_pop_keeps_each_items_scheduled_deadline() -> None:
    """A caller that was busy pops late; what was due, and when, must not move with it."""
    jb = JitterBuffer(8000, min_depth=0.04, max_depth=0.04)
    for index in range(5):
        jb.push(audio(index, index * 160), 10.0 + index * 0.02)
    items = jb.pop(10.5)  # 400 ms after the last one was due
    assert [seq_of(item) for item in items] == [0, 1, 2, 3, 4]
    assert jb.last_deadline == pytest.approx(10.0 + 4 * 0.02 + 0.04)
    due = [jb.deadline_of(item.timestamp) for item in items]
    assert due == pytest.approx([10.0 + index * 0.02 + 0.04 for index in range(5)])


def test_a_sender_falling_behind_its_timestamps_moves_the_schedule_with_it() -> None:
    """A sender 6 % slower than its RTP clock (a starved sender that never catches up): each
    packet comes after the last one's deadline would put it. The schedule follows, so no
    packet is due before it came and none is lost or late."""
    jb = JitterBuffer(CLOCK, min_depth=0.04, max_depth=0.3)
    arrivals = [(10.0 + seq * 0.0212, audio(seq, seq * STEP)) for seq in range(500)]
    out = run(jb, arrivals)
    came = {packet.sequence_number: at for at, packet in arrivals}
    assert [seq_of(item) for _, item in out] == list(range(500))
    assert not any(isinstance(item, Lost) for _, item in out)
    assert jb.stats.late == 0
    behind = [came[seq_of(item)] - deadline for deadline, item in out]
    assert max(behind) <= 1e-9, f"a packet was due {max(behind) * 1000:.0f} ms before it came"
