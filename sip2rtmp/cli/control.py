"""`call --control stdin`: NDJSON commands on standard input while the call runs.

One JSON object a line: `{"command": "dtmf", "digits": "123#", "method": "rfc4733"|"info"}`
(`method` optional: as negotiated), `{"command": "hangup"}` or `{"command": "inject", "file":
"PATH-or-URL"}`. Each well-formed command is answered by a `command` event once the relay took
it; any other line by an `error` event, and the call goes on. End of input changes nothing: a
script that closes its end (or dies) does not hang the call up.

Standard input is read in a thread of its own, since reading blocks, with `os.read` on the
descriptor: the thread never holds the interpreter's stdin buffer, which the process's end
would otherwise have to wait for.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from typing import IO

from sip2rtmp.cli.events import Record, command_record, error_record
from sip2rtmp.cli.output import json_line, json_record, plain_line, terminal_safe, timestamp
from sip2rtmp.relay.control import Command, RelayControl
from sip2rtmp.relay.core import ENDED
from sip2rtmp.relay.events import DtmfMethod, EventSink, RelayEvent

LINE_LIMIT = 64 * 1024
"""Longest command line in bytes, without its end: a longer one is skipped (and reported)
without being held in memory."""
MAX_DIGITS = 64
"""Most keys one `dtmf` command sends: at 160 ms a key, about ten seconds of tones."""
DTMF_DIGITS = frozenset("0123456789*#ABCD")
"""The sixteen DTMF events 0-15 of RFC 4733 §3.2, as SIP INFO's `Signal=` names them."""
METHODS: dict[str, DtmfMethod] = {"rfc4733": "rfc4733", "info": "info"}
FIELDS = {
    "dtmf": frozenset({"command", "digits", "method"}),
    "hangup": frozenset({"command"}),
    "inject": frozenset({"command", "file"}),
}
"""Each command's fields: any other is a mistake worth an `error`, not something to ignore."""
_READ_SIZE = 64 * 1024
_SHOWN = 40
"""How much of a bad value an `error` quotes."""


class CommandError(ValueError):
    """A line that is no command; `reason` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _shown(value: object) -> str:
    """A bad value as an error quotes it: its JSON form, cut short."""
    text = json.dumps(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def parse_command(line: bytes) -> Command:
    """One line as a command, or `CommandError` saying what is wrong with it."""
    try:
        value = json.loads(line)
    except (UnicodeDecodeError, ValueError) as error:
        raise CommandError(f"not a JSON object: {error}") from None
    except RecursionError:
        raise CommandError("not a JSON object: nested too deeply") from None
    if not isinstance(value, dict):
        raise CommandError(f"a command is a JSON object, not {type(value).__name__}")
    name = value.get("command")
    if not isinstance(name, str) or name not in FIELDS:
        raise CommandError(f"unknown command {_shown(name)}: dtmf, hangup or inject")
    unknown = sorted(set(value) - FIELDS[name])
    if unknown:
        raise CommandError(f"{name} takes no field {_shown(unknown[0])}")
    if name == "dtmf":
        return Command("dtmf", digits=_digits(value.get("digits")), method=_method(value))
    if name == "inject":
        file = value.get("file")
        if not isinstance(file, str) or not file:
            raise CommandError(f"inject needs a file (a path or URL), not {_shown(file)}")
        return Command("inject", file=file)
    return Command("hangup")


def _digits(digits: object) -> str:
    if not isinstance(digits, str) or not 1 <= len(digits) <= MAX_DIGITS:
        raise CommandError(f"digits must be 1 to {MAX_DIGITS} of 0-9 * # A-D, not {_shown(digits)}")
    bad = sorted(set(digits) - DTMF_DIGITS)
    if bad:
        raise CommandError(f"digits must be 0-9 * # A-D only, not {_shown(bad[0])}")
    return digits


def _method(value: dict[str, object]) -> DtmfMethod | None:
    method = value.get("method")
    if method is None:
        return None
    if not isinstance(method, str) or method not in METHODS:
        raise CommandError(f"method must be rfc4733 or info, not {_shown(method)}")
    return METHODS[method]


def read_lines(fd: int, limit: int = LINE_LIMIT) -> Iterator[bytes | None]:
    """The lines read from `fd` until its end, without their end of line; None in place of a
    line longer than `limit`, whose rest is then read and dropped. A last line without an end
    of line counts."""
    pending, skipping = b"", False
    while chunk := _read(fd):
        pending += chunk
        while (end := pending.find(b"\n")) >= 0:
            line, pending = pending[:end], pending[end + 1 :]
            if skipping:
                skipping = False
            else:
                yield line if len(line) <= limit else None
        if len(pending) > limit:
            if not skipping:
                yield None
            pending, skipping = b"", True
    if pending and not skipping:
        yield pending


def _read(fd: int) -> bytes:
    """The next bytes of `fd`; none at its end, or when it cannot be read (closed, say)."""
    try:
        return os.read(fd, _READ_SIZE)
    except OSError:
        return b""


class ControlOutput:
    """The run's events and the commands' answers, one whole line at a time: the relay's loop
    and the command reader write from their own threads. Answers are printed as the run's
    events are: NDJSON with `ts` and `callId` (`--json`), else a plain line."""

    def __init__(self, sink: EventSink, *, call_id: str, as_json: bool, stream: IO[str]) -> None:
        self._sink = sink
        self._call_id = call_id
        self._json = as_json
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, event: RelayEvent) -> None:
        with self._lock:
            self._sink(event)

    def answer(self, command: str, reason: str | None) -> None:
        self._write(command_record(command, reason))

    def error(self, reason: str) -> None:
        self._write(error_record(reason))

    def _write(self, fields: Record) -> None:
        if self._json:
            line = json_line(json_record(fields, timestamp(), self._call_id))
        else:
            line = terminal_safe(plain_line(fields))
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class CommandReader:
    """Reads commands from `fd` in a daemon thread and hands them to the relay's control; the
    relay answers each on its loop through `output`."""

    def __init__(self, fd: int, control: RelayControl, output: ControlOutput) -> None:
        self._fd = fd
        self._control = control
        self._output = output
        self._thread = threading.Thread(target=self.run, name="control-stdin", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def run(self) -> None:
        """Until the end of input (which ends nothing else)."""
        for line in read_lines(self._fd):
            if line is None:
                self._output.error(f"a line longer than {LINE_LIMIT} bytes: skipped")
            elif line.strip():
                self._take(line)

    def _take(self, line: bytes) -> None:
        try:
            command = parse_command(line)
        except CommandError as error:
            self._output.error(error.reason)
            return
        name = command.name
        try:
            self._control.submit(command, lambda reason: self._output.answer(name, reason))
        except RuntimeError:  # the relay's loop has closed: the run is over
            self._output.answer(name, ENDED)
