"""`call --control stdin`: the command lines a script writes, read from a real pipe.

The parser is checked over good and bad lines, the reader over a pipe into a `RelayControl`
(answers and errors as the NDJSON a script reads), and the installed command end to end
against a SIP proxy that never answers: a command before the answer is refused, a malformed
line gets an `error`, and a hangup ends the attempt as an interrupted run does.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip2rtmp.cli.control import (
    LINE_LIMIT,
    MAX_DIGITS,
    CommandError,
    CommandReader,
    ControlOutput,
    parse_command,
    read_lines,
)
from sip2rtmp.cli.outcomes import ExitCode
from sip2rtmp.relay.control import Answer, Command, RelayControl
from sip2rtmp.relay.core import ENDED, NOT_UP
from sip2rtmp.relay.events import Finished, RelayEvent
from tests.support.sip_peer import SipPeer
from tests.unit.cli.test_contract import SIP2RTMP, clean_env
from tests.unit.relay.test_control_commands import write_tone

# ---- the parser --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "command"),
    [
        (b'{"command": "dtmf", "digits": "123#"}', Command("dtmf", digits="123#")),
        (
            b'{"command":"dtmf","digits":"*0ABCD9","method":"info"}',
            Command("dtmf", digits="*0ABCD9", method="info"),
        ),
        (
            b'{"command": "dtmf", "digits": "5", "method": "rfc4733"}\r',
            Command("dtmf", digits="5", method="rfc4733"),
        ),
        (b'{"command": "dtmf", "digits": "1", "method": null}', Command("dtmf", digits="1")),
        (b'  {"command": "hangup"}  ', Command("hangup")),
        (b'{"command": "inject", "file": "/srv/a b.wav"}', Command("inject", file="/srv/a b.wav")),
        (
            b'{"command": "inject", "file": "http://127.0.0.1/x.wav"}',
            Command("inject", file="http://127.0.0.1/x.wav"),
        ),
        (
            b'{"command": "dtmf", "digits": "' + b"7" * MAX_DIGITS + b'"}',
            Command("dtmf", digits="7" * MAX_DIGITS),
        ),
    ],
)
def test_a_well_formed_line_is_its_command(line: bytes, command: Command) -> None:
    assert parse_command(line) == command


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b'{"command": "dtmf", "digits": "1"', "not a JSON object"),
        (b"hangup", "not a JSON object"),
        (b"\xff\xfe{}", "not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "not a JSON object"),
        (b'["hangup"]', "not list"),
        (b'"hangup"', "not str"),
        (b"{}", "unknown command null"),
        (b'{"command": "HANGUP"}', 'unknown command "HANGUP"'),
        (b'{"command": 3}', "unknown command 3"),
        (b'{"command": "transfer", "to": "1002"}', 'unknown command "transfer"'),
        (b'{"command": "hangup", "now": true}', 'hangup takes no field "now"'),
        (b'{"command": "dtmf", "digits": "12", "type": "INFO"}', 'dtmf takes no field "type"'),
        (b'{"command": "dtmf"}', "digits must be 1 to 64"),
        (b'{"command": "dtmf", "digits": ""}', "digits must be 1 to 64"),
        (b'{"command": "dtmf", "digits": 123}', "digits must be 1 to 64"),
        (b'{"command": "dtmf", "digits": "12e"}', 'not "e"'),
        (b'{"command": "dtmf", "digits": "1 2"}', 'not " "'),
        (b'{"command": "dtmf", "digits": "1\\n2"}', 'not "\\n"'),
        (b'{"command": "dtmf", "digits": "' + b"1" * (MAX_DIGITS + 1) + b'"}', "1 to 64"),
        (b'{"command": "dtmf", "digits": "1", "method": "RFC2833"}', "rfc4733 or info"),
        (b'{"command": "dtmf", "digits": "1", "method": 1}', "rfc4733 or info"),
        (b'{"command": "inject"}', "inject needs a file"),
        (b'{"command": "inject", "file": ""}', "inject needs a file"),
        (b'{"command": "inject", "file": ["a.wav"]}', "inject needs a file"),
    ],
)
def test_a_bad_line_is_refused_saying_why(line: bytes, words: str) -> None:
    with pytest.raises(CommandError) as refused:
        parse_command(line)
    assert words in refused.value.reason
    assert "\n" not in refused.value.reason and len(refused.value.reason) < 200


@pytest.mark.fuzz
@given(st.binary(max_size=512))
def test_any_bytes_are_a_command_or_a_command_error(line: bytes) -> None:
    try:
        command = parse_command(line)
    except CommandError as error:
        assert error.reason and "\n" not in error.reason
    else:
        assert command.name in ("dtmf", "hangup", "inject")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


@pytest.mark.fuzz
@given(
    st.fixed_dictionaries(
        {"command": st.sampled_from(["dtmf", "hangup", "inject", "x"])},
        optional={"digits": JSON_VALUES, "method": JSON_VALUES, "file": JSON_VALUES},
    )
)
def test_a_command_taken_is_one_the_relay_can_carry_out(value: dict[str, object]) -> None:
    """Whatever fields a JSON object has, a command comes out only with valid ones."""
    try:
        command = parse_command(json.dumps(value).encode())
    except CommandError:
        return
    if command.name == "dtmf":
        assert 1 <= len(command.digits) <= MAX_DIGITS
        assert set(command.digits) <= set("0123456789*#ABCD")
        assert command.method in (None, "rfc4733", "info")
    elif command.name == "inject":
        assert isinstance(command.file, str) and command.file
    assert command.name == value["command"]


# ---- lines from a pipe -------------------------------------------------------------------------


class Pipe:
    """An OS pipe whose write end a feeder thread fills, then closes (the reader's EOF)."""

    def __init__(self) -> None:
        self.read, self._write = os.pipe()
        self._feeder: threading.Thread | None = None

    def feed(self, *chunks: bytes) -> None:
        """Write `chunks` (each one `os.write` at least) and close, in a thread of its own:
        more than a pipe holds blocks until the reader takes it."""

        def write() -> None:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self._write, view) :]
            os.close(self._write)

        self._feeder = threading.Thread(target=write, daemon=True)
        self._feeder.start()

    def close(self) -> None:
        if self._feeder is not None:
            self._feeder.join(5)
        else:
            os.close(self._write)
        os.close(self.read)


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    made = Pipe()
    yield made
    made.close()


