"""Outcomes that end a run, as typed values, and the one table that maps them to exit codes.

Every failure a user can cause or meet (a wrong password, a busy callee, an RTMP server that
will not take the stream) is one of these. The CLI turns them into a single line on stderr and
the exit code below; nothing else in the program decides exit codes or wording.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


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
    ExitCode.MEDIA_TIMEOUT: "no media arrived from the callee within --media-timeout",
    ExitCode.CALL_FAILED: "the call failed for another SIP reason",
    ExitCode.LAB_FAILED: "the local lab could not be started",
    ExitCode.INTERRUPTED: "interrupted before the call was established",
}


class Sip2RtmpError(Exception):
    """Base of every expected failure: carries its exit code and a hint for the user."""

    exit_code: ExitCode = ExitCode.INTERNAL
    hint: str = ""

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        """One line: what happened. Never contains a secret."""
        return self.__class__.__name__


@dataclass(eq=False)
class UsageError(Sip2RtmpError):
    message: str
    exit_code = ExitCode.USAGE

    def describe(self) -> str:
        return self.message


@dataclass(eq=False)
class AuthenticationFailed(Sip2RtmpError):
    status: int
    exit_code = ExitCode.AUTHENTICATION_FAILED
    hint = "check --sip-login, --sip-auth-name and the password"

    def describe(self) -> str:
        return f"authentication failed (SIP {self.status})"


@dataclass(eq=False)
class CalleeNotFound(Sip2RtmpError):
    status: int
    reason: str = ""
    exit_code = ExitCode.CALLEE_NOT_FOUND
    hint = "check --callee; the callee may not be registered"

    def describe(self) -> str:
        return f"callee not found (SIP {self.status} {self.reason})".replace(" )", ")")


@dataclass(eq=False)
class BusyOrDeclined(Sip2RtmpError):
    status: int
    reason: str = ""
    exit_code = ExitCode.BUSY_OR_DECLINED
    hint = "try again later"

    def describe(self) -> str:
        return f"callee busy or declined (SIP {self.status} {self.reason})".replace(" )", ")")


@dataclass(eq=False)
class NoAnswer(Sip2RtmpError):
    seconds: float
    exit_code = ExitCode.NO_ANSWER
    hint = "raise --ring-timeout or check that the callee answers"

    def describe(self) -> str:
        return f"no answer within {self.seconds:g} s"


@dataclass(eq=False)
class SipUnreachable(Sip2RtmpError):
    target: str
    detail: str = ""
    exit_code = ExitCode.SIP_UNREACHABLE
    hint = "check --sip-domain, --sip-outbound-proxy, --sip-port and --sip-transport"

    def describe(self) -> str:
        suffix = f": {self.detail}" if self.detail else ""
        return f"SIP server {self.target} unreachable{suffix}"


@dataclass(eq=False)
class CallFailed(Sip2RtmpError):
    status: int
    reason: str = ""
    exit_code = ExitCode.CALL_FAILED

    def describe(self) -> str:
        return f"call failed (SIP {self.status} {self.reason})".replace(" )", ")")


@dataclass(eq=False)
class RtmpOutputFailed(Sip2RtmpError):
    url: str
    detail: str = ""
    exit_code = ExitCode.RTMP_FAILED
    hint = "check --rtmp-url and --rtmp-stream, and that the server accepts the stream"

    def describe(self) -> str:
        suffix = f": {self.detail}" if self.detail else ""
        return f"RTMP output {self.url} failed{suffix}"


@dataclass(eq=False)
class MediaTimeout(Sip2RtmpError):
    seconds: float
    exit_code = ExitCode.MEDIA_TIMEOUT
    hint = "the callee sent no RTP; check NAT and firewalls between you and the callee"

    def describe(self) -> str:
        return f"no media from the callee within {self.seconds:g} s"


@dataclass(eq=False)
class Interrupted(Sip2RtmpError):
    signal_name: str = "SIGINT"
    exit_code = ExitCode.INTERRUPTED

    def describe(self) -> str:
        return f"interrupted by {self.signal_name} before the call was established"


@dataclass(eq=False)
class LabError(Sip2RtmpError):
    message: str
    exit_code = ExitCode.LAB_FAILED

    def describe(self) -> str:
        return self.message
