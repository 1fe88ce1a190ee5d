"""An rtmps:// output through its TLS hop: FFmpeg connects to the hop, and the hop's facts
decide. A stand-in hop points FFmpeg at a closed loopback port (FFmpeg fails at once) and says
what a real one would have seen upstream."""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass

import pytest

from sip2rtmp.media.audio import AacEncoder
from sip2rtmp.media.output import OutputPolicy, OutputState, RtmpOutput
from sip2rtmp.media.packets import EncodedPacket, StreamTemplates, Track
from sip2rtmp.media.slate import SlateVideo

TARGET = "rtmps://ingest.example.com:1936/live/HOP-SECRET"


@dataclass
class StandInHop:
    port: int
    refused: str | None = None
    number: int | None = None
    text: str | None = None
    connects: int = 0

    @property
    def connect_url(self) -> str:
        self.connects += 1
        return f"rtmp://127.0.0.1:{self.port}/live/HOP-SECRET"

    def refusal(self) -> str | None:
        return self.refused

    def upstream_errno(self) -> int | None:
        return self.number

    def upstream_error(self) -> str | None:
        return self.text


@pytest.fixture(scope="module")
def templates() -> StreamTemplates:
    return StreamTemplates(
        SlateVideo.text("x", width=320, height=180).template, AacEncoder().template
    )


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settle(output: RtmpOutput, seconds: float) -> None:
    output.start()
    output.submit([EncodedPacket(Track.VIDEO, b"\x00\x00\x00\x01\x65", 0, 0, True)])
    deadline = time.monotonic() + seconds
    while output.state is not OutputState.FAILED and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_refused_certificate_fails_the_output_at_once_naming_the_host(
    templates: StreamTemplates, closed_port: int
) -> None:
    reason = "certificate verify failed: self-signed certificate"
    hop = StandInHop(closed_port, refused=reason, number=errno.ETIMEDOUT)
    policy = OutputPolicy(backoff_initial_s=0.01, give_up_after_s=30)
    output = RtmpOutput(TARGET, templates, policy, hop=hop)
    _settle(output, 5)
    assert output.state is OutputState.FAILED
    assert hop.connects == 1, "no second attempt against the same certificate"
    failure = output.failure
    assert failure is not None
    assert failure.url == "rtmps://ingest.example.com:1936/live/***", "the real URL is shown"
    assert "ingest.example.com:1936" in failure.detail and reason in failure.detail
    assert "HOP-SECRET" not in failure.detail + failure.url
    output.close()


def test_a_timeout_upstream_is_retried_by_the_hops_errno(
    templates: StreamTemplates, closed_port: int
) -> None:
    """FFmpeg only sees the loopback close (or, here, refused): the hop's ETIMEDOUT decides
    that the first connect is worth another try, and its words are the error shown."""
    hop = StandInHop(closed_port, number=errno.ETIMEDOUT, text="no TLS connection within 10 s")
    policy = OutputPolicy(backoff_initial_s=0.02, backoff_max_s=0.02, give_up_after_s=0.5)
    output = RtmpOutput(TARGET, templates, policy, hop=hop)
    _settle(output, 10)
    assert output.state is OutputState.FAILED
    assert hop.connects >= 3
    assert output.stats().last_error == "no TLS connection within 10 s"
    output.close()


def test_a_refused_upstream_fails_the_first_connect_for_good(
    templates: StreamTemplates, closed_port: int
) -> None:
    hop = StandInHop(closed_port, number=errno.ECONNREFUSED, text="Connection refused")
    output = RtmpOutput(TARGET, templates, OutputPolicy(backoff_initial_s=0.01), hop=hop)
    _settle(output, 5)
    assert output.state is OutputState.FAILED and hop.connects == 1
    assert output.stats().last_error == "Connection refused"
    output.close()
