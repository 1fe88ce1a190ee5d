from __future__ import annotations

import errno
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from sip2rtmp.media.audio import AacEncoder
from sip2rtmp.media.output import OutputPolicy, OutputState, RtmpOutput
from sip2rtmp.media.packets import EncodedPacket, StreamTemplates, Track
from sip2rtmp.media.passthrough import h264_template
from sip2rtmp.media.slate import SlateVideo
from sip2rtmp.media.targets import redact
from sip2rtmp.net.rtmp_socket import RtmpConnection
from tests.support.flv import avc_sequence_headers
from tests.unit.media.video_signals import Clip, decoded_pictures, h264_clip
from tests.unit.net.test_tls_name import TlsServer


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
    assert failure is not None and failure.url == redact(target)
    assert "SECRET" not in failure.url + failure.detail and "refused" in failure.detail.lower()
    output.close()


def _settle(output: RtmpOutput, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while output.state is OutputState.CONNECTING and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_refused_certificate_fails_the_output_at_once_naming_the_host(
    templates: StreamTemplates, tmp_path: Path
) -> None:
    cert, key = tmp_path / "self.pem", tmp_path / "self.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-subj", "/CN=127.0.0.1", "-days", "2", "-out", str(cert),
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = TlsServer(cert, key)
    try:
        output = RtmpOutput(f"rtmps://127.0.0.1:{server.port}/live/SECRET", templates)
        output.start()
        _settle(output, 5)
        stats = output.stats()
        assert output.state is OutputState.FAILED
        assert stats.last_error == (
            f"certificate of 127.0.0.1:{server.port} refused by sip2rtmp: "
            "certificate verify failed: self-signed certificate"
        )
        assert server.handshakes == 0
        output.close()
    finally:
        server.close()


def test_a_server_that_never_answers_is_tried_again(templates: StreamTemplates) -> None:
    """Silence is a timeout, which a first connect retries (a server still starting)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        policy = OutputPolicy(connect_timeout_s=0.2, backoff_initial_s=0.05)
        output = RtmpOutput(f"rtmp://127.0.0.1:{port}/live/SECRET", templates, policy)
        output.start()
        time.sleep(1.0)
        stats = output.stats()
        assert output.state is OutputState.CONNECTING
        assert stats.last_error == "not publishing within 0.2 s (stuck at handshake)"
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


@pytest.fixture(scope="module")
def small() -> Clip:
    return h264_clip(320, 240, 10, keyint=5, grey=60)


@pytest.fixture(scope="module")
def large() -> Clip:
    return h264_clip(640, 480, 10, keyint=5, grey=200)


def _sizes_and_levels(path: Path) -> list[tuple[int, int, bool]]:
    """Each decoded picture's size, and whether it is the light (200) or the dark (60) grey."""
    return [(width, height, luma > 128) for width, height, luma in decoded_pictures(path)]


def test_a_keyframe_with_another_configuration_announces_it_once(
    small: Clip, large: Clip, tmp_path: Path
) -> None:
    templates = StreamTemplates(h264_template(small.sps, small.pps), AacEncoder().template)
    path = tmp_path / "switch.flv"
    output = RtmpOutput(str(path), templates)
    output.start()
    output.submit(small.packets(0) + large.packets(10) + small.packets(20))
    output.close()
    # Keyframes every 5 frames, but a sequence header only where the configuration changes.
    assert avc_sequence_headers(path) == [
        (0.0, small.config),
        (0.4, large.config),
        (0.8, small.config),
    ]
    assert _sizes_and_levels(path) == (
        [(320, 240, False)] * 10 + [(640, 480, True)] * 10 + [(320, 240, False)] * 10
    )


class _Recording:
    """A connection that writes what it is sent into an FLV file, and fails like a reset one
    after ``budget`` tags (None: never): a send that goes beyond it writes the tags within it
    and raises, as a connection reset in the middle of a send would."""

    def __init__(self, path: Path, budget: int | None) -> None:
        self._file = path.open("wb")
        self._budget = budget
        self.sends = 0

    def write(self, data: bytes) -> int:
        if not self._file.closed:
            self._file.write(data)
        return len(data)

    def send_tags(self, tags: list[tuple[int, int, bytes]]) -> None:
        self.sends += 1
        for kind, millis, body in tags:
            if self._budget is not None:
                if self._budget == 0:
                    raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
                self._budget -= 1
            header = bytes([kind]) + len(body).to_bytes(3, "big")
            header += (millis & 0xFFFFFF).to_bytes(3, "big") + bytes([millis >> 24, 0, 0, 0])
            self._file.write(header + body + (11 + len(body)).to_bytes(4, "big"))

    def close(self) -> None:
        self._file.close()


def _sent_all(output: RtmpOutput, packets: list[EncodedPacket]) -> None:
    deadline = time.monotonic() + 10
    while output.stats().last_sent_s != packets[-1].seconds and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_fresh_connection_announces_the_configuration_again(
    small: Clip, large: Clip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops while it sends the large clip: that batch is sent again on a new
    connection, which opened with the template's (small) header, so the large clip's first
    keyframe must announce its own."""
    templates = StreamTemplates(h264_template(small.sps, small.pps), AacEncoder().template)
    pieces: list[Path] = []

    def reconnecting(target: str, **options: Any) -> _Recording:
        pieces.append(tmp_path / f"piece{len(pieces)}.flv")
        return _Recording(pieces[-1], 13 if len(pieces) == 1 else None)

    monkeypatch.setattr(RtmpConnection, "open", reconnecting)
    policy = OutputPolicy(backoff_initial_s=0.01)
    output = RtmpOutput("rtmp://127.0.0.1/live/key", templates, policy)
    first, second = small.packets(0), large.packets(10)
    output.start()
    output.submit(first)
    _sent_all(output, first)
    output.submit(second)
    _sent_all(output, second)
    output.close()
    monkeypatch.undo()
    assert output.stats().reconnects == 1
    assert [[time for time, _ in avc_sequence_headers(piece)] for piece in pieces] == [
        [0.0, 0.4],
        [0.0, 0.4],
    ]
    assert avc_sequence_headers(pieces[1])[1][1] == large.config
    assert _sizes_and_levels(pieces[1]) == [(640, 480, True)] * 10


def test_a_batch_goes_to_the_server_in_one_send(
    small: Clip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline hands packets over in batches: each leaves in one send, not one per
    packet, and in order."""
    templates = StreamTemplates(h264_template(small.sps, small.pps), AacEncoder().template)
    connections: list[_Recording] = []

    def recording(target: str, **options: Any) -> _Recording:
        connections.append(_Recording(tmp_path / "sent.flv", None))
        return connections[-1]

    monkeypatch.setattr(RtmpConnection, "open", recording)
    output = RtmpOutput("rtmp://127.0.0.1/live/key", templates)
    packets = small.packets(0)
    output.start()
    output.submit(packets)
    _sent_all(output, packets)
    output.close()
    assert [connection.sends for connection in connections] == [1]
    assert output.stats().bytes_sent == sum(len(packet.data) for packet in packets)
    assert _sizes_and_levels(tmp_path / "sent.flv") == [(320, 240, False)] * len(packets)
