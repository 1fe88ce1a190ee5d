"""The relay shell serves the core's timer on the call's wake-up grid (`sip2rtmp.net.grid`)."""

from __future__ import annotations

import asyncio

import pytest

from sip2rtmp.net.grid import GRID_S
from sip2rtmp.relay.options import GRID_STRIDES, Latency, MediaOptions
from sip2rtmp.relay.runner import Relay
from tests.support.virtual_clock import TimerCount, run_on_virtual_clock
from tests.unit.relay.test_core import settings


class _TimerOnlyCore:
    """A core with nothing to do but its timer, due ``after`` s from the start, then never."""

    ended = False

    def __init__(self, due: float) -> None:
        self.due: float | None = due
        self.fired_at: list[float] = []

    def next_action(self) -> None:
        return None

    def next_event(self) -> None:
        return None

    def get_timer(self) -> float | None:
        return self.due

    def handle_timer(self, now: float) -> None:
        self.fired_at.append(now)
        self.due = None


@pytest.mark.parametrize("latency", ["normal", "low"])
def test_the_core_timer_runs_on_the_grid_instants_the_media_wakes_at(latency: Latency) -> None:
    """The state polling and the other core timers wake the loop with the media work, up to
    a stride late, and never on a loop timer of their own."""
    stride = GRID_STRIDES[latency]

    async def scenario() -> tuple[list[float], float, int]:
        loop = asyncio.get_running_loop()
        relay = Relay(settings(), lambda event: None, MediaOptions(latency=latency))
        own_timers = TimerCount(loop, lambda callback: getattr(callback, "__self__", None) is relay)
        due = loop.time() + 0.013
        core = _TimerOnlyCore(due)
        relay._core = core  # type: ignore[assignment]
        relay._pump()
        await asyncio.sleep(4 * GRID_S)
        return core.fired_at, due, own_timers.count

    fired_at, due, own_timers = run_on_virtual_clock(scenario())
    assert len(fired_at) == 1
    instant = fired_at[0] / GRID_S
    assert instant == pytest.approx(round(instant), abs=1e-6)
    assert round(instant) % stride == 0
    assert 0 <= fired_at[0] - due < stride * GRID_S
    assert own_timers == 0
