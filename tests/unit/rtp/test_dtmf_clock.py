"""Telephone-events on another clock than the audio's (RFC 4733 §2.1, §2.5.1.1): an Opus
call at 48 kHz whose answer has only ``telephone-event/8000``. Checked with the numbers."""

from __future__ import annotations

import pytest

from sip2rtmp.rtp.dtmf import EventClock


def test_at_the_audio_clock_the_event_timestamp_is_the_audio_timestamp() -> None:
    clock = EventClock()
    assert [clock.timestamp(ts, 8000, 8000) for ts in (12345, 14000, 2**32 - 1, 5)] == [
        12345,
        14000,
        2**32 - 1,
        5,
    ]


def test_events_at_8khz_beside_opus_count_elapsed_time_in_8khz_units() -> None:
    """The first event starts the event timeline at the audio timestamp; 2.5 s of Opus
    later (120,000 ticks) the next event is 20,000 ticks of 8 kHz further."""
    clock = EventClock()
    assert clock.timestamp(1_000_000, 48000, 8000) == 1_000_000
    assert clock.timestamp(1_000_000 + 120_000, 48000, 8000) == 1_020_000
    assert clock.timestamp(1_000_000 + 120_000 + 960, 48000, 8000) == 1_020_160


def test_the_event_timeline_continues_across_the_audio_wrap() -> None:
    """The audio timestamp wraps at 2**32 every 24.9 hours at 48 kHz; events keep counting
    on their own clock (their own wrap comes six times later)."""
    clock = EventClock()
    start = 2**32 - 4800  # 100 ms before the audio wraps
    assert clock.timestamp(start, 48000, 8000) == start
    assert clock.timestamp(4800, 48000, 8000) == (start + 1600) % 2**32
    assert clock.timestamp(4800 + 48000, 48000, 8000) == (start + 1600 + 8000) % 2**32


def test_events_faster_than_the_audio_clock_scale_up() -> None:
    """G.722's 8 kHz RTP clock with only telephone-event/48000 in the answer."""
    clock = EventClock()
    assert clock.timestamp(500, 8000, 48000) == 500
    assert clock.timestamp(660, 8000, 48000) == 500 + 960


def test_other_rates_start_a_new_event_timeline() -> None:
    clock = EventClock()
    clock.timestamp(100, 48000, 8000)
    clock.timestamp(48100, 48000, 8000)
    assert clock.timestamp(90_000, 8000, 8000) == 90_000
    assert clock.timestamp(90_160, 48000, 8000) == 90_160


def test_a_rate_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        EventClock().timestamp(0, 48000, 0)
