"""The relay core's phases, driven by scripted SIP events, media facts and a fake clock.

Every path a lab call reaches only by luck or by minutes of waiting (the ring timeout, the
media timeout, the callee hanging up while the slate shows, an output failing for good, a
signal while it rings, a BYE nobody answers) is a few calls here: no sockets, no threads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from sip2rtmp.config import CallSettings, build_call_settings
from sip2rtmp.nat.policy import LegPorts, OfferAddress
from sip2rtmp.outcomes import (
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
from sip2rtmp.relay import actions
from sip2rtmp.relay.core import (
    CANCEL_GRACE,
    GOODBYE_TIMEOUT,
    KEYFRAME_WAIT,
    RINGING_SLATE_AFTER,
    WATCH_INTERVAL,
    Phase,
    RelayCore,
    RelayPlan,
)
from sip2rtmp.relay.events import (
    CallStatus,
    Codec,
    Dtmf,
    Established,
    Failed,
    Finished,
    MediaArrived,
    NatAddress,
    OutputChanged,
    OutputStats,
    Progress,
    Registered,
    Registering,
    RelayEvent,
    Stats,
    Trying,
    Unregistered,
    VideoMode,
)
from sip2rtmp.sip import events as sip

TARGET = "rtmp://127.0.0.1:1935/live/***"
AUDIO_ANSWER = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)
VIDEO_ANSWER = AUDIO_ANSWER + (
    "m=video 40002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    "a=fmtp:96 packetization-mode=1\r\na=sendrecv\r\n"
)


def settings(**changes: object) -> CallSettings:
    values: dict[str, object] = {
        "callee": "tone",
        "sip_login": "relay",
        "sip_auth_name": None,
        "sip_password": "pw-Heron-4417",
        "sip_domain": "lab.example",
        "sip_outbound_proxy": "127.0.0.1",
        "sip_port": None,
        "sip_transport": "udp",
        "register": True,
        "rtmp_urls": ("rtmp://127.0.0.1:1935/live",),
        "rtmp_streams": ("key",),
        "audio": True,
        "video": True,
        "call_id": "core-test",
        "max_duration": None,
        "ring_timeout": 30,
        "media_timeout": 15,
    }
    values.update(changes)
    return build_call_settings(**values)  # type: ignore[arg-type]


@dataclass
class Run:
    """A core and what it asked for and reported, at a time the test sets."""

    core: RelayCore
    now: float = 100.0
    actions: list[actions.Action] = field(default_factory=list)
    events: list[RelayEvent] = field(default_factory=list)
    callee_audio: tuple[float, float] | None = None
    """From when to when the callee's audio packets arrive: the shell answers each Observe
    with the arrival of the latest one by then."""

    def drain(self) -> None:
        while (action := self.core.next_action()) is not None:
            self.actions.append(action)
        while (event := self.core.next_event()) is not None:
            self.events.append(event)

    def peek(self) -> tuple[list[actions.Action], list[RelayEvent]]:
        """What came since the last take, left for `finish` to answer."""
        self.drain()
        return list(self.actions), list(self.events)

    def take(self) -> tuple[list[actions.Action], list[RelayEvent]]:
        """What came since the last take."""
        self.drain()
        taken = self.actions, self.events
        self.actions, self.events = [], []
        return taken

    def sip(self, event: sip.Event) -> None:
        self.core.sip_event(event, self.now)

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass, firing every timer that falls due on the way, in order."""
        end = self.now + seconds
        while (deadline := self.core.get_timer()) is not None and deadline <= end:
            self.now = max(self.now, deadline)
            self.core.handle_timer(self.now)
            asked = len(self.actions)
            self.drain()
            if actions.Observe() in self.actions[asked:]:
                self.core.observed(self.now, [], None, None, self.last_audio())
                self.drain()
        self.now = end

    def last_audio(self) -> float | None:
        """When the callee's latest audio packet arrived, as the audio leg knows it."""
        if self.callee_audio is None or self.now < self.callee_audio[0]:
            return None
        return min(self.now, self.callee_audio[1])


