"""The relay core following the session after the answer and before it: a callee that holds
and resumes (RFC 3264 §8.4), moves its media or changes codec by re-INVITE or UPDATE
(§8.3), and early media (a 180/183 with SDP) that starts the stream with `--early-media`.

The offers are the peer's own SDP and the sessions what the SIP core makes of them
(`answer_offer` against our offer), so each rule is checked on the streams a real
re-INVITE gives.
"""

from __future__ import annotations

from sip2rtmp.outcomes import MediaTimedOut, Rejected
from sip2rtmp.relay import actions
from sip2rtmp.relay.core import KEYFRAME_WAIT, WATCH_INTERVAL, Phase
from sip2rtmp.relay.events import (
    CallStatus,
    Codec,
    Established,
    Failed,
    Held,
    MediaChanged,
    Progress,
    Resumed,
    VideoMode,
)
from sip2rtmp.sip import events as sip
from sip2rtmp.sip.sdp import NegotiatedStream, answer_offer
from tests.unit.relay.test_core import (
    AUDIO_ANSWER,
    VIDEO_ANSWER,
    Run,
    finish,
    names,
    start,
)
from tests.unit.relay.test_core_rules import calling

PCMU, PCMA, H264 = Codec("PCMU", 8000), Codec("PCMA", 8000), Codec("H264", 90000)
CALLEE_AUDIO, CALLEE_VIDEO = "192.0.2.7:40000", "192.0.2.7:40002"
MOVED = "198.51.100.40"
SLATE = VideoMode("slate", reason="no keyframe from the callee")


def held(sdp: str, direction: str) -> str:
    return sdp.replace("a=sendrecv", f"a={direction}")


def pcma(sdp: str) -> str:
    """The peer's audio offered as PCMA only (RFC 3551 static payload type 8)."""
    return sdp.replace("RTP/AVP 0 101", "RTP/AVP 8 101").replace("0 PCMU/", "8 PCMA/")


def moved(sdp: str, host: str = MOVED, port: int = 40000) -> str:
    return sdp.replace("c=IN IP4 192.0.2.7", f"c=IN IP4 {host}").replace(
        "m=audio 40000", f"m=audio {port}"
    )


class Call:
    """A run whose call is up and relayed, and the peer's side of its dialog."""

    def __init__(self, run: Run, offer: str) -> None:
        self.run = run
        self.offer = offer
        """Our SDP offer: what the SIP core answers the peer's offers from."""

    def modify(self, peer_offer: str, *, early: bool = False) -> None:
        """The peer's re-INVITE (or UPDATE) with `peer_offer`, answered by RFC 3264."""
        answer = answer_offer(self.offer, peer_offer)
        self.run.sip(
            sip.SessionModified(
                peer_offer.encode(), answer.sdp.encode(), answer.session, early=early
            )
        )


def up(answer: str = VIDEO_ANSWER, **changes: object) -> Call:
    """A call answered with `answer`, relayed on the slate, its actions and events taken."""
    run = start(register=False, **changes)
    invite = calling(run, video_port=30002)
    run.sip(sip.CallAnswered(answer.encode()))
    run.core.legs_connected(run.now)
    run.advance(KEYFRAME_WAIT)
    run.core.outputs_started(run.now, SLATE)
    assert run.core.phase is Phase.RELAYING
    run.take()
    return Call(run, invite.sdp.decode())


def retargets(did: list[actions.Action]) -> list[actions.RetargetLegs]:
    return [action for action in did if isinstance(action, actions.RetargetLegs)]


def stream(item: NegotiatedStream | None) -> tuple[str, int, str, int]:
    assert item is not None
    return (*item.rtp_address, item.codec, item.payload_type)


# ---- hold and resume ---------------------------------------------------------------------------


