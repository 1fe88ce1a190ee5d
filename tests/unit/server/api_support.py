"""A REST API on aiohttp's test server with fake workers that record what they were asked."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from sip2rtmp.server.api import SERVER_KEY, CallServer, EventHandler, create_app
from sip2rtmp.server.calls import CallRecord
from sip2rtmp.server.config import ServerConfig
from sip2rtmp.server.request import StartRequest

PASSWORD = "pw-9f8e7d6c5b4a"
STREAM_KEY = "streamkey-0a1b2c3d"


def startup_body(call_id: str = "c1", /, **changes: Any) -> dict[str, Any]:
    """The reference's documented startup body, booleans as strings."""
    body: dict[str, Any] = {
        "callId": call_id,
        "callee": "sip:echo@lab.example",
        "rtmpUrl": "rtmp://127.0.0.1/live",
        "rtmpStream": STREAM_KEY,
        "hasAudio": "true",
        "hasVideo": "false",
        "sipLogin": "relay",
        "sipAuthenticationName": "relay",
        "sipPassword": PASSWORD,
        "sipDomain": "lab.example",
        "sipOutboundProxy": "127.0.0.1:5060",
        "sipPort": "5060",
        "sipRegisterRequired": "true",
        "appKey": "defaultApp",
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


@dataclass
class FakeWorker:
    """Stands for a worker process: records commands and answers them as a worker would."""

    request: StartRequest
    record: CallRecord
    on_event: EventHandler
    clock: Callable[[], float]
    commands: list[dict[str, Any]] = field(default_factory=list)
    terminated: list[float] = field(default_factory=list)
    started: bool = False
    answer: bool | None = True
    """How the worker answers a command: ok, refused (False), or not at all (None)."""

    def emit(self, event: dict[str, Any]) -> None:
        self.record.apply_event(event, self.clock())
        self.on_event(self.record, event)

    async def start(self) -> None:
        self.started = True
        self.emit({"event": "status", "status": "TRYING", "callee": self.request.callee})

    async def command(self, cmd: dict[str, Any]) -> None:
        self.commands.append(cmd)
        if self.answer is None:
            return
        reply: dict[str, Any] = {"event": "command", "command": cmd["command"], "ok": self.answer}
        if not self.answer:
            reply["reason"] = "the call is not answered yet"
        asyncio.get_running_loop().call_soon(self.on_event, self.record, reply)

    async def terminate(self, timeout: float) -> None:
        self.terminated.append(timeout)
        self.emit({"event": "status", "status": "FINISH", "reason": "hung up", "duration": 1.0})

    async def wait(self) -> None:
        return None


@dataclass
class Api:
    client: TestClient[Any, Any]
    server: CallServer
    workers: dict[str, FakeWorker]
    clock: list[float]

    async def post(self, path: str, body: object, **kwargs: Any) -> tuple[int, Any]:
        response = await self.client.post(f"/rest-api/call/{path}", json=body, **kwargs)
        return response.status, await response.json()


Scenario = Callable[[Api], Awaitable[None]]


def run_api(scenario: Scenario, config: ServerConfig | None = None) -> None:
    """Run `scenario` against a fresh server on a loopback port, with a settable clock."""

    async def main() -> None:
        workers: dict[str, FakeWorker] = {}
        clock = [1000.0]

        def factory(request: StartRequest, record: CallRecord, on_event: EventHandler) -> Any:
            workers[request.call_id] = FakeWorker(request, record, on_event, lambda: clock[0])
            return workers[request.call_id]

        app = create_app(config or ServerConfig(), worker_factory=factory, clock=lambda: clock[0])
        async with TestClient(TestServer(app)) as client:
            await scenario(Api(client, app[SERVER_KEY], workers, clock))

    asyncio.run(main())