def start(*, dtmf: str | None = None, **changes: object) -> Run:
    run = Run(RelayCore(settings(**changes), RelayPlan(1, dtmf, stats_interval=5.0)))
    run.core.start(run.now)
    return run


LOCAL = OfferAddress("192.0.2.1", LegPorts(30000), None, "local")


def open_media(run: Run, video_port: int | None, offer: OfferAddress = LOCAL) -> None:
    """The shell's answer to OpenMedia: the legs bound on `offer`'s ports (the video leg's
    on `video_port`), advertised as `offer` says."""
    video = LegPorts(video_port) if video_port is not None else None
    run.core.media_opened(dataclasses.replace(offer, video=video))


def established(*, answer: str = AUDIO_ANSWER, dtmf: str | None = None, **changes: object) -> Run:
    """A run whose call is answered and whose outputs run, its events taken."""
    run = start(dtmf=dtmf, **changes)
    if run.core.phase is Phase.REGISTERING:
        run.sip(sip.Registered(600))
    open_media(run, 30002)
    run.sip(sip.CallAnswered(answer.encode()))
    run.core.legs_connected(run.now)
    if actions.StartOutputs(live=False) not in run.take()[0]:  # waits for a keyframe
        run.advance(KEYFRAME_WAIT)
    run.core.outputs_started(run.now, None)
    run.take()
    return run


def names(items: list[actions.Action]) -> list[str]:
    return [type(item).__name__ for item in items]


def stop_outputs(run: Run, state: str = "closed") -> None:
    """The shell's answer to StopOutputs: the outputs' last state and the final numbers."""
    final = Stats(5.0, -20.0, (OutputStats(TARGET, state, 0, 100, 0),))
    run.core.outputs_stopped(run.now, [OutputChanged(TARGET, state)], final)


def finish(run: Run, *, registered: bool = True) -> Outcome | None:
    """Answer the end's actions not taken yet; the outcome the run is done with."""
    for _ in range(6):
        run.drain()
        for action in list(run.actions):
            run.actions.remove(action)
            if isinstance(action, actions.Hangup):
                run.sip(sip.CallEnded(by_remote=False, reason="hangup"))
            elif isinstance(action, actions.StopOutputs):
                stop_outputs(run)
            elif isinstance(action, actions.Unregister):
                assert registered
                run.sip(sip.Unregistered(ok=True))
            elif isinstance(action, actions.Done):
                return action.outcome
    raise AssertionError(f"the run never ended: {run.core.phase}, {run.actions}")


def statuses(events: list[RelayEvent]) -> list[str]:
    result = []
    for event in events:
        if isinstance(event, Failed):
            result.append(event.status.value)
        elif isinstance(event, Finished):
            result.append("FINISH")
        elif isinstance(event, Progress):
            result.append(event.status.value)
        elif isinstance(event, Established):
            result.append("ESTABLISHED")
        elif isinstance(event, Trying):
            result.append("TRYING")
    return result


# ---- the answered call, phase by phase ---------------------------------------------------


