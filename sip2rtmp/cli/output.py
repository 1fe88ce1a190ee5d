"""Where a run's events and errors go: NDJSON, plain lines, or stderr.

Secrets are masked where they are known, by field: an output's target is its display form
before it becomes an event, reasons come from outcomes, the password is a `Secret`. So events
are printed as they are, never searched for secrets. Free text from third parties is the one
exception: a log record (a library's message, an FFmpeg error) passes the `Redactor`, which
replaces the known full values (the password, a target's full URL) as a last defence. SRTP
master keys are the other exception: they travel inside SDP (RFC 4568 `inline:`), which a SIP
message logged at -vv, a parser's complaint or a peer's reason may quote, so every log record,
event and error line has them masked by `mask_keys`. Text from
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
from datetime import UTC, datetime
from io import TextIOWrapper
from pathlib import Path
from typing import IO, Any

from sip2rtmp.cli.events import Record, record
from sip2rtmp.config import ConfigError
from sip2rtmp.relay.events import RelayEvent
from sip2rtmp.sip.sdes import mask_keys

REDACT_MIN_LENGTH = 8
"""Shortest password the redactor replaces in free text. A shorter one (like a stream key `live`
or `x`) occurs in ordinary words too often to be cut out of text without mangling it: such a
value is masked where it is shown (`Secret`, an output's display form), never searched for."""

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
    """Replaces the known full secret values in free text: each target URL by its display form,
    each password of `REDACT_MIN_LENGTH` or more characters by `***` where it stands as a whole
    token (not where it is only part of a longer word), and every SRTP key (`inline:***`)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._urls: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        """Passwords (and other whole values) to mask in free text."""
        new = {secret for secret in secrets if len(secret) >= REDACT_MIN_LENGTH} - self._secrets
        if new:
            self._secrets |= new
            self._compile()

    def add_url(self, url: str, display: str) -> None:
        """A full URL (an RTMP target with its stream key) to show as `display` in free text."""
        if url and url != display and url not in self._urls:
            self._urls[url] = display
            self._compile()

    def _compile(self) -> None:
        """One pattern, the longest value first, so a secret that starts another (`abcdefgh`,
        `abcdefgh!`) never masks only its start."""
        values = sorted([*self._urls, *self._secrets], key=len, reverse=True)
        patterns = [re.escape(v) if v in self._urls else _whole_token(v) for v in values]
        self._pattern = re.compile("|".join(patterns))

    def __call__(self, text: str) -> str:
        text = mask_keys(text)
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda found: self._urls.get(found.group(), "***"), text)


def _whole_token(secret: str) -> str:
    """A pattern for `secret` not glued to a word character it does not end with itself."""
    before = r"(?<!\w)" if re.match(r"\w", secret[0]) else ""
    after = r"(?!\w)" if re.match(r"\w", secret[-1]) else ""
    return before + re.escape(secret) + after


_CLEANED = "sip2rtmp_cleaned"
"""The attribute that marks a log record `RedactingFilter` has already cleaned."""


class RedactingFilter(logging.Filter):
    """Formats a log record's message (and traceback) once, redacted, digest credentials masked
    and terminal-safe, so no handler can print the raw one. Each handler has this filter: the
    first to see a record cleans it, the others find it clean."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _CLEANED, False):
            return True
        setattr(record, _CLEANED, True)
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

    def __init__(self, call_id: str, *, as_json: bool, stream: IO[str]) -> None:
        self._call_id = call_id
        self._json = as_json
        self._stream = stream

    def __call__(self, event: RelayEvent) -> None:
        fields = record(event)
        if self._json:
            line = json_line(json_record(fields, timestamp(), self._call_id))
        else:
            line = terminal_safe(plain_line(fields))
        self._stream.write(line + "\n")
        self._stream.flush()


def json_record(fields: Record, ts: str, call_id: str) -> Record:
    """The NDJSON object: `event`, then `ts` and `callId`, then the rest of `fields`."""
    name, *rest = fields.items()
    return dict([name, ("ts", ts), ("callId", call_id), *rest])


def plain_line(fields: Record) -> str:
    """A record as one plain line: the time, the status (or the event's name), `key=value`s."""
    rest = {key: value for key, value in fields.items() if key not in ("event", "status")}
    words = [timestamp(), str(fields.get("status") or fields["event"])]
    words += [f"{key}={_plain_value(value)}" for key, value in rest.items()]
    return " ".join(words)


def _plain_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ",".join(f"{k}:{_plain_value(v)}" for k, v in value.items())
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


def print_error(message: str, hint: str = "") -> None:
    """The one line a failure prints (and its hint on the same line, after a dash)."""
    line = f"sip2rtmp: error: {message}"
    if hint:
        line += f" — {hint}"
    sys.stderr.write(terminal_safe(mask_keys(line)) + "\n")
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
            raise ConfigError(f"cannot open --log-file {log_file}: {error.strerror}") from None
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
