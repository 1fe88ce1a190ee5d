"""The relay's decisions, sans I/O: one run's phases as a state machine.

    registering → calling → ringing → connecting → relaying → ending → unregistering → done

`RelayCore` takes what happened (SIP events from `sip2rtmp.sip.events`, media facts reported
by the shell, signals, time) and answers with actions for the shell to carry out and the
`sip2rtmp.relay.events` a user sees, in the shape of aioquic's `QuicConnection` that the SIP
core follows too: inputs as method calls, `next_action()`, `next_event()`, `get_timer()` and
`handle_timer(now)`. It never touches a socket, a thread, a clock or asyncio; the asyncio shell
(`sip2rtmp.relay.runner`) only moves bytes, starts legs and outputs, and forwards signals.

A run ends exactly once, with `Finished` (the call was up and ended: hangup by either side,
`--max-duration`, a signal or a hangup request) or `Failed` (an `Outcome` says why), and then
`Done`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Literal

from sip2rtmp.config import CallSettings
from sip2rtmp.nat.policy import OfferAddress
from sip2rtmp.netaddr import format_address
from sip2rtmp.outcomes import (
    Interrupted,
    MediaTimedOut,
    Outcome,
    OutputFailed,
    Rejected,
    SipFailure,
    UnusableAnswer,
)
from sip2rtmp.relay import actions
from sip2rtmp.relay.actions import Action
from sip2rtmp.relay.dtmf import DtmfScript, DtmfStep, parse_info_dtmf
from sip2rtmp.relay.events import (
    Codec,
    Dtmf,
    DtmfMethod,
    Established,
    Failed,
    Finished,
    Held,
    MediaArrived,
    MediaChanged,
    NatAddress,
    OutputChanged,
    Progress,
    Registered,
    Registering,
    RegistrationRetry,
    RelayEvent,
    Resumed,
    SipReconnected,
    SipServerChanged,
    Stats,
    Trying,
    Unregistered,
    VideoMode,
    status_for_provisional,
)
from sip2rtmp.sip import events as sip
from sip2rtmp.sip.sdes import offer_crypto
from sip2rtmp.sip.sdp import (
    NegotiatedSession,
    NegotiatedStream,
    SdpParseError,
    SrtpOffer,
    build_offer,
    negotiate,
)

log = logging.getLogger(__name__)

OFFERED_VIDEO_CODECS = ("H264", "H264/0", "VP8")
"""The video the offer lists, preferred first: H.264 in packetization-mode 1 and 0 (RFC 6184
§6.2), which reaches the H.264 outputs unchanged, then VP8 (RFC 7741), which costs a
transcode to H.264 and so is only for callees without H.264."""
RELAYED_VIDEO_CODECS = frozenset({"H264", "VP8"})
WATCH_INTERVAL = 0.5
"""How often the outputs' states and the stream's video are looked at while relaying."""
RINGING_SLATE_AFTER = 0.5
"""How long a video call rings before the stream's slate is rendered. A callee that rings
longer (a phone, which answers without video more often than not) finds it ready when it
answers; one that answers sooner, with its video, never has it rendered; one that answers
sooner without video has it rendered then (docs/performance.md)."""
KEYFRAME_WAIT = 1.0
"""How long after the legs are connected the outputs wait for the callee's first keyframe,
so a stream that has the callee's video from the start opens with it (its first AVC sequence
header is the callee's). Without one by then the stream opens on the slate and moves to the
callee's video at its first keyframe."""
CANCEL_GRACE = 4.0
"""How long an interrupted INVITE waits for the final response to its CANCEL (§9.1)."""
SRTP_REFUSED_STATUSES = frozenset((406, 415, 488))
"""Answers to an offer whose media the callee will not take (RFC 3261 §21.4.26, §21.4.7,
§21.4.16): with `--srtp optional` they move the offer from RTP/AVP with a=crypto to RTP/SAVP,
the one form an SRTP-only callee accepts."""
NOT_UP = "the call is not up yet"
ENDED = "the call has ended"
NO_TELEPHONE_EVENT = "the call negotiated no telephone-event: RFC 4733 DTMF cannot be sent"
"""Why a front end's request cannot be carried out now (`request_dtmf`, `refusal`)."""
GOODBYE_TIMEOUT = 34.0
"""Upper bound for BYE or un-REGISTER on the way out: their transaction times out by then
(64*T1 = 32 s, RFC 3261 §17.1.2.2)."""


