"""docs/security.md on the sockets, with real sockets on loopback: the SIP UDP socket takes
datagrams from its server only, a drain reads at most 256 datagrams, and an accepted RTP
source and each change of it are logged at info level."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest

from sip2rtmp.net import rtp_endpoint
from sip2rtmp.net.sip_transport import open_transport
from tests.unit.net.test_rtp_endpoint import LOCALHOST, pair, stream

OPTIONS = (
    b"OPTIONS sip:relay@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKd\r\n"
    b"From: <sip:s@127.0.0.1>;tag=1\r\nTo: <sip:relay@127.0.0.1>\r\nCall-ID: d\r\n"
    b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCALHOST, 0))
    return sock


def test_the_sip_udp_socket_takes_datagrams_from_its_server_only() -> None:
    """security.md: the socket is connected to the SIP server; the kernel drops datagrams
    from any other address, even another port of the server's host."""

    async def main() -> list[tuple[str, int]]:
        server, intruder = _udp(), _udp()
        received: list[tuple[str, int]] = []
        transport = await open_transport(
            "udp",
            server.getsockname(),
            lambda message, addr: received.append(addr),
            lambda error: None,
        )
        try:
            local = transport.local_addr
            target = (LOCALHOST, local[1])
            for _ in range(3):
                intruder.sendto(OPTIONS, target)
            server.sendto(OPTIONS, target)
            for _ in range(3):
                intruder.sendto(OPTIONS, target)
            server.sendto(OPTIONS, target)
            deadline = time.monotonic() + 2
            while len(received) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # time for a datagram that should not come
        finally:
            transport.close()
            server.close()
            intruder.close()
        return received

    received = asyncio.run(main())
    assert len(received) == 2
    assert {addr[1] for addr in received} == {received[0][1]}


def test_a_drain_reads_at_most_256_datagrams() -> None:
    """security.md: 256 datagrams per socket per tick; the rest wait in the kernel."""
    receiver, sender = _udp(), _udp()
    receiver.setblocking(False)
    force = getattr(socket, "SO_RCVBUFFORCE", 33)
    receiver.setsockopt(socket.SOL_SOCKET, force, 4 * 1024 * 1024)
    try:
        for index in range(300):
            sender.sendto(index.to_bytes(2, "big"), receiver.getsockname())
        taken: list[int] = []

        def handle(data: bytes, addr: tuple[str, int], arrival: float) -> None:
            taken.append(int.from_bytes(data, "big"))

        rtp_endpoint._drain(receiver, handle, 0.0)
        assert taken == list(range(256))
        rtp_endpoint._drain(receiver, handle, 0.0)
        assert taken == list(range(300))
    finally:
        receiver.close()
        sender.close()


def test_an_accepted_source_and_a_change_are_logged_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """security.md: a log line at info level names each accepted source and each change."""

    async def main() -> tuple[int, int, int, int]:
        a, _, b, _ = await pair()
        c, _, _, _ = await pair()
        b.set_remote((LOCALHOST, a.rtp_port), (LOCALHOST, a.rtcp_port), accept_payload_types={0})
        for sender in (a, c):
            sender.set_remote((LOCALHOST, b.rtp_port), (LOCALHOST, b.rtcp_port))
        await stream(a, 3)
        await asyncio.sleep(1.1)  # the locked source falls silent for SOURCE_SILENCE_S
        await stream(c, 8)
        await asyncio.sleep(0.1)
        for endpoint in (a, b, c):
            await endpoint.close()
        return a.rtp_port, a.ssrc, c.rtp_port, c.ssrc

    with caplog.at_level(logging.INFO, logger=rtp_endpoint.log.name):
        a_port, a_ssrc, c_port, c_ssrc = asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    first = f"RTP source {LOCALHOST}:{a_port}, SSRC {a_ssrc:08x}"
    change = (
        f"RTP source changed from {LOCALHOST}:{a_port}, SSRC {a_ssrc:08x}"
        f" to {LOCALHOST}:{c_port}, SSRC {c_ssrc:08x}"
    )
    assert [line for line in lines if line.startswith(first)], lines
    assert [line for line in lines if line.startswith(change)], lines
