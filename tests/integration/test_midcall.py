"""Calls that change mid-call: the callee holds and resumes, moves its media, changes codec,
and sends comfort noise between talk spurts.

The lab's baresip `tone` callee holds and resumes from its control port; a scripted peer
(tests/support/sip_peer.py) does the rest by re-INVITE (RFC 3264 §8) and keeps what it
received: our answers and the RTP we sent. Each claim is measured in nginx's recording of the
stream, the run's JSON events and the SIP messages of its debug log.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sip2rtmp.lab import RTMP_URL, Lab
from sip2rtmp.lab.recording import decode_audio, read_recording, tone_seconds
from sip2rtmp.media.pipeline import MediaConfig
from sip2rtmp.sip.sdp import MediaDescription, SessionDescription
from tests.integration.conftest import CallRun
from tests.integration.sip_log import Logged, sip_messages
from tests.integration.test_network_faults import DTS_TOLERANCE, RATE, CallResult, run_call
from tests.integration.test_video_switch import SLATE, SLATE_FRAME_S, event_time, pictures
from tests.support.sip_peer import (
    G711_PAYLOAD_TYPES,
    MediaUpdate,
    ReInvite,
    SipPeer,
    TalkSpurts,
)

pytestmark = pytest.mark.lab

CALL_S, HOLD_AT_S, HOLD_S = 18, 6.0, 6.0
"""The hold call: 18 s, held 6 s after the answer and resumed 6 s later. A shorter call than
a 30 s one held from 10 s to 20 s proves the same: every stretch lasts several seconds."""
TONE_HZ = 440
"""The lab's `tone` callee (sip2rtmp/lab/accounts.py)."""
SIGNALLED_WITHIN_S = 1.0
"""From a control-port command to the status it causes: baresip's re-INVITE on loopback."""
SWITCH_AT_S, SWITCH_CALL_S = 3.0, 7.0
"""The scripted peer's re-INVITE 3 s after the ACK, in a 7 s call."""
BEFORE_HZ, AFTER_HZ = 440.0, 660.0
"""The peer's tone before its re-INVITE and after it: the recording shows which is heard."""
SWITCH_WITHIN_S = 0.2
FINE_WINDOW = 0.02
"""Windows short enough to time a switch to 20 ms (50 Hz bins: 440 and 660 Hz apart)."""
WINDOW = 0.1
MOVED_HOST = "127.0.0.2"
"""Another loopback address: the media moves to a new address and port."""
SPURTS = TalkSpurts(talk=1.0, silence=4.0, cn_every=1.0, level=50)
"""Silences longer than the media timeout, comfort noise every second within them."""
CN_CALL_S, CN_MEDIA_TIMEOUT_S = 20, 3


@contextlib.contextmanager
def running(peer: SipPeer) -> Iterator[SipPeer]:
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


def call_peer(
    peer: SipPeer, lab: Lab, tmp_path: Path, seconds: float, *extra: str
) -> tuple[CallResult, Path]:
    """A `--no-register` call to the peer, published to the lab's nginx; the call and the
    one recording nginx made of it."""
    key = f"midcall-{uuid.uuid4().hex[:8]}"
    flags = ["--rtmp-url", RTMP_URL, "--rtmp-stream", key, *extra]
    with running(peer):
        result = run_call(peer.uri, tmp_path / "call.flv", seconds, extra=flags)
    recorded = lab.recordings(key)
    assert len(recorded) == 1, f"nginx recordings of {key}: {recorded}; {explain(result)}"
    return result, recorded[0]


def explain(result: CallResult) -> str:
    return f"exit {result.returncode}, events {result.events}\n{result.stderr[-2000:]}"


def assert_one_timeline(recording: Path) -> None:
    """AAC timestamps that rise by one frame at most: the stream never skipped or stepped
    back while the session changed."""
    audio_dts = read_recording(recording).audio_dts
    steps = np.diff(audio_dts)
    assert steps.size, "the recording holds no audio"
    assert steps.min() > 0, "audio DTS not increasing"
    worst = int(steps.argmax())
    assert steps[worst] <= 1024 / 48000 + DTS_TOLERANCE, (
        f"a {steps[worst] * 1000:.0f} ms gap in the audio timeline at {audio_dts[worst]:.2f} s"
    )


def runs(windows: npt.NDArray[np.bool_]) -> list[tuple[bool, int, int]]:
    """The windows cut into runs of equal value: (value, first index, length)."""
    found, start = [], 0
    for value, group in itertools.groupby(windows.tolist()):
        length = len(list(group))
        found.append((bool(value), start, length))
        start += length
    return found