def test_a_registered_call_goes_through_every_phase_in_order() -> None:
    run = start(max_duration=10)
    assert run.core.phase is Phase.REGISTERING
    assert run.take() == ([actions.Register()], [Registering("127.0.0.1:5060", "udp")])
    run.sip(sip.Registered(600))
    assert run.take() == ([actions.OpenMedia()], [Registered(600)])
    assert run.core.phase is Phase.CALLING
    open_media(run, None)
    did, said = run.take()
    assert names(did) == ["Invite"]
    assert said == [NatAddress("media", "192.0.2.1", "local"), Trying("sip:tone@lab.example")]
    invite = did[0]
    assert isinstance(invite, actions.Invite) and invite.ring_timeout == 30
    assert b"m=audio 30000 RTP/AVP" in invite.sdp and b"c=IN IP4 192.0.2.1" in invite.sdp
    run.sip(sip.CallProgress(100, "Trying", None))
    run.sip(sip.CallProgress(180, "Ringing", None))
    assert run.take() == ([], [Progress(CallStatus.RING, 180, "Ringing")])
    assert run.core.phase is Phase.RINGING
    run.now += 3.0
    run.sip(sip.CallAnswered(AUDIO_ANSWER.encode()))
    did, said = run.take()
    assert said == [Established(200, "OK", Codec("PCMU", 8000), None)]
    assert names(did) == ["ConnectLegs"] and run.core.phase is Phase.CONNECTING
    run.core.legs_connected(run.now)
    assert run.take() == ([actions.StartOutputs(live=False)], [])
    run.core.outputs_started(run.now, None)
    assert run.core.phase is Phase.RELAYING
    run.advance(WATCH_INTERVAL * 2)
    assert names(run.take()[0]) == ["Observe", "Observe", "Observe"]
    run.advance(10.0)
    did, _ = run.take()
    assert names(did).count("CollectStats") == 1 and names(did)[-1] == "Hangup"
    assert run.core.phase is Phase.ENDING
    run.sip(sip.CallEnded(by_remote=False, reason="hangup"))
    assert run.take() == ([actions.StopOutputs()], [])
    stop_outputs(run)
    did, said = run.take()
    assert did == [actions.Unregister()]
    assert said[:2] == [OutputChanged(TARGET, "closed"), said[1]] and isinstance(said[1], Stats)
    assert said[2] == Finished("max duration reached", 11.0)
    run.sip(sip.Unregistered(ok=True))
    assert run.take() == ([actions.Done(None)], [Unregistered()])
    assert run.core.ended and run.core.get_timer() is None


@pytest.mark.parametrize(
    ("video", "rings", "prepared"),
    [
        (True, RINGING_SLATE_AFTER, True),  # a phone: the slate is ready when it answers
        (True, RINGING_SLATE_AFTER - 0.1, False),  # answered sooner: rendered if needed then
        (False, 3.0, False),  # an audio-only call has rendered it from the start
    ],
)
def test_a_video_call_that_rings_for_a_while_prepares_the_streams_slate(
    video: bool, rings: float, prepared: bool
) -> None:
    run = start(register=False, video=video)
    open_media(run, 30002 if video else None)
    run.sip(sip.CallProgress(100, "Trying", None))
    run.advance(1.0)
    run.sip(sip.CallProgress(180, "Ringing", None))
    run.advance(0.3)
    run.sip(sip.CallProgress(180, "Ringing", None))  # a second 180 does not move the time
    run.advance(rings - 0.3)
    run.sip(sip.CallAnswered(AUDIO_ANSWER.encode()))
    run.advance(5.0)
    did = names(run.take()[0])
    assert did.count("PrepareSlate") == (1 if prepared else 0), did
    if prepared:
        assert did.index("PrepareSlate") < did.index("ConnectLegs")


def test_without_registering_the_call_starts_at_once_and_ends_without_unregister() -> None:
    run = start(register=False, video=False, max_duration=2)
    assert run.take() == ([actions.OpenMedia()], [])
    run = established(register=False, video=False, max_duration=2)
    run.advance(2.0)
    assert finish(run, registered=False) is None


def test_the_callee_hanging_up_finishes_the_call_with_its_reason() -> None:
    run = established()
    run.advance(4.0)
    run.take()
    run.sip(sip.CallEnded(by_remote=True, reason="remote hangup"))
    did, _ = run.take()
    assert did == [actions.StopOutputs()]  # no BYE for a call the callee ended
    stop_outputs(run)
    _, said = run.take()
    assert said[-1] == Finished("hangup by callee", 4.0)


def test_a_dialog_that_dies_under_the_call_ends_it_with_the_user_agents_reason() -> None:
    run = established()
    run.sip(sip.CallEnded(by_remote=False, reason="session expired"))
    run.take()
    stop_outputs(run)
    assert run.take()[1][-1] == Finished("session expired", 0.0)


def test_a_signal_after_the_answer_finishes_the_call_normally() -> None:
    run = established()
    run.core.stop(run.now, "SIGTERM")
    assert run.peek()[0] == [actions.Hangup()]
    assert finish(run) is None


