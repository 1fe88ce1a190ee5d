"""What the call's media tell the offer and the media timer, on 127.0.0.1 with real sockets:
the public ports STUN saw for each leg (a STUN server in the test that plays a NAT mapping
ports to other numbers), the fallback when it does not answer, and when the callee's last
audio packet arrived."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
from collections.abc import AsyncIterator, Iterator

import pytest

from sip2rtmp.config import CallSettings
from sip2rtmp.nat.policy import LegPorts, OfferAddress
from sip2rtmp.nat.stun import MAGIC_COOKIE, XOR_MAPPED_ADDRESS
from sip2rtmp.relay import media as relay_media
from sip2rtmp.relay.audio import AudioLeg
from sip2rtmp.relay.media import CallMedia, MediaListeners
from sip2rtmp.relay.options import MediaOptions
from tests.unit.net.test_rtp_endpoint import LOCALHOST
from tests.unit.relay.test_audio_leg import Callee, answered, until
from tests.unit.relay.test_core import settings

PUBLIC_HOST = "203.0.113.5"
PORT_SHIFT = 1000
"""The played NAT maps each local port to this many above it."""


def binding_success(request: bytes, source: tuple[str, int]) -> bytes:
    """A Binding success response (RFC 5389 §7.3.1) to `request` whose XOR-MAPPED-ADDRESS
    (§15.2) is `source` as the played NAT maps it."""
    mapped_port = source[1] + PORT_SHIFT
    address = int(ipaddress.IPv4Address(PUBLIC_HOST)) ^ MAGIC_COOKIE
    value = struct.pack("!BBHI", 0, 0x01, mapped_port ^ (MAGIC_COOKIE >> 16), address)
    attribute = struct.pack("!HH", XOR_MAPPED_ADDRESS, len(value)) + value
    header = struct.pack("!HHI", 0x0101, len(attribute), MAGIC_COOKIE) + request[8:20]
    return header + attribute


class StunServer(asyncio.DatagramProtocol):
    """Answers every Binding request, or none with `silent`; counts what it was asked."""

    def __init__(self, *, silent: bool = False) -> None:
        self.silent = silent
        self.asked: list[tuple[str, int]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = (str(addr[0]), int(addr[1]))
        self.asked.append(source)
        if not self.silent and self.transport is not None:
            self.transport.sendto(binding_success(data, source), addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


@contextlib.asynccontextmanager
async def stun_server(*, silent: bool = False) -> AsyncIterator[StunServer]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        lambda: StunServer(silent=silent), local_addr=(LOCALHOST, 0)
    )
    server.transport = transport
    try:
        yield server
    finally:
        transport.close()


def nobody() -> MediaListeners:
    return MediaListeners(lambda kind, remote: None, lambda: None, lambda digit, method: None)


@contextlib.asynccontextmanager
async def opened(call: CallSettings) -> AsyncIterator[CallMedia]:
    media = await CallMedia.open(LOCALHOST, call, MediaOptions(), nobody())
    try:
        yield media
    finally:
        await media.close()


@pytest.fixture
def quick_stun(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A STUN server that never answers is given up on in a fraction of a second."""
    monkeypatch.setattr(relay_media, "STUN_TIMEOUT", 0.3)
    yield


def test_each_leg_offers_the_ports_stun_saw_for_its_own_sockets() -> None:
    async def scenario() -> None:
        async with stun_server() as server:
            call = settings(stun=f"{LOCALHOST}:{server.port}")
            async with opened(call) as media:
                audio, video = media.ports
                assert video is not None
                offer = media.offer_address(LOCALHOST, received="198.51.100.4")
                asked = sorted(port for _, port in server.asked)
        assert offer == OfferAddress(
            PUBLIC_HOST, LegPorts(audio + PORT_SHIFT), LegPorts(video + PORT_SHIFT), "stun"
        )
        assert asked == sorted([audio, audio + 1, video, video + 1]), "RTP and RTCP of each leg"

    asyncio.run(scenario())


def test_a_stun_server_that_does_not_answer_leaves_the_offer_to_the_next_source(
    quick_stun: None, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> tuple[OfferAddress, OfferAddress, int]:
        async with stun_server(silent=True) as server:
            call = settings(stun=f"{LOCALHOST}:{server.port}", video=False)
            started = asyncio.get_running_loop().time()
            async with opened(call) as media:
                waited = asyncio.get_running_loop().time() - started
                assert waited < 2.0, f"the offer waited {waited:.1f} s for STUN"
                port = media.ports[0]
                return (
                    media.offer_address(LOCALHOST, received="198.51.100.4"),
                    media.offer_address(LOCALHOST, received=None),
                    port,
                )

    with caplog.at_level(logging.WARNING, logger="sip2rtmp.relay.media"):
        received, local, port = asyncio.run(scenario())
    assert received == OfferAddress("198.51.100.4", LegPorts(port), None, "received")
    assert local == OfferAddress(LOCALHOST, LegPorts(port), None, "local")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warnings if w.startswith(f"STUN from RTP port {port} failed")], warnings


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"public_address": "198.51.100.77"}, ("198.51.100.77", "configured")),
        ({"nat": "off"}, (LOCALHOST, "local")),
    ],
)
def test_a_configured_address_or_nat_off_decides_without_stun(
    changes: dict[str, str], expected: tuple[str, str]
) -> None:
    """`--public-address` wins over what the server saw, `--nat off` ignores it; with no
    `--stun` nobody is asked."""

    async def scenario() -> tuple[OfferAddress, int]:
        async with opened(settings(video=False, **changes)) as media:
            return media.offer_address(LOCALHOST, received="198.51.100.4"), media.ports[0]

    offer, port = asyncio.run(scenario())
    assert (offer.host, offer.source) == expected and offer.audio == LegPorts(port)


def test_the_last_audio_packet_the_leg_accepted_is_what_the_timer_counts_from() -> None:
    """`observe()` gives the arrival of the latest accepted packet; a stranger's packets do
    not move it (they are not the callee's media)."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        leg = await AudioLeg.open(LOCALHOST)
        callee, stranger = Callee(), Callee()
        try:
            assert leg.last_packet_at is None
            await leg.connect(answered(leg, callee, "PCMU"))
            await callee.talk(leg, 0, b"\xff" * 160, 10)
            await until(lambda: leg.last_packet_at is not None, "the callee's audio")
            await asyncio.sleep(0.1)
            heard = leg.last_packet_at
            assert heard is not None and loop.time() - 0.3 < heard <= loop.time()
            await stranger.talk(leg, 0, b"\x7f" * 160, 10)
            await asyncio.sleep(0.1)
            assert leg.last_packet_at == heard
        finally:
            await leg.close()
            for sock in (callee.sock, stranger.sock):
                sock.close()

    asyncio.run(scenario())


def test_observe_reports_the_audio_legs_last_packet() -> None:
    async def scenario() -> None:
        async with opened(settings(video=False)) as media:
            assert media.observe() == ([], None, None, None)
            media.audio.last_packet_at = 1234.5
            assert media.observe()[3] == 1234.5

    asyncio.run(scenario())
