"""Status webhooks: each change of a call's status POSTed as JSON to every `--webhook` URL.

A slow or dead receiver never holds up a call: `notify` only queues, a task per URL delivers
that URL's queue in order, retrying with backoff, and a full queue drops its oldest entry.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

log = logging.getLogger("sip2rtmp.server.webhooks")

QUEUE_SIZE = 1000
"""Undelivered notifications kept per URL; ten status changes each for a hundred calls."""
REQUEST_TIMEOUT = 5.0
ATTEMPTS = 5
FIRST_DELAY = 1.0
MAX_DELAY = 30.0


def host_of(url: str) -> str:
    """The receiver as logs name it: its query or user part may hold a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


@dataclass
class Delivery:
    """One receiver's queue and what became of what it was sent."""

    url: str
    queue: collections.deque[Mapping[str, Any]]
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: int = 0
    dropped: int = 0
    """Notifications pushed out of a full queue before they were sent."""
    failed: int = 0
    """Notifications given up on after the last attempt."""
    busy: bool = False


class Webhooks:
    """Delivers notifications to each URL in order, `attempts` times at most, waiting
    `first_delay`, twice that, … up to `max_delay` seconds between attempts."""

    def __init__(
        self,
        urls: Sequence[str],
        session_factory: Callable[[], aiohttp.ClientSession] = aiohttp.ClientSession,
        *,
        queue_size: int = QUEUE_SIZE,
        timeout: float = REQUEST_TIMEOUT,
        attempts: int = ATTEMPTS,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self.deliveries = [Delivery(url, collections.deque(maxlen=queue_size)) for url in urls]
        self._session_factory = session_factory
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._attempts = attempts
        self._first_delay = first_delay
        self._max_delay = max_delay

    def start(self) -> None:
        """Start a sender per URL on the running loop."""
        if self._tasks or not self.deliveries:
            return
        self._session = self._session_factory()
        self._tasks = [asyncio.create_task(self._send_all(d)) for d in self.deliveries]

    def notify(self, payload: Mapping[str, Any]) -> None:
        """Queue `payload` for every URL; returns at once."""
        for delivery in self.deliveries:
            if len(delivery.queue) == delivery.queue.maxlen:
                delivery.dropped += 1
                if delivery.dropped & (delivery.dropped - 1) == 0:  # 1, 2, 4, 8, …: no flood
                    log.warning("webhook %s: queue full, %d notifications dropped so far",
                                host_of(delivery.url), delivery.dropped)  # fmt: skip
            delivery.queue.append(payload)
            delivery.wakeup.set()

    def pending(self) -> int:
        """Notifications queued or being sent."""
        return sum(len(d.queue) + d.busy for d in self.deliveries)

    async def close(self, timeout: float) -> None:
        """Give queued notifications up to `timeout` seconds to go out, then stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.pending() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _send_all(self, delivery: Delivery) -> None:
        while True:
            await delivery.wakeup.wait()
            delivery.wakeup.clear()
            while delivery.queue:
                payload = delivery.queue.popleft()
                delivery.busy = True
                try:
                    sent = await self._send(delivery.url, payload)
                finally:
                    delivery.busy = False
                if sent:
                    delivery.delivered += 1
                else:
                    delivery.failed += 1

    async def _send(self, url: str, payload: Mapping[str, Any]) -> bool:
        assert self._session is not None
        delay = self._first_delay
        problem = ""
        for attempt in range(1, self._attempts + 1):
            try:
                async with self._session.post(url, json=payload, timeout=self._timeout) as reply:
                    if 200 <= reply.status < 300:
                        return True
                    problem = f"HTTP {reply.status}"
            except (aiohttp.ClientError, TimeoutError) as error:
                problem = type(error).__name__
            if attempt < self._attempts:
                log.info("webhook %s: %s, retry in %g s", host_of(url), problem, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_delay)
        log.warning("webhook %s: gave up after %d attempts (%s)", host_of(url), self._attempts,
                    problem)  # fmt: skip
        return False
