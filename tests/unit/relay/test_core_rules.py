"""The relay core's finer rules: what the offer carries, how durations and deadlines are
counted, which streams a one-way callee gets, when DTMF waits end, and what is logged.

Each rule here is one the phase tests in `test_core.py` pass through without pinning; they
share its scripted run, answers and helpers.
"""

from __future__ import annotations

import logging

import pytest

from sip2rtmp.outcomes import Interrupted, MediaTimedOut, Rejected, UnusableAnswer
from sip2rtmp.relay import actions
from sip2rtmp.relay.core import (
    CANCEL_GRACE,
    GOODBYE_TIMEOUT,
    KEYFRAME_WAIT,
    Phase,
    RelayCore,
    RelayPlan,
)
from sip2rtmp.relay.events import (
    Codec,
    Dtmf,
    Established,
    Failed,
    Finished,
    MediaArrived,
    OutputStats,
    Stats,
    VideoMode,
)
from sip2rtmp.sip import events as sip
from sip2rtmp.sip.sdp import SdpParseError, negotiate
from tests.unit.relay.test_core import (
    AUDIO_ANSWER,
    TARGET,
    VIDEO_ANSWER,
    Run,
    answered_video,
    established,
    finish,
    names,
    open_media,
    sent_digits,
    settings,
    start,
    stop_outputs,
)

CALLEE_AUDIO = ("192.0.2.7", 40000)
NOT_SDP = b"v=0\r\nnot sdp"


def calling(run: Run, *, video_port: int | None = None) -> actions.Invite:
    """Open the legs; the INVITE the core then asks for."""
    open_media(run, video_port)
    invite = [action for action in run.take()[0] if isinstance(action, actions.Invite)]
    assert len(invite) == 1
    return invite[0]


def why_unusable(offer: bytes, answer: bytes) -> str:
    """The SDP parser's own words for an answer it cannot use."""
    with pytest.raises(SdpParseError) as refused:
        negotiate(offer.decode(), answer.decode("utf-8", "replace"))
    return str(refused.value)


# ---- the offer and the answer ----------------------------------------------------------------


def test_the_invite_carries_the_callee_and_an_offer_of_the_chosen_codecs() -> None:
    """RFC 3264 §5: the offer lists the codecs the user chose on the legs' ports; the SDP
    session id is the plan's (RFC 4566 §5.2)."""
    run = start(register=False, audio_codecs="pcma,pcmu")
    invite = calling(run, video_port=30002)
    assert invite.uri == "sip:tone@lab.example" and invite.ring_timeout == 30
    lines = invite.sdp.decode().split("\r\n")
    assert "o=- 1 0 IN IP4 192.0.2.1" in lines
    assert [line.split(" ", 3)[:3] for line in lines if line.startswith("m=")] == [
        ["m=audio", "30000", "RTP/AVP"],
        ["m=video", "30002", "RTP/AVP"],
    ]
    rtpmaps = [line.split(" ", 1)[1] for line in lines if line.startswith("a=rtpmap:")]
    assert rtpmaps[:2] == ["PCMA/8000", "PCMU/8000"]
    assert [name for name in rtpmaps if name.endswith("/90000")] == [
        "H264/90000",
        "H264/90000",
        "VP8/90000",
    ]


def test_sdp_that_is_not_utf8_still_gives_its_streams() -> None:
    """A Latin-1 session name in early media and in the answer: the text is read with
    replacement characters and its streams are used."""
    latin = AUDIO_ANSWER.replace("s=-", "s=caf\xe9").encode("latin-1")
    run = start(register=False, video=False)
    calling(run)
    run.sip(sip.CallProgress(183, "Session Progress", latin))
    (early,) = run.take()[0]
    assert isinstance(early, actions.ConnectEarlyAudio)
    assert early.stream.rtp_address == CALLEE_AUDIO and early.stream.codec == "PCMU"
    run.sip(sip.CallAnswered(latin))
    did, said = run.take()
    assert said == [Established(200, "OK", Codec("PCMU", 8000), None)]
    (connect,) = did
    assert isinstance(connect, actions.ConnectLegs) and connect.video is None
    assert connect.audio is not None and connect.audio.rtp_address == CALLEE_AUDIO


