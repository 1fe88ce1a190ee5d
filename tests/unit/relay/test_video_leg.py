"""Keyframe requests toward a callee that pauses its video, counted where the callee gets them.

The policy is scaled down (50 ms retries, 0.2 s of quiet, 0.4 s at most between requests in
the quiet) so the whole pattern fits in three seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable

from sip2rtmp.relay.core import OFFERED_VIDEO_CODECS
from sip2rtmp.relay.video import KeyframePolicy, VideoLeg
from sip2rtmp.rtp.packet import RtpPacket, is_rtcp
from sip2rtmp.rtp.rtcp import PictureLossIndication, parse_compound
from sip2rtmp.rtp.vp8 import Vp8Depacketizer
from sip2rtmp.sip.sdp import NegotiatedStream, answer_offer, build_offer, negotiate

POLICY = KeyframePolicy(retry_s=0.05, quiet_s=0.2, quiet_retry_max_s=0.4)
P_SLICE = bytes((0x41, 0x9A, 0x00))
"""A non-IDR slice: the leg keeps waiting for a keyframe, so it keeps asking."""
IDR_SLICE = bytes((0x65, 0x88, 0x80))
"""An IDR slice: a keyframe, after which the leg asks only as the interval runs out."""
SPS = bytes.fromhex("6742c03ed90426840000030004007a12003c201092")
PPS = bytes.fromhex("68cb83cb20")
"""libx264's parameter sets for a 64x64 baseline picture: with them an IDR is usable, the
stream can open with it."""
VP8_INTERFRAME = b"\x10" + b"\x11\x02\x00" + bytes(20)
"""RFC 7741 §4.2 descriptor (S=1, partition 0), then a frame tag with P=1 (RFC 6386 §9.1)."""
VP8_KEYFRAME = b"\x10" + b"\x10\x02\x00\x9d\x01\x2a\x40\x01\xb4\x00" + bytes(20)
"""The same with P=0, the start code and a 320x180 size (RFC 6386 §9.1)."""


def _callee() -> socket.socket:
    callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    callee.bind(("127.0.0.1", 0))
    callee.setblocking(False)
    return callee


def _answer(
    leg: VideoLeg,
    callee: socket.socket,
    codec: str = "H264",
    edit_answer: Callable[[str], str] = lambda answer: answer,
) -> NegotiatedStream:
    """The video stream of an offer that ``callee`` answered (edited) with ``codec`` only."""
    offer = build_offer(
        "127.0.0.1", 4000, leg.port, session_id=1, video_codecs=OFFERED_VIDEO_CODECS
    )
    port = callee.getsockname()[1]
    capabilities = build_offer("127.0.0.1", 4002, port, session_id=2, video_codecs=(codec,))
    stream = negotiate(offer, edit_answer(answer_offer(capabilities, offer).sdp)).video
    assert stream is not None
    return stream


async def _call(
    edit_answer: Callable[[str], str], policy: KeyframePolicy = POLICY
) -> tuple[socket.socket, VideoLeg, NegotiatedStream]:
    """A leg and a callee socket in a call negotiated from the callee's (edited) answer."""
    callee = _callee()
    leg = await VideoLeg.open("127.0.0.1", policy)
    return callee, leg, _answer(leg, callee, edit_answer=edit_answer)


async def _picture_loss_indications(
    schedule: list[float],
    duration: float,
    policy: KeyframePolicy = POLICY,
    keyframes: frozenset[int] = frozenset(),
    lost: frozenset[int] = frozenset(),
) -> list[float]:
    """When PLIs reached a callee that sends one frame at each time of ``schedule``: a
    P-slice, or an IDR at the indexes in ``keyframes``; the indexes in ``lost`` never
    arrive."""
    callee, leg, stream = await _call(lambda answer: answer, policy)
    assert stream.rtcp_mux and "nack pli" in stream.rtcp_fb
    loop = asyncio.get_running_loop()
    received: list[float] = []
    sent = 0
    try:
        await leg.connect(stream)
        start = loop.time()
        while (now := loop.time() - start) < duration:
            while sent < len(schedule) and schedule[sent] <= now:
                frame = IDR_SLICE if sent in keyframes else P_SLICE
                packet = RtpPacket(stream.payload_type, sent, sent * 3600, 1234, frame, marker=True)
                if sent not in lost:
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


