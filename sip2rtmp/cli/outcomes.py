"""The one table from how a run ended to what the command line says: exit code, one line, hint.

The cores report protocol facts (`sip2rtmp.outcomes`): which response, which timer, which
output. Here, and only here, they become the exit codes of docs/exit-codes.md, the one-line
message a user reads and the flags worth checking.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum

from sip2rtmp.config import SrtpMode
from sip2rtmp.outcomes import (
    BUSY_STATUSES,
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
from sip2rtmp.sip.sdes import mask_keys


class ExitCode(IntEnum):
    """Exit codes a shell script can branch on. Documented in docs/exit-codes.md and --help."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    AUTHENTICATION_FAILED = 3
    CALLEE_NOT_FOUND = 4
    BUSY_OR_DECLINED = 5
    NO_ANSWER = 6
    SIP_UNREACHABLE = 7
    RTMP_FAILED = 8
    MEDIA_TIMEOUT = 9
    CALL_FAILED = 10
    LAB_FAILED = 11
    CALL_REFUSED = 12
    INTERRUPTED = 130


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "the call ended normally (hangup, --max-duration, Ctrl-C or SIGTERM once up)",
    ExitCode.INTERNAL: "an internal error (a bug: please report it)",
    ExitCode.USAGE: "a usage or configuration error",
    ExitCode.AUTHENTICATION_FAILED: "authentication failed: the server rejected the credentials",
    ExitCode.CALLEE_NOT_FOUND: "the callee does not exist or is not reachable (404/480/604)",
    ExitCode.BUSY_OR_DECLINED: "the callee was busy or declined the call (486/600/603)",
    ExitCode.NO_ANSWER: "the callee did not answer within --ring-timeout",
    ExitCode.SIP_UNREACHABLE: "the SIP server could not be reached or did not answer",
    ExitCode.RTMP_FAILED: "an RTMP output failed for good",
    ExitCode.MEDIA_TIMEOUT: "no media from the callee for --media-timeout, at the start or later",
    ExitCode.CALL_FAILED: "the call failed for another SIP reason",
    ExitCode.LAB_FAILED: "the local lab could not be started",
    ExitCode.CALL_REFUSED: (
        "the server refused the call after authentication: caller ID or permissions (403)"
    ),
    ExitCode.INTERRUPTED: "interrupted before the call was established",
}

AUTHENTICATION_HINT = "check --sip-login, --sip-auth-name and the password"
CALLEE_HINT = "check --callee; the callee may not be registered"
BUSY_HINT = "try again later"
RING_HINT = "raise --ring-timeout or check that the callee answers"
SIP_SERVER_HINT = "check --sip-domain, --sip-outbound-proxy, --sip-port and --sip-transport"
RTMP_HINT = "check --rtmp-url and --rtmp-stream, and that the server accepts the stream"
MEDIA_HINT = "the callee sent no RTP; check NAT and firewalls between you and the callee"
MEDIA_STOPPED_HINT = (
    "the callee, or the network between you, stopped its RTP; a callee gone without a BYE"
    " looks the same"
)
INTERNAL_HINT = "run with -v for details"
REFUSED_HINT = (
    "check --caller-id and --asserted-identity, and that the account may call this callee"
)
SRTP_HINT = "the callee may require encrypted media: try --srtp required (with --sip-transport tls)"
MEDIA_REFUSED_STATUSES = frozenset({406, 415, 488})
"""Not Acceptable, Unsupported Media Type, Not Acceptable Here (RFC 3261 §21.4.7, §21.4.13,
§21.4.26): what callees and trunks that demand SRTP answer an offer of plain RTP."""
PLAIN_FORBIDDEN = frozenset({"", "forbidden"})
"""Reason phrases that say no more than the status code; any other is the server's own words
(`403 Caller ID not allowed`) and is worth showing."""

REGISTER_AUTH_STATUSES = frozenset({401, 403, 404, 407})
"""A registrar answers an unknown account with 404 as often as with 403 (RFC 3261 §10.3)."""
REGISTER_UNREACHABLE_STATUSES = frozenset({408, 503})
INVITE_AUTH_STATUSES = frozenset({401, 403, 407})
NOT_FOUND_STATUSES = frozenset({404, 480, 484, 604})
"""Not Found, Temporarily Unavailable, Address Incomplete, Does Not Exist Anywhere (RFC 3261
§21.4.5, §21.4.18, §21.4.22, §21.6.4)."""


@dataclass(frozen=True)
class Explanation:
    """What the command line makes of an outcome; `hint` is empty when there is no advice."""

    exit_code: ExitCode
    message: str
    hint: str = ""


def explain(outcome: Outcome, srtp: SrtpMode | None = None) -> Explanation:
    """The exit code, one-line message and hint of every way a run can fail; `srtp` is the
    call's `--srtp` when known (a refused plain-RTP offer then hints at it).

    The message may quote SDP a peer sent back or a parser's complaint about it: any SRTP key
    in it is masked."""
    explained = _explain(outcome, srtp)
    return replace(explained, message=mask_keys(explained.message))