def test_unusable_sdp_is_logged_in_early_media_and_named_in_the_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Early media that does not parse is skipped with a warning; an answer that does not
    parse fails the run with the parser's words (exit 10, docs/exit-codes.md)."""
    run = start(register=False, video=False)
    invite = calling(run)
    why = why_unusable(invite.sdp, NOT_SDP)
    with caplog.at_level(logging.WARNING, logger="sip2rtmp.relay.core"):
        run.sip(sip.CallProgress(183, "Session Progress", NOT_SDP))
    assert [record.getMessage() for record in caplog.records] == [
        f"ignoring the early media of a 183: unusable SDP: {why}"
    ]
    assert run.take()[0] == []
    run.sip(sip.CallAnswered(NOT_SDP))
    assert finish(run, registered=False) == UnusableAnswer(
        200, f"with an unusable SDP answer: {why}"
    )


def test_a_callee_that_only_sends_is_relayed_and_held_to_the_media_timeout() -> None:
    """`a=sendonly` (RFC 3264 §6.1): the callee sends and takes nothing, so both its streams
    are relayed and its audio must arrive within the media timeout."""
    run = start(media_timeout=5)
    run.sip(sip.Registered(600))
    calling(run, video_port=30002)
    run.sip(sip.CallAnswered(VIDEO_ANSWER.replace("a=sendrecv", "a=sendonly").encode()))
    connect = run.take()[0][-1]
    assert isinstance(connect, actions.ConnectLegs)
    assert connect.audio is not None and connect.audio.rtp_address == CALLEE_AUDIO
    assert connect.video is not None and connect.video.codec == "H264"
    run.core.legs_connected(run.now)
    run.advance(KEYFRAME_WAIT)
    run.core.outputs_started(run.now, VideoMode("slate", reason="no keyframe from the callee"))
    run.take()
    run.advance(4.9)
    assert actions.Hangup() not in run.take()[0]
    run.advance(0.2)
    assert finish(run) == MediaTimedOut(5)


def test_video_the_callee_does_not_send_is_not_relayed_or_waited_for() -> None:
    video_recvonly = VIDEO_ANSWER[len(AUDIO_ANSWER) :].replace("a=sendrecv", "a=recvonly")
    run = start(register=False)
    calling(run, video_port=30002)
    run.sip(sip.CallAnswered((AUDIO_ANSWER + video_recvonly).encode()))
    did, said = run.take()
    assert said == [Established(200, "OK", Codec("PCMU", 8000), Codec("H264", 90000))]
    (connect,) = did
    assert isinstance(connect, actions.ConnectLegs) and connect.video is None
    run.core.legs_connected(run.now)
    assert run.take()[0] == [actions.StartOutputs(live=False)]


# ---- media, video and what the shell reports ---------------------------------------------------


def test_media_of_both_kinds_before_the_outputs_is_reported_and_keeps_the_call_up() -> None:
    run = start(register=False, media_timeout=5)
    run.callee_audio = (run.now, run.now + 600)
    calling(run, video_port=30002)
    run.sip(sip.CallAnswered(VIDEO_ANSWER.encode()))
    run.core.media_arrived("audio", "192.0.2.7:40000", run.now)
    run.core.media_arrived("video", "192.0.2.7:40002", run.now)
    run.core.keyframe_ready(run.now)
    run.core.legs_connected(run.now)
    assert run.take()[0][-1] == actions.StartOutputs(live=True)
    run.core.outputs_started(run.now, None)
    assert run.take()[1] == [
        MediaArrived("audio", "192.0.2.7:40000"),
        MediaArrived("video", "192.0.2.7:40002"),
    ]
    run.advance(30.0)
    assert actions.Hangup() not in run.take()[0]