def test_lines_come_whole_however_the_pipe_cuts_them(pipe: Pipe) -> None:
    pipe.feed(b'{"a": 1}\n\n{"b"', b": 2}\r\nlast")
    assert list(read_lines(pipe.read)) == [b'{"a": 1}', b"", b'{"b": 2}\r', b"last"]


def test_a_line_beyond_the_limit_is_one_none_and_the_next_line_counts(pipe: Pipe) -> None:
    exact = b"y" * LINE_LIMIT
    pipe.feed(b"x" * (LINE_LIMIT + 1) + b"\n", exact + b"\n", b"z" * 300_000 + b"\nok\n")
    assert list(read_lines(pipe.read)) == [None, exact, None, b"ok"]


# ---- the reader: a pipe into a RelayControl -----------------------------------------------------


class Answering:
    """Takes the control's commands as a relay would, answering each with `reasons[name]`."""

    def __init__(self, control: RelayControl, reasons: dict[str, str | None]) -> None:
        self.taken: list[Command] = []
        self._control = control
        self._reasons = reasons
        control.on_request(self.take)

    def take(self) -> None:
        for command, answer in self._control.take_commands():
            self.taken.append(command)
            answer(self._reasons.get(command.name))


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def read_commands(
    pipe: Pipe, control: RelayControl, *chunks: bytes
) -> tuple[list[RelayEvent], io.StringIO]:
    """Feed `chunks` through the reader until the pipe's end; the events and the output."""
    events: list[RelayEvent] = []
    stream = io.StringIO()
    output = ControlOutput(events.append, call_id="c-7", as_json=True, stream=stream)
    reader = CommandReader(pipe.read, control, output)
    reader.start()
    pipe.feed(*chunks)
    reader.join(5)
    return events, stream


