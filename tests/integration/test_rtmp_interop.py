"""The outputs' RTMP client against a second server implementation: FFmpeg's own RTMP server
(`ffmpeg -listen 1`), which answers differently from nginx-rtmp (a bare `onFCPublish`, its
own chunking). What it records must be the H.264 + AAC stream that was sent, tone and all.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import numpy as np

from sip2rtmp.media.audio import AacEncoder
from sip2rtmp.media.output import OutputState, RtmpOutput
from sip2rtmp.media.packets import EncodedPacket, StreamTemplates
from sip2rtmp.media.slate import SlateVideo
from tests.integration.test_relay_media import assert_tone

SECONDS = 3.0
TONE_HZ = 440.0
STEP_S = 0.05


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    """Whether something listens on ``port``, read from the kernel's table: connecting to
    find out would use up `-listen 1`'s only connection."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(f":{port:04X} " in row and row.split()[3] == "0A" for row in rows)


def _stream(
    slate: SlateVideo, aac: AacEncoder, until: float, position: int
) -> tuple[list[EncodedPacket], int]:
    """The slate and a 440 Hz tone up to ``until`` seconds, in time order."""
    packets: list[EncodedPacket] = []
    while position / 48_000 < until:
        times = np.arange(position, position + aac.frame_size) / 48_000
        tone = (0.3 * np.sin(2 * np.pi * TONE_HZ * times)).astype(np.float32)[None, :]
        packets += aac.encode(tone, position)
        position += aac.frame_size
    packets += slate.packets_until(until)
    return sorted(packets, key=lambda packet: packet.seconds), position


def test_ffmpegs_rtmp_server_records_what_the_client_published(tmp_path: Path) -> None:
    port = _free_port()
    recording = tmp_path / "ffmpeg-server.flv"
    server = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-listen", "1",
         "-i", f"rtmp://127.0.0.1:{port}/live/key", "-c", "copy", str(recording)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not _listening(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        slate, aac = SlateVideo.text("interop", width=320, height=180), AacEncoder()
        output = RtmpOutput(
            f"rtmp://127.0.0.1:{port}/live/key", StreamTemplates(slate.template, aac.template)
        )
        output.start()
        position, sent = 0, 0.0
        while sent < SECONDS:
            sent += STEP_S
            packets, position = _stream(slate, aac, sent, position)
            output.submit(packets)
            time.sleep(STEP_S)
        assert output.state is OutputState.LIVE, output.stats()
        output.close()
        assert output.state is OutputState.CLOSED, output.stats()
        server.wait(10)
    finally:
        server.kill()
        server.wait()
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name:format=duration",
         "-of", "csv=p=0", str(recording)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = probe.stdout.split()
    assert lines[:2] == ["h264", "aac"], probe.stdout
    assert abs(float(lines[2]) - SECONDS) < 0.3, probe.stdout
    assert_tone(recording, TONE_HZ, skip=0.2, share=0.9)
