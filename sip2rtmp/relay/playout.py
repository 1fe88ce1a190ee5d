"""Draining a jitter buffer at its deadlines, on the event loop, with one timer per stream.

The buffer says when its next packet (or loss) is due; the scheduler keeps a single loop timer
at the grid instant (``sip2rtmp.net.grid``) of that deadline and moves it earlier when an
arriving packet is due sooner, so the playout of every stream shares the loop's wake-ups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sip2rtmp.net.grid import Grid, grid_tick
from sip2rtmp.rtp.jitterbuffer import JitterBuffer, Playout

Deliver = Callable[[list[Playout], float], None]
"""Receives the items that came due, in order, and the loop time they were popped at."""


class PlayoutScheduler:
    """Keeps the buffer's next deadline booked on the loop's grid."""

    def __init__(self, jitter: JitterBuffer, deliver: Deliver, stride: int = 1) -> None:
        self.jitter = jitter
        self._deliver = deliver
        self.stride = stride
        """Grid steps between the instants it books: a deadline waits up to that long."""
        self._loop = asyncio.get_running_loop()
        self._grid = Grid.of(self._loop)

    def packet_arrived(self) -> None:
        """Call after each push: the new packet may be due before the booked instant."""
        self._schedule()

    def close(self) -> None:
        self._grid.cancel(self._fire)

    def _schedule(self) -> None:
        deadline = self.jitter.next_deadline()
        if deadline is None:
            return
        booked = self._grid.scheduled(self._fire)
        if booked is None or grid_tick(deadline, self.stride) < booked:
            self._grid.call_at(deadline, self._fire, self.stride)

    def _fire(self) -> None:
        now = self._loop.time()
        items = self.jitter.pop(now)
        if items:
            self._deliver(items, now)
        self._schedule()
