"""Requests, records and fake worker programs for the server's tests."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from sip2rtmp.config import Secret
from sip2rtmp.server.calls import CallRecord
from sip2rtmp.server.request import StartRequest
from sip2rtmp.server.worker import CommandFactory, worker_command
from sip2rtmp.server.zygote import Zygote

T = TypeVar("T")

SCRIPT = Path(__file__).resolve().with_name("fake_worker.py")
PASSWORD = "s3cret-Pa55"
STREAM_KEY = "live-key-1234"


def start_request(call_id: str = "call-1", **changes: Any) -> StartRequest:
    fields: dict[str, Any] = {
        "call_id": call_id,
        "callee": "sip:echo@lab.example",
        "rtmp_url": "rtmp://127.0.0.1/live",
        "rtmp_stream": STREAM_KEY,
        "has_audio": True,
        "has_video": False,
        "sip_login": "relay",
        "sip_auth_name": None,
        "sip_password": Secret(PASSWORD),
        "sip_domain": "lab.example",
        "sip_outbound_proxy": None,
        "sip_port": 5060,
        "sip_register_required": True,
        "extras": {},
    }
    fields.update(changes)
    return StartRequest(**fields)


def new_record(request: StartRequest) -> CallRecord:
    return CallRecord(
        call_id=request.call_id,
        status="NEW",
        sip_status=None,
        sip_message=None,
        callee=request.callee,
        rtmp_url="rtmp://127.0.0.1/live/***",
        has_audio=request.has_audio,
        has_video=request.has_video,
        created=time.monotonic(),
    )


def fake_command(mode: str) -> CommandFactory:
    """A command factory running this script in `mode`, with the real worker's flags as its
    arguments and the real worker's environment."""

    def command(request: StartRequest, profile: str | None) -> tuple[list[str], dict[str, str]]:
        argv, env = worker_command(request, profile)
        return [sys.executable, str(SCRIPT), mode, *argv[1:]], env

    return command


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `condition()` holds; fail the test with a timeout otherwise."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


def run_forking(scenario: Callable[[Zygote], Coroutine[Any, Any, T]]) -> T:
    """Run ``scenario`` with a zygote of its own, stopped at the end. It preloads nothing:
    the fake workers are programs of their own, which its forks exec."""

    async def main() -> T:
        zygote = Zygote(preload=())
        try:
            return await scenario(zygote)
        finally:
            await zygote.close()

    return asyncio.run(main())
