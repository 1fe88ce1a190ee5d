"""What leaves the process: secrets masked without mangling text, the log file private and free
of digest responses, and peer text that cannot drive the terminal."""

from __future__ import annotations

import errno
import io
import json
import locale
import logging
import os
import re
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from sip2rtmp.cli.live import LiveView
from sip2rtmp.cli.output import (
    EventPrinter,
    Redactor,
    configure_logging,
    json_line,
    print_error,
    terminal_safe,
)
from sip2rtmp.cli.summary import PlainSummary
from sip2rtmp.config import build_call_settings
from sip2rtmp.errors import BusyOrDeclined, UsageError
from sip2rtmp.status import CallStatus, RelayEvent
from tests.unit.cli.sip_stub import OptionsResponder, invoke_check
from tests.unit.cli.test_live import rendered, stats

HOSTILE_REASON = "\x1b[2J\x1b]0;pwned\x07Busy\u202eereh"
RAW_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""Anything a terminal would act on; no line written for one may hold any."""


def redactor_for(stream_key: str, password: str = "pw") -> Redactor:
    """The redactor a run builds: every secret the settings name."""
    settings = build_call_settings(
        callee="1001", sip_login="relay", sip_auth_name=None, sip_password=password,
        sip_domain="pbx.test", sip_outbound_proxy=None, sip_port=None, sip_transport="udp",
        register=True, rtmp_urls=("rtmp://127.0.0.1:19350/live",), rtmp_streams=(stream_key,),
        audio=True, video=True, call_id="c1", max_duration=None, ring_timeout=60.0,
        media_timeout=15.0,
    )  # fmt: skip
    return Redactor(settings.secrets)


def plain(event: RelayEvent, redactor: Redactor) -> str:
    stream = io.StringIO()
    EventPrinter("c1", redactor, as_json=False, stream=stream)(event)
    return stream.getvalue().split(" ", 1)[1]


# ---- the line redactor ----------------------------------------------------------------------


def test_a_short_stream_key_does_not_mangle_the_output() -> None:
    """Key `live`, as on nginx: before, `output target=rtmp://127.0.0.1:19350/***/*** state=***`."""
    output = RelayEvent(
        "output", data={"target": "rtmp://127.0.0.1:19350/live/***", "state": "live"}
    )
    assert plain(output, redactor_for("live")) == (
        "output target=rtmp://127.0.0.1:19350/live/*** state=live\n"
    )


def test_a_one_letter_stream_key_does_not_mangle_the_output() -> None:
    """Key `x`: before, `exitCode=10` read `e***itCode=10`."""
    failed = RelayEvent("status", CallStatus.FAILED, {"reason": "Busy Here", "exitCode": 10})
    assert plain(failed, redactor_for("x")) == 'FAILED reason="Busy Here" exitCode=10\n'


@pytest.mark.parametrize(
    ("secret", "text", "shown"),
    [
        ("Long-Passw0rd-77", "auth Long-Passw0rd-77 failed", "auth *** failed"),
        ("Long-Passw0rd-77", "rtmp://u:Long-Passw0rd-77@h/app", "rtmp://u:***@h/app"),
        # Glued to a word character: part of a longer word, not that token.
        ("Long-Passw0rd-77", "xLong-Passw0rd-77", "xLong-Passw0rd-77"),
        ("Long-Passw0rd-77", "Long-Passw0rd-778", "Long-Passw0rd-778"),
        ("a-Passw0rd", "xa-Passw0rd", "xa-Passw0rd"),
        # A secret that starts or ends with a non-word character has no word boundary there:
        # whatever it is glued to, it is that secret.
        ("@Passw0rd-77", "user@Passw0rd-77", "user***"),
        ("Passw0rd-77!", "Passw0rd-77!x", "***x"),
        ("-Passw0rd-", "a-Passw0rd-b", "a***b"),
    ],
)
def test_a_long_secret_is_masked_as_a_whole_token_only(secret: str, text: str, shown: str) -> None:
    assert redactor_for("k", password=secret)(text) == shown


def test_secrets_added_later_join_the_earlier_ones() -> None:
    """The password is known before the profile names the stream keys: both stay masked."""
    redact = Redactor(["password-1"])
    redact.add("stream-key-2")
    redact.add("short", "password-1")
    assert redact("password-1 stream-key-2 short") == "*** *** short"


def test_a_secret_that_extends_another_is_masked_whole() -> None:
    """`hunter2!` and `hunter2!extra` both match at the same place: the longer wins, or
    `extra` would be left showing."""
    for secrets in (["hunter2!", "hunter2!extra"], ["hunter2!extra", "hunter2!"]):
        assert Redactor(secrets)("key hunter2!extra, pw hunter2!") == "key ***, pw ***"


KEY_LIKE_A_FIELD = "received"
"""A stream key that is also a field name (`rtp.received` in `stats`; `exitCode` likewise)."""


def test_a_secret_in_a_value_is_masked_in_every_nested_value_and_no_key() -> None:
    redact = Redactor([KEY_LIKE_A_FIELD, "Grüße-Paß-1"])
    record = {
        "received": 3,
        "target": "rtmp://h/app/received",
        "outputs": [{"received": "received", "path": Path("/srv/received")}],
        "pair": ("received", 1.5, None, True),
        "reason": "auth Grüße-Paß-1",
    }
    assert redact.values(record) == {
        "received": 3,
        "target": "rtmp://h/app/***",
        "outputs": [{"received": "***", "path": "/srv/***"}],
        "pair": ("***", 1.5, None, True),
        "reason": "auth ***",
    }


def test_a_non_ascii_secret_is_masked_in_a_json_event() -> None:
    """JSON escapes non-ASCII text (`\\u00fc`): masking the serialised line missed it."""
    stream = io.StringIO()
    EventPrinter("c1", Redactor(["Grüße-Paß-1"]), as_json=True, stream=stream)(
        RelayEvent("status", CallStatus.FAILED, {"reason": "auth Grüße-Paß-1", "exitCode": 3})
    )
    assert json.loads(stream.getvalue())["reason"] == "auth ***"


@pytest.mark.parametrize("key", ["exitCode", KEY_LIKE_A_FIELD, "callId-0"])
def test_a_key_named_like_a_field_leaves_json_events_intact(key: str) -> None:
    stream = io.StringIO()
    printer = EventPrinter(f"call-{key}", redactor_for(key), as_json=True, stream=stream)
    printer(RelayEvent("status", CallStatus.FAILED, {"reason": f"no {key}", "exitCode": 10}))
    printer(stats(-20.0))
    failed, stats_record = map(json.loads, stream.getvalue().splitlines())
    assert failed["exitCode"] == 10 and failed["reason"] == "no ***"
    assert failed["callId"] == "call-***" and failed["status"] == "FAILED"
    assert stats_record["rtp"]["received"] == 3250


def test_a_key_named_like_a_field_leaves_plain_lines_intact() -> None:
    redact = redactor_for(KEY_LIKE_A_FIELD)
    failed = RelayEvent("status", CallStatus.FAILED, {"reason": "received", "received": 10})
    assert plain(failed, redact) == "FAILED reason=*** received=10\n"
    stream = io.StringIO()
    summary = PlainSummary(redact, stream=stream)
    summary(stats(-20.0))
    summary(failed)
    summary_line, status_line = stream.getvalue().splitlines()
    assert ",received:3250," in summary_line
    assert status_line.endswith(" FAILED reason=*** received=10")


def test_a_key_named_like_a_field_leaves_the_live_view_intact() -> None:
    view = LiveView(redactor_for(KEY_LIKE_A_FIELD), call_id="c-received")
    view(stats(-20.0))
    view(RelayEvent("dtmf", data={"digit": "5", "direction": "received"}))
    view(RelayEvent("output", data={"target": "rtmp://h/app/received", "state": "live"}))
    text = rendered(view)
    assert "received 3250" in text and "received 5" in text
    assert "rtmp://h/app/***" in text and "c-***" in text
    assert "rtmp://h/app/received" not in text and "c-received" not in text


def test_a_key_named_like_a_field_leaves_check_records_intact(responder: OptionsResponder) -> None:
    """The RTMP check fails (the port is closed): its record keeps its `exitCode` field."""
    url = "rtmp://127.0.0.1:1/app"
    _, stdout = run_check(responder, "--rtmp-url", url, "--rtmp-stream", "exitCode", "--json")
    records = [json.loads(line) for line in stdout.splitlines()]
    rtmp = [record for record in records if record.get("check") == "RTMP output"]
    assert [(record["result"], record.get("exitCode")) for record in rtmp] == [("fail", 8)]
    assert "exitCode" not in rtmp[0]["target"] + rtmp[0]["detail"]


def test_credentials_in_an_rtmp_url_never_show(responder: OptionsResponder) -> None:
    url = "rtmp://user:pw-Secret-991@127.0.0.1:1/app?token=tok-Secret-992"
    code, stdout = run_check(responder, "--rtmp-url", url, "--rtmp-stream", "k")
    assert code == 8  # the RTMP port is closed
    assert "pw-Secret-991" not in stdout and "tok-Secret-992" not in stdout
    assert "rtmp://user:***@127.0.0.1:1/app/****?token=tok-****" in stdout


# ---- the events' form (docs/events.md) ------------------------------------------------------

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
"""`ts`: UTC, ISO 8601 with milliseconds: `2025-03-02T18:00:04.512Z`."""


def test_a_json_event_has_the_documented_fields() -> None:
    stream = io.StringIO()
    printer = EventPrinter("weekly-42", Redactor(), as_json=True, stream=stream)
    before = datetime.now(UTC)
    printer(RelayEvent("status", CallStatus.FAILED, {"reason": "Busy", "exitCode": 10}))
    printer(RelayEvent("registered", data={"expires": 600}))
    after = datetime.now(UTC)
    failed, registered = map(json.loads, stream.getvalue().splitlines())
    for record in (failed, registered):
        assert TIMESTAMP.fullmatch(record["ts"]), record["ts"]
        when = datetime.fromisoformat(record.pop("ts"))
        assert before - timedelta(milliseconds=1) <= when <= after
    assert failed == {
        "event": "status",
        "callId": "weekly-42",
        "status": "FAILED",
        "reason": "Busy",
        "exitCode": 10,
    }
    assert registered == {"event": "registered", "callId": "weekly-42", "expires": 600}


def test_a_json_line_is_compact_and_shows_any_value_as_text() -> None:
    record = {"event": "media", "remote": ["10.0.0.2", 4000], "file": Path("/tmp/a b")}
    assert json_line(record) == '{"event":"media","remote":["10.0.0.2",4000],"file":"/tmp/a b"}'


def test_a_plain_line_shows_nested_values_compactly() -> None:
    established = RelayEvent(
        "status",
        CallStatus.ESTABLISHED,
        {"code": 200, "reason": "OK", "audio": {"codec": "PCMU", "rate": 8000}, "duration": 1.25},
    )
    shown = plain(established, Redactor())
    assert shown == "ESTABLISHED code=200 reason=OK audio=codec:PCMU,rate:8000 duration=1.25\n"


# ---- the log file ---------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger("sip2rtmp")
    saved = (root.handlers[:], root.level, root.propagate)
    yield
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


AUTHORIZATION = (
    'Authorization: Digest username="relay", realm="pbx.test", nonce="n0nce-value-17", '
    'uri="sip:pbx.test", response="6629fae49393a05397450978507c4ef1", algorithm=MD5, '
    'cnonce="cn0nce-value-18", qop=auth, nc=00000001'
)


LOG_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ([\w.]+): (.*)"
)
"""A log record's first line: time, level, logger, message."""