class Phase(Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    CALLING = "calling"
    RINGING = "ringing"
    CONNECTING = "connecting"
    """Answered: the shell connects the legs, then the outputs wait for a keyframe."""
    RELAYING = "relaying"
    ENDING = "ending"
    UNREGISTERING = "unregistering"
    DONE = "done"


@dataclass(frozen=True)
class RelayPlan:
    """What the run is asked to do, beyond the SIP account: the offer's addresses and the
    media options the core decides on."""

    session_id: int
    dtmf_script: str | None = None
    stats_interval: float = 5.0


def relays_video(stream: NegotiatedStream | None) -> bool:
    """Whether the video leg can carry the negotiated stream and the callee will send on it."""
    return (
        stream is not None
        and stream.codec in RELAYED_VIDEO_CODECS
        and stream.direction in ("sendrecv", "sendonly")
    )


PLAIN_PROFILE = "RTP/AVP"
SECURE_PROFILE = "RTP/SAVP"


def _srtp_offer(settings: CallSettings) -> SrtpOffer | None:
    """The offer's SRTP for `--srtp`: RTP/SAVP when required, RTP/AVP with a=crypto when
    optional; each stream its own keys, drawn once for the call."""
    if settings.srtp == "off":
        return None
    profile = SECURE_PROFILE if settings.srtp == "required" else PLAIN_PROFILE
    return SrtpOffer(profile, offer_crypto(), offer_crypto())


def _codec(stream: NegotiatedStream | None) -> Codec | None:
    return Codec(stream.codec, stream.clock_rate) if stream is not None else None


UNSPECIFIED = "0.0.0.0"
"""The connection address of an RFC 2543 hold: "send nothing here" (RFC 3264 §8.4)."""


def hold_direction(stream: NegotiatedStream | None) -> str | None:
    """How the callee holds the call, from its audio stream, or None when it does not: it
    offered `a=sendonly` or `a=inactive` (RFC 3264 §8.4), or the connection address
    0.0.0.0 of RFC 2543, which takes nothing and is reported as `inactive` unless the
    stream says `sendonly`."""
    if stream is None:
        return None
    if stream.direction in ("sendonly", "inactive"):
        return stream.direction
    return "inactive" if stream.rtp_address[0] == UNSPECIFIED else None


def _as_leg_sees(stream: NegotiatedStream | None) -> NegotiatedStream | None:
    """What of a stream a leg uses: everything but the direction, which holds and resumes
    without re-pointing anything."""
    return replace(stream, direction="") if stream is not None else None


def _reachable(
    stream: NegotiatedStream | None, current: NegotiatedStream | None
) -> NegotiatedStream | None:
    """`stream` as a leg can follow it: one held at 0.0.0.0 keeps the address the leg
    points at (nothing may be sent to 0.0.0.0), and without one it is not followed."""
    if stream is None or stream.rtp_address[0] != UNSPECIFIED:
        return stream
    if current is None:
        return None
    return replace(stream, rtp_address=current.rtp_address, rtcp_address=current.rtcp_address)


def _remote(stream: NegotiatedStream | None) -> str:
    return format_address(stream.rtp_address) if stream is not None else ""


@dataclass
class _Deadlines:
    """Every timer the core runs; None when not armed."""

    cancel_grace: float | None = None
    slate: float | None = None
    keyframe: float | None = None
    media: float | None = None
    max_duration: float | None = None
    stats: float | None = None
    watch: float | None = None
    dtmf: float | None = None
    goodbye: float | None = None

    def earliest(self) -> float | None:
        armed = [value for value in vars(self).values() if value is not None]
        return min(armed, default=None)

    def disarm_media(self) -> None:
        """Stop the timers that only make sense while media flows."""
        self.keyframe = self.media = self.max_duration = None
        self.stats = self.watch = self.dtmf = None


@dataclass
class _Ending:
    """Why the run ends: a normal end's reason, or the outcome of a failure."""

    reason: str
    outcome: Outcome | None = None


class RelayCore:
    """One relay run's decisions (see the module docstring)."""

    def __init__(self, settings: CallSettings, plan: RelayPlan) -> None:
        self._settings = settings
        self._plan = plan
        self.phase = Phase.IDLE
        self._offer = ""
        """Our SDP offer, once the legs' ports are known."""
        self._offer_address: OfferAddress | None = None
        self._srtp = _srtp_offer(settings)
        """The offer's SRTP: fresh keys for this call (RFC 4568 §6.1), None for plain RTP."""
        self._actions: deque[Action] = deque()
        self._events: deque[RelayEvent] = deque()
        self._timers = _Deadlines()
        self._ending: _Ending | None = None
        self._registered = False
        """Whether a binding may exist (from the first REGISTER until it failed)."""
        self._refresh_retrying = False
        """A registration refresh failed and is being retried."""
        self._call_up = False
        self._negotiated: NegotiatedSession | None = None
        self._legs: tuple[NegotiatedStream | None, NegotiatedStream | None] = (None, None)
        """The audio and video streams the legs were last pointed at, after the answer."""
        self._held: str | None = None
        """How the callee holds the call (`Held.direction`), None while it does not."""
        self._answered_at: float | None = None
        self._outputs: Literal["none", "starting", "started"] = "none"
        self._opened_live = False
        self._keyframe = False
        self._arrived: dict[str, str] = {}
        self._last_audio: float | None = None
        """When the latest accepted audio packet known here arrived (the shell's clock)."""
        self._relaying_since: float | None = None
        """When the callee's audio became expected: the relaying began, or a hold ended."""
        self._reported_media: set[str] = set()
        self._output_states: dict[str, str] = {}
        self._video_mode: VideoMode | None = None
        self._dtmf_steps: deque[DtmfStep] = deque(
            DtmfScript.parse(plan.dtmf_script).steps if plan.dtmf_script else ()
        )
        self._dtmf_busy = False
        self._dtmf_requests: deque[tuple[str, DtmfMethod | None]] = deque()

    # ---- the aioquic-shaped interface ---------------------------------------------------

    def next_action(self) -> Action | None:
        return self._actions.popleft() if self._actions else None

    def next_event(self) -> RelayEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When `handle_timer` must next be called, or None."""
        return self._timers.earliest()

    def handle_timer(self, now: float) -> None:
        timers = self._timers
        for name in ("cancel_grace", "goodbye", "slate", "keyframe", "media", "max_duration"):
            deadline = getattr(timers, name)
            if deadline is not None and deadline <= now:
                setattr(timers, name, None)
                self._expired(name, now)
        if timers.watch is not None and timers.watch <= now:
            timers.watch = now + WATCH_INTERVAL
            self._actions.append(actions.Observe())
        if timers.stats is not None and timers.stats <= now:
            timers.stats = now + self._plan.stats_interval
            self._actions.append(actions.CollectStats())
        if timers.dtmf is not None and timers.dtmf <= now:
            timers.dtmf = None
            self._next_dtmf_step(now)

    def _expired(self, name: str, now: float) -> None:
        if name == "cancel_grace":
            self._after_call(now)
        elif name == "goodbye":
            self._goodbye_timed_out(now)
        elif name == "slate":
            if self.phase is Phase.RINGING and self._outputs == "none":
                self._actions.append(actions.PrepareSlate())
        elif name == "keyframe":
            self._start_outputs(live=False)
        elif name == "media":
            stopped = self._last_audio is not None
            outcome = MediaTimedOut(self._settings.media_timeout, stopped=stopped)
            self._end(now, "media stopped" if stopped else "no media", outcome)
        elif name == "max_duration":
            self._end(now, "max duration reached")

    # ---- inputs: the run's start and its ends -------------------------------------------

    def start(self, now: float) -> None:
        """Register first when asked to, else call at once."""
        settings = self._settings
        if settings.register:
            self.phase = Phase.REGISTERING
            self._events.append(Registering(str(settings.sip_server), settings.sip_transport))
            self._registered = True  # a binding may exist from here until un-REGISTER
            self._actions.append(actions.Register())
        else:
            self._call(now)

    def stop(self, now: float, reason: str) -> None:
        """A signal (`SIGINT`, `SIGTERM`) or a hangup request (`hangup requested`): before
        the answer the run is interrupted, after it the call ends normally."""
        if self.phase in (Phase.IDLE, Phase.REGISTERING, Phase.CALLING, Phase.RINGING):
            self._end(now, reason, Interrupted(reason))
        else:
            self._end(now, reason)

    @property
    def ended(self) -> bool:
        return self.phase is Phase.DONE

    def duration(self, now: float) -> float:
        """Seconds since the answer (0 before it)."""
        return now - self._answered_at if self._answered_at is not None else 0.0

    # ---- inputs: SIP ------------------------------------------------------------------------

    def sip_event(self, event: sip.Event, now: float) -> None:
        """An event of the SIP user agent (the shell forwards every one but message logs)."""
        if isinstance(event, sip.Registered):
            self._on_registered(event, now)
        elif isinstance(event, sip.RegistrationFailed):
            self._on_registration_failed(event, now)
        elif isinstance(event, sip.Unregistered):
            self._on_unregistered(event.ok)
        elif isinstance(event, sip.CallProgress):
            self._on_progress(event, now)
        elif isinstance(event, sip.CallAnswered):
            self._on_answered(event.sdp, now)
        elif isinstance(event, sip.CallAttemptFailed):
            self._on_attempt_failed(event, now)
        elif isinstance(event, sip.CallEnded):
            self._on_call_ended(event, now)
        elif isinstance(event, sip.InfoReceived):
            digit = parse_info_dtmf(event.content_type, event.body)
            if digit:
                self._events.append(Dtmf(digit, "received", "info"))
        elif isinstance(event, sip.SessionModified):
            self._on_session_modified(event, now)
        else:
            self._on_connection_event(event)

    def _on_connection_event(self, event: sip.Event) -> None:
        """What the SIP flow went through without touching the call: the address the server
        saw, a failover, a registration refresh retried, a connection reopened."""
        if isinstance(event, sip.PublicAddressLearned):
            self._events.append(NatAddress("sip", format_address(event.address), event.source))
        elif isinstance(event, sip.ServerFailedOver):
            failed, following = format_address(event.failed), format_address(event.next)
            self._events.append(SipServerChanged(failed, following, event.reason))
        elif isinstance(event, sip.RegistrationRetrying):
            self._refresh_retrying = True
            self._events.append(RegistrationRetry(event.outcome, event.retry_in))
        elif isinstance(event, sip.ConnectionRestored):
            self._events.append(SipReconnected(format_address(event.server)))

    def _on_registered(self, event: sip.Registered, now: float) -> None:
        """The first registration calls; a refresh is silent unless it was being retried."""
        retried, self._refresh_retrying = self._refresh_retrying, False
        if self.phase is Phase.REGISTERING:
            self._events.append(Registered(event.expires))
            self._call(now)
        elif retried:
            self._events.append(Registered(event.expires))

    def _on_registration_failed(self, event: sip.RegistrationFailed, now: float) -> None:
        if self.phase is Phase.REGISTERING:
            self._registered = False
            self._end(now, "registration failed", event.outcome)
        else:
            log.warning("re-REGISTER failed (%s); the call goes on", type(event.outcome).__name__)

    def _on_unregistered(self, ok: bool) -> None:
        if self.phase is not Phase.UNREGISTERING:
            return
        self._timers.goodbye = None
        if ok and self._ending is not None and self._ending.outcome is None:
            self._events.append(Unregistered())
        self._finish()

    def _call(self, now: float) -> None:
        """Bind the legs' ports first: the offer carries them."""
        del now
        self.phase = Phase.CALLING
        self._actions.append(actions.OpenMedia())

    def media_opened(self, offer: OfferAddress) -> None:
        """The legs are bound and their public side known: offer them and call."""
        if self.phase is not Phase.CALLING:
            return
        self._offer_address = offer
        self._events.append(NatAddress("media", offer.host, offer.source))
        self._invite()

    def _invite(self) -> None:
        """Offer the legs (with the SRTP as it stands) and call."""
        settings, offer = self._settings, self._offer_address
        assert offer is not None
        self._offer = build_offer(
            offer.host,
            offer.audio.rtp,
            offer.video.rtp if offer.video is not None else None,
            session_id=self._plan.session_id,
            audio_codecs=settings.audio_codecs,
            video_codecs=OFFERED_VIDEO_CODECS,
            audio_rtcp_port=offer.audio.rtcp,
            video_rtcp_port=offer.video.rtcp if offer.video is not None else None,
            srtp=self._srtp,
        )
        self._events.append(Trying(settings.callee_uri))
        self._actions.append(
            actions.Invite(settings.callee_uri, self._offer.encode(), settings.ring_timeout)
        )

    def _on_progress(self, event: sip.CallProgress, now: float) -> None:
        if self.phase not in (Phase.CALLING, Phase.RINGING) or event.status == 100:
            return
        if self.phase is Phase.CALLING and self._settings.video:
            self._timers.slate = now + RINGING_SLATE_AFTER
        self.phase = Phase.RINGING
        status = status_for_provisional(event.status, event.sdp is not None)
        self._events.append(Progress(status, event.status, event.reason))
        if event.sdp is None:
            return
        try:
            early = negotiate(self._offer, event.sdp.decode("utf-8", "replace"))
        except SdpParseError as exc:
            log.warning("ignoring the early media of a %d: unusable SDP: %s", event.status, exc)
            return
        if early.audio is not None:
            self._actions.append(actions.ConnectEarlyAudio(early.audio))
            if self._settings.early_media and self._outputs == "none":
                self._start_outputs(live=False)  # the stream starts with the early media

    def _on_answered(self, sdp: bytes, now: float) -> None:
        if self.phase not in (Phase.CALLING, Phase.RINGING):
            return
        self._timers.slate = None
        self._call_up = True
        try:
            negotiated = negotiate(self._offer, sdp.decode("utf-8", "replace"))
        except SdpParseError as exc:
            outcome = UnusableAnswer(200, f"with an unusable SDP answer: {exc}")
            self._end(now, "unusable answer", outcome)
            return
        self._negotiated = negotiated
        self._answered_at = now
        self.phase = Phase.CONNECTING
        suite = negotiated.audio.srtp.suite if negotiated.audio and negotiated.audio.srtp else None
        self._events.append(
            Established(200, "OK", _codec(negotiated.audio), _codec(negotiated.video), suite)
        )
        video = negotiated.video if relays_video(negotiated.video) else None
        self._legs = (negotiated.audio, video)
        if self._outputs == "none":
            self._actions.append(actions.ConnectLegs(negotiated.audio, video))
            return
        # The outputs run on early media: the legs move into them, on the same timeline.
        self._actions.append(actions.RetargetLegs(negotiated.audio, video))
        if self._outputs == "started":
            self._relaying(now)

    def _on_session_modified(self, event: sip.SessionModified, now: float) -> None:
        """An offer/answer in the dialog completed (RFC 3264 §8): before the answer it moves
        the early media; once the call is up the legs follow the new streams and a hold or
        a resume shows in the status."""
        session = event.session
        if event.early:
            if self.phase is Phase.RINGING and session.audio is not None:
                self._actions.append(actions.ConnectEarlyAudio(session.audio))
            return
        if self.phase not in (Phase.CONNECTING, Phase.RELAYING):
            return
        self._negotiated = session
        self._follow_media(session)
        self._follow_hold(hold_direction(session.audio), now)

    def _follow_media(self, session: NegotiatedSession) -> None:
        """Re-point the legs when an address, a port, a codec or a payload type they use
        changed; a session refresh that repeats the SDP changes nothing."""
        audio, video = self._legs
        new_audio = _reachable(session.audio, audio)
        new_video = _reachable(session.video, video)
        if new_video is not None and video is None and not relays_video(new_video):
            new_video = None  # a video leg starts only for a callee that sends video
        legs = (_as_leg_sees(new_audio), _as_leg_sees(new_video))
        if legs == (_as_leg_sees(audio), _as_leg_sees(video)):
            return
        self._legs = (new_audio, new_video)
        self._actions.append(actions.RetargetLegs(new_audio, new_video))
        self._events.append(
            MediaChanged(
                _codec(new_audio), _codec(new_video), _remote(new_audio), _remote(new_video)
            )
        )
        if new_video is not None and (video is None or video.codec != new_video.codec):
            self._keyframe = self._opened_live = False  # the stream waits for its keyframe

    def _follow_hold(self, held: str | None, now: float) -> None:
        """HOLD while the callee holds, its audio not expected (RFC 3264 §8.4); back to
        ESTABLISHED when it resumes, the media timer counting from then."""
        was, self._held = self._held, held
        if held is not None and held != was:
            self._events.append(Held(held))
        elif held is None and was is not None:
            self._events.append(Resumed())
            self._relaying_since = now
        self._arm_media_timer()

    def _on_attempt_failed(self, event: sip.CallAttemptFailed, now: float) -> None:
        if self.phase in (Phase.CALLING, Phase.RINGING):
            if self._offer_savp_instead(event.outcome):
                return
            self._end(now, "call failed", event.outcome)
        elif self.phase is Phase.ENDING and not self._call_up:
            self._after_call(now)  # the CANCEL's answer came

    def _offer_savp_instead(self, outcome: SipFailure) -> bool:
        """`--srtp optional` offered RTP/AVP with a=crypto, which an SRTP-only callee refuses
        (RFC 4568 §6 leaves a plain profile with crypto to practice): offer RTP/SAVP once."""
        srtp = self._srtp
        if srtp is None or srtp.profile != PLAIN_PROFILE or not isinstance(outcome, Rejected):
            return False
        if outcome.status not in SRTP_REFUSED_STATUSES:
            return False
        log.info("the callee refused RTP/AVP with a=crypto (%d): offering RTP/SAVP", outcome.status)
        self._srtp = replace(srtp, profile=SECURE_PROFILE)
        self.phase = Phase.CALLING
        self._invite()
        return True

    def _on_call_ended(self, event: sip.CallEnded, now: float) -> None:
        self._call_up = False
        if self.phase is Phase.ENDING:
            self._timers.goodbye = None
            self._after_call(now)
        else:
            self._end(now, "hangup by callee" if event.by_remote else event.reason)

    # ---- inputs: media facts ----------------------------------------------------------------

    def legs_connected(self, now: float) -> None:
        """The legs point at the callee; wait briefly for its first keyframe if it sends video."""
        if self.phase is not Phase.CONNECTING:
            return
        negotiated = self._negotiated
        if negotiated is not None and relays_video(negotiated.video):
            if self._keyframe:
                self._start_outputs(live=True)
            else:
                self._timers.keyframe = now + KEYFRAME_WAIT
        else:
            self._start_outputs(live=False)

    def keyframe_ready(self, now: float) -> None:
        """The callee's first keyframe (for H.264 with its SPS/PPS) arrived."""
        del now
        self._keyframe = True
        if self.phase is Phase.CONNECTING and self._timers.keyframe is not None:
            self._timers.keyframe = None
            self._start_outputs(live=True)
        elif self.phase is Phase.RELAYING and not self._opened_live:
            self._actions.append(actions.AttachLiveVideo())

    def media_arrived(self, kind: str, remote: str, now: float) -> None:
        """The first RTP of `kind` ("audio" or "video") came from `remote` (host:port)."""
        self._arrived.setdefault(kind, remote)
        if kind == "audio":
            self._audio_heard(now)
        if self.phase is Phase.RELAYING:
            self._report_media(kind)

    def outputs_started(
        self, now: float, video_mode: VideoMode | None, outputs: Sequence[OutputChanged] = ()
    ) -> None:
        """The pipeline runs, its video opening as `video_mode` says: from here the call is
        relayed and its timers run. Outputs that early media started (`--early-media`) are
        only watched until the answer; outputs that started after the run began to end are
        stopped at once."""
        self._outputs = "started"
        if self.phase is Phase.ENDING:
            self._actions.append(actions.StopOutputs())
        elif self.phase is Phase.RINGING:  # early media's: watched until the answer
            self._note_video_mode(video_mode)
            self.observed(now, outputs, None)
            self._timers.watch = now
        elif self.phase is Phase.CONNECTING:
            self._relaying(now, video_mode, outputs)

    def _note_video_mode(self, video_mode: VideoMode | None) -> None:
        if video_mode is not None:
            self._video_mode = video_mode
            self._events.append(video_mode)

    def _relaying(
        self,
        now: float,
        video_mode: VideoMode | None = None,
        outputs: Sequence[OutputChanged] = (),
    ) -> None:
        """The call is answered and the outputs run: the call's timers start."""
        self.phase = Phase.RELAYING
        self._note_video_mode(video_mode)
        self.observed(now, outputs, None)
        if self._keyframe and not self._opened_live:
            self._actions.append(actions.AttachLiveVideo())  # it came while they started
        timers, settings = self._timers, self._settings
        timers.watch = now
        timers.stats = now + self._plan.stats_interval
        if settings.max_duration is not None:
            timers.max_duration = now + settings.max_duration
        self._relaying_since = now
        self._arm_media_timer()
        for kind in ("audio", "video"):
            if kind in self._arrived:
                self._report_media(kind)
        self._send_next_dtmf(now)  # requested between the answer and the outputs
        if self._dtmf_steps:
            self._next_dtmf_step(now)

    def _expects_audio(self) -> bool:
        """Whether the callee is to send audio, so that its absence ends the call: the latest
        answer's direction decides, and a callee that holds the call (RFC 3264 §8.4) is not
        expected to send until it resumes."""
        audio = self._negotiated.audio if self._negotiated is not None else None
        if audio is None or self._held is not None:
            return False
        return audio.direction in ("sendrecv", "sendonly")

    def _audio_heard(self, arrival: float) -> None:
        """An accepted audio packet arrived at `arrival`: the media timer counts from there."""
        if self._last_audio is None or arrival > self._last_audio:
            self._last_audio = arrival
            self._arm_media_timer()

    def _arm_media_timer(self) -> None:
        """While relaying a callee that sends audio: end the call `--media-timeout` after its
        last packet, or after the relaying began when none has come yet."""
        since = self._relaying_since
        if self.phase is not Phase.RELAYING or since is None:
            return
        if not self._expects_audio():
            self._timers.media = None
            return
        last = since if self._last_audio is None else max(self._last_audio, since)
        self._timers.media = last + self._settings.media_timeout

    def _report_media(self, kind: str) -> None:
        if kind not in self._reported_media:
            self._reported_media.add(kind)
            remote = self._arrived[kind]
            self._events.append(MediaArrived("audio" if kind == "audio" else "video", remote))

    def observed(
        self,
        now: float,
        outputs: Sequence[OutputChanged],
        video_mode: VideoMode | None,
        failure: OutputFailed | None = None,
        last_audio: float | None = None,
    ) -> None:
        """What the outputs and the stream's video are now; `failure` once every output has
        failed for good; `last_audio`, when the latest accepted audio packet arrived. The
        media timer counts from that packet, so the call ends `--media-timeout` after it
        whenever the observations come (every `WATCH_INTERVAL`)."""
        if last_audio is not None:
            self._audio_heard(last_audio)
        for output in outputs:
            if self._output_states.get(output.target) != output.state:
                self._output_states[output.target] = output.state
                self._events.append(output)
        if video_mode is not None and video_mode != self._video_mode:
            self._video_mode = video_mode
            self._events.append(video_mode)
        if failure is not None and self.phase is Phase.RELAYING:
            self._end(now, "every output failed", failure)

    def report(self, event: RelayEvent) -> None:
        """An event the shell measured itself (stats, DTMF sent or received on RTP)."""
        self._events.append(event)

    # ---- DTMF ---------------------------------------------------------------------------------

    def refusal(self) -> str | None:
        """Why a request for the call's media (DTMF, a file played toward the callee) cannot
        be carried out now, or None from the answer until the call begins to end."""
        if self.phase in (Phase.CONNECTING, Phase.RELAYING):
            return None
        return ENDED if self._ending is not None or self.phase is Phase.DONE else NOT_UP

    def request_dtmf(self, digits: str, now: float, method: DtmfMethod | None = None) -> str | None:
        """Digits to send toward the callee (a front end's request), after any in progress;
        `method` forces SIP INFO or RFC 4733, by default RFC 4733 when negotiated. Returns why
        they cannot be sent, or None: taken from the answer on, and sent once the outputs run."""
        refused = self.refusal()
        if refused is None and method == "rfc4733" and not self._telephone_event():
            refused = NO_TELEPHONE_EVENT
        if refused is None and digits:
            self._dtmf_requests.append((digits, method))
            self._send_next_dtmf(now)
        return refused

    def _telephone_event(self) -> bool:
        """Whether the latest answer's audio lists telephone-event, the payload type RFC 4733
        events travel in: without it the callee agreed to none."""
        audio = self._negotiated.audio if self._negotiated is not None else None
        return audio is not None and audio.telephone_event_pt is not None

    def dtmf_sent(self, now: float) -> None:
        """The shell finished sending the digits of the last `SendDtmf`."""
        self._dtmf_busy = False
        self._send_next_dtmf(now)
        if not self._dtmf_busy and self._timers.dtmf is None and self._dtmf_steps:
            self._next_dtmf_step(now)

    def _next_dtmf_step(self, now: float) -> None:
        """The script's next step: a wait arms the timer, digits are sent."""
        if self.phase is not Phase.RELAYING or self._dtmf_busy:
            return
        while self._dtmf_steps:
            step = self._dtmf_steps.popleft()
            if step.wait:  # a script step is a wait or digits, never both
                self._timers.dtmf = now + step.wait
                return
            if step.digits:
                self._dtmf_requests.append((step.digits, None))
                self._send_next_dtmf(now)
                return

    def _send_next_dtmf(self, now: float) -> None:
        del now
        if self._dtmf_busy or not self._dtmf_requests or self.phase is not Phase.RELAYING:
            return
        self._dtmf_busy = True
        self._actions.append(actions.SendDtmf(*self._dtmf_requests.popleft()))

    # ---- the end ------------------------------------------------------------------------------

    def _start_outputs(self, *, live: bool) -> None:
        self._outputs = "starting"
        self._opened_live = live
        self._actions.append(actions.StartOutputs(live=live))

    def _end(self, now: float, reason: str, outcome: Outcome | None = None) -> None:
        """Begin the end, once: hang up or cancel the call, then stop the outputs."""
        if self._ending is not None or self.phase is Phase.DONE:
            return
        self._ending = _Ending(reason, outcome)
        previous, self.phase = self.phase, Phase.ENDING
        self._timers.disarm_media()
        if (
            previous in (Phase.CALLING, Phase.RINGING)
            and self._offer
            and isinstance(outcome, Interrupted)
        ):
            self._actions.append(actions.Cancel())
            self._timers.cancel_grace = now + CANCEL_GRACE
        elif self._call_up:
            self._actions.append(actions.Hangup())
            self._timers.goodbye = now + GOODBYE_TIMEOUT
        else:
            self._after_call(now)

    def _goodbye_timed_out(self, now: float) -> None:
        if self.phase is Phase.ENDING:
            self._after_call(now)
        elif self.phase is Phase.UNREGISTERING:
            self._finish()

    def _after_call(self, now: float) -> None:
        """The call is over: stop the outputs if they run (or, once they have started, if they
        are starting), else go on to unregister."""
        self._timers.cancel_grace = self._timers.goodbye = None
        if self._outputs == "started":
            self._actions.append(actions.StopOutputs())
        elif self._outputs == "none":
            self.outputs_stopped(now, [], None)

    def outputs_stopped(
        self, now: float, outputs: list[OutputChanged], stats: Stats | None
    ) -> None:
        """The outputs closed: their final states and the call's final numbers."""
        if self.phase is not Phase.ENDING or self._ending is None:
            return
        self.observed(now, outputs, None)
        if stats is not None:
            self._events.append(stats)
        ending = self._ending
        if ending.outcome is None:
            self._events.append(Finished(ending.reason, round(self.duration(now), 3)))
        if self._registered:
            self.phase = Phase.UNREGISTERING
            self._timers.goodbye = now + GOODBYE_TIMEOUT
            self._actions.append(actions.Unregister())
        else:
            self._finish()

    def _finish(self) -> None:
        self.phase = Phase.DONE
        self._timers = _Deadlines()
        ending = self._ending
        if ending is not None and ending.outcome is not None:
            self._events.append(Failed(ending.outcome))
        self._actions.append(actions.Done(ending.outcome if ending is not None else None))
