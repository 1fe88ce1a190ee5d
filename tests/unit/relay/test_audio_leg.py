"""The audio leg re-pointed mid-call, on 127.0.0.1 with real sockets: a new remote address, a
new payload map and a new clock rate, each applied without closing the leg's ports
(``MediaLeg.retarget``, what a re-INVITE's answer needs, RFC 3264 §8.3)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import socket
from collections.abc import Callable

from sip2rtmp.media.pipeline import Lost
from sip2rtmp.netaddr import Address
from sip2rtmp.relay.audio import AudioLeg
from sip2rtmp.rtp.dtmf import dtmf_schedule
from sip2rtmp.rtp.packet import RtpPacket, is_rtcp
from sip2rtmp.sip.sdp import NegotiatedStream, answer_offer, build_offer, negotiate
from tests.unit.net.test_rtp_endpoint import LOCALHOST

A_SOUND = b"\xaa" * 160
B_SOUND = b"\xbb" * 160
STRAY = b"\xac" * 160


class Played:
    """Stands in for the media pipeline: what the leg played out, in order."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes | Lost, int, float | None]] = []
        self.codecs: list[tuple[str, int]] = []
        """Each codec the leg switched the pipeline to, and how many items came before."""
        self.hand_overs: list[int] = []
        """How many items had come at each end of a playout the leg announced."""

    def push_audio(self, payload: bytes | Lost, rtp_ts: int, due: float | None = None) -> None:
        self.items.append((payload, rtp_ts, due))

    def audio_handed_over(self) -> None:
        self.hand_overs.append(len(self.items))

    def switch_audio(self, codec: str) -> None:
        self.codecs.append((codec, len(self.items)))

    def count(self, payload: bytes) -> int:
        return sum(1 for played, _, _ in self.items if played == payload)


