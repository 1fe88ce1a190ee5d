"""Jitter buffer rules measured exactly: schedule, depth adaptation, resync and counters.

Where a rule is tested at its boundary (a packet exactly at its deadline, exactly the resync
threshold off its schedule) times and depths are binary fractions, so the float arithmetic
there is exact and the boundary is really hit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from sip2rtmp.rtp.jitterbuffer import JitterBuffer, JitterStats, Lost, Resync
from sip2rtmp.rtp.packet import RtpPacket
from tests.unit.rtp.test_jitterbuffer import CLOCK, STEP, audio, seq_of

DEPTH = 0.0625  # a fixed depth (floor = ceiling) that is exact in binary


def fixed_depth(**options: float) -> JitterBuffer:
    return JitterBuffer(CLOCK, min_depth=DEPTH, max_depth=DEPTH, **options)


def restart_sequence(buffer: JitterBuffer, at: float) -> None:
    """A jump beyond MAX_DROPOUT, confirmed by the next packet (RFC 3550 A.1)."""
    buffer.push(audio(40000, 3 * STEP), at - 0.02)
    buffer.push(audio(40001, 4 * STEP), at)


def jump_timestamp(buffer: JitterBuffer, at: float) -> None:
    buffer.push(audio(4, 200 * CLOCK), at)  # seq 3 not yet here


def change_ssrc(buffer: JitterBuffer, at: float) -> None:
    buffer.push(audio(500, 90000, ssrc=2), at)


@pytest.mark.parametrize("cause", [restart_sequence, jump_timestamp, change_ssrc])
def test_resync_is_due_when_its_packet_came(cause: Callable[[JitterBuffer, float], None]) -> None:
    """What was buffered and the ``Resync`` are handed out at once, not at a deadline."""
    buffer = JitterBuffer(CLOCK)
    buffer.push(audio(1, 0), 0.0)
    buffer.push(audio(2, STEP), 0.02)
    cause(buffer, 0.1)
    assert buffer.next_deadline() == 0.1
    items = buffer.pop(0.1)
    assert [seq_of(i) for i in items[:2]] == [1, 2]
    assert isinstance(items[2], Resync)
    assert buffer.stats.resyncs == 1


def test_every_resync_is_counted_and_retired_sources_stay_late() -> None:
    buffer = JitterBuffer(CLOCK)
    for ssrc in (1, 2, 3):
        buffer.push(audio(10 * ssrc, 0, ssrc=ssrc), float(ssrc))
    buffer.push(audio(11, STEP, ssrc=2), 3.1)  # from the source retired last
    buffer.push(audio(12, 2 * STEP, ssrc=2), 3.2)
    assert buffer.stats.resyncs == 2
    assert buffer.stats.late == 2
    items = buffer.pop(10.0)
    assert [i for i in items if isinstance(i, Resync)] == [Resync(2, 0), Resync(3, 0)]


@pytest.mark.parametrize(
    ("cause", "straggler"),
    [(restart_sequence, audio(40000, 3 * STEP)), (jump_timestamp, audio(3, 2 * STEP))],
)
def test_a_restarted_timeline_drops_what_precedes_its_first_packet(
    cause: Callable[[JitterBuffer, float], None], straggler: RtpPacket
) -> None:
    """Unlike a new stream, a timeline restarted mid-call does not reach back: a straggler
    numbered before the packet that restarted it is late, not a second restart."""
    buffer = JitterBuffer(CLOCK)
    buffer.push(audio(1, 0), 0.0)
    buffer.push(audio(2, STEP), 0.02)
    cause(buffer, 0.1)
    resync = buffer.pop(0.1)[-1]
    assert isinstance(resync, Resync)
    buffer.push(straggler, 0.101)
    played = buffer.pop(1.0)
    assert [(seq_of(i), i.timestamp) for i in played if not isinstance(i, Resync)] == [
        (straggler.sequence_number + 1, resync.timestamp)
    ]
    assert buffer.stats.late == 1
    assert buffer.stats.resyncs == 1


@pytest.mark.parametrize(("arrival", "resyncs"), [(2.0, 0), (2.125, 1)])
def test_a_packet_exactly_the_threshold_off_its_schedule_keeps_the_timeline(
    arrival: float, resyncs: int
) -> None:
    """``resync_threshold`` (1 s) is the largest offset still taken as the same timeline."""
    buffer = JitterBuffer(CLOCK)
    buffer.push(audio(1, 0), 0.0)
    buffer.push(audio(2, CLOCK), arrival)  # one second of media, ``arrival - 1`` s late
    assert buffer.stats.resyncs == resyncs
    assert [seq_of(i) for i in buffer.pop(math.inf) if not isinstance(i, Resync)] == [1, 2]


@pytest.mark.parametrize(
    ("options", "timestamp", "arrival", "base"),
    [
        ({}, 3 * CLOCK, 3.015625, 0.015625 * 1 / 20),  # a 3 s gap drifts as 1 s does
        ({"drift_time": 0.5}, 3 * CLOCK, 3.015625, 0.015625),  # up to the transit, not past
        ({}, CLOCK, 1.0 + DEPTH, DEPTH * 1 / 20),  # exactly at its deadline: on time
        ({}, STEP, 0.52, 0.52 - 0.02 - DEPTH),  # after its deadline: plays as it came
        ({}, STEP, 0.01, 0.01 - 0.02),  # the least-delayed packet sets the schedule
    ],
)
def test_schedule_follows_transit(
    options: dict[str, float], timestamp: int, arrival: float, base: float
) -> None:
    """Deadline = base + ts / clock + depth; base is the least transit seen, drifting towards
    later transits with time constant ``drift_time`` (a gap counts as at most 1 s), and
    jumping to a packet that came after its deadline with nothing played in its place.
    ``drift_time`` is 20 s unless given."""
    buffer = fixed_depth(**options)
    buffer.push(audio(1, 0), 0.0)
    buffer.push(audio(2, timestamp), arrival)
    assert [seq_of(i) for i in buffer.pop(math.inf)] == [1, 2]
    assert buffer.last_deadline == pytest.approx(base + timestamp / CLOCK + DEPTH, abs=1e-12)


def test_before_anything_plays_the_timeline_is_anchored_at_the_first_packet() -> None:
    buffer = fixed_depth()
    buffer.push(audio(7, 800), 10.0)
    assert buffer.next_deadline() == pytest.approx(10.0 + DEPTH)
    assert buffer.last_deadline == buffer.next_deadline()
    assert buffer.deadline_of(640) == pytest.approx(10.0 - 0.02 + DEPTH)


def test_depth_rises_within_rise_time_and_falls_within_fall_time() -> None:
    """Depth steers towards 3 × the RFC 3550 A.8 jitter: J += (|D| - J) / 16, closing the
    gap by dt / rise_time (0.5 s) when rising and dt / fall_time (5 s) when falling; the
    defaults, which the relays use."""
    buffer = JitterBuffer(CLOCK)
    buffer.push(audio(1, 0), 0.0)
    buffer.push(audio(2, STEP), 0.34)  # 320 ms late: J = 0.32 / 16 s, target 0.06 s
    assert buffer.depth == pytest.approx(0.04 + (0.06 - 0.04) * 0.34 / 0.5)

    buffer = JitterBuffer(CLOCK)
    buffer.push(audio(1, 0), 0.0)
    buffer.push(audio(2, STEP), 0.82)  # J = 0.05 s; 0.82 s is past rise_time: at the target
    assert buffer.depth == pytest.approx(0.15)
    buffer.push(audio(3, 2 * STEP), 0.84)  # on time: J = 0.05 × 15/16, target 0.140625
    assert buffer.depth == pytest.approx(0.15 + (0.140625 - 0.15) * 0.02 / 5.0)


def test_depth_stops_at_the_300_ms_ceiling() -> None:
    """Packets a second apart, every other one 0.9 s late: 3 × jitter passes 1 s, and the
    default ceiling holds the depth at 300 ms."""
    buffer = JitterBuffer(CLOCK)
    for seq in range(12):
        buffer.push(audio(seq, seq * CLOCK), seq + 0.9 * (seq % 2))
    assert buffer.stats.resyncs == 0
    assert 3 * buffer.stats.jitter_ms > 1000
    assert buffer.depth == pytest.approx(0.3)


@pytest.mark.parametrize(("lateness", "widening"), [(0.005, 0.005), (0.05, 0.01)])
def test_a_late_packet_widens_the_buffer_by_its_lateness_up_to_10_ms(
    lateness: float, widening: float
) -> None:
    buffer = JitterBuffer(CLOCK, min_depth=0.04)
    buffer.push(audio(1, 1000), 0.0)
    buffer.push(audio(3, 1320), 0.04)
    assert buffer.pop(0.06) == [audio(1, 1000), Lost(2, 1160)]  # seq 2 was due at 0.06
    buffer.push(audio(2, 1160), 0.06 + lateness)
    assert buffer.stats.late == 1
    assert buffer.depth == pytest.approx(0.04 + widening)


def test_a_new_buffer_reports_zero_and_its_floor() -> None:
    assert JitterBuffer(CLOCK).stats == JitterStats(0, 0, 0, 0, 0, 0, 0.0, 40.0, 0)


@pytest.mark.parametrize(("min_depth", "max_depth"), [(0.0, 0.3), (-0.01, 0.3), (0.31, 0.3)])
def test_depth_bounds_must_be_positive_and_ordered(min_depth: float, max_depth: float) -> None:
    with pytest.raises(ValueError, match=r"^need 0 < min_depth <= max_depth$"):
        JitterBuffer(CLOCK, min_depth=min_depth, max_depth=max_depth)
    assert JitterBuffer(CLOCK, min_depth=max_depth, max_depth=max_depth).depth == max_depth


def test_counters() -> None:
    buffer = JitterBuffer(CLOCK)
    for seq, arrival in ((1, 0.0), (3, 0.04), (2, 0.041), (5, 0.08), (4, 0.081), (4, 0.082)):
        buffer.push(audio(seq, STEP * (seq - 1)), arrival)
    stats = buffer.stats
    assert (stats.received, stats.reordered, stats.duplicate, stats.buffered) == (5, 2, 1, 5)
