"""STUN against a real server: Debian's coturn on loopback, where every mapping is the
socket's own address."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from sip2rtmp.nat.policy import MappedPorts
from sip2rtmp.nat.stun import StunError
from sip2rtmp.net.rtp_endpoint import RtpEndpoint
from sip2rtmp.net.stun_client import query
from tests.support import coturn

pytestmark = pytest.mark.lab

LOCALHOST = "127.0.0.1"


@pytest.fixture(scope="module")
def stun_server() -> Iterator[coturn.Coturn]:
    try:
        server = coturn.start(LOCALHOST, coturn.free_stun_port(LOCALHOST))
    except coturn.CoturnError as exc:
        pytest.fail(f"no STUN server: {exc}", pytrace=False)
    yield server
    server.stop()


def test_rtp_endpoint_learns_its_own_ports_on_loopback(stun_server: coturn.Coturn) -> None:
    async def main() -> tuple[MappedPorts, int]:
        endpoint = await RtpEndpoint.open(LOCALHOST, on_rtp=lambda *_: None, clock_rate=8000)
        try:
            return await endpoint.discover_mapping(stun_server.address), endpoint.rtp_port
        finally:
            await endpoint.close()

    mapped, port = asyncio.run(main())
    assert mapped == MappedPorts((LOCALHOST, port), (LOCALHOST, port + 1))


def test_query_from_a_plain_socket(stun_server: coturn.Coturn) -> None:
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.bind((LOCALHOST, 0))
            assert await query(sock, stun_server.address) == sock.getsockname()

    asyncio.run(main())


def test_no_server_fails_within_the_timeout() -> None:
    async def main() -> None:
        silent = (LOCALHOST, coturn.free_udp_port(LOCALHOST))
        endpoint = await RtpEndpoint.open(LOCALHOST, on_rtp=lambda *_: None, clock_rate=8000)
        started = time.monotonic()
        try:
            with pytest.raises(StunError, match=r"no STUN answer from 127\.0\.0\.1:\d+ in 1\.5 s"):
                await endpoint.discover_mapping(silent, timeout=1.5)
        finally:
            await endpoint.close()
        assert 1.5 <= time.monotonic() - started < 2.0

    asyncio.run(main())