def test_a_stream_opened_on_the_callees_video_needs_no_attaching_later() -> None:
    """The keyframe ends the wait (no timer left), the mode the outputs opened with is not
    reported twice, and the callee's next keyframe asks for nothing."""
    run = start()
    answered_video(run)
    run.core.legs_connected(run.now)
    run.take()
    run.core.keyframe_ready(run.now + 0.3)
    assert run.take()[0] == [actions.StartOutputs(live=True)]
    assert run.core.get_timer() is None
    mode = VideoMode("passthrough", width=640, height=480)
    run.core.outputs_started(run.now, mode)
    assert run.take()[1] == [mode]
    run.advance(KEYFRAME_WAIT * 2)
    run.core.observed(run.now, [], mode)
    run.core.keyframe_ready(run.now)
    did, said = run.take()
    assert set(names(did)) == {"Observe"} and said == []


def test_stats_are_collected_every_interval() -> None:
    run = established()
    run.advance(12.0)
    assert names(run.take()[0]).count("CollectStats") == 2


def test_what_the_shell_measured_is_reported_as_it_is() -> None:
    run = established()
    stats = Stats(1.5, -20.0, (OutputStats(TARGET, "live", 128000, 4096, 0),))
    run.core.report(stats)
    run.core.report(Dtmf("5", "sent", "rfc4733"))
    assert run.take()[1] == [stats, Dtmf("5", "sent", "rfc4733")]


# ---- durations and deadlines -----------------------------------------------------------------


def test_the_duration_counts_from_the_answer_to_the_millisecond() -> None:
    run = start(register=False, video=False)
    calling(run)
    assert run.core.duration(run.now + 50.0) == 0.0
    run = established(register=False, video=False)
    run.now += 4.12345
    assert run.core.duration(run.now) == pytest.approx(4.12345)
    run.sip(sip.CallEnded(by_remote=True, reason="remote hangup"))
    stop_outputs(run)
    assert run.take()[1][-1] == Finished("hangup by callee", 4.123)


def test_a_signal_before_the_run_starts_is_an_interruption() -> None:
    run = Run(RelayCore(settings(), RelayPlan(1)))
    run.core.stop(run.now, "SIGINT")
    assert run.take() == (
        [actions.Done(Interrupted("SIGINT"))],
        [Failed(Interrupted("SIGINT"))],
    )


def test_the_callee_hanging_up_during_the_keyframe_wait_ends_the_call_without_outputs() -> None:
    run = start()
    answered_video(run)
    run.core.legs_connected(run.now)
    run.take()
    run.now += 0.5
    run.sip(sip.CallEnded(by_remote=True, reason="remote hangup"))
    assert run.take() == ([actions.Unregister()], [Finished("hangup by callee", 0.5)])
    assert run.core.get_timer() == run.now + GOODBYE_TIMEOUT  # the keyframe wait is over
    run.sip(sip.Unregistered(ok=True))
    assert run.take()[0] == [actions.Done(None)]


def test_a_signal_before_the_outputs_start_hangs_up_then_finishes() -> None:
    run = start(register=False, video=False)
    calling(run)
    run.sip(sip.CallAnswered(AUDIO_ANSWER.encode()))
    run.take()
    run.now += 0.25
    run.core.stop(run.now, "SIGTERM")
    assert run.take()[0] == [actions.Hangup()]
    run.sip(sip.CallEnded(by_remote=False, reason="hangup"))
    assert run.take() == ([actions.Done(None)], [Finished("SIGTERM", 0.25)])


def test_a_bye_nobody_answers_before_the_outputs_start_is_given_up_then_unregistered() -> None:
    run = start(video=False)
    run.sip(sip.Registered(600))
    calling(run)
    run.sip(sip.CallAnswered(AUDIO_ANSWER.encode()))
    run.core.stop(run.now, "SIGINT")
    assert run.take()[0][-1] == actions.Hangup()
    run.advance(GOODBYE_TIMEOUT)
    assert run.take() == ([actions.Unregister()], [Finished("SIGINT", GOODBYE_TIMEOUT)])
    assert run.core.get_timer() == run.now + GOODBYE_TIMEOUT