def test_a_loss_after_a_request_asks_again_without_waiting_for_the_retry() -> None:
    """The keyframe that answers a request may be the access unit lost: asking again only
    after the full retry lets the keyframe interval run out when that happens twice."""
    policy = KeyframePolicy(interval_s=1.0, lead_s=0.5, retry_s=0.5, lost_retry_s=0.05)
    frames = [index * 0.04 for index in range(25)]  # 0 .. 0.96 s, frame 15 (0.6 s) lost
    times = asyncio.run(
        _picture_loss_indications(
            frames, 1.0, policy, keyframes=frozenset({0}), lost=frozenset({15})
        )
    )
    before_the_loss = [time for time in times if 0.5 <= time < 0.6]
    assert before_the_loss, f"no request as the interval ran out: {times}"
    again = [time for time in times if 0.6 <= time < 0.9]
    assert again, f"the loss at 0.6 s was asked about only after the 0.5 s retry: {times}"
    assert all(b - a >= 0.04 for a, b in itertools.pairwise(times)), times


def test_the_leg_wakes_every_grid_step_until_the_first_keyframe_then_on_its_stride() -> None:
    """The first keyframe's playout starts the outputs, so until it comes the leg does not
    wait for a coarser grid (80 ms by default); after it, it does."""

    async def scenario() -> list[tuple[int, int]]:
        callee = _callee()
        leg = await VideoLeg.open("127.0.0.1", POLICY, grid_stride=2)
        stream = _answer(leg, callee)
        strides = [(leg.grid_stride, leg.endpoint.grid_stride)]
        try:
            await leg.connect(stream)
            frames = [(P_SLICE,), (P_SLICE,), (SPS, PPS, IDR_SLICE), (P_SLICE,)]
            sequence = 0
            for index, nals in enumerate(frames):
                for number, nal in enumerate(nals, 1):  # packetization mode 0: a NAL a packet
                    packet = RtpPacket(
                        stream.payload_type,
                        sequence,
                        index * 3600,
                        1234,
                        nal,
                        marker=number == len(nals),
                    )
                    callee.sendto(packet.serialize(), ("127.0.0.1", leg.port))
                    sequence += 1
                await asyncio.sleep(0.04)
                strides.append((leg.grid_stride, leg.endpoint.grid_stride))
            await asyncio.sleep(0.2)
            strides.append((leg.grid_stride, leg.endpoint.grid_stride))
        finally:
            await leg.close()
            callee.close()
        return strides

    strides = asyncio.run(scenario())
    assert strides[:3] == [(1, 1)] * 3, strides
    assert strides[-1] == (2, 2), strides


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


def _pli_sources(callee: socket.socket) -> list[int]:
    """The media SSRCs named by the PLIs that reached ``callee`` since the last call."""
    named: list[int] = []
    while True:
        try:
            data = callee.recv(65535)
        except BlockingIOError:
            return named
        if is_rtcp(data):
            named += [
                p.media_ssrc for p in parse_compound(data) if isinstance(p, PictureLossIndication)
            ]


def test_a_retarget_to_another_sender_and_codec_asks_it_for_its_keyframe() -> None:
    """Re-pointed from an H.264 callee to a VP8 one elsewhere, the leg depacketizes VP8, asks
    the new sender (by its SSRC) for a keyframe, and tells its first keyframe once."""

    async def scenario() -> None:
        callee, leg, stream = await _call(lambda answer: answer)
        moved = _callee()
        firsts: list[tuple[str, int]] = []
        keyframes: list[float] = []
        loop = asyncio.get_running_loop()
        leg.on_first_packet = firsts.append
        leg.on_keyframe = lambda: keyframes.append(loop.time())
        port = leg.port
        first_sender = ("127.0.0.1", callee.getsockname()[1])
        try:
            await leg.connect(stream)
            packet = RtpPacket(stream.payload_type, 1, 0, 1234, P_SLICE, marker=True)
            callee.sendto(packet.serialize(), ("127.0.0.1", leg.port))
            await asyncio.sleep(0.1)
            vp8 = _answer(leg, moved, "VP8")
            await leg.retarget(vp8)
            assert isinstance(leg.depacketizer, Vp8Depacketizer)
            for sequence in range(40):
                frame = VP8_KEYFRAME if sequence in (20, 30) else VP8_INTERFRAME
                packet = RtpPacket(
                    vp8.payload_type, sequence, sequence * 3600, 5678, frame, marker=True
                )
                moved.sendto(packet.serialize(), ("127.0.0.1", leg.port))
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            asked = _pli_sources(moved)
        finally:
            await leg.close()
            callee.close()
            moved.close()
        assert leg.port == port
        assert 5678 in asked, f"the new sender was asked for a keyframe: {asked}"
        assert firsts == [first_sender], "the first packet is told once, from the first sender"
        assert len(keyframes) == 1, "the first keyframe is told once"
        assert leg.depacketizer.resolution == (320, 180)

    asyncio.run(scenario())
