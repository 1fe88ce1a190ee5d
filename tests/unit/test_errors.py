"""The exit-code mapping as docs/exit-codes.md documents it: each outcome's code, its one line
(what happened) and its hint (what to try), from the protocol facts the cores report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sip2rtmp.cli.outcomes import EXIT_CODE_MEANINGS, ExitCode, Explanation, explain
from sip2rtmp.outcomes import (
    InternalError,
    Interrupted,
    MediaTimedOut,
    Outcome,
    OutputFailed,
    Rejected,
    RingTimeout,
    Unanswered,
    Unreachable,
    UnusableAnswer,
)

EXIT_CODES_DOC = next(
    folder / "docs" / "exit-codes.md"
    for folder in Path(__file__).resolve().parents
    if (folder / "docs" / "exit-codes.md").is_file()
)
"""The repository's page; the nearest one up, as mutation testing runs a copy of the tests
from a folder inside the repository (`mutants/`)."""

PBX = "pbx.test:5060"
AUTH_HINT = "check --sip-login, --sip-auth-name and the password"
SERVER_HINT = "check --sip-domain, --sip-outbound-proxy, --sip-port and --sip-transport"
RING_HINT = "raise --ring-timeout or check that the callee answers"
REFUSED = "the server refused the call after authentication: caller ID or permissions (403)"
REFUSED_HINT = (
    "check --caller-id and --asserted-identity, and that the account may call this callee"
)


def documented_codes() -> dict[int, str]:
    """The `| code | meaning |` rows of docs/exit-codes.md."""
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", EXIT_CODES_DOC.read_text(), re.MULTILINE)
    return {int(code): meaning for code, meaning in rows}


def register(status: int, reason: str = "") -> Rejected:
    return Rejected("REGISTER", status, reason, PBX)


def invite(
    status: int,
    reason: str = "",
    *,
    rang: bool = False,
    elapsed: float = 0.0,
    authenticated: bool = False,
) -> Rejected:
    return Rejected(
        "INVITE", status, reason, PBX, rang=rang, elapsed=elapsed, authenticated=authenticated
    )


def test_every_exit_code_is_documented_as_the_program_words_it() -> None:
    assert documented_codes() == {int(code): text for code, text in EXIT_CODE_MEANINGS.items()}
    assert set(EXIT_CODE_MEANINGS) == set(ExitCode)


@pytest.mark.parametrize("status", [401, 403, 404, 407])
def test_3_a_refused_register_is_an_authentication_failure(status: int) -> None:
    """RFC 3261 §10.3: a registrar refuses unknown accounts with 403 or 404; a repeated
    challenge (401/407) means the credentials were wrong."""
    assert explain(register(status, "Forbidden")) == Explanation(
        ExitCode.AUTHENTICATION_FAILED, f"authentication failed (SIP {status})", AUTH_HINT
    )


@pytest.mark.parametrize("status", [401, 403, 407])
def test_3_a_refused_invite_is_an_authentication_failure(status: int) -> None:
    assert explain(invite(status, "Forbidden")) == Explanation(
        ExitCode.AUTHENTICATION_FAILED, f"authentication failed (SIP {status})", AUTH_HINT
    )


@pytest.mark.parametrize("status", [401, 407])
def test_3_a_repeated_challenge_to_an_authenticated_invite_is_still_the_password(
    status: int,
) -> None:
    """A 401/407 answering our credentials says they were wrong (RFC 3261 §22.2)."""
    explained = explain(invite(status, "Unauthorized", authenticated=True))
    assert explained.exit_code == ExitCode.AUTHENTICATION_FAILED


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("Forbidden", REFUSED),
        ("", REFUSED),
        ("FORBIDDEN ", REFUSED),
        ("Caller ID not allowed", f"{REFUSED}: Caller ID not allowed"),
    ],
)
def test_12_a_403_after_authentication_refuses_the_caller_not_the_password(
    reason: str, message: str
) -> None:
    """The INVITE carried the credentials asked for and got 403 (RFC 3261 §21.4.4): the
    caller ID or the account's permissions, not the password; the server's own words are
    kept when they say more than the status."""
    assert explain(invite(403, reason, authenticated=True)) == Explanation(
        ExitCode.CALL_REFUSED, message, REFUSED_HINT
    )


def test_12_is_only_for_an_invite() -> None:
    """A REGISTER refused after its credentials is an unknown or barred account: exit 3."""
    refused = Rejected("REGISTER", 403, "Forbidden", PBX, authenticated=True)
    assert explain(refused).exit_code == ExitCode.AUTHENTICATION_FAILED


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        (invite(404, "Not Found"), "callee not found (SIP 404 Not Found)"),
        (invite(480), "callee not found (SIP 480)"),
        (invite(484, "Address Incomplete"), "callee not found (SIP 484 Address Incomplete)"),
        (invite(604, "Does Not Exist"), "callee not found (SIP 604 Does Not Exist)"),
    ],
)
def test_4_callee_not_found(outcome: Outcome, message: str) -> None:
    hint = "check --callee; the callee may not be registered"
    assert explain(outcome) == Explanation(ExitCode.CALLEE_NOT_FOUND, message, hint)


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        (invite(486, "Busy Here"), "callee busy or declined (SIP 486 Busy Here)"),
        (invite(600, "Busy Everywhere"), "callee busy or declined (SIP 600 Busy Everywhere)"),
        (invite(603), "callee busy or declined (SIP 603)"),
    ],
)
def test_5_busy_or_declined(outcome: Outcome, message: str) -> None:
    expected = Explanation(ExitCode.BUSY_OR_DECLINED, message, "try again later")
    assert explain(outcome) == expected


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        (RingTimeout(60.0), "no answer within 60 s"),
        (RingTimeout(2.5), "no answer within 2.5 s"),
        (invite(408, "Request Timeout", rang=True, elapsed=31.96), "no answer within 32 s"),
        (invite(408, "Request Timeout", rang=True, elapsed=12.34), "no answer within 12.3 s"),
    ],
)
def test_6_no_answer(outcome: Outcome, message: str) -> None:
    """A 408 after the callee rang is the callee's phone giving up: no answer, not the server."""
    assert explain(outcome) == Explanation(ExitCode.NO_ANSWER, message, RING_HINT)


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        (Unreachable(PBX), f"SIP server {PBX} unreachable"),
        (
            Unreachable(PBX, "cannot resolve: Name or service not known"),
            f"SIP server {PBX} unreachable: cannot resolve: Name or service not known",
        ),
        (
            Unanswered("REGISTER", PBX, 32.0),
            f"SIP server {PBX} unreachable: no response to REGISTER within 32 s",
        ),
        (
            Unanswered("INVITE", PBX, 32.0),
            f"SIP server {PBX} unreachable: no response to INVITE within 32 s",
        ),
        (
            register(503, "Service Unavailable"),
            f"SIP server {PBX} unreachable: REGISTER answered 503 Service Unavailable",
        ),
        (
            register(408, "Request Timeout"),
            f"SIP server {PBX} unreachable: REGISTER answered 408 Request Timeout",
        ),
        (invite(408, "Request Timeout"), f"SIP server {PBX} unreachable: 408 Request Timeout"),
    ],
)
def test_7_sip_server_unreachable(outcome: Outcome, message: str) -> None:
    assert explain(outcome) == Explanation(ExitCode.SIP_UNREACHABLE, message, SERVER_HINT)


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        (OutputFailed("rtmp://h/app/***"), "RTMP output rtmp://h/app/*** failed"),
        (
            OutputFailed("rtmp://h/app/***", "Connection refused"),
            "RTMP output rtmp://h/app/*** failed: Connection refused",
        ),
    ],
)
def test_8_rtmp_output_failed(outcome: Outcome, message: str) -> None:
    hint = "check --rtmp-url and --rtmp-stream, and that the server accepts the stream"
    assert explain(outcome) == Explanation(ExitCode.RTMP_FAILED, message, hint)