class Callee:
    """A far end on its own UDP port: sends RTP to the leg and keeps what the leg sends."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOCALHOST, 0))
        self.sock.setblocking(False)
        self.ssrc = random.getrandbits(32)
        self.sequence = random.randrange(1 << 16)
        self.timestamp = random.randrange(1 << 32)

    @property
    def address(self) -> Address:
        host, port = self.sock.getsockname()
        return str(host), int(port)

    def send(self, leg: AudioLeg, pt: int, payload: bytes, *, step: int = 160) -> None:
        """One packet, the next in sequence, ``step`` clock ticks after the last."""
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + step) & 0xFFFFFFFF
        packet = RtpPacket(pt, self.sequence, self.timestamp, self.ssrc, payload)
        self.sock.sendto(packet.serialize(), (LOCALHOST, leg.port))

    async def talk(
        self, leg: AudioLeg, pt: int, payload: bytes, count: int, *, step: int = 160
    ) -> None:
        """``count`` packets 20 ms apart, as a live sender."""
        for _ in range(count):
            self.send(leg, pt, payload, step=step)
            await asyncio.sleep(0.02)

    async def press(self, leg: AudioLeg, pt: int, digit: str) -> None:
        """One key as RFC 4733 events (RFC 4733 §2.5.1) on payload type ``pt``."""
        for item in dtmf_schedule(digit):
            self.sequence = (self.sequence + 1) & 0xFFFF
            timestamp = (self.timestamp + item.timestamp_offset) & 0xFFFFFFFF
            packet = RtpPacket(
                pt, self.sequence, timestamp, self.ssrc, item.payload, marker=item.marker
            )
            self.sock.sendto(packet.serialize(), (LOCALHOST, leg.port))
            await asyncio.sleep(0.005)

    def take(self) -> list[RtpPacket]:
        """The RTP the leg sent here since the last call."""
        packets: list[RtpPacket] = []
        while True:
            try:
                data = self.sock.recv(65535)
            except BlockingIOError:
                return packets
            if not is_rtcp(data):
                packets.append(RtpPacket.parse(data))


async def until(condition: Callable[[], bool], what: str, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.01)


def answered(leg: AudioLeg, callee: Callee, codec: str) -> NegotiatedStream:
    """The audio stream of an offer answered by ``callee`` with ``codec`` only."""
    offer = build_offer(LOCALHOST, leg.port, session_id=1, audio_codecs=("opus", "PCMU", "PCMA"))
    port = callee.address[1]
    capabilities = build_offer(LOCALHOST, port, session_id=2, audio_codecs=(codec,))
    stream = negotiate(offer, answer_offer(capabilities, offer).sdp).audio
    assert stream is not None
    return stream


def test_a_new_remote_address_takes_over_both_ways_on_the_same_ports() -> None:
    async def scenario() -> None:
        a, b = Callee(), Callee()
        firsts: list[Address] = []
        leg = await AudioLeg.open(LOCALHOST, on_first_packet=firsts.append)
        played = Played()
        leg.attach(played)
        port, endpoint = leg.port, leg.endpoint
        try:
            await leg.connect(answered(leg, a, "PCMU"))
            jitter = leg.jitter
            await a.talk(leg, 0, A_SOUND, 10)
            await until(lambda: played.count(A_SOUND) >= 5, "A's audio played")
            assert any(p.ssrc == endpoint.ssrc for p in a.take()), "our audio reached A"

            await leg.retarget(answered(leg, b, "PCMU"))
            a.take()
            a.send(leg, 0, STRAY)  # from the old address, after the move
            await b.talk(leg, 0, B_SOUND, 10)
            await until(lambda: played.count(B_SOUND) >= 5, "B's audio played")
            await asyncio.sleep(0.1)

            assert (leg.port, leg.endpoint) == (port, endpoint), "the same sockets"
            assert endpoint.source.address == b.address
            assert played.count(STRAY) == 0, "the old address no longer plays"
            assert leg.jitter is jitter, "same clock rate, same buffer"
            assert jitter is not None and jitter.stats.resyncs == 1, "B's stream starts anew"
            assert firsts == [a.address], "the first packet is told once"
            ends = played.hand_overs
            assert ends[-1] == len(played.items), "every playout is announced"
            assert all(a < b for a, b in itertools.pairwise(ends)), "each once, after its items"
            assert len(ends) < len(played.items), "a playout's items are announced together"
            assert not a.take(), "nothing more goes to A"
            assert {p.ssrc for p in b.take()} == {endpoint.ssrc}, "our audio goes to B"
        finally:
            await leg.close()
            a.sock.close()
            b.sock.close()

    asyncio.run(scenario())


def test_a_new_payload_map_replaces_what_is_accepted_and_what_is_sent() -> None:
    async def scenario() -> None:
        a = Callee()
        digits: list[tuple[str, str]] = []
        leg = await AudioLeg.open(LOCALHOST, on_dtmf=lambda *digit: digits.append(digit))
        leg.attach(Played())
        try:
            stream = answered(leg, a, "PCMU")
            assert (stream.payload_type, stream.telephone_event_pt) == (0, 101)
            await leg.connect(stream)
            await a.talk(leg, 0, A_SOUND, 5)
            await a.press(leg, 96, "1")  # not negotiated yet
            await asyncio.sleep(0.1)
            dropped = endpoint_drops(leg)
            assert digits == [] and dropped > 0

            renumbered = dataclasses.replace(
                stream, payload_type=100, telephone_event_pt=96, local_telephone_event_pt=96
            )
            await leg.retarget(renumbered)
            a.take()
            await a.press(leg, 96, "7")
            await a.press(leg, 101, "8")  # no longer negotiated
            await until(lambda: bool(digits), "the renumbered key arrived")
            await leg.send_dtmf("5")
            await asyncio.sleep(0.05)

            assert digits == [("7", "rfc4733")]
            assert endpoint_drops(leg) > dropped, "the old number is refused"
            assert leg.rfc4733 and leg.jitter is not None
            sent = {p.payload_type for p in a.take()}
            assert sent == {100, 96}, "audio and our key under the new numbers"
        finally:
            await leg.close()
            a.sock.close()

    asyncio.run(scenario())


def test_another_clock_rate_gets_a_buffer_in_its_units_and_a_new_encoder() -> None:
    async def scenario() -> None:
        a = Callee()
        leg = await AudioLeg.open(LOCALHOST)
        played = Played()
        leg.attach(played)
        try:
            await leg.connect(answered(leg, a, "PCMU"))
            narrow = leg.jitter
            await a.talk(leg, 0, A_SOUND, 5)

            opus = answered(leg, a, "opus")
            assert (opus.payload_type, opus.clock_rate) == (111, 48000)
            await leg.retarget(opus)
            a.take()
            assert leg.jitter is not narrow, "a new buffer for the new clock"
            assert leg.jitter is not None and leg.jitter.clock_rate == 48000
            assert leg.endpoint.clock_rate == 48000, "RTCP reports count in the new units"
            await a.talk(leg, 111, B_SOUND, 15, step=960)
            await until(lambda: played.count(B_SOUND) >= 8, "the opus stream played")

            dues = [due for payload, _, due in played.items if payload == B_SOUND and due]
            steps = [later - earlier for earlier, later in itertools.pairwise(dues)]
            assert all(0.015 < step < 0.03 for step in steps), f"960 ticks are 20 ms: {steps}"
            sent = a.take()
            assert sent and {p.payload_type for p in sent} == {111}, "sent with the new codec"
            ticks = {(q.timestamp - p.timestamp) & 0xFFFFFFFF for p, q in itertools.pairwise(sent)}
            assert ticks == {960}, "20 ms at 48 kHz"
        finally:
            await leg.close()
            a.sock.close()

    asyncio.run(scenario())


def test_another_codec_plays_out_the_old_buffer_then_switches_the_pipeline() -> None:
    """PCMU from A, then PCMA from B (a re-INVITE, RFC 3264 §8.3): the PCMU packets still
    in the jitter buffer play out at the switch, the pipeline is told to decode PCMA after
    them and before B's first packet, and our audio goes to B in PCMA."""

    async def scenario() -> None:
        a, b = Callee(), Callee()
        leg = await AudioLeg.open(LOCALHOST)
        played = Played()
        try:
            await leg.connect(answered(leg, a, "PCMU"))
            leg.attach(played)
            await a.talk(leg, 0, A_SOUND, 7)
            for _ in range(3):  # a burst: the last one is due a buffer's depth from now
                a.send(leg, 0, A_SOUND)
            jitter = leg.jitter
            assert jitter is not None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 1.0
            while jitter.stats.received < 10 and loop.time() < deadline:
                await asyncio.sleep(0)  # take the burst in, and retarget at once
            waiting = 10 - played.count(A_SOUND)

            await leg.retarget(answered(leg, b, "PCMA"))
            assert waiting >= 1 and played.count(A_SOUND) == 10, "the buffer played out"
            assert played.codecs == [("PCMA", len(played.items))]
            await b.talk(leg, 8, B_SOUND, 10)
            await until(lambda: played.count(B_SOUND) >= 8, "B's audio played")

            after = [item[0] for item in played.items[played.codecs[0][1] :]]
            assert set(after) - {B_SOUND} <= {Lost.LOST}, "only PCMA after the switch"
            assert {p.payload_type for p in b.take()} == {8}, "our audio goes to B in PCMA"
        finally:
            await leg.close()
            a.sock.close()
            b.sock.close()

    asyncio.run(scenario())


