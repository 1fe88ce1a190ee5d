"""What leaves the process: secrets masked without mangling text, the log file private and free
of digest responses, and peer text that cannot drive the terminal."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import stat
from collections.abc import Iterator
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
from sip2rtmp.errors import BusyOrDeclined
from sip2rtmp.status import CallStatus, RelayEvent
from tests.unit.cli.sip_stub import OptionsResponder, invoke_check

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


def test_a_long_secret_is_masked_as_a_whole_token_only() -> None:
    redact = redactor_for("k", password="Long-Passw0rd-77")
    assert redact("auth Long-Passw0rd-77 failed") == "auth *** failed"
    assert redact("rtmp://u:Long-Passw0rd-77@h/app") == "rtmp://u:***@h/app"
    assert redact("xLong-Passw0rd-77") == "xLong-Passw0rd-77"  # inside a word: not that token


def test_credentials_in_an_rtmp_url_never_show(responder: OptionsResponder) -> None:
    url = "rtmp://user:pw-Secret-991@127.0.0.1:1/app?token=tok-Secret-992"
    code, stdout = run_check(responder, "--rtmp-url", url, "--rtmp-stream", "k")
    assert code == 8  # the RTMP port is closed
    assert "pw-Secret-991" not in stdout and "tok-Secret-992" not in stdout
    assert "rtmp://user:***@127.0.0.1:1/app/****?token=tok-****" in stdout


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


@pytest.mark.usefixtures("restore_logging")
def test_the_log_file_is_private_and_holds_no_digest_response(tmp_path: Path) -> None:
    log_file = tmp_path / "run.log"
    configure_logging(0, False, log_file, Redactor())
    message = f"REGISTER sip:pbx.test SIP/2.0\r\n{AUTHORIZATION}\r\nContent-Length: 0\r\n\r\n"
    logging.getLogger("sip2rtmp.sip.wire").debug("sent 127.0.0.1:5060\n%s", message)
    logging.getLogger("sip2rtmp.sip.wire").debug("x\nProxy-Authorization: Digest response=abc12")
    text = log_file.read_text()
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    assert "6629fae4" not in text and "n0nce-value-17" not in text and "cn0nce-value" not in text
    assert 'username="relay"' in text and 'response="***"' in text and "nc=00000001" in text
    assert "abc12" not in text
    assert "\r" not in text


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
