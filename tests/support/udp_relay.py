"""A userspace UDP relay that delays, jitters and reorders datagrams in one direction.

This kernel has no netem, so delay and reordering are made here: every datagram from the peer
side waits a random 0..max_delay before it goes on toward the target, which reorders packets
sent closer together than the spread, and a swap probability forces extra reordering. The way
back (target to peer) is forwarded at once, so it can be timed.
"""

from __future__ import annotations

import heapq
import random
import selectors
import socket
import threading
import time
from dataclasses import dataclass

from sip2rtmp.netaddr import Address

MAX_QUEUED = 1000
"""Datagrams waiting at once; more are dropped and counted, so a stuck target cannot grow
the relay without bound."""


@dataclass
class RelayStats:
    """What the relay did to the peer-to-target direction."""

    forwarded: int = 0
    reordered: int = 0
    """Datagrams sent out after one that arrived later than them."""
    swapped: int = 0
    """Datagrams held back and sent just after the next one (the swap probability)."""
    overflow: int = 0
    max_delay: float = 0.0
    total_delay: float = 0.0

    @property
    def mean_delay(self) -> float:
        return self.total_delay / self.forwarded if self.forwarded else 0.0


class UdpRelay:
    """Two sockets on loopback: `inner_address` faces the peer, `public_address` the target.

    The peer sends to `inner_address`; the target sees everything come from `public_address`
    (advertise that one in SDP), and what it sends there is passed back to `peer`.
    """

    def __init__(
        self,
        *,
        max_delay: float = 0.06,
        swap_probability: float = 0.0,
        seed: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.max_delay = max_delay
        self.swap_probability = swap_probability
        self.peer: Address | None = None
        self.target: Address | None = None
        self.stats = RelayStats()
        self._random = random.Random(seed)
        self._inner = _bound(host)
        self._public = _bound(host)
        self._queue: list[tuple[float, int, bytes, float]] = []
        self._held: tuple[int, bytes, float] | None = None
        self._highest_sent = -1
        self._index = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="udp-relay", daemon=True)

    @property
    def inner_address(self) -> Address:
        return _address(self._inner)

    @property
    def public_address(self) -> Address:
        return _address(self._public)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close the sockets; datagrams still queued are discarded."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self._inner.close()
        self._public.close()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._inner, selectors.EVENT_READ, self._from_peer)
        selector.register(self._public, selectors.EVENT_READ, self._from_target)
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                self._send_due(now)
                wait = self._queue[0][0] - now if self._queue else 0.05
                for key, _ in selector.select(timeout=min(max(wait, 0.0), 0.05)):
                    key.data(time.monotonic())
        finally:
            selector.close()

    def _from_peer(self, now: float) -> None:
        data = self._inner.recv(65535)
        index = self._index
        self._index += 1
        if len(self._queue) >= MAX_QUEUED:
            self.stats.overflow += 1
            return
        if self._held is None and self._random.random() < self.swap_probability:
            self._held = (index, data, now)
            return
        budget = self.max_delay
        if self._held is not None:
            budget = max(0.0, budget - (now - self._held[2]))
        due = now + self._random.uniform(0.0, budget)
        heapq.heappush(self._queue, (due, index, data, now))
        if self._held is not None:
            held_index, held_data, held_arrival = self._held
            self._held = None
            self.stats.swapped += 1
            heapq.heappush(self._queue, (due + 1e-4, held_index, held_data, held_arrival))

    def _send_due(self, now: float) -> None:
        while self._queue and self._queue[0][0] <= now:
            _, index, data, arrival = heapq.heappop(self._queue)
            if self.target is None:
                continue
            self._public.sendto(data, self.target)
            delay = time.monotonic() - arrival
            self.stats.forwarded += 1
            self.stats.max_delay = max(self.stats.max_delay, delay)
            self.stats.total_delay += delay
            if index < self._highest_sent:
                self.stats.reordered += 1
            self._highest_sent = max(self._highest_sent, index)

    def _from_target(self, now: float) -> None:
        data = self._public.recv(65535)
        if self.peer is not None:
            self._inner.sendto(data, self.peer)


def _bound(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def _address(sock: socket.socket) -> Address:
    host, port = sock.getsockname()
    return str(host), int(port)
