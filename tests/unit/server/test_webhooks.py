"""Status webhooks against a local receiver: in order, retried with backoff, and never in the
way of a call (notify returns at once, whatever the receiver does)."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sip2rtmp.server.webhooks import Webhooks


@dataclass
class Receiver:
    """A webhook receiver that fails its first `failures` requests with 500."""

    failures: int = 0
    hang: bool = False
    received: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[float] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts.append(time.monotonic())
        if self.hang:
            await asyncio.sleep(3600)
        if self.failures > 0:
            self.failures -= 1
            return web.Response(status=500)
        self.received.append(await request.json())
        return web.Response(status=204)


@asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook?token=t0ken"
    finally:
        await runner.cleanup()


def closed_port_url() -> str:
    """A URL nobody listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


async def settle(hooks: Webhooks, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while hooks.pending():
        assert time.monotonic() < deadline, "webhooks still pending"
        await asyncio.sleep(0.01)


def test_notifications_arrive_in_order_at_every_url() -> None:
    first, second = Receiver(), Receiver()

    async def scenario() -> None:
        async with serving(first) as one, serving(second) as two:
            hooks = Webhooks([one, two])
            hooks.start()
            for number in range(30):
                hooks.notify({"callId": "c", "seq": number})
            await settle(hooks)
            await hooks.close(1)

    asyncio.run(scenario())
    for receiver in (first, second):
        assert [body["seq"] for body in receiver.received] == list(range(30))


def test_a_refused_notification_is_retried_with_doubling_delays_and_keeps_its_place() -> None:
    receiver = Receiver(failures=3)

    async def scenario() -> Webhooks:
        async with serving(receiver) as url:
            hooks = Webhooks([url], first_delay=0.2, max_delay=0.5)
            hooks.start()
            hooks.notify({"seq": 1})
            hooks.notify({"seq": 2})
            await settle(hooks)
            await hooks.close(1)
            return hooks

    hooks = asyncio.run(scenario())
    assert [body["seq"] for body in receiver.received] == [1, 2]
    gaps = [later - earlier for earlier, later in itertools.pairwise(receiver.attempts)]
    assert len(gaps) == 4  # three refusals, the delivery of 1, then 2 at once
    # The schedule's lower bounds are exact; the upper ones leave a loaded machine room.
    assert 0.2 <= gaps[0] < 0.4
    assert 0.4 <= gaps[1] < 0.7
    assert 0.5 <= gaps[2] < 0.79  # 0.8 capped at max_delay
    assert gaps[3] < 0.4
    delivery = hooks.deliveries[0]
    assert (delivery.delivered, delivery.failed, delivery.dropped) == (2, 0, 0)


def test_a_notification_is_given_up_after_five_attempts_and_the_next_goes_out() -> None:
    receiver = Receiver(failures=5)

    async def scenario() -> Webhooks:
        async with serving(receiver) as url:
            hooks = Webhooks([url], first_delay=0.01)
            hooks.start()
            hooks.notify({"seq": 1})
            hooks.notify({"seq": 2})
            await settle(hooks)
            await hooks.close(1)
            return hooks

    hooks = asyncio.run(scenario())
    assert len(receiver.attempts) == 6
    assert [body["seq"] for body in receiver.received] == [2]
    assert (hooks.deliveries[0].delivered, hooks.deliveries[0].failed) == (1, 1)


def test_a_dead_or_hanging_receiver_never_blocks_notify() -> None:
    hanging = Receiver(hang=True)
    alive = Receiver()

    async def scenario() -> Webhooks:
        async with serving(hanging) as stuck, serving(alive) as good:
            hooks = Webhooks([closed_port_url(), stuck, good], queue_size=10, first_delay=30)
            hooks.start()
            await asyncio.sleep(0)
            for number in range(5000):  # no await: nothing a receiver does can hold it
                hooks.notify({"seq": number})
            deadline = time.monotonic() + 10
            while len(alive.received) < 10 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await hooks.close(0)
            return hooks

    hooks = asyncio.run(scenario())
    dead, stuck, good = hooks.deliveries
    # Each queue kept the newest ten of the burst.
    assert dead.dropped == stuck.dropped == good.dropped == 4990
    assert [body["seq"] for body in alive.received] == list(range(4990, 5000))
    assert len(hanging.attempts) == 1