def test_early_media_points_the_audio_leg_before_the_answer() -> None:
    run = start(register=False)
    open_media(run, None)
    run.take()
    run.sip(sip.CallProgress(183, "Session Progress", AUDIO_ANSWER.encode()))
    did, said = run.take()
    assert said == [Progress(CallStatus.SESSION_PROGRESS, 183, "Session Progress")]
    assert names(did) == ["ConnectEarlyAudio"]
    huge_port = AUDIO_ANSWER.replace("40000", "9" * 4301)
    for unusable in ("v=0\r\nnot sdp", huge_port):
        run.sip(sip.CallProgress(180, "Ringing", unusable.encode()))
        did, said = run.take()
        assert did == [] and said == [Progress(CallStatus.RING_MEDIA, 180, "Ringing")]


# ---- the callee's video --------------------------------------------------------------------


def answered_video(run: Run) -> None:
    run.sip(sip.Registered(600))
    open_media(run, 30002)
    run.sip(sip.CallAnswered(VIDEO_ANSWER.encode()))
    did, said = run.take()
    connect = did[-1]
    assert isinstance(connect, actions.ConnectLegs) and connect.video is not None
    assert isinstance(said[-1], Established) and said[-1].video == Codec("H264", 90000)


def test_a_keyframe_within_the_wait_opens_the_stream_on_the_callees_video() -> None:
    run = start()
    answered_video(run)
    run.core.legs_connected(run.now)
    assert run.take()[0] == [] and run.core.get_timer() == run.now + KEYFRAME_WAIT
    run.now += 0.4
    run.core.keyframe_ready(run.now)
    assert run.take()[0] == [actions.StartOutputs(live=True)]
    mode = VideoMode("passthrough", width=640, height=480)
    run.core.outputs_started(run.now, mode)
    assert run.take()[1] == [mode]


def test_a_keyframe_before_the_legs_are_connected_is_not_waited_for() -> None:
    run = start()
    answered_video(run)
    run.core.keyframe_ready(run.now)
    run.core.legs_connected(run.now)
    assert run.take()[0] == [actions.StartOutputs(live=True)]


def test_without_a_keyframe_the_stream_opens_on_the_slate_and_moves_at_the_first() -> None:
    run = start()
    answered_video(run)
    run.core.legs_connected(run.now)
    run.advance(KEYFRAME_WAIT)
    assert run.take()[0] == [actions.StartOutputs(live=False)]
    slate = VideoMode("slate", reason="no keyframe from the callee")
    run.core.outputs_started(run.now, slate)
    assert run.take()[1] == [slate]
    run.core.keyframe_ready(run.now)
    assert run.take()[0] == [actions.AttachLiveVideo()]


def test_the_callee_hanging_up_while_the_slate_shows_ends_the_call() -> None:
    run = start()
    answered_video(run)
    run.core.legs_connected(run.now)
    run.advance(KEYFRAME_WAIT)
    run.core.outputs_started(run.now, VideoMode("slate", reason="no keyframe from the callee"))
    run.take()
    run.sip(sip.CallEnded(by_remote=True, reason="remote hangup"))
    assert run.take()[0] == [actions.StopOutputs()]
    stop_outputs(run)
    assert run.take()[1][-1] == Finished("hangup by callee", 1.0)


def test_a_call_ending_while_the_outputs_start_stops_them_once_they_run() -> None:
    run = start()
    answered_video(run)
    run.core.keyframe_ready(run.now)
    run.core.legs_connected(run.now)
    run.take()  # StartOutputs is under way in the shell
    run.sip(sip.CallEnded(by_remote=True, reason="remote hangup"))
    assert run.take()[0] == []  # nothing to stop yet
    run.core.outputs_started(run.now, None)
    assert run.peek()[0] == [actions.StopOutputs()]
    assert finish(run) is None


# ---- watching the outputs and the media ----------------------------------------------------