def test_a_hold_is_shown_and_lets_the_audio_stop_until_the_resume_rearms_the_timer() -> None:
    """sendonly, then inactive: HOLD twice with what the callee offered, the legs untouched
    and no media timeout however long it lasts; the resume returns to ESTABLISHED and the
    media timeout counts from it (the audio stopped at the hold)."""
    call = up(media_timeout=5)
    run = call.run
    run.callee_audio = (run.now, run.now + 2.0)
    run.advance(2.0)
    run.take()
    call.modify(held(VIDEO_ANSWER, "sendonly"))
    assert run.take() == ([], [Held("sendonly")])
    run.advance(30.0)
    call.modify(held(VIDEO_ANSWER, "inactive"))
    run.advance(30.0)
    did, said = run.take()
    assert said == [Held("inactive")] and set(names(did)) == {"Observe", "CollectStats"}
    assert run.core.phase is Phase.RELAYING

    call.modify(VIDEO_ANSWER)
    assert run.take() == ([], [Resumed()])
    run.advance(4.9)
    assert "Hangup" not in names(run.take()[0])
    run.advance(0.2)
    assert finish(run, registered=False) == MediaTimedOut(5, stopped=True)


def test_a_repeated_hold_offer_is_one_hold_and_a_refresh_changes_nothing() -> None:
    """A session refresh repeats the SDP (RFC 4028): no event, no action, on hold or not."""
    call = up()
    call.modify(VIDEO_ANSWER)
    assert call.run.take() == ([], [])
    call.modify(held(VIDEO_ANSWER, "sendonly"))
    call.modify(held(VIDEO_ANSWER, "sendonly"))
    assert call.run.take() == ([], [Held("sendonly")])


def test_an_rfc_2543_hold_at_0_0_0_0_keeps_the_legs_where_they_point() -> None:
    """c=0.0.0.0 holds (RFC 3264 §8.4): shown as inactive, or as the sendonly it says; the
    legs are not re-pointed at an address that takes nothing, nor on the resume."""
    call = up()
    call.modify(moved(VIDEO_ANSWER, host="0.0.0.0"))
    assert call.run.take() == ([], [Held("inactive")])
    call.modify(held(moved(VIDEO_ANSWER, host="0.0.0.0"), "sendonly"))
    assert call.run.take() == ([], [Held("sendonly")])
    call.modify(VIDEO_ANSWER)
    assert call.run.take() == ([], [Resumed()])


def test_a_hold_that_also_moves_the_media_is_followed() -> None:
    """Music on hold from another host: HOLD and the legs re-pointed there."""
    call = up()
    call.modify(held(moved(VIDEO_ANSWER), "sendonly"))
    did, said = call.run.take()
    assert said == [MediaChanged(PCMU, H264, f"{MOVED}:40000", f"{MOVED}:40002"), Held("sendonly")]
    (retarget,) = retargets(did)
    assert stream(retarget.audio) == (MOVED, 40000, "PCMU", 0)


# ---- media that moves or changes codec -------------------------------------------------------


def test_media_moved_to_another_address_and_port_re_points_the_legs() -> None:
    call = up()
    call.modify(moved(VIDEO_ANSWER, port=41000))
    did, said = call.run.take()
    assert said == [MediaChanged(PCMU, H264, f"{MOVED}:41000", f"{MOVED}:40002")]
    (retarget,) = retargets(did)
    assert did == [retarget]
    assert stream(retarget.audio) == (MOVED, 41000, "PCMU", 0)
    assert retarget.audio is not None and retarget.audio.rtcp_address == (MOVED, 41001)
    assert stream(retarget.video) == (MOVED, 40002, "H264", 96)
    call.modify(moved(VIDEO_ANSWER, port=41000))
    assert call.run.take() == ([], []), "the same SDP again"


def test_a_codec_change_by_re_invite_re_points_the_audio_leg_with_the_new_codec() -> None:
    """PCMU to PCMA (RFC 3264 §8.3.2): the leg gets PCMA's payload type and telephone-event
    stays; nothing else changes."""
    call = up()
    call.modify(pcma(VIDEO_ANSWER))
    did, said = call.run.take()
    assert said == [MediaChanged(PCMA, H264, CALLEE_AUDIO, CALLEE_VIDEO)]
    (retarget,) = retargets(did)
    assert stream(retarget.audio) == ("192.0.2.7", 40000, "PCMA", 8)
    assert retarget.audio is not None and retarget.audio.telephone_event_pt == 101


