"""The server's worker supervision, against a fake worker program (fake_worker.py): events
reach the record, commands go out as NDJSON, a worker that will not stop is killed, and a
worker that dies takes its call to FAILED with the reason."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import click
import pytest

from sip2rtmp.cli.call import call as call_command
from sip2rtmp.server.calls import CallRecord
from sip2rtmp.server.worker import (
    NEGATABLE_FLAGS,
    CommandFactory,
    Worker,
    extra_args,
    worker_command,
)
from sip2rtmp.server.zygote import Zygote
from tests.unit.server.worker_support import (
    PASSWORD,
    STREAM_KEY,
    fake_command,
    new_record,
    run_forking,
    start_request,
    until,
)

Events = list[dict[str, Any]]


def started(mode: str, zygote: Zygote, **worker_options: Any) -> tuple[Worker, Events]:
    request = start_request()
    events: Events = []

    def on_event(record: CallRecord, event: dict[str, Any]) -> None:
        events.append(event)

    worker = Worker(
        request,
        new_record(request),
        on_event,
        profile=None,
        zygote=zygote,
        command=fake_command(mode),
        **worker_options,
    )
    return worker, events


def made(
    zygote: Zygote,
    command: CommandFactory,
    on_event: Callable[[CallRecord, dict[str, Any]], None] = lambda record, event: None,
) -> Worker:
    """A worker for a fresh request, running ``command``."""
    request = start_request()
    return Worker(
        request, new_record(request), on_event, profile=None, zygote=zygote, command=command
    )


def of(events: Events, kind: str) -> Events:
    return [event for event in events if event["event"] == kind]


def statuses(events: Events) -> list[str]:
    return [event["status"] for event in of(events, "status")]


# ---- the command line ---------------------------------------------------------------------


def test_secrets_are_in_the_environment_and_never_on_the_command_line() -> None:
    argv, env = worker_command(start_request(), None)
    assert argv[:7] == [sys.executable, "-m", "sip2rtmp", "call", "--json", "--control", "stdin"]
    assert env == {"SIP2RTMP_SIP_PASSWORD": PASSWORD, "SIP2RTMP_RTMP_STREAM": STREAM_KEY}
    assert not [arg for arg in argv if PASSWORD in arg or STREAM_KEY in arg]


def test_an_rtmp_url_with_credentials_goes_in_the_environment() -> None:
    url = "rtmp://user:pw@ingest.example/live?token=abc"
    argv, env = worker_command(start_request(rtmp_url=url), None)
    assert env["SIP2RTMP_RTMP_URL"] == url
    assert not [arg for arg in argv if "pw@" in arg or "abc" in arg]


def test_the_reference_fields_become_call_flags() -> None:
    request = start_request(
        has_audio=False,
        has_video=True,
        sip_register_required=False,
        sip_outbound_proxy="proxy.example:5080",
        extras={"srtp": "optional", "max-duration": 30.5, "early-media": True},
    )
    argv, _ = worker_command(request, "studio")
    flags = argv[7:]
    expected = [
        "--profile=studio",
        "--call-id=call-1",
        "--callee=sip:echo@lab.example",
        "--rtmp-url=rtmp://127.0.0.1/live",
        "--no-audio",
        "--video",
        "--no-register",
        "--sip-login=relay",
        "--sip-domain=lab.example",
        "--sip-outbound-proxy=proxy.example:5080",
        "--sip-port=5060",
        "--srtp=optional",
        "--max-duration=30.5",
        "--early-media",
    ]
    assert flags == expected


def test_call_reads_the_request_from_the_worker_command_line_and_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real `call` command parses what the server writes, secrets from the environment."""
    extras = {"transcode": False, "early-media": True, "max-duration": 12}
    argv, env = worker_command(start_request(has_video=False, extras=extras), None)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    params = call_command.make_context("call", argv[4:]).params
    assert params["sip_password"] == PASSWORD
    assert params["rtmp_streams"] == (STREAM_KEY,)
    assert params["rtmp_urls"] == ("rtmp://127.0.0.1/live",)
    assert (params["as_json"], params["control"], params["call_id"]) == (True, "stdin", "call-1")
    assert (params["audio"], params["video"], params["register"]) == (True, False, True)
    assert (params["transcode"], params["early_media"], params["max_duration"]) == (
        False,
        True,
        12.0,
    )
    assert (params["sip_login"], params["sip_domain"], params["sip_port"]) == (
        "relay",
        "lab.example",
        5060,
    )


