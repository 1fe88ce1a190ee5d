"""`sip2rtmp call --json --control stdin` against the lab: a script drives the call through
stdin, and what it asked for is measured where it lands, in the callee's log and in the
audio the callee received."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sip2rtmp.lab import Lab
from sip2rtmp.lab.recording import decode_audio, tone_seconds
from tests.integration.conftest import CallProcess
from tests.unit.relay.test_control_commands import write_tone

pytestmark = pytest.mark.lab

DIGITS = "19#"
INJECTED_HZ = 1000
INJECTED_S = 1.5
RATE = 16000


@contextlib.contextmanager
def stdin_piped() -> Iterator[None]:
    """Processes started meanwhile get a pipe as stdin (the lab's `start_call` gives
    /dev/null): the test writes its commands there."""
    popen = subprocess.Popen

    def with_pipe(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs["stdin"] = subprocess.PIPE
        return popen(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "Popen", with_pipe)
        yield


def send(call: CallProcess, *commands: str) -> None:
    stdin = call.process.stdin
    assert stdin is not None
    stdin.write("".join(command + "\n" for command in commands))
    stdin.flush()


def wait_for_event(call: CallProcess, wanted: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The first event with every field of `wanted`, waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in list(call.events):
            if all(event.get(key) == value for key, value in wanted.items()):
                return event
        time.sleep(0.05)
    pytest.fail(f"no {wanted} within {timeout} s: {call.events}")


def digits_received(log: str) -> str:
    """The keys baresip logged receiving, in order, a key held over several lines (an RFC
    4733 event's start and its repeated end) counted once: DIGITS has no key twice in a row."""
    keys: list[str] = []
    for line in log.splitlines():
        for form in ("received event: '", "received DTMF: '"):
            start = line.find(form)
            if start >= 0:
                key = line[start + len(form)]
                if not keys or keys[-1] != key:
                    keys.append(key)
    return "".join(keys)


def test_a_script_drives_the_call_through_stdin(
    start_call: Callable[..., CallProcess], lab: Lab, tmp_path: Path
) -> None:
    """DTMF reaches the callee, a malformed line gets an `error` while the call goes on, a
    file injected reaches the callee's ears, and `hangup` ends the call at once: FINISH, exit
    0 (docs/cli.md, commands on stdin)."""
    tone = tmp_path / "inject.wav"
    write_tone(tone, INJECTED_S, INJECTED_HZ)
    started = time.time()
    log_before = len(lab.callee_log("tone"))
    with stdin_piped():
        call = start_call("tone", "--no-video", "--control", "stdin", "--max-duration", "60")
    call.wait_for_status("ESTABLISHED", 20)

    send(call, json.dumps({"command": "dtmf", "digits": DIGITS}))
    assert wait_for_event(call, {"event": "command", "command": "dtmf"}, 5)["ok"] is True
    deadline = time.monotonic() + 10
    while DIGITS not in digits_received(lab.callee_log("tone")[log_before:]):
        assert time.monotonic() < deadline, lab.callee_log("tone")[log_before:][-1500:]
        time.sleep(0.1)

    send(call, '{"command": "dtmf", "digits": "1"')
    assert wait_for_event(call, {"event": "error"}, 5)["reason"].startswith("not a JSON object")
    send(call, json.dumps({"command": "inject", "file": str(tone)}))
    assert wait_for_event(call, {"event": "command", "command": "inject"}, 5)["ok"] is True
    time.sleep(INJECTED_S + 1.0)
    assert call.process.poll() is None, "the call goes on after the malformed line"

    asked = time.monotonic()
    send(call, '{"command": "hangup"}')
    run = call.wait(15)
    assert time.monotonic() - asked < 5, "the hangup ends the call at once"
    assert run.returncode == 0, run.stderr
    assert run.statuses[-1] == "FINISH" and run.last("status")["reason"] == "hangup requested"
    answers = [(e["command"], e["ok"]) for e in run.events if e["event"] == "command"]
    assert answers == [("dtmf", True), ("inject", True), ("hangup", True)], answers
    sent = [e["digit"] for e in run.events if e["event"] == "dtmf" and e["direction"] == "sent"]
    assert "".join(sent) == DIGITS

    heard = received_tone(lab, started)
    assert INJECTED_S - 0.3 <= heard <= INJECTED_S + 0.3, f"{heard:.1f} s of the injected tone"


def received_tone(lab: Lab, since: float, timeout: float = 10.0) -> float:
    """Seconds of the injected tone in the audio the callee received in this call (the
    newest dump baresip wrote after `since`, once it closed it)."""
    deadline = time.monotonic() + timeout
    while True:
        dumps = [path for path in lab.received_audio("tone") if path.stat().st_mtime >= since]
        if dumps:
            samples = decode_audio(dumps[-1], RATE)
            present = tone_seconds(samples, RATE, INJECTED_HZ, 0.1)
            if present.any() or time.monotonic() > deadline:
                return float(present.sum()) * 0.1
        assert time.monotonic() < deadline, (
            f"no audio dump of the call in {lab.received_dir('tone')}"
        )
        time.sleep(0.5)