def _explain(outcome: Outcome, srtp: SrtpMode | None) -> Explanation:
    if isinstance(outcome, Rejected):
        if outcome.method == "REGISTER":
            return _rejected_register(outcome)
        explained = _rejected_invite(outcome)
        if srtp == "off" and outcome.status in MEDIA_REFUSED_STATUSES:
            return replace(explained, hint=SRTP_HINT)
        return explained
    if isinstance(outcome, Unanswered):
        detail = f"no response to {outcome.method} within {outcome.seconds:g} s"
        return _unreachable(outcome.target, detail)
    if isinstance(outcome, Unreachable):
        return _unreachable(outcome.target, outcome.detail)
    if isinstance(outcome, RingTimeout):
        return _no_answer(outcome.seconds)
    if isinstance(outcome, UnusableAnswer):
        return _call_failed(outcome.status, outcome.detail)
    if isinstance(outcome, OutputFailed):
        message = f"RTMP output {outcome.url} failed{_colon(outcome.detail)}"
        return Explanation(ExitCode.RTMP_FAILED, message, RTMP_HINT)
    if isinstance(outcome, MediaTimedOut):
        return _media_timed_out(outcome)
    if isinstance(outcome, Interrupted):
        message = f"interrupted by {outcome.signal_name} before the call was established"
        return Explanation(ExitCode.INTERRUPTED, message)
    if isinstance(outcome, InternalError):
        return Explanation(ExitCode.INTERNAL, f"internal error: {outcome.kind}", INTERNAL_HINT)
    raise TypeError(f"not an outcome: {outcome!r}")


def _rejected_register(outcome: Rejected) -> Explanation:
    """RFC 3261 §10.2.4: a REGISTER that is refused, or a registrar that cannot serve it."""
    status, reason = outcome.status, outcome.reason
    if status in REGISTER_AUTH_STATUSES:
        return _authentication_failed(status)
    if status in REGISTER_UNREACHABLE_STATUSES:
        return _unreachable(outcome.target, f"REGISTER answered {status} {reason}")
    return _call_failed(status, reason)


def _rejected_invite(outcome: Rejected) -> Explanation:
    """A final failure response to the INVITE (RFC 3261 §21.4–§21.6)."""
    status, reason = outcome.status, outcome.reason
    if status == 403 and outcome.authenticated:
        return _call_refused(reason)
    if status in INVITE_AUTH_STATUSES:
        return _authentication_failed(status)
    if status in NOT_FOUND_STATUSES:
        message = _with_status("callee not found", status, reason)
        return Explanation(ExitCode.CALLEE_NOT_FOUND, message, CALLEE_HINT)
    if status in BUSY_STATUSES:
        message = _with_status("callee busy or declined", status, reason)
        return Explanation(ExitCode.BUSY_OR_DECLINED, message, BUSY_HINT)
    if status == 408:
        # Request Timeout after a 180/183: the callee rang and nobody picked up.
        if outcome.rang:
            return _no_answer(round(outcome.elapsed, 1))
        return _unreachable(outcome.target, f"{status} {reason}")
    return _call_failed(status, reason)


def _media_timed_out(outcome: MediaTimedOut) -> Explanation:
    """No RTP from the start, or none any more mid-call: one exit code, two stories."""
    if outcome.stopped:
        message = f"the callee's media stopped: no RTP for {outcome.seconds:g} s"
        return Explanation(ExitCode.MEDIA_TIMEOUT, message, MEDIA_STOPPED_HINT)
    message = f"no media from the callee within {outcome.seconds:g} s"
    return Explanation(ExitCode.MEDIA_TIMEOUT, message, MEDIA_HINT)


def _authentication_failed(status: int) -> Explanation:
    message = f"authentication failed (SIP {status})"
    return Explanation(ExitCode.AUTHENTICATION_FAILED, message, AUTHENTICATION_HINT)


def _call_refused(reason: str) -> Explanation:
    """A 403 to an INVITE that carried the credentials the server asked for: the password
    was accepted, the call was not (RFC 3261 §21.4.4: authorization will not help)."""
    message = EXIT_CODE_MEANINGS[ExitCode.CALL_REFUSED]
    if reason.strip().lower() not in PLAIN_FORBIDDEN:
        message = f"{message}: {reason}"
    return Explanation(ExitCode.CALL_REFUSED, message, REFUSED_HINT)


def _unreachable(target: str, detail: str) -> Explanation:
    message = f"SIP server {target} unreachable{_colon(detail)}"
    return Explanation(ExitCode.SIP_UNREACHABLE, message, SIP_SERVER_HINT)


def _no_answer(seconds: float) -> Explanation:
    return Explanation(ExitCode.NO_ANSWER, f"no answer within {seconds:g} s", RING_HINT)


def _call_failed(status: int, reason: str) -> Explanation:
    return Explanation(ExitCode.CALL_FAILED, _with_status("call failed", status, reason))


def _with_status(what: str, status: int, reason: str) -> str:
    """`what (SIP 486 Busy Here)`; without a reason phrase no blank before the parenthesis."""
    return f"{what} (SIP {status} {reason})".replace(" )", ")")


def _colon(detail: str) -> str:
    """`: detail`, or nothing for an empty detail (no dangling colon)."""
    return f": {detail}" if detail else ""
