"""Lip sync from sender reports, and the slate sent toward the callee."""

from __future__ import annotations

import asyncio
import itertools
import socket

import pytest

from sip2rtmp.media.passthrough import VIDEO_CLOCK, PassthroughVideo
from sip2rtmp.media.slate import SlateVideo
from sip2rtmp.relay.core import OFFERED_VIDEO_CODECS
from sip2rtmp.relay.sync import AvSync, SenderReportTap
from sip2rtmp.relay.video import VideoLeg
from sip2rtmp.rtp.h264 import AccessUnit, H264Depacketizer, nal_type
from sip2rtmp.rtp.packet import RtpPacket
from sip2rtmp.rtp.rtcp import ReceiverReport, RtcpPacket, SenderReport, ntp_from_unix
from sip2rtmp.sip.sdp import answer_offer, build_offer, negotiate

FRAME = VIDEO_CLOCK // 25
NTP = 1_700_000_000.0


@pytest.fixture
def slate() -> SlateVideo:
    """A fresh one per test: a slate replays its frames once, from media time 0."""
    return SlateVideo.text("callee", width=64, height=64)


def report(ntp_s: float, rtp_ts: int) -> SenderReport:
    return SenderReport(1, ntp_from_unix(ntp_s), rtp_ts & 0xFFFFFFFF, 0, 0)


def test_video_lands_on_the_audio_of_its_capture_instant() -> None:
    sync = AvSync(8000, origin=100.0)
    sync.audio_rtcp([report(NTP, 0xFFFFFF00)], 0.0)  # audio timestamps wrap
    assert sync.video_seconds(0) is None
    sync.video_rtcp([report(NTP + 0.5, 1000)], 0.0)
    assert sync.video_seconds(0) is None, "still no audio on the output"
    sync.audio_anchor(0xFFFFFF00 - 8000, 101.0)  # captured 1 s before the audio SR
    # The audio SR's instant plays at 1 s + 1 s; the video SR's half a second later.
    assert sync.video_seconds(1000) == pytest.approx(2.5)
    assert sync.video_seconds(1000 + 9000) == pytest.approx(2.6)
    assert sync.video_seconds((1000 - 90000) & 0xFFFFFFFF) == pytest.approx(1.5)


def test_a_sender_report_before_the_listener_attaches_is_handed_over_at_once() -> None:
    """A sender that reports with its first packets and then only every 5 s: lip sync must not
    wait 5 s for the next report because the relay attached its sync after the first one."""
    tap = SenderReportTap()
    first: list[RtcpPacket] = [report(NTP, 1000)]
    tap(first, 1.0)
    tap([ReceiverReport(1)], 1.5)  # a compound without an SR does not replace it
    heard: list[tuple[list[RtcpPacket], float]] = []
    tap.attach(lambda packets, arrival: heard.append((packets, arrival)))
    assert heard == [(first, 1.0)]
    later: list[RtcpPacket] = [report(NTP + 5, 41000)]
    tap(later, 6.0)
    assert heard == [(first, 1.0), (later, 6.0)]


def test_passthrough_slews_to_the_capture_clock_one_step_at_a_time(slate: SlateVideo) -> None:
    source = PassthroughVideo(slate.sps, slate.pps)
    source.start(0.0)
    nal = bytes((0x65, 0x88))
    late = 0.3
    source.sync_to(lambda ts: None if ts < 10 * FRAME else ts / VIDEO_CLOCK)
    dts = []
    for index in range(40):
        unit = AccessUnit(index * FRAME, (nal,), index == 0)
        source.push(unit, index * FRAME / VIDEO_CLOCK + late)  # arrives 300 ms late
        dts += [packet.dts for packet in source.packets_until(1e9)]
    steps = [b - a for a, b in itertools.pairwise(dts)]
    assert all(FRAME // 2 <= step <= 2 * FRAME for step in steps), steps
    assert dts[9] == 9 * FRAME + round(late * VIDEO_CLOCK), "by arrival until the SRs"
    assert dts[-1] == 39 * FRAME, "by capture time once they came"
    assert source.av_skew == pytest.approx(late)
    assert source.timeline.resyncs == 0


async def _send_slate(slate: SlateVideo, codec: str) -> tuple[VideoLeg, list[RtpPacket]]:
    """A leg answered by ``codec`` sends the slate for 0.25 s; what reached the callee."""
    callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    callee.bind(("127.0.0.1", 0))
    callee.setblocking(False)
    leg = await VideoLeg.open("127.0.0.1")
    offer = build_offer(
        "127.0.0.1", 4000, leg.port, session_id=1, video_codecs=OFFERED_VIDEO_CODECS
    )
    port = callee.getsockname()[1]
    capabilities = build_offer("127.0.0.1", 4002, port, session_id=2, video_codecs=(codec,))
    stream = negotiate(offer, answer_offer(capabilities, offer).sdp).video
    assert stream is not None
    try:
        await leg.connect(stream)
        leg.send_slate(slate)
        await asyncio.sleep(0.25)  # frames at 0, 0.1 and 0.2 s
    finally:
        await leg.close()
    packets = []
    with callee:
        while True:
            try:
                data = callee.recv(65535)
            except BlockingIOError:
                break
            if data[1] & 0x7F == stream.payload_type:
                packets.append(RtpPacket.parse(data))
    return leg, packets


@pytest.mark.parametrize(("codec", "aggregated"), [("H264", True), ("H264/0", False)])
def test_slate_goes_to_the_callee_as_h264(slate: SlateVideo, codec: str, aggregated: bool) -> None:
    leg, packets = asyncio.run(_send_slate(slate, codec))
    assert {packet.ssrc for packet in packets} == {leg.endpoint.ssrc}
    assert any(packet.payload[0] & 0x1F == 24 for packet in packets) == aggregated, "STAP-A"
    depacketizer = H264Depacketizer()
    units = [unit for packet in packets for unit in depacketizer.push(packet)]
    assert len(units) == leg.frames_sent == 3
    assert units[0].keyframe and [nal_type(nal) for nal in units[0].nals][:2] == [7, 8]
    steps = [(unit.timestamp - units[0].timestamp) & 0xFFFFFFFF for unit in units]
    assert steps == [0, 9000, 18000]