def test_9_no_media() -> None:
    hint = "the callee sent no RTP; check NAT and firewalls between you and the callee"
    message = "no media from the callee within 15 s"
    assert explain(MediaTimedOut(15.0)) == Explanation(ExitCode.MEDIA_TIMEOUT, message, hint)


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        (invite(488, "Not Acceptable Here"), "call failed (SIP 488 Not Acceptable Here)"),
        (invite(500), "call failed (SIP 500)"),
        (invite(487, "Request Terminated"), "call failed (SIP 487 Request Terminated)"),
        (register(423, "Interval Too Brief"), "call failed (SIP 423 Interval Too Brief)"),
        (
            UnusableAnswer(200, "with an unusable SDP answer: no m= line"),
            "call failed (SIP 200 with an unusable SDP answer: no m= line)",
        ),
        (
            UnusableAnswer(200, "answered with an unusable dialog: no Contact"),
            "call failed (SIP 200 answered with an unusable dialog: no Contact)",
        ),
    ],
)
def test_10_call_failed_for_another_reason(outcome: Outcome, message: str) -> None:
    """No advice: `print_error` prints the line alone, without a dangling dash."""
    assert explain(outcome) == Explanation(ExitCode.CALL_FAILED, message, "")


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_130_interrupted_before_the_call_was_established(signal_name: str) -> None:
    message = f"interrupted by {signal_name} before the call was established"
    assert explain(Interrupted(signal_name)) == Explanation(ExitCode.INTERRUPTED, message, "")


def test_1_internal_error_names_the_exception_and_asks_for_details() -> None:
    explained = explain(InternalError("KeyError"))
    assert explained == Explanation(
        ExitCode.INTERNAL, "internal error: KeyError", "run with -v for details"
    )


def test_every_outcome_maps_to_a_documented_code() -> None:
    outcomes: list[Outcome] = [
        register(401), invite(403, authenticated=True), invite(404), invite(486),
        RingTimeout(1.0), Unreachable(PBX),
        OutputFailed("rtmp://h/a/***"), MediaTimedOut(1.0), invite(500), Interrupted(),
        InternalError("X"),
    ]  # fmt: skip
    codes = {explain(outcome).exit_code for outcome in outcomes}
    assert codes == set(ExitCode) - {ExitCode.OK, ExitCode.USAGE, ExitCode.LAB_FAILED}
    assert codes <= set(documented_codes())
