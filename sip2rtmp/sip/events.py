"""What the user agent reports, one typed value per happening, read with `next_event()`.

Outcomes that end an attempt carry a `SipFailure` from `sip2rtmp.outcomes`: the protocol facts
(which response, which timer), which the command line alone turns into exit codes and words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sip2rtmp.netaddr import Address
from sip2rtmp.outcomes import SipFailure
from sip2rtmp.sip.sdp import NegotiatedSession


@dataclass(frozen=True)
class MessageLogged:
    """Every message sent or received, byte for byte, before any parsing (for logs and tests)."""

    direction: Literal["sent", "received"]
    addr: Address
    data: bytes


@dataclass(frozen=True)
class MessageDropped:
    """A received message the agent could not act on (malformed, or unusable for what it
    claims to be), dropped as if lost. `reason` names the defect, quoting at most a short
    escaped excerpt; the message itself is only in `MessageLogged`, which the shell logs under
    its own rules."""

    addr: Address
    reason: str


@dataclass(frozen=True)
class Registered:
    """A REGISTER (first or refresh) succeeded; `expires` is what the registrar granted."""

    expires: int


@dataclass(frozen=True)
class RegistrationFailed:
    """A REGISTER (first or refresh) failed for good; a refresh failing leaves a call up."""

    outcome: SipFailure


@dataclass(frozen=True)
class Unregistered:
    """The binding is gone: un-REGISTER answered 2xx, or it failed and we stopped trying."""

    ok: bool


@dataclass(frozen=True)
class CallProgress:
    """A provisional response: 100, 180 ringing, 183 session progress; `sdp` is early media."""

    status: int
    reason: str
    sdp: bytes | None


@dataclass(frozen=True)
class CallAnswered:
    """2xx received and ACKed: the call is up; `sdp` is the answer to our offer."""

    sdp: bytes


@dataclass(frozen=True)
class CallAttemptFailed:
    """The INVITE ended without a call: rejected, timed out, cancelled or not answered."""

    outcome: SipFailure


@dataclass(frozen=True)
class CallEnded:
    """An established call is over; `by_remote` when the peer sent BYE or the dialog died."""

    by_remote: bool
    reason: str


@dataclass(frozen=True)
class InfoReceived:
    """An in-dialog INFO from the peer (already answered 200)."""

    content_type: str
    body: bytes


@dataclass(frozen=True)
class InfoAnswered:
    """The final response to an INFO we sent."""

    status: int
    reason: str


@dataclass(frozen=True)
class SessionModified:
    """An offer/answer exchange in the dialog completed (RFC 3264 §8): the peer's re-INVITE or
    UPDATE offer and our answer (hold, a new address or port, another codec), or our offer in
    the 200 to an offerless re-INVITE and the answer its ACK brought. `session` is what holds
    from now on; `early` when it happened before the call was answered (an UPDATE in the early
    dialog, RFC 3311)."""

    offer: bytes
    answer: bytes
    session: NegotiatedSession
    early: bool = False


@dataclass(frozen=True)
class OptionsAnswered:
    """The final response to our out-of-dialog OPTIONS (RFC 3261 §11), whatever its status:
    any answer proves the server reachable. `server` is its Server (or User-Agent) header."""

    status: int
    reason: str
    allow: tuple[str, ...] = ()
    supported: tuple[str, ...] = ()
    server: str = ""
    sdp: bytes | None = None
    """The session description a user agent may answer with (RFC 3261 §11.2): the media it
    would accept."""


@dataclass(frozen=True)
class OptionsFailed:
    """Our OPTIONS got no final response before its transaction timed out."""

    outcome: SipFailure


@dataclass(frozen=True)
class PublicAddressLearned:
    """Our Contact address changed to the public side of a NAT: what the server saw in our
    Via (`received`/`rport`, RFC 3581 §4), or the configured public address."""

    address: Address
    source: Literal["received", "configured"]


@dataclass(frozen=True)
class ServerFailedOver:
    """A server target failed (no answer at all, a transport error, 503): the request goes
    to the next target found by RFC 3263 server location (§4.3)."""

    failed: Address
    next: Address
    reason: str


@dataclass(frozen=True)
class RegistrationRetrying:
    """A REGISTER refresh failed; it is tried again after `retry_in` seconds while the call,
    if any, goes on."""

    outcome: SipFailure
    retry_in: float


@dataclass(frozen=True)
class ConnectionRestored:
    """The TCP or TLS connection to the server dropped and was opened again."""

    server: Address


Event = (
    MessageLogged
    | MessageDropped
    | Registered
    | RegistrationFailed
    | Unregistered
    | CallProgress
    | CallAnswered
    | CallAttemptFailed
    | CallEnded
    | InfoReceived
    | InfoAnswered
    | SessionModified
    | OptionsAnswered
    | OptionsFailed
    | PublicAddressLearned
    | ServerFailedOver
    | RegistrationRetrying
    | ConnectionRestored
)
