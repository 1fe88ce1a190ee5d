"""The lab's nginx-rtmp, measured: a stream pushed in is played back live and recorded intact."""

from __future__ import annotations

import math
import secrets
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from fractions import Fraction

import av
import numpy as np
import pytest

from sip2rtmp.lab import RTMP_URL, RTMPS_URL, STAT_URL, Lab
from sip2rtmp.lab.recording import decode_audio, dominant_frequency

pytestmark = pytest.mark.lab

TONE_HZ = 1000.0
AUDIO_RATE = 48000
AUDIO_FRAME = 1024
FPS = 25
SECONDS = 4.0


def _publish(url: str, seconds: float) -> None:
    """Push an AAC tone and an H.264 test pattern to `url`, paced in real time."""
    with av.open(url, mode="w", format="flv") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        video.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "25"}
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        started = time.monotonic()
        audio_pts = 0
        for index in range(int(seconds * FPS)):
            luma = np.full((240 * 3 // 2, 320), 16, dtype=np.uint8)
            luma[:240, (index * 8) % 320 :] = 235
            frame = av.VideoFrame.from_ndarray(luma, format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            container.mux(video.encode(frame))
            while audio_pts < (index + 1) * AUDIO_RATE / FPS:
                t = (audio_pts + np.arange(AUDIO_FRAME)) / AUDIO_RATE
                tone = (0.3 * np.sin(2 * math.pi * TONE_HZ * t)).astype(np.float32)
                chunk = av.AudioFrame.from_ndarray(
                    tone.reshape(1, -1), format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = AUDIO_RATE, audio_pts
                chunk.time_base = Fraction(1, AUDIO_RATE)
                container.mux(audio.encode(chunk))
                audio_pts += AUDIO_FRAME
            time.sleep(max(0.0, started + (index + 1) / FPS - time.monotonic()))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))


def _published_streams() -> set[str]:
    """Stream keys nginx-rtmp reports as being published right now."""
    with urllib.request.urlopen(STAT_URL, timeout=2) as reply:
        root = ET.fromstring(reply.read())
    return {
        name.text or ""
        for stream in root.iter("stream")
        if stream.find("publishing") is not None and (name := stream.find("name")) is not None
    }


def _play_audio(url: str, seconds: float) -> np.ndarray:
    """Decode `seconds` of audio from a live RTMP stream as mono float at AUDIO_RATE."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    chunks: list[np.ndarray] = []
    with av.open(url, timeout=5) as container:
        for frame in container.decode(audio=0):
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            if sum(c.size for c in chunks) >= seconds * AUDIO_RATE:
                break
    return np.concatenate(chunks)


def _push_and_play(lab: Lab, publish_url: str, key: str) -> np.ndarray:
    """Publish in the background and play the stream back live while it is being published."""
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            _publish(f"{publish_url}/{key}", SECONDS)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        deadline = time.monotonic() + 3
        while key not in _published_streams() and not errors:
            assert time.monotonic() < deadline, f"nginx never showed {key} as published"
            time.sleep(0.05)
        live = _play_audio(f"{RTMP_URL}/{key}", 1.0)
    finally:
        publisher.join()
    assert not errors, errors
    return live


@pytest.mark.parametrize("publish_url", [RTMP_URL, RTMPS_URL], ids=["rtmp", "rtmps"])
def test_a_published_stream_plays_live_and_is_recorded(lab: Lab, publish_url: str) -> None:
    key = f"labtest-{secrets.token_hex(4)}"

    live = _push_and_play(lab, publish_url, key)

    assert dominant_frequency(live, AUDIO_RATE) == pytest.approx(TONE_HZ, abs=3)
    (recording,) = lab.recordings(key)
    recorded = decode_audio(recording, AUDIO_RATE)
    assert recorded.size >= (SECONDS - 1) * AUDIO_RATE
    assert dominant_frequency(recorded, AUDIO_RATE) == pytest.approx(TONE_HZ, abs=3)
    with av.open(str(recording)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
