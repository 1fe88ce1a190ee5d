"""Run `sip2rtmp serve`: the REST API, the status webhooks and the metrics on one asyncio loop.

SIGTERM (systemd's stop) or SIGINT stops taking requests, hangs up every running call at once
(each worker sends its BYE), waits for the workers to end and for their last webhooks, and
exits 0. Workers run in sessions of their own, so the signal reaches them only as a hangup.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from sip2rtmp.config import ConfigError
from sip2rtmp.server.api import SERVER_KEY, CallServer, WorkerFactory, create_app
from sip2rtmp.server.calls import CallRecord
from sip2rtmp.server.config import ServerConfig
from sip2rtmp.server.metrics import Metrics, install
from sip2rtmp.server.webhooks import Webhooks

log = logging.getLogger("sip2rtmp.server")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
WEBHOOK_GRACE = 5.0
"""How long the calls' last status changes may take to reach the webhooks at shutdown."""
Ready = Callable[[list[Any]], None]


def serve(
    config: ServerConfig,
    *,
    worker_factory: WorkerFactory | None = None,
    ready: Ready | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT; the exit code (0 once every call is hung up).

    `ready` is called with the addresses listened on; `worker_factory` replaces the worker
    processes (tests).
    """
    return asyncio.run(run(config, worker_factory=worker_factory, ready=ready))


async def run(
    config: ServerConfig,
    *,
    worker_factory: WorkerFactory | None = None,
    ready: Ready | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    app = create_app(config, worker_factory=worker_factory)
    server = app[SERVER_KEY]
    webhooks = Webhooks(config.webhooks)
    metrics = Metrics(calls=server.registry.all, workers=lambda: running_workers(server))
    install(metrics)
    server.listeners += [metrics.observe, StatusWebhooks(webhooks, server)]
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        try:
            await site.start()
        except OSError as error:
            where = f"{config.host}:{config.port}"
            raise ConfigError(f"--listen {where}: {error.strerror or error}") from None
        webhooks.start()
        if server.zygote is not None:  # it loads the call's code while the first request comes
            await server.zygote.start()
        log.info("serving on %s", ", ".join(map(str, runner.addresses)))
        if ready is not None:
            ready(runner.addresses)
        await stop.wait()
        running = server.registry.running_count()
        log.info("stopping: hanging up %d call%s", running, "" if running == 1 else "s")
        await site.stop()
        await server.shutdown()
        await webhooks.close(WEBHOOK_GRACE)
    finally:
        await webhooks.close(0)  # already flushed on the way out; a failed start has none
        await runner.cleanup()
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    log.info("stopped")
    return 0


def running_workers(server: CallServer) -> Iterator[tuple[str, int]]:
    """(callId, pid) of the workers whose calls are still running, for the CPU metrics."""
    for call_id, worker in server.workers.items():
        record = server.registry.get(call_id)
        pid = getattr(worker, "pid", None)
        if record is not None and not record.finished and isinstance(pid, int):
            yield call_id, pid


class StatusWebhooks:
    """A listener that notifies the webhooks of each change of a call's status, with the
    call object `find` returns."""

    def __init__(self, webhooks: Webhooks, server: CallServer) -> None:
        self.webhooks = webhooks
        self.server = server
        self._last: dict[str, str] = {}

    def __call__(self, record: CallRecord, event: dict[str, Any]) -> None:
        if self._last.get(record.call_id) == record.status:
            return
        self._last[record.call_id] = record.status
        self.webhooks.notify(record.to_json(self.server.clock()))
        if record.finished:  # forget the calls the registry forgot
            for call_id in [c for c in self._last if self.server.registry.get(c) is None]:
                del self._last[call_id]
