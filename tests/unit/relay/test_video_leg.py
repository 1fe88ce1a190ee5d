"""Keyframe requests toward a callee that pauses its video, counted where the callee gets them.

The policy is scaled down (50 ms retries, 0.2 s of quiet, 0.4 s at most between requests in
the quiet) so the whole pattern fits in three seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable

from sip2rtmp.relay.video import OFFERED_CODECS, KeyframePolicy, VideoLeg
from sip2rtmp.rtp.packet import RtpPacket, is_rtcp
from sip2rtmp.rtp.rtcp import PictureLossIndication, parse_compound
from sip2rtmp.sip.sdp import NegotiatedStream, answer_offer, build_offer, negotiate

POLICY = KeyframePolicy(retry_s=0.05, quiet_s=0.2, quiet_retry_max_s=0.4)
P_SLICE = bytes((0x41, 0x9A, 0x00))
"""A non-IDR slice: the leg keeps waiting for a keyframe, so it keeps asking."""


async def _call(
    edit_answer: Callable[[str], str],
) -> tuple[socket.socket, VideoLeg, NegotiatedStream]:
    """A leg and a callee socket in a call negotiated from the callee's (edited) answer."""
    callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    callee.bind(("127.0.0.1", 0))
    callee.setblocking(False)
    leg = await VideoLeg.open("127.0.0.1", POLICY)
    offer = build_offer("127.0.0.1", 4000, leg.port, session_id=1, video_codecs=OFFERED_CODECS)
    port = callee.getsockname()[1]
    capabilities = build_offer("127.0.0.1", 4002, port, session_id=2, video_codecs=("H264",))
    stream = negotiate(offer, edit_answer(answer_offer(capabilities, offer).sdp)).video
    assert stream is not None
    return callee, leg, stream


async def _picture_loss_indications(schedule: list[float], duration: float) -> list[float]:
    """When PLIs reached a callee that sends one P-slice at each time of ``schedule``."""
    callee, leg, stream = await _call(lambda answer: answer)
    assert stream.rtcp_mux and "nack pli" in stream.rtcp_fb
    loop = asyncio.get_running_loop()
    received: list[float] = []
    sent = 0
    try:
        await leg.connect(stream)
        start = loop.time()
        while (now := loop.time() - start) < duration:
            while sent < len(schedule) and schedule[sent] <= now:
                packet = RtpPacket(
                    stream.payload_type, sent, sent * 3600, 1234, P_SLICE, marker=True
                )
                callee.sendto(packet.serialize(), ("127.0.0.1", leg.port))
                sent += 1
            while True:
                try:
                    data = callee.recv(65535)
                except BlockingIOError:
                    break
                if is_rtcp(data) and any(
                    isinstance(p, PictureLossIndication) for p in parse_compound(data)
                ):
                    received.append(now)
            await asyncio.sleep(0.005)
    finally:
        await leg.close()
        callee.close()
    return received


def test_requests_back_off_while_nothing_arrives_and_resume_with_the_video() -> None:
    flowing = [index * 0.04 for index in range(13)]  # 0 .. 0.48 s
    resumed = [2.5 + index * 0.04 for index in range(5)]
    times = asyncio.run(_picture_loss_indications(flowing + resumed, 2.8))

    def between(start: float, end: float) -> list[float]:
        return [time for time in times if start <= time < end]

    assert len(between(0.0, 0.5)) >= 6, f"every 50 ms while the video flows: {times}"
    quiet = between(1.2, 2.5)
    assert 1 <= len(quiet) <= 4, f"the old policy asked every 50 ms: {times}"
    assert all(b - a >= 0.35 for a, b in itertools.pairwise(quiet)), times
    assert between(2.5, 2.56), f"asked at once when the video came back: {times}"


def test_without_rtcp_feedback_keyframes_are_asked_for_by_sip_info() -> None:
    """RFC 5168: an answer without rtcp-fb gets picture_fast_update in a SIP INFO instead."""

    async def scenario() -> tuple[list[tuple[str, bytes]], list[bytes]]:
        callee, leg, stream = await _call(
            lambda answer: "".join(
                line
                for line in answer.splitlines(keepends=True)
                if not line.startswith("a=rtcp-fb")
            )
        )
        assert not stream.rtcp_fb
        infos: list[tuple[str, bytes]] = []

        async def send_info(content_type: str, body: bytes) -> int:
            infos.append((content_type, body))
            return 200

        rtcp: list[bytes] = []
        try:
            await leg.connect(stream, send_info)
            for sequence in range(5):
                packet = RtpPacket(stream.payload_type, sequence, sequence * 3600, 99, P_SLICE)
                callee.sendto(packet.serialize(), ("127.0.0.1", leg.port))
                await asyncio.sleep(0.04)
            await asyncio.sleep(0.1)
            while True:
                try:
                    rtcp.append(callee.recv(65535))
                except BlockingIOError:
                    break
        finally:
            await leg.close()
            callee.close()
        return infos, rtcp

    infos, rtcp = asyncio.run(scenario())
    assert infos, "no INFO asked for a keyframe"
    assert {content_type for content_type, _ in infos} == {"application/media_control+xml"}
    assert all(b"<picture_fast_update/>" in body for _, body in infos)
    assert not any(
        isinstance(p, PictureLossIndication)
        for data in rtcp
        if is_rtcp(data)
        for p in parse_compound(data)
    ), "PLI sent although the answer did not negotiate it"