def tone_purity(samples: npt.NDArray[np.float32], hz: float) -> float:
    """The share of the signal's energy within 20 Hz of `hz`: near 1 for a cleanly decoded
    tone, far lower when G.711 is decoded with the wrong law."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size))) ** 2
    frequencies = np.fft.rfftfreq(samples.size, 1 / RATE)
    return float(spectrum[np.abs(frequencies - hz) <= 20].sum() / spectrum.sum())


def sdp_of(message: Logged | str) -> SessionDescription:
    body = message if isinstance(message, str) else message.message.body.decode()
    return SessionDescription.parse(body)


def audio_section(sdp: SessionDescription) -> MediaDescription:
    sections = [m for m in sdp.media if m.kind == "audio"]
    assert sections, f"no audio section in\n{sdp.serialize()}"
    return sections[0]


def codecs(section: MediaDescription) -> list[str]:
    """The section's codecs as `name/rate`; telephone-event (RFC 4733) and comfort noise
    (RFC 3389), which go along with whatever codec is in use, left out."""
    maps = section.rtpmaps()
    named = [maps[pt] for pt in section.payload_types if pt in maps]
    auxiliary = ("telephone-event", "CN")
    return [f"{m.encoding}/{m.clock_rate}" for m in named if m.encoding not in auxiliary]


# Hold and resume: the lab's baresip -----------------------------------------------------


def test_a_callee_holding_the_call_gets_recvonly_and_the_stream_shows_the_slate(
    start_call: Any, lab: Lab
) -> None:
    """The `tone` callee declines video, holds (a re-INVITE with a=sendonly, RFC 3264 §8.4)
    and stops its tone, then resumes (a=sendrecv). Our answer to the hold is recvonly with
    only the codec in use and the declined video still at port 0; the status goes HOLD, then
    ESTABLISHED; the stream carries the slate throughout, the tone before and after the hold,
    no tone during it, on one timeline."""
    call = start_call("tone", "--max-duration", str(CALL_S), "-vv")
    call.wait_for_status("ESTABLISHED", 20)
    time.sleep(HOLD_AT_S)
    held = time.time()
    lab.callee_command("tone", "hold")
    time.sleep(HOLD_S)
    resumed = time.time()
    lab.callee_command("tone", "resume")
    run = call.wait(CALL_S + 20)
    assert run.returncode == 0, run.stderr[-3000:]

    statuses = run.statuses
    assert statuses[statuses.index("ESTABLISHED") :] == [
        "ESTABLISHED",
        "HOLD",
        "ESTABLISHED",
        "FINISH",
    ], statuses
    hold, back = [e for e in run.events if e.get("status") in ("HOLD", "ESTABLISHED")][1:]
    assert hold.get("direction") == "sendonly" and back.get("resumed") is True, (hold, back)
    assert 0 <= event_time(hold) - held <= SIGNALLED_WITHIN_S, "HOLD when the callee held"
    assert 0 <= event_time(back) - resumed <= SIGNALLED_WITHIN_S, "ESTABLISHED on resume"

    assert_hold_answered(run)
    [recording] = lab.recordings(run.stream_key)
    assert_one_timeline(recording)
    assert_tone_paused_for_the_hold(recording)
    assert_slate_throughout(recording)


def assert_hold_answered(run: CallRun) -> None:
    """RFC 3264 §8.4 and §6.1: a sendonly offer is answered recvonly; the answer keeps to the
    codec in use (plus telephone-event) and leaves a declined stream at port 0."""
    messages = sip_messages(run.log)
    first_ok = next(
        m for m in messages if m.direction == "received" and m.is_response(200, "INVITE")
    )
    in_use = codecs(audio_section(sdp_of(first_ok)))[:1]
    offers = [m for m in messages if m.direction == "received" and m.is_request("INVITE")]
    holds = [m for m in offers if audio_section(sdp_of(m)).direction() == "sendonly"]
    assert len(holds) == 1, f"{len(offers)} re-INVITEs from the callee, {len(holds)} holding"
    hold = holds[0]
    answers = [
        m
        for m in messages
        if m.direction == "sent"
        and m.is_response(200, "INVITE")
        and m.cseq == hold.cseq
        and m.message.call_id == hold.message.call_id
    ]
    assert answers, f"no 200 OK to the hold re-INVITE (CSeq {hold.cseq})"
    answer, offer = sdp_of(answers[0]), sdp_of(hold)
    assert [m.kind for m in answer.media] == [m.kind for m in offer.media], answer.serialize()
    audio = audio_section(answer)
    assert audio.direction(answer.direction()) == "recvonly", answer.serialize()
    assert codecs(audio) == in_use, f"the codec in use is {in_use}:\n{answer.serialize()}"
    declined = [
        (a.kind, a.port) for o, a in zip(offer.media, answer.media, strict=True) if o.port == 0
    ]
    assert declined and all(port == 0 for _, port in declined), answer.serialize()


def assert_tone_paused_for_the_hold(recording: Path) -> None:
    """The tone, then no tone for as long as the hold, then the tone again; nothing else."""
    heard = tone_seconds(decode_audio(recording, RATE), RATE, TONE_HZ, WINDOW)
    long_runs = [(value, length * WINDOW) for value, _, length in runs(heard) if length > 3]
    assert [value for value, _ in long_runs] == [True, False, True], long_runs
    (_, before), (_, paused), (_, after) = long_runs
    assert paused == pytest.approx(HOLD_S, abs=1.0), f"{paused:.1f} s without the tone"
    assert before >= HOLD_AT_S - 1.5, f"{before:.1f} s of the tone before the hold"
    assert after >= CALL_S - HOLD_AT_S - HOLD_S - 1.5, f"{after:.1f} s of the tone after it"


def assert_slate_throughout(recording: Path) -> None:
    """The callee sends no video: every picture is the slate, with no hole in the video."""
    shown = pictures(recording)
    assert shown, "no video in the recording"
    assert {size for _, size in shown} == {SLATE}, "only the slate"
    steps = np.diff(read_recording(recording).video_dts)
    assert steps.max() <= SLATE_FRAME_S + MediaConfig().tick_s + 0.02, steps.max()


# Media moved and codec changed by the scripted peer's re-INVITE -------------------------


SWITCHES = {
    "new-address-and-port": MediaUpdate(at=SWITCH_AT_S, host=MOVED_HOST, tone_hz=AFTER_HZ),
    "pcmu-to-pcma": MediaUpdate(at=SWITCH_AT_S, codec="PCMA", tone_hz=AFTER_HZ),
}


@pytest.mark.parametrize("update", SWITCHES.values(), ids=SWITCHES.keys())
def test_the_stream_follows_a_re_invite_within_200_ms(
    update: MediaUpdate, lab: Lab, tmp_path: Path
) -> None:
    """The peer re-INVITEs with a new address and port (another box takes the media over,
    new SSRC) or with PCMA instead of PCMU, and sends the new way from that moment, a new
    tone. We answer 200 with the new codec, report `media_changed`, send to the new place in
    the new codec, and the new tone follows the old one in the recording within 200 ms."""
    peer = SipPeer(tone_hz=BEFORE_HZ, updates=[update])
    where = peer.moved_address(0) if update.host else peer.rtp_address
    result, recording = call_peer(peer, lab, tmp_path, SWITCH_CALL_S)
    assert result.returncode == 0, explain(result)
    assert len(peer.seen.reinvites) == 1, explain(result)
    reinvite = peer.seen.reinvites[0]
    assert_answered(reinvite, update.codec)

    changed = [e for e in result.events if e.get("event") == "media_changed"]
    assert [e.get("audio") for e in changed] == [
        {"codec": update.codec, "rate": 8000, "remote": f"{where[0]}:{where[1]}"}
    ], explain(result)
    assert_sent_to(peer, reinvite, where[1], G711_PAYLOAD_TYPES[update.codec])

    assert_one_timeline(recording)
    samples = decode_audio(recording, RATE)
    before, gap, after = switch_windows(samples)
    assert gap * FINE_WINDOW <= SWITCH_WITHIN_S, (
        f"{gap * FINE_WINDOW * 1000:.0f} ms between the last {BEFORE_HZ:g} Hz and the first "
        f"{AFTER_HZ:g} Hz; {explain(result)}"
    )
    assert before * FINE_WINDOW >= SWITCH_AT_S - 1.0, f"{before * FINE_WINDOW:.2f} s before"
    assert after * FINE_WINDOW >= SWITCH_CALL_S - SWITCH_AT_S - 1.0, f"{after * FINE_WINDOW} s"
    tail = samples[-int((SWITCH_CALL_S - SWITCH_AT_S - 1.0) * RATE) :]
    assert tone_purity(tail, AFTER_HZ) >= 0.9, "the new tone decodes cleanly"


def assert_answered(reinvite: ReInvite, codec: str) -> None:
    """200 to the re-INVITE, in the offered codec, sendrecv, every m= line answered."""
    assert reinvite.status == 200, f"{reinvite.status} to the re-INVITE\n{reinvite.offer}"
    answer, offer = sdp_of(reinvite.answer), sdp_of(reinvite.offer)
    assert len(answer.media) == len(offer.media), answer.serialize()
    audio = audio_section(answer)
    assert codecs(audio) == [f"{codec}/8000"], answer.serialize()
    assert audio.direction(answer.direction()) == "sendrecv", answer.serialize()


def assert_sent_to(peer: SipPeer, reinvite: ReInvite, port: int, payload_type: int) -> None:
    """Our RTP after the answer (and a packet time) reaches `port` in `payload_type` only."""
    assert reinvite.answered_at is not None
    settled = reinvite.answered_at + 0.1
    after = [packet for packet in peer.seen.rtp if packet.at >= settled]
    assert len(after) >= (SWITCH_CALL_S - SWITCH_AT_S - 1.0) / 0.02, f"{len(after)} packets"
    assert {(p.port, p.payload_type) for p in after} == {(port, payload_type)}, {
        (p.port, p.payload_type) for p in after
    }


def switch_windows(samples: npt.NDArray[np.float32]) -> tuple[int, int, int]:
    """Counted in FINE_WINDOWs: how long the tone before the switch was heard, the windows
    between its last one and the new tone's first, and how long the new tone was heard."""
    old = tone_seconds(samples, RATE, BEFORE_HZ, FINE_WINDOW)
    new = tone_seconds(samples, RATE, AFTER_HZ, FINE_WINDOW)
    assert new.any(), f"no {AFTER_HZ:g} Hz in the recording: the new media was not heard"
    first_new = int(new.argmax())
    assert old[:first_new].any(), f"no {BEFORE_HZ:g} Hz before the {AFTER_HZ:g} Hz"
    last_old = first_new - 1 - int(old[:first_new][::-1].argmax())
    assert old[first_new:].sum() <= 1, "the old tone after the switch"
    return int(old.sum()), first_new - last_old - 1, int(new.sum())