def test_false_extras_use_the_no_form_only_where_call_has_one() -> None:
    negatable = {
        opt.removeprefix("--no-")
        for param in call_command.params
        if isinstance(param, click.Option)
        for opt in param.secondary_opts
        if opt.startswith("--no-")
    }
    assert negatable == NEGATABLE_FLAGS
    assert extra_args("video", False) == ["--no-video"]
    assert extra_args("transcode", False) == []
    assert extra_args("rtmp-url", ["rtmp://a/x", "rtmp://b/y"]) == [
        "--rtmp-url=rtmp://a/x",
        "--rtmp-url=rtmp://b/y",
    ]


# ---- a running worker ---------------------------------------------------------------------


def test_events_update_the_record_and_commands_go_out_as_ndjson() -> None:
    async def scenario(zygote: Zygote) -> tuple[Worker, Events]:
        worker, events = started("call", zygote)
        await worker.start()
        await until(lambda: worker.record.status == "ESTABLISHED")
        await worker.command({"command": "dtmf", "digits": "12#", "method": "rfc4733"})
        await until(lambda: len(of(events, "dtmf")) == 3)
        await worker.command({"command": "hangup"})
        await asyncio.wait_for(worker.wait(), 10)
        return worker, events

    worker, events = run_forking(scenario)
    assert statuses(events) == ["TRYING", "RING", "ESTABLISHED", "FINISH"]
    assert [event["digit"] for event in of(events, "dtmf")] == ["1", "2", "#"]
    assert [event["command"] for event in of(events, "command")] == ["dtmf", "hangup"]
    record = worker.record
    assert (record.status, record.sip_status, record.exit_code) == ("FINISH", 200, 0)
    assert record.answered is not None and record.ended is not None


def test_lines_that_are_not_events_are_counted_and_skipped() -> None:
    async def scenario(zygote: Zygote) -> Worker:
        worker, _ = started("garbage", zygote)
        await worker.start()
        await until(lambda: worker.record.status == "ESTABLISHED")
        await worker.terminate(10)
        return worker

    worker = run_forking(scenario)
    assert worker.ignored_lines == 2
    assert worker.record.status == "FINISH"


def test_the_worker_gets_the_secrets_through_its_environment_in_its_own_session() -> None:
    async def scenario(zygote: Zygote) -> Events:
        worker, events = started("probe", zygote)
        await worker.start()
        await until(lambda: bool(of(events, "probe")))
        await worker.terminate(10)
        return events

    probe = of(run_forking(scenario), "probe")[0]
    assert probe["env"] == {"SIP2RTMP_SIP_PASSWORD": PASSWORD, "SIP2RTMP_RTMP_STREAM": STREAM_KEY}
    assert not [arg for arg in probe["argv"] if PASSWORD in arg or STREAM_KEY in arg]
    assert probe["pgid"] == probe["pid"] != os.getpgid(0)


def test_terminate_hangs_up_before_any_signal() -> None:
    async def scenario(zygote: Zygote) -> tuple[Worker, Events, float]:
        worker, events = started("call", zygote)
        await worker.start()
        await until(lambda: worker.record.status == "ESTABLISHED")
        began = time.monotonic()
        await worker.terminate(10)
        return worker, events, time.monotonic() - began

    worker, events, took = run_forking(scenario)
    assert worker.record.status == "FINISH"
    assert [event["command"] for event in of(events, "command")] == ["hangup"]
    assert took < 5


def test_terminate_escalates_to_sigkill_for_a_worker_that_ignores_hangup_and_sigterm() -> None:
    async def scenario(zygote: Zygote) -> tuple[Worker, Events, float]:
        worker, events = started("stubborn", zygote, term_grace=0.5)
        await worker.start()
        await until(lambda: worker.record.status == "ESTABLISHED")
        began = time.monotonic()
        await worker.terminate(0.5)
        return worker, events, time.monotonic() - began

    worker, events, took = run_forking(scenario)
    assert [event["command"] for event in of(events, "command")] == ["hangup"]
    assert worker.record.status == "FAILED"
    assert worker.record.reason is not None and "signal 9" in worker.record.reason
    assert statuses(events)[-1] == "FAILED"
    assert 1.0 <= took < 5
    assert not worker.running