def test_commands_reach_the_control_and_every_line_is_answered(pipe: Pipe) -> None:
    control = RelayControl()
    relay = Answering(control, {"dtmf": None, "inject": NOT_UP, "hangup": None})
    lines = (
        b'{"command": "dtmf", "digits": "12#", "method": "info"}\n'
        b"{not json\n"
        b'{"command": "inject", "file": "/tmp/a.wav"}\n'
        b'{"command": "dtmf", "digits": "9x"}\n'
        b'{"command": "hangup"}\n'
    )
    _, stream = read_commands(pipe, control, lines)
    assert relay.taken == [
        Command("dtmf", digits="12#", method="info"),
        Command("inject", file="/tmp/a.wav"),
        Command("hangup"),
    ]
    shown = records(stream)
    assert [(r["event"], r.get("command"), r.get("ok")) for r in shown] == [
        ("command", "dtmf", True),
        ("error", None, None),
        ("command", "inject", False),
        ("error", None, None),
        ("command", "hangup", True),
    ]
    assert shown[2]["reason"] == NOT_UP and "reason" not in shown[0]
    assert list(shown[0])[:3] == ["event", "ts", "callId"] and shown[0]["callId"] == "c-7"
    assert str(shown[1]["reason"]).startswith("not a JSON object")


def test_the_end_of_input_asks_for_nothing(pipe: Pipe) -> None:
    """A script that closes stdin (or dies) does not hang the call up: the server decides."""
    control = RelayControl()
    relay = Answering(control, {})
    events, stream = read_commands(pipe, control, b'{"command": "dtmf", "digits": "1"}')
    assert relay.taken == [Command("dtmf", digits="1")]
    assert not control.hangup_requested and events == []
    assert [r["event"] for r in records(stream)] == ["command"]


def test_a_long_line_is_an_error_and_the_next_command_is_taken(pipe: Pipe) -> None:
    control = RelayControl()
    relay = Answering(control, {})
    long_line = b'{"command": "dtmf", "digits": "' + b"1" * LINE_LIMIT
    _, stream = read_commands(pipe, control, long_line, b'"}\n{"command": "hangup"}\n')
    assert relay.taken == [Command("hangup")]
    shown = records(stream)
    assert [r["event"] for r in shown] == ["error", "command"]
    assert f"longer than {LINE_LIMIT} bytes" in str(shown[0]["reason"])


def test_a_command_after_the_run_is_answered_as_ended(pipe: Pipe) -> None:
    """Once the relay's loop has closed, scheduling on it raises: the answer says so."""
    control = RelayControl()

    def closed_loop() -> None:
        raise RuntimeError("Event loop is closed")

    control.on_request(closed_loop)
    _, stream = read_commands(pipe, control, b'{"command": "hangup"}\n')
    assert records(stream) == [
        {
            "event": "command",
            "ts": records(stream)[0]["ts"],
            "callId": "c-7",
            "command": "hangup",
            "ok": False,
            "reason": ENDED,
        }
    ]


def test_answers_and_events_share_the_stream_one_line_each() -> None:
    """Plain mode writes the answer as a plain line; the run's events pass through whole."""
    stream = io.StringIO()
    seen: list[RelayEvent] = []
    output = ControlOutput(seen.append, call_id="c", as_json=False, stream=stream)
    answer: Answer = lambda reason: output.answer("dtmf", reason)  # noqa: E731
    answer("the call is\nnot up")
    output.error("a\x1b[2Jb")
    output(Finished("hangup requested", 1.0))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert " command command=dtmf ok=false reason=" in lines[0]
    assert "\x1b" not in lines[1] and " error reason=" in lines[1]
    assert seen == [Finished("hangup requested", 1.0)]


# ---- the command itself ----------------------------------------------------------------------


