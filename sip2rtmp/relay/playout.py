"""Draining a jitter buffer at its deadlines, on the event loop, with one timer per stream.

The buffer says when its next packet (or loss) is due; the scheduler keeps a single loop timer
at that instant and moves it earlier when an arriving packet is due sooner. No task, future or
timeout object is made per packet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sip2rtmp.rtp.jitterbuffer import JitterBuffer, Playout

Deliver = Callable[[list[Playout], float], None]
"""Receives the items that came due, in order, and the loop time they were popped at."""


class PlayoutScheduler:
    def __init__(self, jitter: JitterBuffer, deliver: Deliver) -> None:
        self.jitter = jitter
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None

    def packet_arrived(self) -> None:
        """Call after each push: the new packet may be due before the armed timer."""
        self._schedule()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        deadline = self.jitter.next_deadline()
        if deadline is None:
            return
        timer = self._timer
        if timer is not None:
            if timer.when() <= deadline:
                return
            timer.cancel()
        self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        items = self.jitter.pop(now)
        if items:
            self._deliver(items, now)
        self._schedule()