def test_output_states_and_video_modes_are_reported_once_per_change() -> None:
    run = established()
    slate = VideoMode("slate", reason="callee video stopped")
    for _ in range(2):
        run.core.observed(run.now, [OutputChanged(TARGET, "connecting")], None)
    run.core.observed(run.now, [OutputChanged(TARGET, "live")], slate)
    run.core.observed(run.now, [OutputChanged(TARGET, "live")], slate)
    assert run.take()[1] == [
        OutputChanged(TARGET, "connecting"),
        OutputChanged(TARGET, "live"),
        slate,
    ]


def test_every_output_failing_ends_the_run_with_that_failure() -> None:
    run = established()
    failure = OutputFailed(TARGET, "Connection refused")
    failed = OutputChanged(TARGET, "failed", "Connection refused")
    run.core.observed(run.now, [failed], None, failure)
    did, said = run.peek()
    assert said == [failed] and did == [actions.Hangup()]
    assert finish(run) == failure
    assert isinstance(run.events[-1], Failed) and run.events[-1].outcome == failure


def test_no_audio_within_the_media_timeout_fails_the_run() -> None:
    run = established(media_timeout=15)
    run.advance(14.9)
    assert actions.Hangup() not in run.take()[0]
    run.advance(0.2)
    assert actions.Hangup() in run.peek()[0]
    outcome = finish(run)
    assert outcome == MediaTimedOut(15)


def test_audio_that_keeps_arriving_is_reported_once_and_keeps_the_call_up() -> None:
    run = established(media_timeout=15)
    run.callee_audio = (run.now + 1, run.now + 600)
    run.core.media_arrived("audio", "192.0.2.7:40000", run.now + 1)
    run.core.media_arrived("audio", "192.0.2.7:40000", run.now + 2)
    assert run.take()[1] == [MediaArrived("audio", "192.0.2.7:40000")]
    run.advance(60.0)
    assert actions.Hangup() not in run.take()[0]
    assert run.core.get_timer() is not None and run.core.phase is Phase.RELAYING


def until_hangup(run: Run, limit: float, step: float = 0.01) -> float:
    """Let time pass in small steps until the core asks for the BYE; when it did."""
    end = run.now + limit
    while run.now < end:
        run.advance(step)
        if actions.Hangup() in run.peek()[0]:
            return run.now
    raise AssertionError(f"no BYE within {limit} s")


@pytest.mark.parametrize("stops_after", [3.0, 10.23, 47.5])
def test_audio_that_stops_mid_call_ends_it_a_media_timeout_after_its_last_packet(
    stops_after: float,
) -> None:
    """The timer counts from the arrival of the last packet the leg accepted, not from when
    the shell looked: the BYE leaves `--media-timeout` after it (within one step of 10 ms),
    the outcome says the media stopped, and the run ends once."""
    run = established(media_timeout=5)
    first, last = run.now + 0.05, run.now + stops_after
    run.callee_audio = (first, last)
    run.core.media_arrived("audio", "192.0.2.7:40000", first)
    ended = until_hangup(run, stops_after + 7)
    assert last + 5 <= ended < last + 5 + 0.02
    assert finish(run) == MediaTimedOut(5, stopped=True)
    assert [e for e in run.events if isinstance(e, Failed)] == [
        Failed(MediaTimedOut(5, stopped=True))
    ]


def test_audio_before_the_outputs_gives_the_timer_no_head_start() -> None:
    """Audio that came while the outputs were starting and then stopped: the timeout counts
    from the start of the relaying, never from before it."""
    run = start(register=False, video=False, media_timeout=5)
    open_media(run, None)
    run.sip(sip.CallAnswered(AUDIO_ANSWER.encode()))
    run.core.media_arrived("audio", "192.0.2.7:40000", run.now)
    run.core.legs_connected(run.now)
    run.now += 20.0
    run.core.outputs_started(run.now, None)
    run.take()
    assert run.core.get_timer() is not None
    relaying = run.now
    ended = until_hangup(run, 10)
    assert relaying + 5 <= ended < relaying + 5 + 0.02
    assert finish(run, registered=False) == MediaTimedOut(5, stopped=True)


