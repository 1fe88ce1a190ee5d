"""The exit-code mapping as docs/exit-codes.md documents it: each failure's code, its one line
(what happened) and its hint (what to try)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sip2rtmp.errors import (
    EXIT_CODE_MEANINGS,
    AuthenticationFailed,
    BusyOrDeclined,
    CalleeNotFound,
    CallFailed,
    ExitCode,
    Interrupted,
    LabError,
    MediaTimeout,
    NoAnswer,
    RtmpOutputFailed,
    Sip2RtmpError,
    SipUnreachable,
    UsageError,
)

EXIT_CODES_DOC = next(
    folder / "docs" / "exit-codes.md"
    for folder in Path(__file__).resolve().parents
    if (folder / "docs" / "exit-codes.md").is_file()
)
"""The repository's page; the nearest one up, as mutation testing runs a copy of the tests
from a folder inside the repository (`mutants/`)."""


def documented_codes() -> dict[int, str]:
    """The `| code | meaning |` rows of docs/exit-codes.md."""
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", EXIT_CODES_DOC.read_text(), re.MULTILINE)
    return {int(code): meaning for code, meaning in rows}


def test_every_exit_code_is_documented_as_the_program_words_it() -> None:
    assert documented_codes() == {int(code): text for code, text in EXIT_CODE_MEANINGS.items()}
    assert set(EXIT_CODE_MEANINGS) == set(ExitCode)


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (Sip2RtmpError(), 1, "Sip2RtmpError"),
        (UsageError("--callee is required"), 2, "--callee is required"),
        (AuthenticationFailed(403), 3, "authentication failed (SIP 403)"),
        (CalleeNotFound(404, "Not Found"), 4, "callee not found (SIP 404 Not Found)"),
        (CalleeNotFound(480), 4, "callee not found (SIP 480)"),
        (BusyOrDeclined(486, "Busy Here"), 5, "callee busy or declined (SIP 486 Busy Here)"),
        (BusyOrDeclined(603), 5, "callee busy or declined (SIP 603)"),
        (NoAnswer(60.0), 6, "no answer within 60 s"),
        (NoAnswer(2.5), 6, "no answer within 2.5 s"),
        (SipUnreachable("pbx.test:5060"), 7, "SIP server pbx.test:5060 unreachable"),
        (
            SipUnreachable("pbx.test:5060", "no answer to OPTIONS"),
            7,
            "SIP server pbx.test:5060 unreachable: no answer to OPTIONS",
        ),
        (RtmpOutputFailed("rtmp://h/app/abcd****"), 8, "RTMP output rtmp://h/app/abcd**** failed"),
        (
            RtmpOutputFailed("rtmp://h/app/abcd****", "connection refused"),
            8,
            "RTMP output rtmp://h/app/abcd**** failed: connection refused",
        ),
        (MediaTimeout(15.0), 9, "no media from the callee within 15 s"),
        (CallFailed(488, "Not Acceptable Here"), 10, "call failed (SIP 488 Not Acceptable Here)"),
        (CallFailed(500), 10, "call failed (SIP 500)"),
        (LabError("kamailio did not start"), 11, "kamailio did not start"),
        (Interrupted(), 130, "interrupted by SIGINT before the call was established"),
        (Interrupted("SIGTERM"), 130, "interrupted by SIGTERM before the call was established"),
    ],
)
def test_each_failure_has_its_exit_code_and_one_line(
    error: Sip2RtmpError, code: int, line: str
) -> None:
    """A missing reason phrase leaves no blank before the parenthesis; an empty detail no
    dangling colon."""
    assert error.exit_code == code and code in documented_codes()
    assert error.describe() == line and str(error) == line


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (AuthenticationFailed(401), ("--sip-login", "--sip-auth-name", "password")),
        (CalleeNotFound(404), ("--callee",)),
        (BusyOrDeclined(486), ("later",)),
        (NoAnswer(60.0), ("--ring-timeout",)),
        (SipUnreachable("pbx.test"), ("--sip-domain", "--sip-outbound-proxy", "--sip-port")),
        (RtmpOutputFailed("rtmp://h/app"), ("--rtmp-url", "--rtmp-stream")),
        (MediaTimeout(15.0), ("RTP", "NAT", "firewall")),
    ],
)
def test_a_failure_the_user_can_fix_names_what_to_check(
    error: Sip2RtmpError, words: tuple[str, ...]
) -> None:
    assert all(word in error.hint for word in words), error.hint


@pytest.mark.parametrize(
    "error", [Sip2RtmpError(), UsageError("x"), CallFailed(500), LabError("x"), Interrupted()]
)
def test_a_failure_without_advice_has_no_hint(error: Sip2RtmpError) -> None:
    """No hint: `print_error` then prints the line alone, without a dangling dash."""
    assert error.hint == ""
