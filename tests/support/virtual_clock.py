"""An asyncio event loop on a virtual clock, for tests of what the code schedules."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """Polls without waiting, and moves the loop's clock to the end of the wait instead."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if not ready:
            if timeout is None:
                raise RuntimeError("the loop would wait forever: nothing is booked")
            self._loop.now += timeout
        return ready


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to its next timer instead of sleeping: callbacks run at
    exactly the instants the code booked, however loaded the machine is, so these tests judge
    the schedule itself and never a machine's latency."""

    def __init__(self, start: float = 100.013) -> None:
        self.now = start  # deliberately between two grid instants
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.now


def run_on_virtual_clock(scenario: Coroutine[object, object, T]) -> T:
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(scenario)
    finally:
        loop.close()


class TimerCount:
    """Counts the timers armed on ``loop`` for callbacks ``counted`` accepts, from now on."""

    def __init__(self, loop: asyncio.AbstractEventLoop, counted: Callable[[object], bool]) -> None:
        self.count = 0
        original = loop.call_at

        def counting_call_at(when, callback, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.count += counted(callback)
            return original(when, callback, *args, **kwargs)

        loop.call_at = counting_call_at  # type: ignore[method-assign]
