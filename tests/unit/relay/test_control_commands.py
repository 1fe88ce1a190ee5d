"""A front end's commands in the relay: the core's choice of DTMF method and when it refuses,
`carry_out` taking each command, and a file injected into the audio leg toward the callee
(real sockets on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import pytest

from sip2rtmp.outcomes import Interrupted
from sip2rtmp.relay import actions
from sip2rtmp.relay.audio import AudioLeg
from sip2rtmp.relay.control import Command, carry_out
from sip2rtmp.relay.core import ENDED, NO_TELEPHONE_EVENT, NOT_UP, Phase
from sip2rtmp.relay.events import DtmfMethod, Failed
from sip2rtmp.sip import events as sip
from tests.unit.media.media_signals import sine
from tests.unit.relay.test_audio_leg import Callee, answered, until
from tests.unit.relay.test_core import (
    AUDIO_ANSWER,
    Run,
    established,
    finish,
    open_media,
    start,
)
from tests.unit.relay.test_core_rules import calling

NO_EVENTS_ANSWER = AUDIO_ANSWER.replace(" 0 101\r\n", " 0\r\n").replace(
    "a=rtpmap:101 telephone-event/8000\r\n", ""
)
"""The callee's answer without telephone-event: RFC 4733 DTMF is not negotiated."""
PCMU_SILENCE = b"\xff" * 160