@pytest.mark.usefixtures("restore_logging")
def test_the_log_file_is_private_and_holds_no_digest_response(tmp_path: Path) -> None:
    """RFC 7616 §5.12: a logged response (with its nonces) lets a reader guess the password
    offline. A SIP message keeps its lines, so the log stays readable."""
    log_file = tmp_path / "run.log"
    configure_logging(0, False, log_file, Redactor())
    message = f"REGISTER sip:pbx.test SIP/2.0\r\n{AUTHORIZATION}\r\nContent-Length: 0\r\n\r\n"
    logging.getLogger("sip2rtmp.sip.wire").debug("sent 127.0.0.1:5060\n%s", message)
    logging.getLogger("sip2rtmp.sip.wire").debug("x\nProxy-Authorization: Digest response=abc12")
    lines = log_file.read_text().split("\n")
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    first = LOG_LINE.fullmatch(lines[0])
    assert first is not None and first.groups() == (
        "DEBUG",
        "sip2rtmp.sip.wire",
        "sent 127.0.0.1:5060",
    )
    assert lines[1:6] == [
        "REGISTER sip:pbx.test SIP/2.0",
        'Authorization: Digest username="relay", realm="pbx.test", nonce="***", '
        'uri="sip:pbx.test", response="***", algorithm=MD5, cnonce="***", qop=auth, nc=00000001',
        "Content-Length: 0",
        "",
        "",
    ]
    assert LOG_LINE.fullmatch(lines[6]) and lines[7:] == [
        'Proxy-Authorization: Digest response="***"',
        "",
    ]


