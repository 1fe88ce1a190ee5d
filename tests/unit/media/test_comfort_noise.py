"""Comfort noise (RFC 3389) from payload to the AAC encoder's input: the level byte, the noise
it makes, the decoder's noise between talk spurts, and the real MediaPipeline on a fake clock
(what its timeline hands the encoder is recorded)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sip2rtmp.media import audio
from sip2rtmp.media.audio import NOISE_AHEAD_S, AudioDecoder
from sip2rtmp.media.comfort_noise import QUIETEST_DBOV, ComfortNoise, mark_comfort_noise, noise
from sip2rtmp.media.packets import AUDIO_RATE
from sip2rtmp.media.pipeline import LOST, MediaPipeline
from sip2rtmp.rtp.packet import RtpPacket
from tests.unit.media.media_signals import dominant_frequency, encode_payloads, sine
from tests.unit.media.test_audio_timeline import NoVideo

Pcm = npt.NDArray[np.float32]
SLOT = AUDIO_RATE // 50
"""A 20 ms slot on the 48 kHz timeline (160 ticks of the 8 kHz RTP clock)."""


def dbfs(samples: Pcm) -> float:
    """RMS level relative to full scale, the scale of dBov for float PCM."""
    flat = samples.reshape(-1).astype(np.float64)
    return 10 * float(np.log10(np.mean(flat * flat)))


@pytest.fixture(scope="module")
def speech() -> list[bytes]:
    """One second of a 1 kHz tone in 20 ms PCMU payloads."""
    return encode_payloads("PCMU", sine(1000, 8000, 1.0))


@pytest.mark.parametrize(
    ("payload", "level"),
    [
        (b"\x28", 40),
        (b"\xa8", 40),  # the unused top bit set: still 40 (RFC 3389 §3.1)
        (b"\x3c\x80\x11\x7f", 60),  # spectral bytes after the level (§3.2) do not change it
        (b"\x00", 0),
        (b"\x7f", 127),
        (b"", QUIETEST_DBOV),
    ],
)
def test_the_level_is_the_first_bytes_low_seven_bits(payload: bytes, level: int) -> None:
    assert ComfortNoise(payload).level_dbov == level


@pytest.mark.parametrize("level", [20, 40, 70, QUIETEST_DBOV])
def test_noise_is_at_its_level_below_overload(level: int) -> None:
    """0 dBov is full scale (RFC 3389 §3.1): noise at -L dBov measures -L dBFS."""
    samples = noise(level, 2, AUDIO_RATE, np.random.default_rng(1))
    assert samples.shape == (2, AUDIO_RATE) and samples.dtype == np.float32
    assert dbfs(samples) == pytest.approx(-level, abs=0.2)


def test_full_scale_noise_is_clipped() -> None:
    """Gaussian noise at full-scale RMS peaks far beyond full scale: clipped, so a little
    below 0 dBFS, and never over."""
    samples = noise(0, 1, AUDIO_RATE, np.random.default_rng(2))
    assert np.abs(samples).max() == 1.0
    assert -4 < dbfs(samples) < -1


def test_only_a_negotiated_type_is_marked() -> None:
    cn = mark_comfort_noise(RtpPacket(13, 1, 160, 7, b"\x30"), frozenset({13, 98}))
    speech = mark_comfort_noise(RtpPacket(0, 2, 320, 7, b"\xff" * 160), frozenset({13, 98}))
    assert isinstance(cn.payload, ComfortNoise) and cn.payload == b"\x30"
    assert type(speech.payload) is bytes


def test_noise_from_its_packet_until_speech_then_silence_over_what_speech_leaves(
    speech: list[bytes],
) -> None:
    """Speech, a CN packet at -50 dBov, a 200 ms hole (the sender's DTX: no packets), a lost
    slot, then one speech packet: noise at once for NOISE_AHEAD_S, noise over the hole and
    the lost slot, the tone again, and silence over the rest of the noise played ahead."""
    decoder = AudioDecoder("PCMU")
    for index in range(10):
        decoder.decode(speech[index], index * 160)
    (ahead,) = decoder.decode(ComfortNoise(b"\x32"), 1600)
    assert ahead.pts == 10 * SLOT
    assert ahead.samples.shape == (1, int(NOISE_AHEAD_S * AUDIO_RATE))
    assert dbfs(ahead.samples) == pytest.approx(-50, abs=0.5)

    (lost,) = decoder.conceal(1760)
    assert (lost.pts, lost.samples.shape[1]) == (11 * SLOT, SLOT)
    assert dbfs(lost.samples) == pytest.approx(-50, abs=1.5)
    resumed = decoder.decode(speech[10], 1600 + 1760)
    hole, *tone, tail = resumed
    assert (hole.pts, hole.pts + hole.samples.shape[1]) == (12 * SLOT, 21 * SLOT)
    assert dbfs(hole.samples) == pytest.approx(-50, abs=0.5)
    assert dbfs(np.concatenate([c.samples for c in tone], axis=1)) > -15
    assert tail.pts == 22 * SLOT and not tail.samples.any()
    assert tail.pts + tail.samples.shape[1] == 10 * SLOT + ahead.samples.shape[1]
    assert (decoder.comfort_noise, decoder.concealed) == (1, 0), "noise is not a loss"


def test_a_cn_packet_without_a_level_plays_the_quietest_noise() -> None:
    decoder = AudioDecoder("PCMA")
    (chunk,) = decoder.decode(ComfortNoise(b""), 0)
    assert chunk.samples.any()
    assert dbfs(chunk.samples) == pytest.approx(-QUIETEST_DBOV, abs=0.5)


def test_a_late_cn_packet_is_discarded_like_late_speech(speech: list[bytes]) -> None:
    decoder = AudioDecoder("PCMU")
    decoder.decode(speech[0], 0)
    decoder.decode(speech[1], 160)
    assert decoder.decode(ComfortNoise(b"\x28"), 0) == []
    assert (decoder.discarded, decoder.comfort_noise) == (1, 0)


class Encoded:
    """What the pipeline's timeline hands the AAC encoder, recorded by position."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pcm = np.zeros(0, dtype=np.float32)
        original = audio.AudioTimeline.read

        def recording(timeline: audio.AudioTimeline, count: int) -> Any:
            samples = original(timeline, count)
            self.pcm = np.concatenate([self.pcm, samples[0]])
            return samples

        monkeypatch.setattr(audio.AudioTimeline, "read", recording)

    def at(self, start: float, end: float) -> Pcm:
        return self.pcm[int(start * AUDIO_RATE) : int(end * AUDIO_RATE)]


def test_the_pipeline_streams_noise_between_talk_spurts(
    speech: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The callee talks 0.2 s, sends CN at -45 dBov every 200 ms for 1 s (nothing between),
    then talks 0.2 s; the media thread wakes every 20 ms. The audio encoded has the tone, the
    noise at its level in every 20 ms of the pause, and the tone again; every CN payload
    counts as received audio."""
    encoded = Encoded(monkeypatch)
    now = 0.0
    pipeline = MediaPipeline(["unused.flv"], codec="PCMU", video=NoVideo(), clock=lambda: now)
    pipeline.outputs = []
    first = 0.1  # media time of the first payload
    talk = [(index * 160, speech[index]) for index in range(10)]
    pause = [(1600 + k * 1600, ComfortNoise(b"\x2d")) for k in range(5)]
    again = [(9600 + index * 160, speech[10 + index]) for index in range(10)]
    handed = sorted(talk + pause + again)
    for tick in range(200):
        now = tick * 0.02
        while handed and first + handed[0][0] / 8000 <= now + 1e-9:
            ts, payload = handed.pop(0)
            pipeline.push_audio(payload, ts, first + ts / 8000)
        pipeline._ingest_all()
        pipeline._emit(now - pipeline.config.latency_s)

    start = first  # where the timeline put payload 0
    assert abs(dominant_frequency(encoded.at(start + 0.02, start + 0.18), AUDIO_RATE) - 1000) < 10
    quiet = encoded.at(start + 0.22, start + 1.18)
    windows = quiet[: quiet.size // SLOT * SLOT].reshape(-1, SLOT)
    levels = [dbfs(window) for window in windows]
    assert all(-47 < level < -43 for level in levels), f"noise in every 20 ms: {levels}"
    assert abs(dominant_frequency(encoded.at(start + 1.22, start + 1.38), AUDIO_RATE) - 1000) < 10
    assert not encoded.at(start + 1.42, start + 1.9).any(), "silence once the callee stops"
    stats = pipeline.stats()
    assert (stats.audio_payloads, stats.audio_concealed) == (25, 0)


def test_a_lost_slot_in_the_pause_is_noise_in_the_pipeline(
    speech: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The jitter buffer's LOST during comfort noise stays noise on the stream."""
    encoded = Encoded(monkeypatch)
    now = 0.0
    pipeline = MediaPipeline(["unused.flv"], codec="PCMU", video=NoVideo(), clock=lambda: now)
    pipeline.outputs = []
    pipeline.push_audio(speech[0], 0, 0.0)
    pipeline.push_audio(ComfortNoise(b"\x28"), 160, 0.02)
    pipeline.push_audio(LOST, 320, 0.04)
    now = 1.0
    pipeline._ingest_all()
    pipeline._emit(now)
    assert dbfs(encoded.at(0.045, 0.055)) == pytest.approx(-40, abs=1.5)
    assert pipeline.stats().audio_lost == 1