def test_a_suspended_leg_neither_plays_nor_sends_until_it_is_pointed_again() -> None:
    """A stream declined mid-call (port 0, RFC 3264 §8.2): the leg keeps its port, takes
    nothing and sends nothing; a later retarget brings both back on the same port."""

    async def scenario() -> None:
        a = Callee()
        leg = await AudioLeg.open(LOCALHOST)
        played = Played()
        leg.attach(played)
        port = leg.port
        try:
            stream = answered(leg, a, "PCMU")
            await leg.connect(stream)
            await a.talk(leg, 0, A_SOUND, 5)
            leg.suspend()
            await asyncio.sleep(0.05)
            a.take()
            await a.talk(leg, 0, B_SOUND, 5)
            await asyncio.sleep(0.1)
            assert played.count(B_SOUND) == 0 and a.take() == [], "nothing either way"

            await leg.retarget(stream)
            await a.talk(leg, 0, B_SOUND, 10)
            await until(lambda: played.count(B_SOUND) >= 5, "played again")
            assert leg.port == port and a.take(), "sending again, from the same port"
        finally:
            await leg.close()
            a.sock.close()

    asyncio.run(scenario())


def endpoint_drops(leg: AudioLeg) -> int:
    """Packets of the accepted source dropped for their payload type."""
    return leg.endpoint.source.stats.rejected_payload_type
