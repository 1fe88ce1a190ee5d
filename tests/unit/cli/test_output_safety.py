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

from sip2rtmp.cli.events import record as event_record
from sip2rtmp.cli.live import LiveView
from sip2rtmp.cli.outcomes import explain
from sip2rtmp.cli.output import (
    EventPrinter,
    Redactor,
    configure_logging,
    json_line,
    plain_line,
    print_error,
    terminal_safe,
)
from sip2rtmp.cli.summary import PlainSummary
from sip2rtmp.config import CallSettings, ConfigError, build_call_settings
from sip2rtmp.media.targets import redact
from sip2rtmp.outcomes import OutputFailed, Rejected
from sip2rtmp.relay.events import (
    Codec,
    Established,
    Failed,
    OutputChanged,
    Registered,
    RelayEvent,
    Trying,
)
from tests.unit.cli.sip_stub import OptionsResponder, invoke_check
from tests.unit.cli.test_live import rendered, stats

HOSTILE_REASON = "\x1b[2J\x1b]0;pwned\x07Busy\u202eereh"
RAW_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""Anything a terminal would act on; no line written for one may hold any."""
SERVER = "rtmp://127.0.0.1:19350/live"


def settings_with(stream_key: str, password: str = "pw") -> CallSettings:
    return build_call_settings(
        callee="1001", sip_login="relay", sip_auth_name=None, sip_password=password,
        sip_domain="pbx.test", sip_outbound_proxy=None, sip_port=None, sip_transport="udp",
        register=True, rtmp_urls=(SERVER,), rtmp_streams=(stream_key,),
        audio=True, video=True, call_id="c1", max_duration=None, ring_timeout=60.0,
        media_timeout=15.0,
    )  # fmt: skip


def plain(event: RelayEvent) -> str:
    stream = io.StringIO()
    EventPrinter("c1", as_json=False, stream=stream)(event)
    return stream.getvalue().split(" ", 1)[1]


# ---- secrets masked by field ----------------------------------------------------------------


def a_run_streaming_to(stream_key: str) -> list[RelayEvent]:
    """What a relay reports for one output: its target in the display form the output module
    gives it, in state changes and stats, and a failure whose words hold the key's letters."""
    (target,) = settings_with(stream_key).rtmp_targets
    shown = redact(target.url)
    return [
        Trying(f"sip:{stream_key}-desk@pbx.test"),
        Established(200, "OK", Codec("PCMU", 8000), None),
        OutputChanged(shown, "live"),
        stats(-20.0, target=shown),
        OutputChanged(shown, "failed", f"Connection to {shown} refused"),
        Failed(OutputFailed(shown, "exited with an exit code")),
    ]


@pytest.mark.parametrize("key", ["live", "x"])
def test_a_short_stream_key_is_masked_in_the_target_and_nowhere_else(key: str) -> None:
    """Keys `live` (common on nginx) and `x`: the target reads `rtmp://…/live/***`, and every
    other word is as the relay made it. Masking by substring over the line once printed
    `output target=rtmp://127.0.0.1:19350/***/*** state=***` and `e***itCode=10`."""
    events = a_run_streaming_to(key)
    json_out, plain_out = io.StringIO(), io.StringIO()
    printer = EventPrinter("c1", as_json=True, stream=json_out)
    summary = PlainSummary(stream=plain_out)
    view = LiveView(call_id="c1")
    for event in events:
        printer(event)
        summary(event)
        view(event)
    masked = f"{SERVER}/***"
    records = [json.loads(line) for line in json_out.getvalue().splitlines()]
    assert [r["target"] for r in records if r["event"] == "output"] == [masked, masked]
    assert records[3]["outputs"][0]["target"] == masked
    assert records[0]["callee"] == f"sip:{key}-desk@pbx.test"
    assert records[-1] == {
        "event": "status", "ts": records[-1]["ts"], "callId": "c1", "status": "FAILED",
        "reason": f"RTMP output {masked} failed: exited with an exit code", "exitCode": 8,
    }  # fmt: skip
    lines = [line.split(" ", 1)[1] for line in plain_out.getvalue().splitlines()]
    assert lines[2] == f"output target={masked} state=live"
    assert lines[-1] == (
        f'FAILED reason="RTMP output {masked} failed: exited with an exit code" exitCode=8'
    )
    shown = rendered(view, width=200)
    assert masked in shown and f"failed: Connection to {masked} refused" in shown
    for text in (json_out.getvalue(), plain_out.getvalue(), shown):
        assert f"{SERVER}/{key}" not in text


def test_printers_print_event_values_as_the_relay_made_them() -> None:
    """Nothing is searched for secrets in an event: a call id or a reason phrase that happens
    to equal a stream key or a field name reaches every printer untouched."""
    event = Failed(Rejected("INVITE", 503, "exitCode received live x", "pbx.test"))
    assert plain(event) == (
        'FAILED reason="call failed (SIP 503 exitCode received live x)" exitCode=10\n'
    )
    assert event_record(event)["reason"] == explain(event.outcome).message


