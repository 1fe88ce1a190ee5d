"""performance.md and events.md: where the media pipeline places the callee's audio.

The audio timeline is anchored on the jitter buffer's schedule (each payload's due time), not on
when the media thread got it; a burst handed over late after a stall does not move it; a schedule
that grows later is followed in steps of just over 10 ms; a lasting lateness or a timestamp jump
re-anchors it. `rtp.timeline_resyncs` is the pipeline's `resyncs` (relay/runner.py) and counts
each follow and each re-anchor. Measured on the real MediaPipeline with a fake clock: every
sample range written to its AudioTimeline is recorded, as is the count.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from sip2rtmp.media import audio
from sip2rtmp.media.packets import AUDIO_RATE, EncodedPacket
from sip2rtmp.media.pipeline import (
    ARRIVAL_LEAD_S,
    FOLLOW_STEP_S,
    LATE_RUN_RESYNC,
    MediaConfig,
    MediaPipeline,
)
from tests.unit.media.media_signals import encode_payloads, sine

SLOT = AUDIO_RATE // 50
"""One 20 ms Opus payload: 960 samples on the 48 kHz RTP clock and on the timeline."""
FIRST_TS = 0xFFFF_F000
"""Near the 32-bit wrap, so the timestamps wrap within the first payloads."""
FIRST_DUE = 0.2
STEP = 0.02


def samples(seconds: float) -> int:
    return round(seconds * AUDIO_RATE)


@pytest.fixture(scope="module")
def payloads() -> list[bytes]:
    return encode_payloads("opus", sine(440, AUDIO_RATE, 3.0))


class NoVideo:
    """An audio-only source: a template with empty extradata and never a packet."""

    template: Any = SimpleNamespace(codec_context=SimpleNamespace(extradata=b""))

    def packets_until(self, seconds: float) -> list[EncodedPacket]:
        return []


class Rig:
    """A pipeline on a fake clock whose media thread's turns the test takes one at a time.

    Media time 0 is clock 0 (the pipeline is not started, so no thread runs); a turn does what
    one wake-up of the media thread does: take what was handed over, then encode up to the
    outputs' horizon, which moves the playhead.
    """

    def __init__(
        self,
        payloads: list[bytes],
        monkeypatch: pytest.MonkeyPatch,
        config: MediaConfig | None = None,
        video: NoVideo | None = None,
    ) -> None:
        self.now = 0.0
        self.payloads = payloads
        self.writes: list[tuple[int, int, int]] = []
        """(position, samples, playhead) of every write to the timeline, in order."""
        original = audio.AudioTimeline.write
        writes = self.writes

        def recording(timeline: audio.AudioTimeline, position: int, chunk: Any) -> int:
            writes.append((position, int(chunk.shape[1]), timeline.playhead))
            return original(timeline, position, chunk)

        monkeypatch.setattr(audio.AudioTimeline, "write", recording)
        self.pipeline = MediaPipeline(
            ["unused.flv"],
            codec="opus",
            video=video or NoVideo(),
            config=config,
            clock=lambda: self.now,
        )
        self.pipeline.outputs = []

    def hand_over(self, index: int, due: float, *, ts_jump: int = 0) -> None:
        """Payload `index` (20 ms each) as the jitter buffer releases it, due at `due`."""
        rtp_ts = (FIRST_TS + index * SLOT + ts_jump) & 0xFFFF_FFFF
        self.pipeline.push_audio(self.payloads[index], rtp_ts, due)

    def turn(self, at: float) -> None:
        self.now = at
        pipeline = self.pipeline
        pipeline._ingest_all()
        pipeline._emit_due()

    def on_time(
        self, indexes: range, due: Callable[[int], float] | None = None, *, ts_jump: int = 0
    ) -> None:
        """Each payload handed over at its due time, a turn after each; `ts_jump` shifts the
        RTP timestamps from the schedule's."""
        for index in indexes:
            at = FIRST_DUE + index * STEP if due is None else due(index)
            self.now = at
            self.hand_over(index, at, ts_jump=ts_jump)
            self.turn(at)

    def offsets(self) -> list[int]:
        """Per payload, where it landed minus where payload 0's schedule puts it."""
        return [position - index * SLOT for index, (position, _, _) in enumerate(self.writes)]

    def late(self) -> list[int]:
        """The payloads written wholly behind the playhead: their slots went out as silence."""
        return [
            i
            for i, (position, size, playhead) in enumerate(self.writes)
            if position + size <= playhead
        ]

    @property
    def resyncs(self) -> int:
        return self.pipeline.stats().resyncs