def test_media_that_came_before_the_outputs_is_reported_when_they_start() -> None:
    run = start(register=False, video=False)
    open_media(run, None)
    run.sip(sip.CallAnswered(AUDIO_ANSWER.encode()))
    run.core.media_arrived("audio", "192.0.2.7:40000", run.now)
    run.core.legs_connected(run.now)
    run.take()
    assert run.core.get_timer() is None
    run.core.outputs_started(run.now, None)
    assert run.take()[1] == [MediaArrived("audio", "192.0.2.7:40000")]


def test_a_callee_that_only_receives_has_no_media_timeout() -> None:
    run = established(answer=AUDIO_ANSWER.replace("a=sendrecv", "a=recvonly"), media_timeout=5)
    run.advance(30.0)
    assert actions.Hangup() not in run.take()[0]


# ---- failures before the answer --------------------------------------------------------------


@pytest.mark.parametrize(
    "rejected",
    [Rejected("REGISTER", 403, "Forbidden", "127.0.0.1"), Unanswered("REGISTER", "127.0.0.1", 32)],
)
def test_a_failed_registration_fails_without_calling_or_unregistering(rejected: Outcome) -> None:
    run = start()
    run.take()
    run.sip(sip.RegistrationFailed(rejected))  # type: ignore[arg-type]
    did, said = run.take()
    assert did == [actions.Done(rejected)] and said == [Failed(rejected)]
    assert said[0].status is CallStatus.FAILED


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (Rejected("INVITE", 486, "Busy Here", "127.0.0.1", rang=True), "BUSY"),
        (Rejected("INVITE", 404, "Not Found", "127.0.0.1"), "FAILED"),
        (RingTimeout(30.0), "FAILED"),
        (Unanswered("INVITE", "127.0.0.1", 32.0), "FAILED"),
        (Unreachable("127.0.0.1:5060", "Connection refused"), "FAILED"),
    ],
)
def test_a_failed_attempt_unregisters_then_fails(outcome: Outcome, status: str) -> None:
    run = start()
    run.sip(sip.Registered(600))
    open_media(run, None)
    run.take()
    run.sip(sip.CallAttemptFailed(outcome))  # type: ignore[arg-type]
    assert run.take() == ([actions.Unregister()], [])
    run.sip(sip.Unregistered(ok=True))
    did, said = run.take()
    assert did == [actions.Done(outcome)] and statuses(said) == [status]
    assert not any(isinstance(event, Unregistered) for event in said)


def test_an_unusable_answer_is_hung_up_and_fails_without_established() -> None:
    run = start(register=False)
    open_media(run, None)
    run.take()
    run.sip(sip.CallAnswered(b"this is not SDP"))
    did, said = run.peek()
    assert did == [actions.Hangup()] and said == []
    outcome = finish(run, registered=False)
    assert isinstance(outcome, UnusableAnswer) and outcome.status == 200


def test_a_signal_while_ringing_cancels_and_fails_as_interrupted() -> None:
    run = start()
    run.sip(sip.Registered(600))
    open_media(run, None)
    run.sip(sip.CallProgress(180, "Ringing", None))
    run.take()
    run.core.stop(run.now, "SIGINT")
    assert run.take()[0] == [actions.Cancel()]
    run.sip(sip.CallAttemptFailed(Rejected("INVITE", 487, "Request Terminated", "127.0.0.1")))
    assert run.take()[0] == [actions.Unregister()]
    run.sip(sip.Unregistered(ok=True))
    did, said = run.take()
    assert did == [actions.Done(Interrupted("SIGINT"))]
    assert said == [Failed(Interrupted("SIGINT"))]


def test_a_cancel_nobody_answers_is_given_up_after_the_grace() -> None:
    run = start(register=False)
    open_media(run, None)
    run.core.stop(run.now, "SIGINT")
    run.take()
    run.advance(CANCEL_GRACE - 0.1)
    assert run.take()[0] == []
    run.advance(0.2)
    assert run.take()[0] == [actions.Done(Interrupted("SIGINT"))]


