"""The audio leg on 127.0.0.1 with real sockets, following what the answer says about the
extras of the audio stream: telephone-events at another clock than the codec's (RFC 4733
§2.1), comfort noise (RFC 3389) and the packet time we send with (RFC 4566 §6)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from sip2rtmp.media.comfort_noise import ComfortNoise
from sip2rtmp.relay.audio import AudioLeg
from sip2rtmp.rtp.dtmf import parse_event
from sip2rtmp.rtp.packet import RtpPacket
from sip2rtmp.sip.sdp import NegotiatedStream, build_offer, negotiate
from tests.unit.net.test_rtp_endpoint import LOCALHOST
from tests.unit.relay.test_audio_leg import A_SOUND, Callee, Played, endpoint_drops, until


def answered_with(leg: AudioLeg, callee: Callee, *media: str) -> NegotiatedStream:
    """Our offer answered by ``callee`` with exactly these audio lines."""
    offer = build_offer(LOCALHOST, leg.port, session_id=1)
    answer = "\r\n".join(
        [
            "v=0",
            f"o=- 2 2 IN IP4 {LOCALHOST}",
            "s=-",
            f"c=IN IP4 {LOCALHOST}",
            "t=0 0",
            f"m=audio {callee.address[1]} RTP/AVP {media[0]}",
            *media[1:],
            "",
        ]
    )
    stream = negotiate(offer, answer).audio
    assert stream is not None
    return stream


def by_sequence(packets: list[RtpPacket]) -> list[RtpPacket]:
    first = packets[0].sequence_number
    return sorted(packets, key=lambda p: (p.sequence_number - first) & 0xFFFF)


def test_keys_on_an_opus_call_answered_with_only_8khz_events() -> None:
    """Opus at 48 kHz, telephone-event/8000 only: two keys go as RFC 4733 events (not SIP
    INFO) whose durations count 8 kHz ticks (160 per 20 ms update, 800 for 100 ms) and
    whose timestamps are 8 kHz apart as far as the audio's 48 kHz ticks between them say;
    in our audio's SSRC, with one unbroken sequence through audio and events."""

    async def scenario() -> None:
        callee = Callee()
        leg = await AudioLeg.open(LOCALHOST)
        leg.attach(Played())
        try:
            stream = answered_with(
                leg,
                callee,
                "96 101",
                "a=rtpmap:96 opus/48000/2",
                "a=rtpmap:101 telephone-event/8000",
            )
            assert (stream.clock_rate, stream.telephone_event_clock_rate) == (48000, 8000)
            await leg.connect(stream)
            assert leg.rfc4733
            await asyncio.sleep(0.3)
            await leg.send_dtmf("1")
            await asyncio.sleep(0.5)
            await leg.send_dtmf("2")
            await asyncio.sleep(0.1)
            sent = by_sequence(callee.take())
        finally:
            await leg.close()
            callee.sock.close()

        assert {p.ssrc for p in sent} == {leg.endpoint.ssrc}
        steps = {
            (q.sequence_number - p.sequence_number) & 0xFFFF for p, q in itertools.pairwise(sent)
        }
        assert steps == {1}, "one sequence through audio and events"
        events = [p for p in sent if p.payload_type == 101]
        starts = list(dict.fromkeys(p.timestamp for p in events))
        assert len(starts) == 2
        for start in starts:
            key = [p for p in events if p.timestamp == start]
            durations = [parse_event(p.payload).duration for p in key]
            assert durations == [160, 320, 480, 640, 800, 800, 800]
            assert [p.marker for p in key] == [True] + [False] * 6
        firsts = [sent.index(next(p for p in events if p.timestamp == s)) for s in starts]
        before = [sent[index - 1] for index in firsts]
        assert {p.payload_type for p in before} == {96}
        audio_between = (before[1].timestamp - before[0].timestamp) & 0xFFFFFFFF
        assert audio_between % 960 == 0 and audio_between > 0.5 * 48000
        assert (starts[1] - starts[0]) & 0xFFFFFFFF == audio_between // 6

    asyncio.run(scenario())