# ---- the free-text redactor: log records and unexpected errors ------------------------------


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
def test_a_long_password_is_masked_as_a_whole_token_only(
    secret: str, text: str, shown: str
) -> None:
    assert Redactor([secret])(text) == shown


def test_secrets_added_later_join_the_earlier_ones() -> None:
    """The password is known before the settings name the targets: all stay masked."""
    redact_text = Redactor(["password-1"])
    redact_text.add_url(f"{SERVER}/stream-key-2", f"{SERVER}/***")
    redact_text.add("short", "password-1")
    assert redact_text(f"password-1 {SERVER}/stream-key-2 short") == (f"*** {SERVER}/*** short")


def test_a_secret_that_extends_another_is_masked_whole() -> None:
    """`hunter2!` and `hunter2!extra` both match at the same place: the longer wins, or
    `extra` would be left showing."""
    for secrets in (["hunter2!", "hunter2!extra"], ["hunter2!extra", "hunter2!"]):
        assert Redactor(secrets)("key hunter2!extra, pw hunter2!") == "key ***, pw ***"


@pytest.mark.parametrize("key", ["live", "x", "exitCode"])
def test_free_text_loses_the_full_target_url_and_keeps_every_word(key: str) -> None:
    """A library's log line naming the full URL shows its display form; the key alone, a
    common word, is not searched for."""
    (target,) = settings_with(key).rtmp_targets
    redact_text = Redactor()
    redact_text.add_url(target.url, redact(target.url))
    line = f"[flv @ 0x1] {target.url}: live exitCode x failed"
    assert redact_text(line) == f"[flv @ 0x1] {SERVER}/***: live exitCode x failed"


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
    printer = EventPrinter("weekly-42", as_json=True, stream=stream)
    before = datetime.now(UTC)
    printer(Failed(Rejected("INVITE", 500, "Busy", "pbx.test")))
    printer(Registered(600))
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
        "reason": "call failed (SIP 500 Busy)",
        "exitCode": 10,
    }
    assert registered == {"event": "registered", "callId": "weekly-42", "expires": 600}


def test_a_json_line_is_compact_and_shows_any_value_as_text() -> None:
    record = {"event": "media", "remote": ["10.0.0.2", 4000], "file": Path("/tmp/a b")}
    assert json_line(record) == '{"event":"media","remote":["10.0.0.2",4000],"file":"/tmp/a b"}'


def test_a_plain_line_shows_nested_values_compactly() -> None:
    established = Established(200, "OK", Codec("PCMU", 8000), None)
    assert plain(established) == (
        "ESTABLISHED code=200 reason=OK audio=codec:PCMU,rate:8000 srtp=null\n"
    )
    fields = {"event": "status", "status": "FINISH", "reason": "bye", "duration": 1.25}
    assert plain_line(fields).split(" ", 1)[1] == "FINISH reason=bye duration=1.25"


# ---- the log file ---------------------------------------------------------------------------


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
    with pytest.raises(ConfigError, match=r"cannot open --log-file .*run\.log: No such file"):
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
    with pytest.raises(ConfigError, match=r"cannot open --log-file .*: Operation not permitted"):
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
    error = explain(Rejected("INVITE", 486, HOSTILE_REASON + "\r\nsecond line", "pbx.test"))
    print_error(error.message, error.hint)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pwned" in err
    assert not RAW_CONTROL.search(err[:-1])


def test_plain_lines_are_safe() -> None:
    busy = Failed(Rejected("INVITE", 486, HOSTILE_REASON, "pbx.test"))
    line = plain(busy)
    assert "pwned" in line and not RAW_CONTROL.search(line[:-1])
    stream = io.StringIO()
    PlainSummary(stream=stream)(busy)
    assert "pwned" in stream.getvalue() and not RAW_CONTROL.search(stream.getvalue()[:-1])


def test_json_lines_escape_every_control_character() -> None:
    record = {"event": "status", "reason": HOSTILE_REASON + "\x7f\x9b"}
    line = json_line(record)
    assert not RAW_CONTROL.search(line)
    assert json.loads(line) == record
    stream = io.StringIO()
    EventPrinter("c1", as_json=True, stream=stream)(
        Failed(Rejected("INVITE", 486, "\x7f\x9b" + HOSTILE_REASON, "pbx.test"))
    )
    assert not RAW_CONTROL.search(stream.getvalue()[:-1])
    reason = json.loads(stream.getvalue())["reason"]
    assert reason == f"callee busy or declined (SIP 486 \x7f\x9b{HOSTILE_REASON})"


def test_the_live_view_shows_peer_text_without_its_escapes() -> None:
    view = LiveView(call_id="c1")
    view(Failed(Rejected("INVITE", 486, HOSTILE_REASON, "pbx.test")))
    view(OutputChanged("rtmp://h/app/***", "failed", "peer said \x1b[31mno"))
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
