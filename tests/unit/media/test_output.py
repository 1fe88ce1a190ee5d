from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from sip2rtmp.media.audio import AacEncoder
from sip2rtmp.media.output import OutputPolicy, OutputState, RtmpOutput, redact
from sip2rtmp.media.packets import EncodedPacket, StreamTemplates, Track
from sip2rtmp.media.slate import SlateVideo


@pytest.fixture(scope="module")
def templates() -> StreamTemplates:
    return StreamTemplates(
        SlateVideo.text("x", width=320, height=180).template, AacEncoder().template
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_redact_hides_the_stream_key() -> None:
    assert redact("rtmps://u:p@live-api-s.facebook.com:443/rtmp/SECRET") == (
        "rtmps://live-api-s.facebook.com:443/rtmp/***"
    )
    assert redact("/tmp/out.flv") == "/tmp/out.flv"


def test_refused_first_connect_fails_for_good(templates: StreamTemplates) -> None:
    target = f"rtmp://127.0.0.1:{_free_port()}/live/SECRET"
    output = RtmpOutput(target, templates)
    output.start()
    output.submit([EncodedPacket(Track.VIDEO, b"\x00\x00\x00\x01\x65", 0, 0, True)])
    deadline = time.monotonic() + 5
    while output.state is not OutputState.FAILED and time.monotonic() < deadline:
        time.sleep(0.01)
    assert output.state is OutputState.FAILED
    failure = output.failure
    assert failure is not None and "SECRET" not in failure.describe()
    assert "refused" in failure.describe().lower()
    output.close()


def test_buffer_drops_oldest_beyond_its_media_duration(
    templates: StreamTemplates, tmp_path: Path
) -> None:
    output = RtmpOutput(str(tmp_path / "x.flv"), templates, OutputPolicy(max_buffer_s=1.0))
    for index in range(30):  # not started: everything stays queued
        output.submit([EncodedPacket(Track.AUDIO, b"\x21", index * 4800, index * 4800, True)])
    stats = output.stats()
    assert stats.dropped_packets == 19
    assert stats.buffered_s == pytest.approx(1.0)
