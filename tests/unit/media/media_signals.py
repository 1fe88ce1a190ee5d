"""Test signals: sine tones encoded into RTP-sized payloads with PyAV's own encoders."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt

from sip2rtmp.media.audio import audio_context, rtp_audio_codec


def sine(freq: float, rate: int, seconds: float, amplitude: int = 12000) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype(np.int16)


def encode_payloads(codec_name: str, pcm: npt.NDArray[np.int16]) -> list[bytes]:
    """20 ms payloads of ``pcm`` (at the codec's sample rate) in ``codec_name``."""
    codec = rtp_audio_codec(codec_name)
    ctx = audio_context("libopus" if codec.name == "opus" else codec.ffmpeg_name, "w")
    ctx.sample_rate = codec.sample_rate
    ctx.layout = "mono"
    ctx.format = "s16"
    ctx.open()
    step = codec.sample_rate // 50
    packets = []
    for index in range(len(pcm) // step):
        frame = av.AudioFrame.from_ndarray(
            pcm[None, index * step : (index + 1) * step], format="s16", layout="mono"
        )
        frame.sample_rate = codec.sample_rate
        frame.pts = index * step
        frame.time_base = Fraction(1, codec.sample_rate)
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    return [bytes(packet) for packet in packets][: len(pcm) // step]


def dominant_frequency(samples: npt.NDArray[np.float32], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))
