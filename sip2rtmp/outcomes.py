"""How a run can end badly, as protocol facts: which response, which timer, which output.

The cores report these values and nothing else; they carry no exit code, no wording for a user
and no command-line flag. `sip2rtmp.cli.outcomes` maps each one to the exit code, the one-line
message and the hint the command line prints (docs/exit-codes.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BUSY_STATUSES = frozenset({486, 600, 603})
"""Final responses that mean the callee was reached and is busy or declined (RFC 3261 §21.4.25,
§21.6.1, §21.6.2): the reference system's BUSY status."""


@dataclass(frozen=True)
class Rejected:
    """A final failure response (3xx–6xx) to our REGISTER or INVITE."""

    method: Literal["REGISTER", "INVITE"]
    status: int
    reason: str
    target: str
    """The server the request went to (host or host:port as configured)."""
    rang: bool = False
    """INVITE only: a 180 or 183 came before this response."""
    elapsed: float = 0.0
    """INVITE only: seconds from the first INVITE to this response."""
    authenticated: bool = False
    """The request carried the credentials the server had asked for: a 403 then refuses the
    caller (its ID, its permissions), not the password."""

    @property
    def busy(self) -> bool:
        return self.method == "INVITE" and self.status in BUSY_STATUSES


@dataclass(frozen=True)
class Unanswered:
    """A request got no final response before its transaction timed out (Timer B/F, 64*T1)."""

    method: str
    target: str
    seconds: float


@dataclass(frozen=True)
class Unreachable:
    """The SIP server could not be reached at all: name resolution, connect, ICMP, a dropped
    connection."""

    target: str
    detail: str = ""


@dataclass(frozen=True)
class RingTimeout:
    """Nobody answered within the ring timeout; the INVITE was cancelled."""

    seconds: float


@dataclass(frozen=True)
class UnusableAnswer:
    """The callee answered with something a call cannot be built on (an SDP answer that does not
    parse, a dialog without a usable Contact); the call was hung up at once."""

    status: int
    detail: str


@dataclass(frozen=True)
class OutputFailed:
    """An RTMP output gave up for good. `url` is already masked (`RtmpTarget.display`)."""

    url: str
    detail: str = ""


@dataclass(frozen=True)
class MediaTimedOut:
    """No RTP arrived from a callee that should send, this long after the answer or, with
    `stopped`, this long after its last packet: its media stopped mid-call."""

    seconds: float
    stopped: bool = False


@dataclass(frozen=True)
class Interrupted:
    """A signal (or a hangup request) ended the run before the call was established."""

    signal_name: str = "SIGINT"


@dataclass(frozen=True)
class InternalError:
    """A bug: an exception nobody expected. `kind` is the exception's class name."""

    kind: str


SipFailure = Rejected | Unanswered | Unreachable | RingTimeout | UnusableAnswer
"""What the SIP user agent reports when a registration or call attempt fails."""

Outcome = SipFailure | OutputFailed | MediaTimedOut | Interrupted | InternalError
"""Every way a relay run can fail."""


def is_busy(outcome: Outcome) -> bool:
    """Whether the run ends with the reference system's BUSY status rather than FAILED."""
    return isinstance(outcome, Rejected) and outcome.busy


class RunFailed(Exception):
    """Raised by the asyncio shells (SIP session, relay) to carry an `Outcome` to their caller;
    the outcome is the meaning, the exception only the way out of an `await`."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class LabError(Exception):
    """The lab could not be started, stopped or asked: one line naming the program at fault
    (exit code 11). Here rather than in `lab`, so the command line maps it without
    loading the lab."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