@pytest.mark.usefixtures("restore_logging")
def test_an_existing_log_file_is_tightened(tmp_path: Path) -> None:
    log_file = tmp_path / "run.log"
    log_file.write_text("earlier run\n")
    log_file.chmod(0o644)
    configure_logging(0, False, log_file, Redactor())
    assert stat.S_IMODE(os.stat(log_file).st_mode) == 0o600
    assert log_file.read_text() == "earlier run\n"


@pytest.mark.usefixtures("restore_logging")
def test_a_log_record_and_its_traceback_are_terminal_safe(tmp_path: Path) -> None:
    log_file = tmp_path / "run.log"
    configure_logging(0, False, log_file, Redactor())
    log = logging.getLogger("sip2rtmp.test")
    log.warning("peer said %s", HOSTILE_REASON)
    try:
        raise ValueError(HOSTILE_REASON)
    except ValueError:
        log.debug("failed", exc_info=True)
    text = log_file.read_text()
    assert "pwned" in text and "ValueError" in text
    assert not RAW_CONTROL.search(text.replace("\n", ""))


@pytest.mark.parametrize(
    ("verbose", "quiet", "shown"),
    [
        (0, False, ["WARNING", "ERROR"]),
        (1, False, ["INFO", "WARNING", "ERROR"]),
        (2, False, ["DEBUG", "INFO", "WARNING", "ERROR"]),
        (5, False, ["DEBUG", "INFO", "WARNING", "ERROR"]),
        (0, True, ["ERROR"]),
        (2, True, ["ERROR"]),
    ],
)
@pytest.mark.usefixtures("restore_logging")
def test_verbose_and_quiet_set_what_reaches_stderr(
    capsys: pytest.CaptureFixture[str], verbose: int, quiet: bool, shown: list[str]
) -> None:
    """-v shows INFO, -vv (or more) DEBUG; --quiet only errors, whatever -v says. Nothing on
    stdout: it is for events."""
    configure_logging(verbose, quiet, None, Redactor())
    log = logging.getLogger("sip2rtmp.test")
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
        log.log(level, "at %s", logging.getLevelName(level))
    out, err = capsys.readouterr()
    assert out == ""
    records = [LOG_LINE.fullmatch(line) for line in err.splitlines()]
    levels = [(m.group(1), m.group(3)) for m in records if m]
    assert levels == [(level, f"at {level}") for level in shown]
    assert len(records) == len(shown)