@pytest.fixture
def silent_proxy() -> Iterator[socket.socket]:
    """A SIP proxy that takes the INVITE and never answers: the call stays at TRYING."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


Record = dict[str, object]


def read_until(process: subprocess.Popen[str], seen: list[Record], wanted: Record) -> Record:
    """Read stdout into `seen` until a record has every field of `wanted`; that record."""
    assert process.stdout is not None

    def matches(shown: Record) -> bool:
        return all(shown.get(key) == value for key, value in wanted.items())

    while not any(matches(shown) for shown in seen):
        line = process.stdout.readline()
        assert line, f"no {wanted} in {seen}"
        seen.append(json.loads(line))
    return next(shown for shown in seen if matches(shown))


def controlled_call(*args: str) -> subprocess.Popen[str]:
    """`sip2rtmp call --json --control stdin --no-register --no-video` with `args`."""
    flags = ["call", "--json", "--control", "stdin", "--no-register", "--no-video", *args]
    return subprocess.Popen(
        [SIP2RTMP, *flags],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=clean_env(),
    )


def send(process: subprocess.Popen[str], *lines: str) -> None:
    assert process.stdin is not None
    process.stdin.write("".join(line + "\n" for line in lines))
    process.stdin.flush()


def test_commands_before_the_answer(silent_proxy: socket.socket) -> None:
    """DTMF before the answer is refused, a malformed line is an error and the call goes on,
    and a hangup ends the attempt as an interrupted run: FAILED with exit code 130."""
    port = silent_proxy.getsockname()[1]
    process = controlled_call(
        *("--callee", "1002", "--sip-login", "relay", "--sip-domain", "example.test"),
        *("--sip-outbound-proxy", f"127.0.0.1:{port}", "--rtmp-url", "rtmp://127.0.0.1:1/l"),
        *("--rtmp-stream", "key-0123456789", "--ring-timeout", "20"),
    )
    seen: list[Record] = []
    try:
        read_until(process, seen, {"status": "TRYING"})
        send(process, '{"command": "dtmf", "digits": "1"}', "not json")
        # the error is written at once, the answer from the relay's loop: either comes first
        refused = read_until(process, seen, {"event": "command", "command": "dtmf"})
        assert (refused["ok"], refused["reason"]) == (False, NOT_UP)
        error = read_until(process, seen, {"event": "error"})
        assert str(error["reason"]).startswith("not a JSON object")
        time.sleep(0.3)
        assert process.poll() is None, "the call goes on after a malformed line"
        send(process, '{"command": "hangup"}')
        assert read_until(process, seen, {"event": "command", "command": "hangup"})["ok"] is True
        failed = read_until(process, seen, {"status": "FAILED"})
        assert failed["exitCode"] == ExitCode.INTERRUPTED
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    sent = silent_proxy.recv(65536)
    assert sent.startswith(b"INVITE ")


def test_commands_in_a_call(tmp_path: Path) -> None:
    """Against a scripted callee on loopback: DTMF by each method, a file played toward the
    callee, a malformed line answered by an error while the call goes on, and a hangup that
    ends the call with FINISH and exit 0 at once."""
    peer = SipPeer()
    peer.start()
    tone = tmp_path / "tone.wav"
    write_tone(tone, 0.5)
    process = controlled_call(
        *("--callee", peer.uri, "--record", str(tmp_path / "call.flv"), "--max-duration", "30")
    )
    seen: list[Record] = []
    try:
        read_until(process, seen, {"status": "ESTABLISHED"})
        send(
            process,
            '{"command": "dtmf", "digits": "12", "method": "rfc4733"}',
            '{"command": "dtmf", "digits": "3", "method": "info"}',
            "{",
            json.dumps({"command": "inject", "file": str(tone)}),
            json.dumps({"command": "inject", "file": str(tmp_path / "missing.wav")}),
        )
        for digit, method in (("1", "rfc4733"), ("2", "rfc4733"), ("3", "info")):
            read_until(process, seen, {"event": "dtmf", "digit": digit, "method": method})
        assert read_until(process, seen, {"event": "command", "ok": True, "command": "inject"})
        missing = read_until(process, seen, {"event": "command", "ok": False})
        assert "No such file" in str(missing["reason"])
        assert read_until(process, seen, {"event": "error"})
        asked = time.monotonic()
        send(process, '{"command": "hangup"}')
        finished = read_until(process, seen, {"status": "FINISH"})
        assert process.wait(10) == ExitCode.OK
        assert time.monotonic() - asked < 3.0, "the hangup ends the call at once"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        peer.stop()
    assert finished["reason"] == "hangup requested"
    answers = [(r["command"], r["ok"]) for r in seen if r["event"] == "command"]
    assert sorted(answers) == [
        ("dtmf", True),
        ("dtmf", True),
        ("hangup", True),
        ("inject", False),
        ("inject", True),
    ]
    assert peer.seen.bye_at is not None, "the callee got a BYE"
