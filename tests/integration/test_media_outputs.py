"""The media pipeline end to end: PCMU tone in, H.264 + AAC out to files and real nginx-rtmp."""

from __future__ import annotations

import itertools
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from sip2rtmp.lab import RTMP_URL, RTMPS_URL, Lab
from sip2rtmp.media import (
    LOST,
    MediaConfig,
    MediaPipeline,
    OutputPolicy,
    OutputState,
    SlateVideo,
)

TONE_HZ = 440


def _pcmu_tone(seconds: float) -> list[bytes]:
    ctx = av.CodecContext.create("pcm_mulaw", "w")
    ctx.sample_rate, ctx.layout, ctx.format = 8000, "mono", "s16"
    ctx.open()
    t = np.arange(int(8000 * seconds)) / 8000
    pcm = (np.sin(2 * np.pi * TONE_HZ * t) * 10000).astype(np.int16)
    payloads = []
    for index in range(len(pcm) // 160):
        frame = av.AudioFrame.from_ndarray(
            pcm[None, index * 160 : (index + 1) * 160], "s16", "mono"
        )
        frame.sample_rate, frame.pts, frame.time_base = 8000, index * 160, Fraction(1, 8000)
        payloads.extend(bytes(p) for p in ctx.encode(frame))
    return payloads


def _feed(
    pipeline: MediaPipeline, seconds: float, at: Callable[[float], None] | None = None
) -> None:
    """Push 20 ms PCMU payloads in real time, every 50th slot lost; ``at`` sees the clock."""
    started = time.monotonic()
    for index, payload in enumerate(_pcmu_tone(seconds)):
        while (elapsed := time.monotonic() - started) < index * 0.02:
            time.sleep(0.002)
        if at is not None:
            at(elapsed)
        pipeline.push_audio(LOST if index % 50 == 25 else payload, 12345 + index * 160)


def _check_recordings(paths: list[Path], *, start: float, end: float) -> None:
    """One stream, possibly split over reconnections: each piece valid, together one timeline."""
    assert paths
    spans, pcm = [], []
    for path in paths:
        with av.open(str(path)) as container:
            assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert (video.codec_context.name, audio.codec_context.name) == ("h264", "aac")
            packets = [p for p in container.demux(video, audio) if p.size]
        video_dts = [float(p.dts * p.time_base) for p in packets if p.stream is video]
        audio_dts = [float(p.dts * p.time_base) for p in packets if p.stream is audio]
        keys = [float(p.pts * p.time_base) for p in packets if p.stream is video and p.is_keyframe]
        assert all(b > a for a, b in itertools.pairwise(video_dts))
        assert all(b >= a for a, b in itertools.pairwise(audio_dts))
        assert keys[0] == video_dts[0]
        assert all(b - a <= 2.1 for a, b in itertools.pairwise(keys))
        spans.append((video_dts[0], audio_dts[-1]))
        with av.open(str(path)) as container:
            pcm.extend(f.to_ndarray()[0] for f in container.decode(audio=0))
    assert spans[0][0] == pytest.approx(start, abs=0.15)
    # The feeder paces itself by the wall clock; outputs connecting at start hold the GIL for
    # a moment (FFmpeg's RTMP/TLS handshakes), so the feed, and with it the end, may run late.
    assert spans[-1][1] == pytest.approx(end, abs=0.5)
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))
    samples = np.concatenate(pcm)
    middle = samples[len(samples) // 4 : len(samples) * 3 // 4]
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    assert abs(np.argmax(spectrum) * 48000 / len(middle) - TONE_HZ) < 3


def test_tone_to_flv_file(tmp_path: Path) -> None:
    path = tmp_path / "call.flv"
    slate = SlateVideo.text("Alice", "call 00:00", width=640, height=360)
    pipeline = MediaPipeline([str(path)], codec="PCMU", video=slate)
    pipeline.start()
    _feed(pipeline, 5.0)
    pipeline.stop()
    stats = pipeline.stats()
    assert stats.audio_lost == 5 and stats.inbound_dropped == 0
    assert stats.outputs[0].state is OutputState.CLOSED
    _check_recordings([path], start=0.0, end=5.0)


@pytest.mark.lab
def test_fan_out_to_lab_rtmp_rtmps_and_a_recording(lab: Lab, tmp_path: Path) -> None:
    key = f"media-{secrets.token_hex(4)}"
    keys = [f"{key}-plain", f"{key}-tls"]
    targets = [f"{RTMP_URL}/{keys[0]}", f"{RTMPS_URL}/{keys[1]}", str(tmp_path / "local.flv")]
    pipeline = MediaPipeline(targets, codec="PCMU", video=SlateVideo.text("Fan out"))
    pipeline.start()
    _feed(pipeline, 5.0)
    pipeline.stop()
    assert [o.state for o in pipeline.stats().outputs] == [OutputState.CLOSED] * 3
    time.sleep(0.5)
    for stream_key in keys:  # split in pieces if the shared lab restarted meanwhile
        _check_recordings(lab.recordings(stream_key), start=0.0, end=5.0)
    _check_recordings([tmp_path / "local.flv"], start=0.0, end=5.0)


class _Nginx:
    """A private nginx-rtmp that the test may stop and restart (the shared lab must not be)."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        root.chmod(0o755)  # nginx workers drop privileges and must reach the recordings
        self.recordings = root / "rec"
        self.recordings.mkdir()
        self.recordings.chmod(0o777)
        (root / "logs").mkdir()
        self.config = root / "nginx.conf"
        self.config.write_text(
            "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n"
            f"daemon off; pid {root}/nginx.pid; error_log {root}/logs/error.log info;\n"
            "events { worker_connections 64; }\n"
            f"rtmp {{ server {{ listen 127.0.0.1:{self.port}; application live {{\n"
            f"live on; record all; record_unique on; record_path {self.recordings}; }} }} }}\n"
        )
        self.root = root
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["nginx", "-p", str(self.root), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("nginx did not start listening")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(5)
            self.process = None


@pytest.fixture
def nginx() -> Iterator[_Nginx]:
    if shutil.which("nginx") is None or not Path("/usr/lib/nginx/modules").exists():
        pytest.skip("nginx with the RTMP module is not installed")
    with tempfile.TemporaryDirectory(prefix="sip2rtmp-media-") as root:
        server = _Nginx(Path(root))
        server.start()
        yield server
        server.stop()


def test_reconnects_and_continues_the_timeline(nginx: _Nginx) -> None:
    config = MediaConfig(
        output_policy=OutputPolicy(backoff_initial_s=0.25, backoff_max_s=1.0, give_up_after_s=20)
    )
    pipeline = MediaPipeline(
        [f"rtmp://127.0.0.1:{nginx.port}/live/reconnect"],
        codec="PCMU",
        video=SlateVideo.text("Reconnect", width=640, height=360),
        config=config,
    )
    states: set[OutputState] = set()
    events = {3.0: nginx.stop, 5.5: nginx.start}

    def at(elapsed: float) -> None:
        states.add(pipeline.stats().outputs[0].state)
        for when in sorted(events):
            if elapsed >= when:
                events.pop(when)()

    pipeline.start()
    feeder = threading.Thread(target=_feed, args=(pipeline, 10.0, at))
    feeder.start()
    feeder.join()
    before_stop = pipeline.stats()
    pipeline.stop()
    output = pipeline.stats().outputs[0]
    assert OutputState.RECONNECTING in states
    assert output.state is OutputState.CLOSED and output.reconnects == 1
    assert before_stop.inbound_dropped == 0
    assert before_stop.media_time_s == pytest.approx(10.0, abs=0.3)

    first, second = sorted(nginx.recordings.glob("reconnect-*.flv"))
    resumed = output.session_start_s
    assert resumed is not None and 2.5 <= resumed <= 8.0
    _check_recordings([first, second], start=0.0, end=10.0)
    with av.open(str(second)) as container:
        video = container.streams.video[0]
        first_video = next(p for p in container.demux(video) if p.size)
        assert first_video.is_keyframe
        assert float(first_video.dts * first_video.time_base) == pytest.approx(resumed, abs=0.01)