def test_a_worker_killed_mid_call_leaves_its_call_failed_with_the_signal() -> None:
    async def scenario(zygote: Zygote) -> tuple[Worker, Events]:
        worker, events = started("call", zygote)
        await worker.start()
        await until(lambda: worker.record.status == "ESTABLISHED")
        assert worker.pid is not None
        os.kill(worker.pid, 9)
        await asyncio.wait_for(worker.wait(), 10)
        return worker, events

    worker, events = run_forking(scenario)
    assert worker.record.status == "FAILED"
    assert worker.record.reason == "worker killed by signal 9 (SIGKILL)"
    assert worker.record.exit_code is None
    assert events[-1] == {
        "event": "status",
        "callId": "call-1",
        "status": "FAILED",
        "reason": "worker killed by signal 9 (SIGKILL)",
        "exitCode": None,
    }


def test_a_crashed_worker_is_failed_with_its_exit_code_and_last_words() -> None:
    async def scenario(zygote: Zygote) -> Worker:
        worker, _ = started("crash", zygote)
        await worker.start()
        await asyncio.wait_for(worker.wait(), 10)
        return worker

    worker = run_forking(scenario)
    assert worker.record.status == "FAILED"
    assert worker.record.reason == "worker exited with code 3: sip2rtmp: internal error: boom"
    assert worker.record.exit_code == 3


def test_a_worker_that_cannot_start_fails_its_call() -> None:
    def missing(request: Any, profile: str | None) -> tuple[list[str], dict[str, str]]:
        return ["/nonexistent/sip2rtmp-worker"], {}

    async def scenario(zygote: Zygote) -> Worker:
        worker = made(zygote, missing)
        await worker.start()
        await worker.command({"command": "hangup"})
        await worker.terminate(1)
        return worker

    worker = run_forking(scenario)
    assert worker.record.status == "FAILED"
    assert worker.record.reason is not None
    assert worker.record.reason.startswith("cannot start the worker")


def test_a_failing_event_handler_does_not_stop_the_record() -> None:
    def broken(record: CallRecord, event: dict[str, Any]) -> None:
        raise RuntimeError("observer bug")

    async def scenario(zygote: Zygote) -> Worker:
        worker = made(zygote, fake_command("call"), on_event=broken)
        await worker.start()
        await until(lambda: worker.record.status == "ESTABLISHED")
        await worker.terminate(10)
        return worker

    assert run_forking(scenario).record.status == "FINISH"


@pytest.mark.parametrize("returncode", [0, 2])
def test_an_exit_without_a_final_status_is_a_failure(returncode: int) -> None:
    script = (
        "import json; print(json.dumps({'event': 'status', 'status': 'TRYING'}));"
        f" raise SystemExit({returncode})"
    )

    def command(request: Any, profile: str | None) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-c", script], {}

    async def scenario(zygote: Zygote) -> Worker:
        worker = made(zygote, command)
        await worker.start()
        await asyncio.wait_for(worker.wait(), 10)
        return worker

    record = run_forking(scenario).record
    assert record.status == "FAILED"
    assert record.reason == f"worker exited with code {returncode}"
    assert json.dumps(record.to_json(time.monotonic()))


SERVER_THAT_DIES = """
import asyncio, sys
from tests.unit.server.worker_support import fake_command, new_record, start_request, until
from sip2rtmp.server.worker import Worker
from sip2rtmp.server.zygote import Zygote

async def main():
    request = start_request()
    seen = []
    worker = Worker(request, new_record(request), lambda r, e: seen.append(e),
                    command=fake_command("probe"), profile=None, zygote=Zygote(preload=()))
    await worker.start()
    await until(lambda: any(e.get("event") == "probe" for e in seen))
    print(worker.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_server_killed_outright_takes_its_workers_with_it() -> None:
    """SIGKILL leaves the server no time to hang up: each worker gets SIGTERM from the kernel
    (PR_SET_PDEATHSIG) and ends, so no call streams on without anyone to stop it."""
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_THAT_DIES], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        worker_pid = int(server.stdout.readline())
        assert _alive(worker_pid)
        server.kill()
        server.wait(10)
        deadline = time.monotonic() + 10
        while _alive(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker_pid), "the worker outlived the server"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