def test_a_signal_while_registering_removes_the_binding_and_fails() -> None:
    run = start()
    run.take()
    run.core.stop(run.now, "SIGTERM")
    assert run.take()[0] == [actions.Unregister()]  # no INVITE left, nothing to cancel
    run.sip(sip.Unregistered(ok=True))
    assert run.take()[0] == [actions.Done(Interrupted("SIGTERM"))]


def test_a_hangup_request_before_the_answer_is_an_interruption_by_it() -> None:
    run = start(register=False)
    run.core.stop(run.now, "hangup requested")
    assert finish(run, registered=False) == Interrupted("hangup requested")


def test_a_bye_and_an_unregister_nobody_answers_do_not_hold_the_run() -> None:
    run = established()
    run.core.stop(run.now, "SIGINT")
    run.take()
    run.advance(GOODBYE_TIMEOUT)
    assert run.take()[0] == [actions.StopOutputs()]
    stop_outputs(run)
    assert run.take()[0] == [actions.Unregister()]
    run.advance(GOODBYE_TIMEOUT)
    did, said = run.take()
    assert did == [actions.Done(None)] and not any(isinstance(e, Unregistered) for e in said)


def test_a_failed_re_register_during_the_call_does_not_end_it() -> None:
    run = established()
    run.sip(sip.RegistrationFailed(Rejected("REGISTER", 503, "Unavailable", "127.0.0.1")))
    assert run.take() == ([], [])
    assert run.core.phase is Phase.RELAYING


def test_every_end_is_reported_once() -> None:
    run = established()
    run.core.stop(run.now, "SIGINT")
    run.core.stop(run.now, "SIGTERM")
    run.sip(sip.CallEnded(by_remote=True, reason="remote hangup"))
    run.core.observed(run.now, [], None, OutputFailed(TARGET))
    stop_outputs(run)
    _, said = run.take()
    assert [e for e in said if isinstance(e, Finished | Failed)] == [Finished("SIGINT", 0.0)]


# ---- DTMF ----------------------------------------------------------------------------------


def sent_digits(did: list[actions.Action]) -> list[str]:
    return [action.digits for action in did if isinstance(action, actions.SendDtmf)]


def test_a_dtmf_script_waits_then_sends_each_group_after_the_last_is_out() -> None:
    run = established(dtmf="wait:3 12 wait:1 #")
    run.advance(2.9)
    assert sent_digits(run.take()[0]) == []
    run.advance(0.2)
    assert sent_digits(run.take()[0]) == ["12"]
    run.advance(5.0)
    assert sent_digits(run.take()[0]) == []  # the wait counts from the digits being sent
    run.core.dtmf_sent(run.now)
    run.advance(0.9)
    assert sent_digits(run.take()[0]) == []
    run.advance(0.2)
    assert sent_digits(run.take()[0]) == ["#"]


def test_requested_digits_queue_behind_those_being_sent() -> None:
    run = established(dtmf="99")
    assert sent_digits(run.take()[0]) == [] and sent_digits(run.actions) == []
    run = established()
    run.core.request_dtmf("1", run.now)
    run.core.request_dtmf("2", run.now)
    assert sent_digits(run.take()[0]) == ["1"]
    run.core.dtmf_sent(run.now)
    assert sent_digits(run.take()[0]) == ["2"]


def test_a_script_without_a_wait_starts_with_the_outputs() -> None:
    run = start(register=False, video=False, dtmf="42")
    open_media(run, None)
    run.sip(sip.CallAnswered(AUDIO_ANSWER.encode()))
    run.core.legs_connected(run.now)
    run.take()
    run.core.outputs_started(run.now, None)
    assert sent_digits(run.take()[0]) == ["42"]


def test_info_digits_from_the_callee_are_reported() -> None:
    run = established()
    run.sip(sip.InfoReceived("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n"))
    run.sip(sip.InfoReceived("application/media_control+xml", b"<x/>"))
    assert run.take()[1] == [Dtmf("5", "received", "info")]


def test_digits_requested_before_the_call_is_up_are_not_sent() -> None:
    run = start()
    run.core.request_dtmf("1", run.now)
    assert sent_digits(run.take()[0]) == []