def write_tone(path: Path, seconds: float, hz: float = 1000.0) -> None:
    """A mono 8 kHz WAV of a sine at `hz`."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(sine(hz, 8000, seconds).tobytes())


def sent(run: Run) -> list[actions.SendDtmf]:
    return [action for action in run.take()[0] if isinstance(action, actions.SendDtmf)]


# ---- the core's choice ---------------------------------------------------------------------


@pytest.mark.parametrize("method", [None, "rfc4733", "info"])
def test_the_method_asked_for_goes_with_the_digits(method: DtmfMethod | None) -> None:
    run = established()
    assert run.core.request_dtmf("12#", run.now, method) is None
    assert sent(run) == [actions.SendDtmf("12#", method)]


def test_rfc4733_is_refused_when_the_answer_has_no_telephone_event() -> None:
    """RFC 4733 events go only to a callee whose answer lists telephone-event; INFO and the
    default (which falls back to INFO) are still taken."""
    run = established(answer=NO_EVENTS_ANSWER)
    assert run.core.request_dtmf("1", run.now, "rfc4733") == NO_TELEPHONE_EVENT
    assert sent(run) == []
    assert run.core.request_dtmf("2", run.now, "info") is None
    assert sent(run) == [actions.SendDtmf("2", "info")]
    run.core.dtmf_sent(run.now)
    assert run.core.request_dtmf("3", run.now) is None
    assert sent(run) == [actions.SendDtmf("3", None)]


def test_digits_before_the_answer_and_after_the_end_are_refused_saying_which() -> None:
    run = start(register=False, video=False)
    assert run.core.request_dtmf("1", run.now) == NOT_UP
    calling(run)
    assert run.core.request_dtmf("1", run.now, "info") == NOT_UP
    run.sip(sip.CallAnswered(AUDIO_ANSWER.encode()))
    run.core.legs_connected(run.now)
    run.core.outputs_started(run.now, None)
    run.core.stop(run.now, "hangup requested")
    assert run.core.request_dtmf("1", run.now) == ENDED
    finish(run, registered=False)
    assert run.core.request_dtmf("1", run.now) == ENDED
    assert [a for a in run.actions if isinstance(a, actions.SendDtmf)] == []


def test_digits_taken_between_the_answer_and_the_outputs_are_sent_once_they_run() -> None:
    """ESTABLISHED is reported at the answer; the outputs start a moment later. A script
    that sends DTMF on ESTABLISHED must not lose it in between."""
    run = start(register=False, video=False)
    calling(run)
    run.sip(sip.CallAnswered(AUDIO_ANSWER.encode()))
    assert run.core.phase is Phase.CONNECTING
    assert run.core.request_dtmf("5", run.now, "info") is None
    assert sent(run) == []
    run.core.legs_connected(run.now)
    run.core.outputs_started(run.now, None)
    assert sent(run) == [actions.SendDtmf("5", "info")]


# ---- carry_out -----------------------------------------------------------------------------


class Answers:
    def __init__(self) -> None:
        self.given: list[str | None] = []

    def __call__(self, reason: str | None) -> None:
        self.given.append(reason)


def test_a_hangup_command_ends_an_answered_call_with_bye() -> None:
    run = established()
    answer = Answers()
    assert carry_out(run.core, Command("hangup"), answer, None, run.now) is None
    assert answer.given == [None]
    assert actions.Hangup() in run.peek()[0]
    assert finish(run) is None


def test_a_hangup_command_while_calling_interrupts_the_attempt() -> None:
    run = start(register=False, video=False)
    open_media(run, None)
    run.take()
    answer = Answers()
    carry_out(run.core, Command("hangup"), answer, None, run.now)
    assert answer.given == [None]
    assert actions.Cancel() in run.take()[0]
    run.advance(10)
    failed = [event for event in run.take()[1] if isinstance(event, Failed)]
    assert failed == [Failed(Interrupted("hangup requested"))]


def test_commands_for_the_media_are_refused_before_the_answer() -> None:
    run = start(register=False, video=False)
    answer = Answers()
    for command in (Command("dtmf", digits="1"), Command("inject", file="/tmp/a.wav")):
        assert carry_out(run.core, command, answer, None, run.now) is None
    assert answer.given == [NOT_UP, NOT_UP]


def test_a_dtmf_command_is_answered_with_the_cores_decision() -> None:
    run = established(answer=NO_EVENTS_ANSWER)
    answer = Answers()
    carry_out(run.core, Command("dtmf", "9", "rfc4733"), answer, None, run.now)
    carry_out(run.core, Command("dtmf", "9", "info"), answer, None, run.now)
    assert answer.given == [NO_TELEPHONE_EVENT, None]
    assert sent(run) == [actions.SendDtmf("9", "info")]


# ---- inject into the audio leg ------------------------------------------------------------------


def test_an_injected_file_replaces_silence_then_silence_returns(tmp_path: Path) -> None:
    """0.3 s of tone: 15 packets of 20 ms that are not PCMU silence, in a row, then silence."""
    tone = tmp_path / "tone.wav"
    write_tone(tone, 0.3)

    async def scenario() -> list[bytes]:
        callee = Callee()
        leg = await AudioLeg.open("127.0.0.1")
        try:
            assert await leg.inject(str(tone)) == "the audio leg sends nowhere yet"
            await leg.connect(answered(leg, callee, "PCMU"))
            await until(lambda: bool(callee.take()), "silence reaches the callee")
            assert await leg.inject(str(tone)) is None
            payloads: list[bytes] = []

            def tone_then_silence() -> bool:
                payloads.extend(packet.payload for packet in callee.take())
                return payloads.count(PCMU_SILENCE) > 5 and payloads[-1] == PCMU_SILENCE

            await until(tone_then_silence, "the tone then silence again")
            return payloads
        finally:
            await leg.close()
            callee.sock.close()

    payloads = asyncio.run(scenario())
    toned = [index for index, payload in enumerate(payloads) if payload != PCMU_SILENCE]
    assert len(toned) == 15, payloads
    assert toned == list(range(toned[0], toned[0] + 15)), "one piece, in order"
    assert all(payload == PCMU_SILENCE for payload in payloads[toned[-1] + 1 :])


def test_a_file_that_cannot_be_played_is_refused_with_the_reason(tmp_path: Path) -> None:
    not_audio = tmp_path / "notes.txt"
    not_audio.write_text("not audio at all\n")

    async def scenario() -> list[str | None]:
        callee = Callee()
        leg = await AudioLeg.open("127.0.0.1")
        try:
            await leg.connect(answered(leg, callee, "PCMU"))
            return [
                await leg.inject(str(tmp_path / "missing.wav")),
                await leg.inject(str(not_audio)),
                await leg.inject(str(tmp_path)),
            ]
        finally:
            await leg.close()
            callee.sock.close()

    missing, invalid, directory = asyncio.run(scenario())
    assert missing is not None and "No such file" in missing
    assert invalid is not None and "Invalid data" in invalid
    assert directory is not None and "Is a directory" in directory
