"""What the relay core asks its shell to do, one frozen value per request.

The shell carries each one out and reports back through the core's inputs: SIP results as
`sip2rtmp.sip.events`, media work as `legs_connected`, `outputs_started`, `outputs_stopped`,
`dtmf_sent`; `Observe` and `CollectStats` are answered with `observed` and `report`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sip2rtmp.outcomes import Outcome
from sip2rtmp.relay.events import DtmfMethod
from sip2rtmp.sip.sdp import NegotiatedStream

if TYPE_CHECKING:
    from sip2rtmp.sip.useragent import UserAgent


@dataclass(frozen=True)
class Register:
    """REGISTER the account (RFC 3261 §10)."""

    def command(self, ua: UserAgent, now: float) -> None:
        ua.register(now)


@dataclass(frozen=True)
class OpenMedia:
    """Bind the legs' RTP ports (answered with `media_opened`)."""


@dataclass(frozen=True)
class Invite:
    """Call `uri` offering `sdp`; the user agent cancels after `ring_timeout` seconds."""

    uri: str
    sdp: bytes
    ring_timeout: float | None

    def command(self, ua: UserAgent, now: float) -> None:
        ua.invite(now, self.uri, self.sdp, self.ring_timeout)


@dataclass(frozen=True)
class ConnectEarlyAudio:
    """Point the audio leg at early media (a 180/183 with SDP) before the answer."""

    stream: NegotiatedStream


@dataclass(frozen=True)
class ConnectLegs:
    """Point the legs at the answer's streams and start sending toward the callee; a None
    stream is not relayed. Answered with `legs_connected`."""

    audio: NegotiatedStream | None
    video: NegotiatedStream | None


@dataclass(frozen=True)
class RetargetLegs:
    """The session changed mid-call (or from early media to the answer): re-point each leg
    at its new stream (address, payload map, clock; the jitter buffer resynced) without
    closing its sockets, keeping the stream's timeline. A None stream stops that leg's
    receiving and sending (declined, or on hold: `inactive`)."""

    audio: NegotiatedStream | None
    video: NegotiatedStream | None


@dataclass(frozen=True)
class PrepareSlate:
    """The callee of a video call has rung for a while: render the stream's slate now, so
    that it is ready should the callee answer without video."""


@dataclass(frozen=True)
class StartOutputs:
    """Start the outputs, opening on the callee's video (`live`) or on the slate. Answered
    with `outputs_started`."""

    live: bool


@dataclass(frozen=True)
class AttachLiveVideo:
    """The callee's first keyframe came after the stream opened on the slate: move the
    stream to the callee's video at that keyframe."""


@dataclass(frozen=True)
class Observe:
    """Report the outputs' states and the stream's video mode (answered with `observed`)."""


@dataclass(frozen=True)
class CollectStats:
    """Report a `Stats` event (answered with `report`)."""


@dataclass(frozen=True)
class SendDtmf:
    """Send `digits` toward the callee by `method`; without one, RFC 4733 when negotiated,
    else SIP INFO. Answered with `dtmf_sent`."""

    digits: str
    method: DtmfMethod | None = None


@dataclass(frozen=True)
class Cancel:
    """Abandon the ringing INVITE (CANCEL, RFC 3261 §9)."""

    def command(self, ua: UserAgent, now: float) -> None:
        ua.cancel(now)


@dataclass(frozen=True)
class Hangup:
    """End the established call (BYE)."""

    def command(self, ua: UserAgent, now: float) -> None:
        ua.bye(now)


@dataclass(frozen=True)
class StopOutputs:
    """Stop the outputs (flushing them), then answer with `outputs_stopped` carrying their
    final states and the call's final numbers."""


@dataclass(frozen=True)
class Unregister:
    """Remove the registration (Expires: 0)."""

    def command(self, ua: UserAgent, now: float) -> None:
        ua.unregister(now)


@dataclass(frozen=True)
class Done:
    """The run is over; `outcome` is why it failed, None when it did not."""

    outcome: Outcome | None


Action = (
    Register
    | OpenMedia
    | Invite
    | ConnectEarlyAudio
    | ConnectLegs
    | RetargetLegs
    | PrepareSlate
    | StartOutputs
    | AttachLiveVideo
    | Observe
    | CollectStats
    | SendDtmf
    | Cancel
    | Hangup
    | StopOutputs
    | Unregister
    | Done
)

SipAction = Register | Invite | Cancel | Hangup | Unregister
"""The actions the shell carries out as SIP user agent commands: each one's `command` is
what it asks of the user agent."""