def arrived(leg: AudioLeg) -> int:
    """Packets of the callee's source that reached the jitter buffer or were refused."""
    return endpoint_drops(leg) + (leg.stats.received if leg.stats is not None else 0)


def test_comfort_noise_is_received_as_media_and_played_as_noise() -> None:
    """PCMU with CN (13) agreed: after five speech packets the callee sends only CN, one per
    200 ms. Each is accepted (none refused for its type), moves the leg's last-packet time
    the media timeout watches, and reaches the pipeline marked as comfort noise in order.
    Without CN in the answer the same packets are refused and nothing of them plays."""

    async def run(media: tuple[str, ...]) -> tuple[AudioLeg, Played, float]:
        callee = Callee()
        leg = await AudioLeg.open(LOCALHOST)
        played = Played()
        leg.attach(played)
        try:
            await leg.connect(answered_with(leg, callee, *media))
            await callee.talk(leg, 0, A_SOUND, 5)
            for _ in range(3):
                await asyncio.sleep(0.2)
                callee.send(leg, 13, b"\x2d", step=1600)
            sent_last = asyncio.get_running_loop().time()
            await until(lambda: arrived(leg) >= 8, "every packet arrived")
            await asyncio.sleep(0.2)  # the jitter buffer's playout
            return leg, played, sent_last
        finally:
            await leg.close()
            callee.sock.close()

    leg, played, sent_last = asyncio.run(run(("0 13",)))
    noise = [item for item in played.items if isinstance(item[0], ComfortNoise)]
    assert [payload for payload, _, _ in played.items][:5] == [A_SOUND] * 5
    assert len(noise) == 3 and {payload.level_dbov for payload, _, _ in noise} == {45}
    assert endpoint_drops(leg) == 0
    assert leg.last_packet_at is not None and leg.last_packet_at >= sent_last - 0.05
    assert leg.stats is not None and leg.stats.received == 8

    leg, played, _ = asyncio.run(run(("0",)))
    assert endpoint_drops(leg) == 3
    assert not any(isinstance(item[0], ComfortNoise) for item in played.items)


@pytest.mark.parametrize(
    ("media", "pt", "step", "size"),
    [
        (("0", "a=ptime:40"), 0, 320, 320),
        (("8", "a=ptime:30", "a=maxptime:20"), 8, 160, 160),
        (("9", "a=ptime:60"), 9, 480, 480),
        (("96", "a=rtpmap:96 opus/48000/2", "a=ptime:60", "a=maxptime:40"), 96, 1920, None),
    ],
)
def test_we_send_with_the_answers_packet_time(
    media: tuple[str, ...], pt: int, step: int, size: int | None
) -> None:
    """What reaches the callee: every payload as long as a=ptime asks within a=maxptime,
    the RTP timestamp advancing by as much, and packets as many as that time allows."""

    async def scenario() -> list[RtpPacket]:
        callee = Callee()
        leg = await AudioLeg.open(LOCALHOST)
        leg.attach(Played())
        try:
            await leg.connect(answered_with(leg, callee, *media))
            await until(lambda: bool(callee.take()), "the first packet")
            await asyncio.sleep(0.6)
            return by_sequence(callee.take())
        finally:
            await leg.close()
            callee.sock.close()

    sent = asyncio.run(scenario())
    assert {p.payload_type for p in sent} == {pt}
    ticks = {(q.timestamp - p.timestamp) & 0xFFFFFFFF for p, q in itertools.pairwise(sent)}
    assert ticks == {step}
    if size is not None:
        assert {len(p.payload) for p in sent} == {size}
    clock = 48000 if pt == 96 else 8000
    expected = 0.6 * clock / step
    assert expected - 2 <= len(sent) <= expected + 2
