"""The media pipeline's audio across a codec change mid-call (a re-INVITE from PCMU to PCMA,
RFC 3264 §8.3.2, or an answer whose codec differs from the early media's): the payloads
after ``switch_audio`` are decoded with the new codec and placed on the same timeline, so
the AAC track's input carries the tone on without a gap.

Measured on the real MediaPipeline with a fake clock, its media thread's turns taken one at
a time: what the encoder is given, sample by sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sip2rtmp.media import audio
from sip2rtmp.media.packets import AUDIO_RATE
from sip2rtmp.media.pipeline import MediaPipeline
from tests.unit.media.media_signals import dominant_frequency, encode_payloads, sine
from tests.unit.media.test_audio_timeline import NoVideo

TONE = 440.0
FIRST_DUE = 0.2
STEP = 0.02
SWITCH_AT = 50
"""Payloads before the switch: one second of PCMU."""
PAYLOADS = 100
PCMU_TS, PCMA_TS = 0x1234_0000, 0xF000_0000
"""Each codec's stream starts its own RTP clock, as a new sender does (RFC 3550 §5.1)."""
WINDOW = AUDIO_RATE // 100


class Fed:
    """The pipeline on a fake clock, and every sample its AAC encoder was handed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 0.0
        self.read: list[npt.NDArray[np.float32]] = []
        original = audio.AudioTimeline.read
        read = self.read

        def recording(timeline: audio.AudioTimeline, count: int) -> Any:
            samples = original(timeline, count)
            read.append(samples[0].copy())
            return samples

        monkeypatch.setattr(audio.AudioTimeline, "read", recording)
        self.pipeline = MediaPipeline(
            ["unused.flv"], codec="PCMU", video=NoVideo(), clock=lambda: self.now
        )
        self.pipeline.outputs = []

    def turn(self, at: float) -> None:
        """One wake-up of the media thread at ``at``."""
        self.now = at
        pipeline = self.pipeline
        pipeline._ingest_all()
        pipeline._emit(at - pipeline.origin - pipeline.config.latency_s)

    def samples(self) -> npt.NDArray[np.float32]:
        return np.concatenate(self.read)


def test_a_codec_switch_decodes_the_new_codec_on_the_same_timeline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One second of a tone in PCMU, ``switch_audio("PCMA")``, one more second of the tone
    in PCMA on a new RTP clock, each payload handed over at its due time: every 10 ms of
    the two seconds carries the tone (no hole at the switch), and the PCMA second is the
    tone (decoded as PCMA, not as PCMU). The new codec's first payload anchors the audio
    as the call's first did, so the switch counts as no timeline resync."""
    tone = sine(TONE, 8000, PAYLOADS * STEP)
    payloads = {codec: encode_payloads(codec, tone) for codec in ("PCMU", "PCMA")}
    fed = Fed(monkeypatch)
    for index in range(PAYLOADS):
        due = FIRST_DUE + index * STEP
        if index == SWITCH_AT:
            fed.pipeline.switch_audio("PCMA")
        codec, base = ("PCMU", PCMU_TS) if index < SWITCH_AT else ("PCMA", PCMA_TS)
        rtp_ts = (base + index * 160) & 0xFFFF_FFFF
        fed.now = due
        fed.pipeline.push_audio(payloads[codec][index], rtp_ts, due)
        fed.turn(due)
    fed.turn(FIRST_DUE + PAYLOADS * STEP + 1.0)

    pcm = fed.samples()
    start, switch, end = (
        round((FIRST_DUE + n * STEP) * AUDIO_RATE) for n in (0, SWITCH_AT, PAYLOADS)
    )
    span = pcm[start:end]
    levels = np.sqrt(np.mean(span[: span.size // WINDOW * WINDOW].reshape(-1, WINDOW) ** 2, 1))
    quiet = [round(FIRST_DUE + i * WINDOW / AUDIO_RATE, 2) for i in np.flatnonzero(levels < 0.1)]
    assert quiet == [], "the tone has a hole"
    assert abs(dominant_frequency(pcm[switch + WINDOW : end], AUDIO_RATE) - TONE) < 5
    assert abs(dominant_frequency(pcm[start:switch], AUDIO_RATE) - TONE) < 5
    assert distortion(pcm[switch + WINDOW : end - WINDOW]) < 0.05, "PCMA decoded as PCMA"
    assert distortion(pcm[start + WINDOW : switch - WINDOW]) < 0.05
    assert fed.pipeline.stats().resyncs == 0, "anchored anew, not re-anchored as a jump"
    assert float(np.sqrt(np.mean(pcm[end + WINDOW :] ** 2))) < 0.01, "silence after the tone"


def distortion(samples: npt.NDArray[np.float32]) -> float:
    """What is left of ``samples`` once the best-fitting TONE is taken out, relative to it:
    G.711 quantization leaves about 1 %, a payload decoded with the other law far more."""
    t = np.arange(samples.size) / AUDIO_RATE
    basis = np.stack([np.sin(2 * np.pi * TONE * t), np.cos(2 * np.pi * TONE * t)], axis=1)
    fit, *_ = np.linalg.lstsq(basis, samples, rcond=None)
    residual = samples - basis @ fit
    return float(np.sqrt(np.mean(residual**2)) / np.sqrt(np.mean((basis @ fit) ** 2)))
