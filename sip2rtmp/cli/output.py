"""Where a run's events and errors go: NDJSON, plain lines, or stderr — always redacted.

Redaction is the last line of defence: secrets are kept out of messages where they are made,
and everything written here is scrubbed of them again before it leaves the process: an event's
values before it is serialised (a secret may equal a field name, `exitCode`, and the record must
keep its fields), a free-text line (a log message, an error) as a whole. Text from
the network (a reason phrase, a peer's error) may carry terminal escape sequences: every line
for a terminal or a log passes `terminal_safe`, and JSON escapes them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import sys
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from io import TextIOWrapper
from pathlib import Path
from typing import IO, Any

from sip2rtmp.errors import UsageError
from sip2rtmp.status import RelayEvent

REDACT_MIN_LENGTH = 8
"""Shortest secret the line redactor replaces. A shorter one (a stream key `live`, a key `x`)
occurs in ordinary words too often to be cut out of text without mangling it; such a secret is
masked only where it is shown (`RtmpTarget.display`, `Secret`), never printed anywhere else."""

_UNSAFE = (*range(0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A))
"""C0, DEL, C1 and the bidirectional embeddings, overrides and isolates (which reorder what a
terminal shows, CVE-2021-42574)."""
_LINE_TABLE = {code: "\ufffd" for code in _UNSAFE} | {ord(c): " " for c in "\t\n\r"}
_LOG_TABLE = _LINE_TABLE | {ord("\n"): "\n", ord("\r"): None}
_DIGEST_HEADER_RE = re.compile(r"(?im)^(?:proxy-)?authorization[ \t]*:[^\r\n]*")
_DIGEST_SECRET_RE = re.compile(r'(?i)\b(response|c?nonce)([ \t]*=[ \t]*)("[^"]*"?|[^,\s]*)')


def terminal_safe(text: str, *, keep_newlines: bool = False) -> str:
    """`text` without anything a terminal would act on: each control character becomes U+FFFD,
    a tab, CR or LF a space (one line stays one line); `keep_newlines` keeps LF and drops CR,
    for multi-line log records."""
    return text.translate(_LOG_TABLE if keep_newlines else _LINE_TABLE)


def mask_digest(text: str) -> str:
    """Authorization/Proxy-Authorization lines of a logged SIP message with `response`, `nonce`
    and `cnonce` masked: with them a log reader could guess a weak password offline (RFC 2617
    §4, RFC 7616 §5)."""
    return _DIGEST_HEADER_RE.sub(
        lambda line: _DIGEST_SECRET_RE.sub(r'\1\2"***"', line.group()), text
    )


def json_line(record: dict[str, Any]) -> str:
    """One NDJSON line, ASCII only: every control character (C0, DEL, C1) arrives escaped."""
    return json.dumps(record, separators=(",", ":"), default=str)


class Redactor:
    """Replaces every known secret of `REDACT_MIN_LENGTH` or more characters with `***` where
    it stands as a whole token: not where it is only part of a longer word."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        new = {secret for secret in secrets if len(secret) >= REDACT_MIN_LENGTH} - self._secrets
        if new:
            self._secrets |= new
            longest_first = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(_whole_token, longest_first)))

    def __call__(self, text: str) -> str:
        return self._pattern.sub("***", text) if self._pattern is not None else text

    def values(self, value: Any) -> Any:
        """`value` with every string in it redacted, through dicts, lists and tuples; dict keys
        are field names and stay as they are. A value that is neither a string, a number nor a
        container is redacted as the text it is serialised as (`str`)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {key: self.values(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.values(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self.values(item) for item in value)
        if value is None or isinstance(value, (int, float)):
            return value
        return self(str(value))

    def event(self, event: RelayEvent) -> RelayEvent:
        """`event` with its data's values redacted, ready to be shown in any form."""
        return replace(event, data=self.values(event.data))


def _whole_token(secret: str) -> str:
    """A pattern for `secret` not glued to a word character it does not end with itself."""
    before = r"(?<!\w)" if re.match(r"\w", secret[0]) else ""
    after = r"(?!\w)" if re.match(r"\w", secret[-1]) else ""
    return before + re.escape(secret) + after


class RedactingFilter(logging.Filter):
    """Formats a log record's message (and traceback) once, redacted, digest credentials masked
    and terminal-safe, so no handler can print the raw one."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._clean(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._clean(logging.Formatter().formatException(record.exc_info))
        return True

    def _clean(self, text: str) -> str:
        return terminal_safe(self._redact(mask_digest(text)), keep_newlines=True)


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
            line = json_line(self._redact.values(record))
        else:
            line = terminal_safe(plain_line(self._redact.event(event)))
        self._stream.write(line + "\n")
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
    sys.stderr.write(terminal_safe(redactor(line)) + "\n")
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
        try:
            file_handler = PrivateFileHandler(log_file, encoding="utf-8")
        except OSError as error:
            raise UsageError(f"cannot open --log-file {log_file}: {error.strerror}") from None
        file_handler.setLevel(logging.DEBUG)
        handlers.append(file_handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RedactingFilter(redactor))
        root.addHandler(handler)


class PrivateFileHandler(logging.FileHandler):
    """A log file only its owner may read: it holds SIP messages, addresses and account names.

    Created 0600; an existing regular file is tightened to 0600 as it is opened (a device such
    as /dev/stderr is left alone).
    """

    def _open(self) -> TextIOWrapper:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(self.baseFilename, flags, 0o600)
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.fchmod(fd, 0o600)
            return open(fd, "a", encoding=self.encoding, errors=self.errors)
        except BaseException:
            os.close(fd)
            raise
