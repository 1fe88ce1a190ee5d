"""Where a run's events and errors go: NDJSON, plain lines, or stderr — always redacted.

Redaction is the last line of defence: secrets are kept out of messages where they are made,
and every line written here is scrubbed of them again before it leaves the process.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sip2rtmp.status import RelayEvent


class Redactor:
    """Replaces every known secret value in a text with `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        for secret in secrets:
            if secret and secret not in self._secrets:
                self._secrets.append(secret)
        self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class RedactingFilter(logging.Filter):
    """Formats a log record's message once, redacted, so no handler can print the raw one."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redact(record.getMessage())
        record.args = None
        return True


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventPrinter:
    """Prints relay events: one JSON object per line (`--json`) or one plain line each."""

    def __init__(self, call_id: str, redactor: Redactor, *, as_json: bool, stream: IO[str]) -> None:
        self._call_id = call_id
        self._redact = redactor
        self._json = as_json
        self._stream = stream

    def __call__(self, event: RelayEvent) -> None:
        if self._json:
            record: dict[str, Any] = {
                "event": event.event,
                "ts": timestamp(),
                "callId": self._call_id,
            }
            if event.status is not None:
                record["status"] = event.status.value
            record.update(event.data)
            line = json.dumps(record, separators=(",", ":"), default=str)
        else:
            line = plain_line(event)
        self._stream.write(self._redact(line) + "\n")
        self._stream.flush()


def plain_line(event: RelayEvent) -> str:
    words = [timestamp(), event.status.value if event.status else event.event]
    words += [f"{key}={_plain_value(value)}" for key, value in event.data.items()]
    return " ".join(words)


def _plain_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ",".join(f"{k}:{_plain_value(v)}" for k, v in value.items())
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


def print_error(message: str, hint: str, redactor: Redactor) -> None:
    """The one line a failure prints (and its hint on the same line, after a dash)."""
    line = f"sip2rtmp: error: {message}"
    if hint:
        line += f" — {hint}"
    sys.stderr.write(redactor(line) + "\n")
    sys.stderr.flush()


def configure_logging(verbose: int, quiet: bool, log_file: Path | None, redactor: Redactor) -> None:
    """Logs go to stderr (and --log-file), never to stdout where events are; always redacted."""
    level = (
        logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    )
    root = logging.getLogger("sip2rtmp")
    root.setLevel(logging.DEBUG if log_file else level)
    root.handlers.clear()
    root.propagate = False
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    handlers[0].setLevel(level)
    if log_file is not None:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setLevel(logging.DEBUG)
        handlers.append(file_handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RedactingFilter(redactor))
        root.addHandler(handler)