def test_a_renumbered_payload_type_alone_re_points_the_leg() -> None:
    call = up()
    call.modify(VIDEO_ANSWER.replace("RTP/AVP 96", "RTP/AVP 97").replace(":96 ", ":97 "))
    did, said = call.run.take()
    assert said == [MediaChanged(PCMU, H264, CALLEE_AUDIO, CALLEE_VIDEO)]
    (retarget,) = retargets(did)
    assert stream(retarget.video) == ("192.0.2.7", 40002, "H264", 97)


def test_declined_video_stops_its_leg_and_another_codec_waits_for_its_keyframe() -> None:
    """m=video 0 stops the video leg (None); video back in VP8 re-points it, and the stream
    moves to the callee's picture at the new codec's first keyframe."""
    call = up()
    run = call.run
    run.core.keyframe_ready(run.now)
    assert run.take()[0] == [actions.AttachLiveVideo()]
    call.modify(VIDEO_ANSWER.replace("m=video 40002", "m=video 0"))
    did, said = run.take()
    assert said == [MediaChanged(PCMU, None, CALLEE_AUDIO, "")]
    assert retargets(did) == [actions.RetargetLegs(retargets(did)[0].audio, None)]

    vp8 = "m=video 40002 RTP/AVP 100\r\na=rtpmap:100 VP8/90000\r\na=sendrecv\r\n"
    call.modify(AUDIO_ANSWER + vp8)
    did, said = run.take()
    assert said == [MediaChanged(PCMU, Codec("VP8", 90000), CALLEE_AUDIO, CALLEE_VIDEO)]
    (retarget,) = retargets(did)
    assert stream(retarget.video) == ("192.0.2.7", 40002, "VP8", 100)
    run.core.keyframe_ready(run.now)
    assert run.take()[0] == [actions.AttachLiveVideo()]


def test_video_that_the_answer_left_out_joins_only_when_the_callee_sends_it() -> None:
    """A callee that answered recvonly video has no video leg; a re-INVITE that still only
    receives changes nothing, one that sends starts the leg."""
    recvonly = AUDIO_ANSWER + held(VIDEO_ANSWER[len(AUDIO_ANSWER) :], "recvonly")
    call = up(answer=recvonly)
    call.modify(recvonly)
    assert call.run.take() == ([], [])
    call.modify(VIDEO_ANSWER)
    did, said = call.run.take()
    assert said == [MediaChanged(PCMU, H264, CALLEE_AUDIO, CALLEE_VIDEO)]
    assert stream(retargets(did)[0].video) == ("192.0.2.7", 40002, "H264", 96)


def test_a_session_change_outside_an_up_call_is_not_followed() -> None:
    """Before the answer without `early`, and once the call ends, nothing moves."""
    run = start(register=False)
    invite = calling(run, video_port=30002)
    offer = invite.sdp.decode()
    answer = answer_offer(offer, moved(VIDEO_ANSWER))
    late = sip.SessionModified(b"", answer.sdp.encode(), answer.session)
    run.sip(late)
    assert run.take() == ([], [])
    run.sip(sip.CallAnswered(VIDEO_ANSWER.encode()))
    run.core.stop(run.now, "SIGINT")
    run.take()
    run.sip(late)
    assert run.take() == ([], [])


# ---- early media -------------------------------------------------------------------------------


def early(**changes: object) -> Call:
    """A call ringing with `--early-media`, its INVITE sent."""
    run = start(register=False, early_media=True, **changes)
    return Call(run, calling(run, video_port=30002).sdp.decode())


