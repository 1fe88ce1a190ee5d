"""The workers' zygote: `sip2rtmp` runs in its forks from what it loaded, other programs are
exec'd, exits reach the server with their status, and a zygote that dies takes its workers
with it and is replaced."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import pytest

from sip2rtmp import __version__
from sip2rtmp.server.zygote import ForkedWorker, Zygote, _request
from tests.unit.server.worker_support import SCRIPT, run_forking, until

LINE_LIMIT = 1 << 16


async def output(worker: ForkedWorker) -> tuple[int, str, str]:
    stdout, stderr = await asyncio.gather(worker.stdout.read(), worker.stderr.read())
    return await asyncio.wait_for(worker.wait(), 10), stdout.decode(), stderr.decode()


def test_sip2rtmp_runs_in_the_fork_from_the_loaded_code_with_its_own_stdio() -> None:
    async def scenario() -> tuple[tuple[int, str, str], tuple[int, str, str]]:
        zygote = Zygote(preload=("sip2rtmp.cli.main",))
        try:
            version = await zygote.spawn(
                [sys.executable, "-m", "sip2rtmp", "--version"], {}, LINE_LIMIT
            )
            usage = await zygote.spawn(
                [sys.executable, "-m", "sip2rtmp", "call", "--json"],
                {"SIP2RTMP_RTMP_STREAM": "key"},
                LINE_LIMIT,
            )
            return await output(version), await output(usage)
        finally:
            await zygote.close()

    version, usage = asyncio.run(scenario())
    assert version == (0, f"sip2rtmp, version {__version__}\n", "")
    code, stdout, stderr = usage
    assert code == 2 and stdout == ""
    assert stderr.startswith("sip2rtmp: error: ") and "Traceback" not in stderr


def test_a_forked_worker_has_its_own_session_the_zygote_as_parent_and_the_env_it_was_given() -> (
    None
):
    async def scenario(zygote: Zygote) -> tuple[ForkedWorker, str]:
        worker = await zygote.spawn(
            [sys.executable, str(SCRIPT), "probe"], {"SIP2RTMP_SIP_PASSWORD": "pw"}, LINE_LIMIT
        )
        line = (await worker.stdout.readline()).decode()
        with open(f"/proc/{worker.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        assert int(fields[1]) == zygote.pid, "the zygote is its parent"
        assert int(fields[2]) == int(fields[3]) == worker.pid, "its own group and session"
        os.kill(worker.pid, signal.SIGKILL)
        assert await asyncio.wait_for(worker.wait(), 10) == -signal.SIGKILL
        return worker, line

    worker, line = run_forking(scenario)
    assert '"SIP2RTMP_SIP_PASSWORD": "pw"' in line
    assert worker.returncode == -signal.SIGKILL


def test_a_zygote_that_dies_takes_its_workers_along_and_the_next_call_starts_another() -> None:
    async def scenario(zygote: Zygote) -> tuple[int, int, int, int]:
        worker = await zygote.spawn([sys.executable, str(SCRIPT), "call"], {}, LINE_LIMIT)
        await worker.stdout.readline()
        first = zygote.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        returncode = await asyncio.wait_for(worker.wait(), 10)
        await until(lambda: not os.path.exists(f"/proc/{worker.pid}"))
        again = await zygote.spawn([sys.executable, "-c", "raise SystemExit(7)"], {}, LINE_LIMIT)
        second = zygote.pid
        assert second is not None
        return returncode, await asyncio.wait_for(again.wait(), 10), first, second

    returncode, exit_code, first, second = run_forking(scenario)
    assert returncode == -signal.SIGTERM
    assert exit_code == 7
    assert second != first


def test_a_program_that_does_not_exist_is_an_error_before_any_fork() -> None:
    async def scenario(zygote: Zygote) -> str:
        with pytest.raises(OSError) as raised:
            await zygote.spawn(["/nonexistent/program"], {}, LINE_LIMIT)
        return str(raised.value)

    assert run_forking(scenario) == "/nonexistent/program: no such program"


@pytest.mark.parametrize(
    ("message", "fds"),
    [
        (b'{"argv": [], "env": {}}', [3, 4, 5]),
        (b'{"argv": ["x"], "env": {"A": 1}}', [3, 4, 5]),
        (b'{"argv": "x", "env": {}}', [3, 4, 5]),
        (b'{"argv": ["x"], "env": {}}', [3, 4]),
        (b"[]", [3, 4, 5]),
        (b"not json", [3, 4, 5]),
    ],
)
def test_a_malformed_request_is_refused(message: bytes, fds: list[int]) -> None:
    with pytest.raises(ValueError):
        _request(message, fds)


def test_calls_that_come_together_share_one_zygote() -> None:
    async def scenario(zygote: Zygote) -> tuple[list[int], set[int | None]]:
        seen: set[int | None] = set()

        async def spawn() -> int:
            worker = await zygote.spawn([sys.executable, "-c", "pass"], {}, LINE_LIMIT)
            seen.add(zygote.pid)
            return await asyncio.wait_for(worker.wait(), 10)

        spawned = asyncio.gather(*(spawn() for _ in range(3)))
        return list(await asyncio.wait_for(spawned, 20)), seen

    codes, zygotes = run_forking(scenario)
    assert codes == [0, 0, 0]
    assert len(zygotes) == 1


def test_a_worker_whose_start_was_abandoned_is_ended_not_left_running() -> None:
    """A request cancelled while the zygote forks (a client that went away): the worker it
    started anyway gets SIGTERM instead of running a call no one supervises."""

    async def scenario(zygote: Zygote) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        take = zygote._take

        def recording(message: dict[str, Any]) -> None:
            messages.append(message)
            take(message)

        zygote._take = recording  # type: ignore[method-assign]
        await zygote.start()
        started = asyncio.ensure_future(
            zygote.spawn([sys.executable, "-c", "import time; time.sleep(30)"], {}, LINE_LIMIT)
        )
        await asyncio.sleep(0)  # the request is out; its reply is awaited
        started.cancel()
        with pytest.raises(asyncio.CancelledError):
            await started
        await until(lambda: any("exited" in message for message in messages))
        return messages

    messages = run_forking(scenario)
    pid = next(message["pid"] for message in messages if "pid" in message)
    assert {"exited": pid, "returncode": -signal.SIGTERM} in messages