@pytest.mark.usefixtures("restore_logging")
def test_debug_records_are_made_only_when_something_keeps_them(tmp_path: Path) -> None:
    """The SIP wire log decodes every message only if DEBUG is enabled: without -vv or a log
    file it is not, with a log file (which keeps everything) it is."""
    wire = logging.getLogger("sip2rtmp.sip.wire")
    configure_logging(1, False, None, Redactor())
    assert not wire.isEnabledFor(logging.DEBUG)
    configure_logging(0, True, tmp_path / "run.log", Redactor())
    assert wire.isEnabledFor(logging.DEBUG)


class Collecting(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.usefixtures("restore_logging")
def test_records_do_not_reach_handlers_outside_the_program(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A library's handler on the root logger (which may print to stdout, or unredacted)
    never sees a record: the program's handlers are the only ones."""
    outside = Collecting()
    logging.getLogger().addHandler(outside)
    try:
        configure_logging(0, False, None, Redactor())
        logging.getLogger("sip2rtmp.test").error("relay failed")
    finally:
        logging.getLogger().removeHandler(outside)
    assert outside.records == []
    assert "relay failed" in capsys.readouterr().err


@pytest.mark.usefixtures("restore_logging")
def test_a_log_file_that_cannot_be_opened_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "run.log"
    with pytest.raises(UsageError, match=r"cannot open --log-file .*run\.log: No such file"):
        configure_logging(0, False, missing, Redactor())


@pytest.mark.usefixtures("restore_logging")
def test_a_log_file_that_cannot_be_made_private_is_refused_and_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log file that cannot be tightened to 0600 (not ours to chmod) is not written to."""

    def refuse(fd: int, mode: int) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", refuse)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(UsageError, match=r"cannot open --log-file .*: Operation not permitted"):
        configure_logging(0, False, tmp_path / "run.log", Redactor())
    assert len(os.listdir("/proc/self/fd")) == before, "the descriptor was left open"


@pytest.mark.usefixtures("restore_logging")
def test_a_new_log_file_is_private_from_its_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created 0600, not made 0600 a moment later: no other user can open it in between."""
    seen: list[int] = []
    fchmod = os.fchmod

    def spy(fd: int, mode: int) -> None:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        fchmod(fd, mode)

    monkeypatch.setattr(os, "fchmod", spy)
    umask = os.umask(0o022)
    try:
        configure_logging(0, False, tmp_path / "run.log", Redactor())
    finally:
        os.umask(umask)
    assert seen == [0o600]


@pytest.mark.usefixtures("restore_logging")
def test_two_runs_sharing_a_log_file_append_to_it(tmp_path: Path) -> None:
    """Every record goes to the end of the file (O_APPEND), even after another run wrote."""
    log_file = tmp_path / "run.log"
    configure_logging(0, False, log_file, Redactor())
    log = logging.getLogger("sip2rtmp.test")
    log.warning("first")
    with log_file.open("a") as other:
        other.write("other run\n")
    log.warning("second")
    lines = log_file.read_text().splitlines()
    assert [line.rsplit(": ", 1)[-1] for line in lines] == ["first", "other run", "second"]


@pytest.mark.usefixtures("restore_logging")
def test_the_log_file_is_utf8_whatever_the_locale(tmp_path: Path) -> None:
    """Peer text is often not ASCII: opened in an ASCII locale, the log still takes it, as
    UTF-8, rather than dropping the record."""
    log_file = tmp_path / "run.log"
    saved = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        configure_logging(0, True, log_file, Redactor())
    finally:
        locale.setlocale(locale.LC_CTYPE, saved)
    logging.getLogger("sip2rtmp.test").info("peer said Grüße ✓")
    assert log_file.read_bytes().endswith("peer said Grüße ✓\n".encode())


# ---- text from the network on a terminal ----------------------------------------------------


def test_terminal_safe() -> None:
    assert terminal_safe("a\tb\r\nc") == "a b  c"
    assert terminal_safe("a\x1b[2Jb\x07\x9b\x7f") == "a\ufffd[2Jb\ufffd\ufffd\ufffd"
    assert terminal_safe("a\r\nb", keep_newlines=True) == "a\nb"
    assert terminal_safe("Grüße ✓ — µ") == "Grüße ✓ — µ"


def test_an_error_line_is_one_safe_line(capsys: pytest.CaptureFixture[str]) -> None:
    error = BusyOrDeclined(486, HOSTILE_REASON + "\r\nsecond line")
    print_error(error.describe(), error.hint, Redactor())
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pwned" in err
    assert not RAW_CONTROL.search(err[:-1])


def test_plain_lines_are_safe() -> None:
    busy = RelayEvent("status", CallStatus.BUSY, {"code": 486, "reason": HOSTILE_REASON})
    line = plain(busy, Redactor())
    assert "pwned" in line and not RAW_CONTROL.search(line[:-1])
    stream = io.StringIO()
    PlainSummary(Redactor(), stream=stream)(busy)
    assert "pwned" in stream.getvalue() and not RAW_CONTROL.search(stream.getvalue()[:-1])


def test_json_lines_escape_every_control_character() -> None:
    record = {"event": "status", "reason": HOSTILE_REASON + "\x7f\x9b"}
    line = json_line(record)
    assert not RAW_CONTROL.search(line)
    assert json.loads(line) == record
    stream = io.StringIO()
    EventPrinter("c1", Redactor(), as_json=True, stream=stream)(
        RelayEvent("status", CallStatus.BUSY, {"reason": "\x7f\x9b" + HOSTILE_REASON})
    )
    assert not RAW_CONTROL.search(stream.getvalue()[:-1])
    assert json.loads(stream.getvalue())["reason"] == "\x7f\x9b" + HOSTILE_REASON


def test_the_live_view_shows_peer_text_without_its_escapes() -> None:
    view = LiveView(Redactor(), call_id="c1")
    view(RelayEvent("status", CallStatus.BUSY, {"code": 486, "reason": HOSTILE_REASON}))
    view(RelayEvent("output", data={"target": "rtmp://h/app/***", "state": "failed",
                                    "error": "peer said \x1b[31mno"}))  # fmt: skip
    console = Console(file=io.StringIO(), width=120, color_system=None, force_terminal=False)
    console.print(view.render())
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "pwned" in shown and "peer said" in shown
    assert not RAW_CONTROL.search(shown.replace("\n", ""))


# ---- `sip2rtmp check` end to end, against a server with a hostile reason phrase -------------


@pytest.fixture
def responder() -> Iterator[OptionsResponder]:
    server = OptionsResponder(HOSTILE_REASON)
    yield server
    server.close()


def run_check(responder: OptionsResponder, *args: str) -> tuple[int, str]:
    return invoke_check("--sip-domain", "pbx.test", "--sip-outbound-proxy",
                        f"127.0.0.1:{responder.port}", "--no-register", *args)  # fmt: skip


@pytest.mark.parametrize("as_json", [False, True])
def test_check_shows_a_hostile_reason_phrase_safely(
    responder: OptionsResponder, as_json: bool
) -> None:
    extra = ["--json"] if as_json else []
    _, stdout = run_check(responder, "--rtmp-url", "rtmp://127.0.0.1:1/live", *extra)
    assert "pwned" in stdout
    assert not RAW_CONTROL.search(stdout.replace("\n", ""))
    if as_json:
        first = json.loads(stdout.splitlines()[0])
        assert first["detail"] == f"reachable, OPTIONS answered 200 {HOSTILE_REASON}"
