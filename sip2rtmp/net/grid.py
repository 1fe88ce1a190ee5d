"""The event loop's shared wake-up grid: one timer for all the periodic work of a call.

Every wake-up of the loop costs more than the little work a media packet needs (cold caches,
the selector, the timer heap): on a small virtual machine an idle asyncio loop pays 60-220 µs
a wake-up (`benchmarks/wakeup_benchmark.py`), where an RTP packet's parsing and buffering
take about 20 µs. So the periodic work of every stream (draining sockets, jitter buffer
playout, packets sent toward the callee) runs on one 40 ms grid of the loop clock, from a
single loop timer per grid instant: one wake-up serves all of it, and no task, future or
timer handle is made per packet or per stream.

A call whose delay may be longer books every other instant only (a ``stride`` of 2: 80 ms),
which halves its wake-ups; instants of every stride are instants of the 40 ms grid, so calls
of both kinds on one loop still share theirs.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Callable

GRID_S = 0.04
"""Two audio packet times (RFC 3551 §4.2's default 20 ms ptime): each wake-up sends two
packets toward the callee, the second up to 20 ms ahead of its time, which any receiver's
jitter buffer absorbs; playout rounded up to the grid is at most 40 ms later, well inside the
media latency (``MediaConfig.latency_s``)."""

_EPSILON = 1e-9

Callback = Callable[[], None]

_GRIDS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Grid] = weakref.WeakKeyDictionary()


def grid_tick(when: float, stride: int = 1) -> int:
    """The index of the first grid instant at or after ``when`` (loop clock) whose index is a
    multiple of ``stride``."""
    return -(-math.ceil(when / GRID_S - _EPSILON) // stride) * stride


class Grid:
    """Runs callbacks at grid instants of one event loop. Get it with ``Grid.of(loop)``.

    Each callback has at most one pending call: asking again moves it. Callbacks run in the
    loop's thread; one that raises goes to the loop's exception handler and the others still
    run.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[Callback, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._armed_tick = 0
        self._firing = False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop | None = None) -> Grid:
        loop = loop or asyncio.get_running_loop()
        grid = _GRIDS.get(loop)
        if grid is None:
            grid = _GRIDS[loop] = cls(loop)
        return grid

    def call_at(self, when: float, callback: Callback, stride: int = 1) -> None:
        """Run ``callback`` at the first grid instant at or after ``when`` (of those a
        ``stride`` apart)."""
        tick = grid_tick(when, stride)
        self._due[callback] = tick
        if not self._firing and (self._timer is None or tick < self._armed_tick):
            self._arm(tick)

    def cancel(self, callback: Callback) -> None:
        self._due.pop(callback, None)

    def scheduled(self, callback: Callback) -> int | None:
        """The grid tick ``callback`` is due at, or None."""
        return self._due.get(callback)

    def _arm(self, tick: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_tick = tick
        self._timer = self._loop.call_at(tick * GRID_S, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._armed_tick
        due = [callback for callback, tick in self._due.items() if tick <= now]
        self._firing = True
        try:
            for callback in due:
                # Each stays booked until its turn, so that the earlier ones of this instant
                # see it as booked: a drain that pushes packets into a jitter buffer whose
                # playout is due now leaves that playout where it is, rather than booking it
                # again for an instant already past, which woke the loop a second time.
                # One cancelled or moved later by an earlier one does not run now.
                if self._due.get(callback, now + 1) > now:
                    continue
                del self._due[callback]
                try:
                    callback()
                except Exception as error:  # one stream's bug must not stop the others' media
                    self._loop.call_exception_handler(
                        {"message": f"grid callback {callback!r} failed", "exception": error}
                    )
        finally:
            self._firing = False
        if self._due:
            self._arm(min(self._due.values()))


async def grid_sleep(delay: float, stride: int = 1) -> None:
    """``asyncio.sleep`` that ends at the first grid instant (of those a ``stride`` apart)
    ``delay`` s from now, so periodic bookkeeping (RTCP reports, state polling) shares the
    wake-ups of the media work."""
    loop = asyncio.get_running_loop()
    grid = Grid.of(loop)
    woken = loop.create_future()

    def wake() -> None:
        if not woken.done():
            woken.set_result(None)

    grid.call_at(loop.time() + delay, wake, stride)
    try:
        await woken
    finally:
        grid.cancel(wake)


class Ticker:
    """Calls ``tick(index)`` every ``period`` s on an absolute schedule that starts on the grid.

    A period shorter than the step between the instants it uses (``stride`` grid steps) runs
    several ticks per instant: each wake-up runs every tick due before the next instant, so a
    tick runs early by less than one step, never late. Late ticks (a stalled loop) are not
    skipped but run at once, so the far end sees the right packet count.
    """

    def __init__(self, period: float, tick: Callable[[int], None], stride: int = 1) -> None:
        self._loop = asyncio.get_running_loop()
        self._grid = Grid.of(self._loop)
        self._period = period
        self._tick = tick
        self.stride = stride
        """Grid steps between its wake-ups; a change applies from the next one."""
        self._start = grid_tick(self._loop.time(), stride) * GRID_S
        self._index = 0
        self._grid.call_at(self._start, self._fire, stride)

    def stop(self) -> None:
        self._grid.cancel(self._fire)

    def _fire(self) -> None:
        stride = self.stride
        current = math.floor(self._loop.time() / GRID_S + _EPSILON)
        next_instant = (current // stride + 1) * stride * GRID_S
        while self._start + self._index * self._period < next_instant - _EPSILON:
            index = self._index
            self._index += 1
            self._tick(index)
        due = self._start + self._index * self._period
        instant = math.floor(due / GRID_S + _EPSILON) // stride * stride * GRID_S
        self._grid.call_at(instant, self._fire, stride)
