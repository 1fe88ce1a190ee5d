"""docs/performance.md's timing of audio toward the callee and of the outputs: packets of
20 ms leave in pairs on the 40 ms grid, the second up to 20 ms ahead of its time, and the
outputs are held 80 ms behind the jitter buffers' schedule."""

from __future__ import annotations

import asyncio
import math
from itertools import groupby

from sip2rtmp.media.pipeline import MediaConfig
from sip2rtmp.net.grid import GRID_S, Ticker
from sip2rtmp.relay import audio, core
from tests.support.virtual_clock import run_on_virtual_clock

TICKS = 40


def test_audio_leaves_in_pairs_the_second_up_to_20_ms_ahead() -> None:
    """The schedule the audio leg sends on (`Ticker(PTIME, ...)`), on a virtual clock: exactly
    what the code books, whatever the machine's load."""

    async def main() -> tuple[float, list[tuple[int, float]]]:
        loop = asyncio.get_running_loop()
        calls: list[tuple[int, float]] = []
        done = asyncio.Event()

        def tick(index: int) -> None:
            calls.append((index, loop.time()))
            if index + 1 >= TICKS:
                done.set()

        ticker = Ticker(audio.PTIME, tick)
        await asyncio.wait_for(done.wait(), 5)
        ticker.stop()
        return ticker._start, calls

    start, calls = run_on_virtual_clock(main())
    assert (audio.PTIME, GRID_S) == (0.02, 0.04)
    assert [index for index, _ in calls] == list(range(len(calls)))
    for index, at in calls:
        due = start + index * 0.02
        assert due - 0.02 - 1e-6 <= at <= due + 1e-6, f"packet {index} at {at - due:+.4f} s"
    # the ticks of one wake-up run within microseconds, inside one grid step
    wakeups = [
        [index for index, _ in group]
        for _, group in groupby(calls, key=lambda c: math.floor(c[1] / GRID_S))
    ]
    assert all(len(w) == 2 and w[0] % 2 == 0 for w in wakeups), wakeups


def test_outputs_are_held_80_ms_behind() -> None:
    assert MediaConfig().latency_s == 0.08


def test_the_media_thread_wakes_50_times_in_the_first_second_then_every_400_ms() -> None:
    config = MediaConfig()
    assert (config.start_s, config.start_tick_s, config.tick_s) == (1.0, 0.02, 0.4)


def test_video_events_follow_their_switch_within_half_a_second() -> None:
    """events.md: the relay polls what the stream carries every half second."""
    assert core.WATCH_INTERVAL == 0.5