def test_the_timeline_is_anchored_on_the_schedule_not_on_a_late_hand_over(
    payloads: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first 180 ms reach the media thread at once, 180 ms late (a stall of the loop at
    the start): they still land where the jitter buffer scheduled them."""
    rig = Rig(payloads, monkeypatch)
    rig.now = FIRST_DUE + 0.18
    for index in range(10):
        rig.hand_over(index, FIRST_DUE + index * STEP)
    rig.turn(rig.now)
    rig.on_time(range(10, 30))
    assert [size for _, size, _ in rig.writes] == [SLOT] * 30
    assert rig.late() == []
    assert rig.offsets() == [samples(FIRST_DUE)] * 30
    assert rig.resyncs == 0


def test_a_late_burst_is_late_once_and_does_not_move_the_timeline(
    payloads: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is handed over for STALL_S while the media thread keeps encoding (silence);
    then the held payloads come at once, one short of LATE_RUN_RESYNC of them wholly behind
    the playhead. They are late once; every payload stays where the schedule put it."""
    rig = Rig(payloads, monkeypatch)
    rig.on_time(range(20))
    stall_s = rig.pipeline.config.latency_s + 0.21  # the playhead moves by AAC frames
    resumed = FIRST_DUE + 20 * STEP + stall_s
    index = 20
    while (at := FIRST_DUE + index * STEP) < resumed:
        rig.turn(at)
        index += 1
    rig.now = resumed
    for held in range(20, index):
        rig.hand_over(held, FIRST_DUE + held * STEP)
    rig.turn(resumed)
    rig.on_time(range(index, 60))
    assert rig.late() == list(range(20, 20 + LATE_RUN_RESYNC - 1))
    assert set(rig.offsets()) == {samples(FIRST_DUE)}, "every payload where it was due"
    assert rig.resyncs == 0


def test_a_lasting_lateness_re_anchors_once(
    payloads: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counterpart: LATE_RUN_RESYNC payloads in a row behind the playhead mean the
    timeline really moved, and the audio is placed from the hand-over on."""
    rig = Rig(payloads, monkeypatch)
    rig.on_time(range(20))
    lag = 0.15 + STEP * (LATE_RUN_RESYNC + 2)
    for index in range(20, 60):
        due = FIRST_DUE + index * STEP
        rig.now = due + lag
        rig.hand_over(index, due)
        rig.turn(rig.now)
    offsets = rig.offsets()
    assert offsets[:20] == [samples(FIRST_DUE)] * 20
    late = rig.late()
    assert len(late) == LATE_RUN_RESYNC - 1 and late == list(range(late[0], late[-1] + 1))
    anchor = late[-1] + 1
    # The LATE_RUN_RESYNC-th late payload is the one placed anew, at its hand-over.
    assert offsets[:anchor] == [samples(FIRST_DUE)] * anchor
    assert rig.writes[anchor][0] == samples(FIRST_DUE + anchor * STEP + lag)
    assert set(offsets[anchor:]) == {offsets[anchor]}, "one re-anchor, then steady"
    assert rig.resyncs == 1


@pytest.mark.parametrize("drift_ms_per_packet", [1, 3])
def test_a_schedule_that_grows_later_is_followed_in_10_ms_steps(
    drift_ms_per_packet: int, payloads: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender falling behind its clock: each payload is due `drift` later than the last
    one's slot. The placement holds until the schedule is more than FOLLOW_STEP_S later, then
    jumps to it: each move is over 10 ms and less than 10 ms plus one payload's drift."""
    drift = drift_ms_per_packet / 1000
    rig = Rig(payloads, monkeypatch)
    rig.on_time(range(100), due=lambda i: FIRST_DUE + i * STEP + max(i - 20, 0) * drift)
    offsets = rig.offsets()
    moves = [b - a for a, b in itertools.pairwise(offsets) if b != a]
    assert moves
    assert all(samples(FOLLOW_STEP_S) < move <= samples(FOLLOW_STEP_S + drift) for move in moves)
    behind = [samples(FIRST_DUE + max(i - 20, 0) * drift) - o for i, o in enumerate(offsets)]
    assert all(0 <= lag <= samples(FOLLOW_STEP_S) for lag in behind), "never > 10 ms behind"
    assert rig.resyncs == len(moves)


def test_a_schedule_within_10_ms_or_earlier_does_not_move_the_timeline(
    payloads: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = Rig(payloads, monkeypatch)
    jitter = [0.0, FOLLOW_STEP_S, -0.03, 0.005, -0.01]
    rig.on_time(range(50), due=lambda i: FIRST_DUE + i * STEP + jitter[i % len(jitter)])
    assert set(rig.offsets()) == {samples(FIRST_DUE)}
    assert rig.resyncs == 0


def test_a_timestamp_jump_re_anchors_at_the_hand_over(
    payloads: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timestamps 5 s ahead of the schedule would place audio beyond `max_ahead_s`: the
    timeline re-anchors there once, and later payloads follow on from it."""
    rig = Rig(payloads, monkeypatch)
    rig.on_time(range(20))
    rig.on_time(range(20, 40), ts_jump=5 * AUDIO_RATE)
    positions = [position for position, _, _ in rig.writes]
    assert positions[20] == samples(FIRST_DUE + 20 * STEP), "placed at its hand-over"
    assert np.all(np.diff(positions[20:]) == SLOT)
    assert rig.resyncs == 1


def test_a_timestamp_jump_back_re_anchors_and_the_audio_goes_on(
    payloads: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender that restarts its clock (or a new source taking over) stamps its audio 5 s
    behind: that is a new timeline, not 5 s of late duplicates. The audio re-anchors within
    LATE_RUN_RESYNC payloads and everything after it is written, in order."""
    rig = Rig(payloads, monkeypatch)
    rig.on_time(range(20))
    rig.on_time(range(20, 40), ts_jump=-5 * AUDIO_RATE)
    positions = [position for position, _, _ in rig.writes]
    assert len(positions) >= 38, "the audio after the jump was written"
    assert rig.resyncs == 1
    assert np.all(np.diff(positions[30:]) == SLOT)
    assert positions[-1] >= samples(FIRST_DUE + 39 * STEP)


FRAME = audio.AacEncoder.frame_size


@pytest.mark.parametrize("on_arrival", [False, True])
def test_audio_encoded_on_arrival_leaves_without_the_headroom(
    on_arrival: bool, payloads: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each payload is handed over at its due time and the media thread wakes for it. With
    `audio_on_arrival` (`--latency low`) every whole AAC frame of what arrived is encoded at
    once; on the tick alone, only what lies `latency_s` in the past."""
    config = MediaConfig(audio_on_arrival=on_arrival)
    rig = Rig(payloads, monkeypatch, config)
    behind: list[int] = []
    for index in range(50):
        at = FIRST_DUE + index * STEP
        rig.now = at
        rig.hand_over(index, at)
        rig.turn(at)
        behind.append(samples(at + STEP) - rig.pipeline._timeline.playhead)
    latency = samples(config.latency_s)
    if on_arrival:
        assert all(0 <= lag < FRAME for lag in behind), "only the unfinished frame waits"
    else:
        assert all(lag >= latency + samples(STEP) for lag in behind)


@pytest.mark.parametrize("grace", [0.0, 0.04])
def test_a_hole_waits_the_silence_grace_while_the_audio_that_came_goes_at_the_horizon(
    grace: float, payloads: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `silence_grace_s` (the default mode, whose event loop hands audio over on an 80 ms
    grid) the audio that came still goes out `latency_s` behind real time, but a hole holds
    the audio back for up to the grace before it goes out as silence: audio handed over 80 ms
    after its slot is in time, not late. A hole that lasts is silence, only later."""
    config = MediaConfig(silence_grace_s=grace)
    rig = Rig(payloads, monkeypatch, config)
    rig.on_time(range(20))  # written up to FIRST_DUE + 20 * STEP = 0.6 s
    came = samples(FIRST_DUE + 20 * STEP)
    assert rig.pipeline._timeline.playhead > samples(rig.now - config.latency_s) - FRAME
    rig.turn(0.7)  # the horizon (0.62 s) is past what came
    playhead = rig.pipeline._timeline.playhead
    if grace:
        assert came - FRAME < playhead <= came, "audio held at what came"
    else:
        assert playhead > came, "the hole went out as silence"
    for index in range(20, 25):
        rig.hand_over(index, FIRST_DUE + index * STEP)  # 80-100 ms after their due times
    rig.turn(0.72)
    late = [
        (position, playhead) for position, _, playhead in rig.writes[20:] if position < playhead
    ]
    assert bool(late) is not grace, late
    rig.turn(1.2)  # the callee sent nothing more
    horizon = 1.2 - config.latency_s
    assert rig.pipeline._timeline.playhead > samples(horizon - grace) - FRAME


class AskedVideo(NoVideo):
    """Records how far the pipeline asks for video at each turn."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def packets_until(self, seconds: float) -> list[EncodedPacket]:
        self.asked.append(seconds)
        return []


@pytest.mark.parametrize("on_arrival", [False, True])
def test_the_video_goes_as_far_as_the_audio(
    on_arrival: bool, payloads: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A player that keeps sound and picture together waits for the later one: with audio
    encoded on arrival the video (the slate, the callee's as it arrived) is taken up to the
    audio's end, not `latency_s` behind real time; in both modes the first video is taken once
    the horizon reaches media time 0."""
    video = AskedVideo()
    config = MediaConfig(audio_on_arrival=on_arrival)
    rig = Rig(payloads, monkeypatch, config, video)
    rig.turn(config.latency_s / 2)
    assert video.asked == [pytest.approx(-config.latency_s / 2)], "not before media time 0"
    rig.on_time(range(30))
    horizon = rig.now - config.latency_s
    encoded = rig.pipeline._timeline.playhead / AUDIO_RATE
    assert video.asked[-1] == pytest.approx(encoded if on_arrival else horizon)
    assert (encoded > horizon) is on_arrival


def test_audio_ahead_of_its_time_waits_for_it(
    payloads: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second of audio handed over at once, each payload due 20 ms after the last (a sender
    running ahead): encoded on arrival only as far as ARRIVAL_LEAD_S ahead of real time."""
    rig = Rig(payloads, monkeypatch, MediaConfig(audio_on_arrival=True))
    rig.now = FIRST_DUE
    for index in range(50):
        rig.hand_over(index, FIRST_DUE + index * STEP)
    rig.turn(FIRST_DUE)
    assert rig.pipeline._timeline.written == samples(FIRST_DUE + 50 * STEP)
    lead = samples(FIRST_DUE + ARRIVAL_LEAD_S)
    assert lead - FRAME < rig.pipeline._timeline.playhead <= lead


@pytest.mark.parametrize("on_arrival", [False, True])
def test_the_media_thread_wakes_for_a_hand_over_only_when_encoding_on_arrival(
    on_arrival: bool, payloads: list[bytes]
) -> None:
    """The end of a hand-over cuts the media thread's sleep short with `audio_on_arrival`,
    never otherwise; stopping wakes it either way, and is not taken for audio."""
    pipeline = MediaPipeline(
        ["unused.flv"],
        codec="opus",
        video=NoVideo(),
        config=MediaConfig(audio_on_arrival=on_arrival),
    )
    pipeline.outputs = []
    start = time.monotonic()
    pipeline.push_audio(payloads[0], FIRST_TS, start)
    assert not pipeline._arrived.is_set(), "one wake-up for all of a hand-over, at its end"
    pipeline.audio_handed_over()
    assert pipeline._sleep_until(start + 0.2) is on_arrival
    assert (time.monotonic() - start < 0.1) is on_arrival
    pipeline._stopping.set()
    pipeline._arrived.set()
    assert pipeline._sleep_until(time.monotonic() + 30) is False
