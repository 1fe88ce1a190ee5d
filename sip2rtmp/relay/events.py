"""What a relay run reports, one frozen value per happening: a closed union, like
`sip2rtmp.sip.events`, read by the command line's printers (`sip2rtmp.cli.events` serialises
them to NDJSON and plain lines in one place; docs/events.md is the user-facing schema).

Statuses use the reference system's names (`CallStatus`); every run ends with exactly one of
`Finished` or `Failed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from sip2rtmp.outcomes import Outcome, SipFailure, is_busy
from sip2rtmp.rtp.source import SourceStats


class CallStatus(StrEnum):
    """The call's status in the names scripts polling the reference system already know."""

    TRYING = "TRYING"
    RING = "RING"
    RING_MEDIA = "RING_MEDIA"
    SESSION_PROGRESS = "SESSION_PROGRESS"
    ESTABLISHED = "ESTABLISHED"
    HOLD = "HOLD"
    FINISH = "FINISH"
    FAILED = "FAILED"
    BUSY = "BUSY"


def status_for_provisional(code: int, has_sdp: bool) -> CallStatus:
    """RFC 3261 §21.1: 180 rings (with SDP: early media while ringing), 183 is session progress."""
    if code == 180:
        return CallStatus.RING_MEDIA if has_sdp else CallStatus.RING
    if code == 183:
        return CallStatus.SESSION_PROGRESS
    return CallStatus.TRYING


@dataclass(frozen=True)
class Codec:
    """A negotiated codec, as `ESTABLISHED` names it: `{"codec": "PCMU", "rate": 8000}`."""

    codec: str
    rate: int


# ---- registration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Registering:
    server: str
    """host:port as configured; a host name given without a port, which RFC 3263 server
    location resolves, is shown without one."""
    transport: str


@dataclass(frozen=True)
class Registered:
    expires: int


@dataclass(frozen=True)
class Unregistered:
    """The registration was removed at the end of a run that did not fail."""


@dataclass(frozen=True)
class RegistrationRetry:
    """A registration refresh failed and is tried again in `retry_in` seconds; a call that is
    up goes on. `outcome` is why, put in words where the event is shown."""

    outcome: SipFailure
    retry_in: float


# ---- the SIP server and the NAT -------------------------------------------------------------


@dataclass(frozen=True)
class NatAddress:
    """Which address we advertise and where it came from: `sip`, the address in Contact
    (`received` from a Via, RFC 3581, or `configured`); `media`, the SDP offer's `c=` host
    (`configured`, `stun`, `received` or `local`, `sip2rtmp.nat.policy`)."""

    kind: Literal["sip", "media"]
    address: str
    source: str


@dataclass(frozen=True)
class SipServerChanged:
    """The server `failed` did not serve (no answer, a transport error, 503): requests go to
    `next`, the following target of RFC 3263 server location."""

    failed: str
    next: str
    reason: str


@dataclass(frozen=True)
class SipReconnected:
    """The TCP or TLS connection to `server` dropped and was opened again; the call goes on."""

    server: str


# ---- the call's status --------------------------------------------------------------------


@dataclass(frozen=True)
class Trying:
    """The INVITE left (status TRYING)."""

    callee: str


@dataclass(frozen=True)
class Progress:
    """A provisional response other than 100: RING, RING_MEDIA or SESSION_PROGRESS."""

    status: CallStatus
    code: int
    reason: str


@dataclass(frozen=True)
class Held:
    """The callee put the call on hold (status HOLD): its re-INVITE or UPDATE offered
    `a=sendonly` or `a=inactive` (RFC 3264 §8.4); `direction` is what it offered."""

    direction: str


@dataclass(frozen=True)
class Resumed:
    """The callee took the call off hold (status ESTABLISHED again)."""


@dataclass(frozen=True)
class MediaChanged:
    """The callee's media moved or changed codec mid-call (a re-INVITE or UPDATE, RFC 3264
    §8): the legs now follow `remote_audio`/`remote_video` (host:port) with these codecs."""

    audio: Codec | None
    video: Codec | None
    remote_audio: str
    remote_video: str


@dataclass(frozen=True)
class Established:
    """The callee answered (status ESTABLISHED) with these codecs; a kind not negotiated is
    None."""

    code: int
    reason: str
    audio: Codec | None
    video: Codec | None
    srtp: str | None = None
    """The SRTP suite protecting the call's media (RFC 4568), None for plain RTP."""


@dataclass(frozen=True)
class Finished:
    """The call ended normally (status FINISH); `duration` counts from the answer."""

    reason: str
    duration: float


@dataclass(frozen=True)
class Failed:
    """The run failed (status FAILED, or BUSY for a busy or declining callee)."""

    outcome: Outcome

    @property
    def status(self) -> CallStatus:
        return CallStatus.BUSY if is_busy(self.outcome) else CallStatus.FAILED


# ---- media ----------------------------------------------------------------------------------

OutputStateName = Literal["connecting", "live", "reconnecting", "failed", "closed"]


@dataclass(frozen=True)
class OutputChanged:
    """An output changed state; `target` is the masked URL, `error` is set when reconnecting
    or failed."""

    target: str
    state: str
    error: str | None = None


@dataclass(frozen=True)
class MediaArrived:
    """The first RTP packet of this kind from the callee arrived from `remote` (host:port)."""

    kind: Literal["audio", "video"]
    remote: str


VideoModeName = Literal["passthrough", "transcode", "slate"]


@dataclass(frozen=True)
class VideoMode:
    """What the stream's video carries: `passthrough` or `transcode` (with the callee's size),
    or `slate` (with why)."""

    mode: VideoModeName
    width: int | None = None
    height: int | None = None
    reason: str | None = None


DtmfMethod = Literal["rfc4733", "info"]


@dataclass(frozen=True)
class Dtmf:
    digit: str
    direction: Literal["sent", "received"]
    method: DtmfMethod


# ---- statistics -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioStats:
    """The callee's audio as received: jitter buffer counters and timing."""

    received: int
    lost: int
    late: int
    duplicate: int
    reordered: int
    jitter_ms: float
    depth_ms: float
    loss_pct: float
    timeline_resyncs: int
    source: SourceStats


@dataclass(frozen=True)
class VideoStats:
    """The callee's video, and what the stream's video carried."""

    mode: str
    slate_switches: int
    frames: int
    keyframes: int
    dropped: int
    keyframe_requests: int
    sent: int
    received: int
    lost: int
    jitter_ms: float
    depth_ms: float
    av_skew_ms: int | None
    source: SourceStats


@dataclass(frozen=True)
class OutputStats:
    target: str
    state: str
    bitrate: int
    bytes: int
    reconnects: int


@dataclass(frozen=True)
class Stats:
    """Every few seconds while the call is up, and once more when it ends."""

    duration: float
    level_dbfs: float
    outputs: tuple[OutputStats, ...]
    rtp: AudioStats | None = None
    video: VideoStats | None = None


RelayEvent = (
    Registering
    | Registered
    | Unregistered
    | RegistrationRetry
    | NatAddress
    | SipServerChanged
    | SipReconnected
    | Trying
    | Progress
    | Established
    | Held
    | Resumed
    | MediaChanged
    | Finished
    | Failed
    | OutputChanged
    | MediaArrived
    | VideoMode
    | Dtmf
    | Stats
)

EventSink = Callable[[RelayEvent], None]