def test_early_media_starts_the_stream_and_the_answer_moves_the_legs_into_it() -> None:
    """A 183 with SDP connects the audio leg and starts the outputs on the slate (watched,
    no media timer); the 200 re-points the legs at the answer (no second ConnectLegs or
    StartOutputs) and the call's timers start from ESTABLISHED."""
    call = early(media_timeout=5)
    run = call.run
    run.sip(sip.CallProgress(183, "Session Progress", moved(AUDIO_ANSWER).encode()))
    did, said = run.take()
    assert said == [Progress(CallStatus.SESSION_PROGRESS, 183, "Session Progress")]
    connect, start_outputs = did
    assert isinstance(connect, actions.ConnectEarlyAudio)
    assert stream(connect.stream) == (MOVED, 40000, "PCMU", 0)
    assert start_outputs == actions.StartOutputs(live=False)
    run.sip(sip.CallProgress(183, "Session Progress", moved(AUDIO_ANSWER).encode()))
    assert names(run.take()[0]) == ["ConnectEarlyAudio"], "the outputs start once"

    run.core.outputs_started(run.now, SLATE)
    assert run.core.phase is Phase.RINGING
    run.advance(20.0)
    did, said = run.take()
    assert set(names(did)) == {"Observe"} and said == [SLATE]

    run.sip(sip.CallAnswered(VIDEO_ANSWER.encode()))
    did, said = run.take()
    assert said == [Established(200, "OK", PCMU, H264)]
    (retarget,) = did
    assert isinstance(retarget, actions.RetargetLegs)
    assert stream(retarget.audio) == ("192.0.2.7", 40000, "PCMU", 0)
    assert stream(retarget.video) == ("192.0.2.7", 40002, "H264", 96)
    assert run.core.phase is Phase.RELAYING
    run.core.keyframe_ready(run.now)
    assert run.take()[0] == [actions.AttachLiveVideo()]
    run.advance(4.9)
    assert "Hangup" not in names(run.take()[0])
    run.advance(0.2)
    assert finish(run, registered=False) == MediaTimedOut(5)


def test_an_answer_while_the_early_outputs_start_relays_once_they_run() -> None:
    call = early()
    run = call.run
    run.sip(sip.CallProgress(180, "Ringing", AUDIO_ANSWER.encode()))
    assert names(run.take()[0]) == ["ConnectEarlyAudio", "StartOutputs"]
    run.sip(sip.CallAnswered(pcma(AUDIO_ANSWER).encode()))
    did, _ = run.take()
    (retarget,) = did
    assert isinstance(retarget, actions.RetargetLegs)
    assert stream(retarget.audio) == ("192.0.2.7", 40000, "PCMA", 8)
    assert run.core.phase is Phase.CONNECTING
    run.core.outputs_started(run.now, None)
    assert run.core.phase is Phase.RELAYING
    run.advance(WATCH_INTERVAL)
    assert "Observe" in names(run.take()[0])


def test_an_update_in_the_early_dialog_re_points_the_early_leg() -> None:
    """RFC 3311: the peer moves its early media before answering."""
    call = early()
    run = call.run
    run.sip(sip.CallProgress(183, "Session Progress", AUDIO_ANSWER.encode()))
    run.take()
    call.modify(moved(AUDIO_ANSWER), early=True)
    (connect,) = run.take()[0]
    assert isinstance(connect, actions.ConnectEarlyAudio)
    assert stream(connect.stream) == (MOVED, 40000, "PCMU", 0)


def test_a_call_that_fails_after_early_media_stops_the_stream_and_fails() -> None:
    call = early()
    run = call.run
    run.sip(sip.CallProgress(183, "Session Progress", AUDIO_ANSWER.encode()))
    run.core.outputs_started(run.now, None)
    run.take()
    busy = Rejected("INVITE", 486, "Busy Here", "127.0.0.1:5060")
    run.sip(sip.CallAttemptFailed(busy))
    assert run.peek()[0] == [actions.StopOutputs()]
    assert finish(run, registered=False) == busy
    assert run.take()[1][-1] == Failed(busy)


def test_without_early_media_a_183_only_points_the_audio_leg() -> None:
    run = start(register=False)
    calling(run, video_port=30002)
    run.sip(sip.CallProgress(183, "Session Progress", AUDIO_ANSWER.encode()))
    assert names(run.take()[0]) == ["ConnectEarlyAudio"]
    run.sip(sip.CallAnswered(AUDIO_ANSWER.encode()))
    assert names(run.take()[0]) == ["ConnectLegs"]