def test_a_cancel_given_up_removes_the_binding_and_its_late_answer_changes_nothing() -> None:
    """RFC 3261 §9.1: the 487 to a CANCELled INVITE may come after we stopped waiting."""
    run = start()
    run.sip(sip.Registered(600))
    calling(run)
    run.sip(sip.CallProgress(180, "Ringing", None))
    run.core.stop(run.now, "SIGINT")
    assert run.take()[0] == [actions.Cancel()]
    run.advance(CANCEL_GRACE)
    assert run.take()[0] == [actions.Unregister()]
    deadline = run.now + GOODBYE_TIMEOUT
    run.sip(sip.CallAttemptFailed(Rejected("INVITE", 487, "Request Terminated", "127.0.0.1")))
    assert run.take() == ([], []) and run.core.get_timer() == deadline
    run.sip(sip.Unregistered(ok=True))
    assert run.take()[0] == [actions.Done(Interrupted("SIGINT"))]


def test_outputs_reported_stopped_twice_end_the_run_once() -> None:
    run = established()
    run.core.stop(run.now, "SIGINT")
    run.sip(sip.CallEnded(by_remote=False, reason="hangup"))
    stop_outputs(run)
    assert run.take()[0][-1] == actions.Unregister()
    stop_outputs(run)
    assert run.take() == ([], []) and run.core.phase is Phase.UNREGISTERING


# ---- DTMF ------------------------------------------------------------------------------------


def test_a_scripts_wait_counts_from_the_digits_being_sent_whoever_asked_for_them() -> None:
    """Digits typed during the script's waits are sent at once, and the script's next wait
    starts only when they are out: `#` comes 2 s after `5` was sent, not earlier."""
    run = established(dtmf="wait:1 wait:2 #")
    run.advance(0.5)
    run.core.request_dtmf("5", run.now)
    assert sent_digits(run.take()[0]) == ["5"]
    run.advance(1.0)  # the first wait ended while `5` was being sent
    run.core.dtmf_sent(run.now)
    run.advance(0.5)
    run.core.request_dtmf("6", run.now)
    assert sent_digits(run.take()[0]) == ["6"]
    run.advance(0.5)
    run.core.dtmf_sent(run.now)  # the second wait is still running
    run.advance(0.9)
    assert sent_digits(run.take()[0]) == []
    run.advance(0.2)
    assert sent_digits(run.take()[0]) == ["#"]


def test_consecutive_waits_add_up() -> None:
    run = established(dtmf="wait:1 wait:1 5")
    run.advance(1.9)
    assert sent_digits(run.take()[0]) == []
    run.advance(0.2)
    assert sent_digits(run.take()[0]) == ["5"]


def test_digits_are_sent_only_while_relaying_and_never_empty() -> None:
    """Digits asked for before the call is up are dropped, not kept for later."""
    run = start(register=False, video=False)
    run.core.request_dtmf("1", run.now)
    calling(run)
    run.sip(sip.CallAnswered(AUDIO_ANSWER.encode()))
    run.core.legs_connected(run.now)
    run.core.outputs_started(run.now, None)
    run.take()
    run.core.request_dtmf("", run.now)
    assert sent_digits(run.take()[0]) == []
    run.core.request_dtmf("2", run.now)
    assert sent_digits(run.take()[0]) == ["2"]
    run.core.dtmf_sent(run.now)
    assert sent_digits(run.take()[0]) == []


# ---- what the call goes on through -------------------------------------------------------------


def test_a_failed_re_register_is_logged_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It neither ends nor changes the call, and leaves a line for whoever reads the log."""
    run = established()
    with caplog.at_level(logging.INFO, logger="sip2rtmp.relay.core"):
        run.sip(sip.RegistrationFailed(Rejected("REGISTER", 503, "Unavailable", "127.0.0.1")))
    assert [(record.levelno, record.getMessage()) for record in caplog.records] == [
        (logging.WARNING, "re-REGISTER failed (Rejected); the call goes on"),
    ]
    assert run.take() == ([], []) and run.core.phase is Phase.RELAYING