# Comfort noise (RFC 3389) ---------------------------------------------------------------


def test_comfort_noise_between_talk_spurts_keeps_the_call_up(lab: Lab, tmp_path: Path) -> None:
    """1 s of tone, then 4 s of comfort noise packets (one a second), for 20 s, with
    --media-timeout 3: the silences outlast the timeout, so only CN counted as media keeps
    the call up until --max-duration. The recording has the talk spurts where they were sent,
    and low-level noise, no tone, between them."""
    peer = SipPeer(tone_hz=BEFORE_HZ, talk_spurts=SPURTS)
    result, recording = call_peer(
        peer, lab, tmp_path, CN_CALL_S, "--media-timeout", str(CN_MEDIA_TIMEOUT_S)
    )
    cn_offered = "a=rtpmap:13 CN/8000" in peer.seen.offer
    assert cn_offered, f"the offer lists no CN/8000 (RFC 3389 §5):\n{peer.seen.offer}"
    assert result.returncode == 0, explain(result)
    finish = [event for event in result.events if event.get("event") == "status"][-1]
    assert finish.get("reason") == "max duration reached", explain(result)
    assert peer.seen.comfort_noise_sent >= 3 * 4, peer.seen.comfort_noise_sent

    assert_one_timeline(recording)
    samples = decode_audio(recording, RATE)
    spurts = [
        (start * WINDOW, length * WINDOW)
        for value, start, length in runs(tone_seconds(samples, RATE, BEFORE_HZ, WINDOW))
        if value and length > 2
    ]
    period = SPURTS.talk + SPURTS.silence
    assert len(spurts) >= CN_CALL_S // period - 1, spurts
    assert all(SPURTS.talk - 0.3 <= length <= SPURTS.talk + 0.3 for _, length in spurts), spurts
    starts = np.diff([start for start, _ in spurts])
    assert np.allclose(starts, period, atol=0.3), spurts
    assert_comfort_noise_level(samples, spurts)


def assert_comfort_noise_level(
    samples: npt.NDArray[np.float32], spurts: Sequence[tuple[float, float]]
) -> None:
    """Between the spurts: noise at the CN packets' level (-50 dBov, within 6 dB: a full-scale
    sine or square as 0 dBov), neither digital silence nor anything loud."""
    levels = []
    for (start, length), (following, _) in itertools.pairwise(spurts):
        quiet = samples[int((start + length + 0.5) * RATE) : int((following - 0.5) * RATE)]
        levels.append(20 * np.log10(np.sqrt(np.mean(quiet.astype(np.float64) ** 2)) + 1e-12))
    assert levels, "no silence between two spurts"
    assert all(abs(level + SPURTS.level) <= 6 for level in levels), levels
