"""STUN queries on 127.0.0.1 against a scripted server: retransmission (RFC 5389 §7.2.1), who
may answer, and the RTP endpoint's mapping of both its sockets while its drain runs."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import pytest

from sip2rtmp.nat.policy import MappedPorts
from sip2rtmp.nat.stun import StunError, binding_request, new_transaction_id
from sip2rtmp.net.rtp_endpoint import RtpEndpoint
from sip2rtmp.net.stun_client import query
from sip2rtmp.netaddr import Address
from sip2rtmp.rtp.packet import RtpPacket
from tests.unit.nat.test_stun import error_code, message, success

LOCALHOST = "127.0.0.1"

Answer = Callable[[bytes, Address], bytes | None]


def mirror(request: bytes, source: Address) -> bytes:
    """An honest server on loopback: the source as it is."""
    return success(*source, request[8:20])


class ScriptedServer(asyncio.DatagramProtocol):
    """A STUN server that answers each request as `answer` says (None: stays silent) and
    notes when each came."""

    def __init__(self, answer: Answer = mirror) -> None:
        self.answer = answer
        self.requests: list[tuple[float, bytes, Address]] = []
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def start(cls, answer: Answer = mirror) -> ScriptedServer:
        loop = asyncio.get_running_loop()
        transport, server = await loop.create_datagram_endpoint(
            lambda: cls(answer), local_addr=(LOCALHOST, 0)
        )
        server.transport = transport
        return server

    @property
    def address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        source = (str(addr[0]), int(addr[1]))
        self.requests.append((time.monotonic(), data, source))
        reply = self.answer(data, source)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, source)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((LOCALHOST, 0))
    return sock


def test_query_learns_the_socket_s_own_address_on_loopback() -> None:
    async def main() -> None:
        server = await ScriptedServer.start()
        with udp_socket() as sock:
            assert await query(sock, server.address) == sock.getsockname()
        server.close()
        [(_, request, _)] = server.requests
        assert request == binding_request(request[8:20])

    asyncio.run(main())


def test_unanswered_requests_are_resent_after_half_a_second_doubling() -> None:
    """RFC 5389 §7.2.1 with RTO 500 ms: requests at 0, 0.5 and 1.5 s, one transaction id,
    and the query gives up at its timeout."""

    async def main() -> None:
        server = await ScriptedServer.start(lambda request, source: None)
        with udp_socket() as sock:
            started = time.monotonic()
            with pytest.raises(StunError, match=r"no STUN answer from 127\.0\.0\.1:\d+ in 2 s"):
                await query(sock, server.address, timeout=2.0)
            elapsed = time.monotonic() - started
            await asyncio.sleep(0.2)  # a request sent at the deadline would arrive by now
        server.close()
        assert 2.0 <= elapsed < 2.5
        times = [at - started for at, _, _ in server.requests]
        assert len(times) == 3
        assert times[0] < 0.1
        assert times[1] - times[0] == pytest.approx(0.5, abs=0.1)
        assert times[2] - times[1] == pytest.approx(1.0, abs=0.1)
        assert len({request for _, request, _ in server.requests}) == 1

    asyncio.run(main())


def test_a_lost_answer_is_recovered_by_the_retransmission() -> None:
    async def main() -> None:
        def second_only(request: bytes, source: Address) -> bytes | None:
            return mirror(request, source) if len(server.requests) >= 2 else None

        server = await ScriptedServer.start(second_only)
        with udp_socket() as sock:
            started = time.monotonic()
            assert await query(sock, server.address) == sock.getsockname()
            assert 0.45 < time.monotonic() - started < 1.0
        server.close()
        assert len(server.requests) == 2

    asyncio.run(main())


def test_an_error_answer_ends_the_query_at_once() -> None:
    async def main() -> None:
        def refuse(request: bytes, source: Address) -> bytes:
            return message(request[8:20], error_code(403, b"Forbidden"), kind=0x0111)

        server = await ScriptedServer.start(refuse)
        with udp_socket() as sock:
            started = time.monotonic()
            with pytest.raises(StunError, match=r"^STUN error 403 Forbidden$"):
                await query(sock, server.address)
            assert time.monotonic() - started < 0.4
        server.close()

    asyncio.run(main())


def test_only_the_server_s_answer_to_our_transaction_counts() -> None:
    """Before the true answer: a forged one from another port with our id, and the server's
    answer to some other transaction. Both are ignored."""

    async def main() -> None:
        stranger = udp_socket()

        def forged_first(request: bytes, source: Address) -> bytes:
            tid = request[8:20]
            stranger.sendto(success("192.0.2.66", 666, tid), source)
            assert server.transport is not None
            server.transport.sendto(success("192.0.2.77", 777, new_transaction_id()), source)
            return mirror(request, source)

        server = await ScriptedServer.start(forged_first)
        with udp_socket() as sock:
            assert await query(sock, server.address) == sock.getsockname()
        server.close()
        stranger.close()

    asyncio.run(main())


def test_a_host_name_is_resolved_and_a_bad_one_is_a_stun_error() -> None:
    async def main() -> None:
        server = await ScriptedServer.start()
        with udp_socket() as sock:
            assert await query(sock, ("localhost", server.address[1])) == sock.getsockname()
            with pytest.raises(StunError, match=r"nonexistent\.invalid"):
                await query(sock, ("nonexistent.invalid", 3478), timeout=1.0)
        server.close()

    asyncio.run(main())


async def open_endpoint(received: list[RtpPacket]) -> RtpEndpoint:
    return await RtpEndpoint.open(
        LOCALHOST, on_rtp=lambda packet, _: received.append(packet), clock_rate=8000
    )


def test_endpoint_maps_each_socket_through_the_drain() -> None:
    """A NAT that moves ports: each socket gets its own answer, while the endpoint's grid
    drain (not the query) reads the sockets, and no answer is counted as malformed."""

    async def main() -> None:
        def moved(request: bytes, source: Address) -> bytes:
            return success("203.0.113.9", source[1] + 1000, request[8:20])

        server = await ScriptedServer.start(moved)
        received: list[RtpPacket] = []
        endpoint = await open_endpoint(received)
        mapped = await endpoint.discover_mapping(server.address)
        port = endpoint.rtp_port
        assert mapped == MappedPorts(("203.0.113.9", port + 1000), ("203.0.113.9", port + 1001))
        assert sorted(source for _, _, source in server.requests) == [
            (LOCALHOST, port),
            (LOCALHOST, port + 1),
        ]
        assert endpoint.source.stats.malformed == 0
        await endpoint.close()
        server.close()

    asyncio.run(main())


def test_stun_from_a_stranger_changes_nothing_but_the_malformed_count() -> None:
    """Unsolicited answers, requests and answers forged with another id, on both ports,
    before and after the far end is known: counted, never delivered, never latched."""

    async def main() -> None:
        received: list[RtpPacket] = []
        endpoint = await open_endpoint(received)
        stranger = udp_socket()
        junk = [
            success("192.0.2.66", 666, new_transaction_id()),
            binding_request(new_transaction_id()),
            message(new_transaction_id(), error_code(500, b"x"), kind=0x0111),
        ]
        ports = (endpoint.rtp_port, endpoint.rtcp_port)
        for data in junk:
            for port in ports:
                stranger.sendto(data, (LOCALHOST, port))
        await asyncio.sleep(0.15)
        endpoint.set_remote((LOCALHOST, 9), (LOCALHOST, 10))
        for data in junk:
            stranger.sendto(data, (LOCALHOST, endpoint.rtp_port))
        await asyncio.sleep(0.15)
        stats = endpoint.source.stats
        assert stats.malformed == 3 * len(junk)
        assert stats.rejected_source == stats.rejected_ssrc == 0
        assert received == [] and endpoint.receive_stats == {}
        assert endpoint.remote_rtp == (LOCALHOST, 9)
        stranger.close()
        await endpoint.close()

    asyncio.run(main())


def test_endpoint_mapping_fails_when_either_socket_gets_no_answer() -> None:
    async def main() -> None:
        def rtp_only(request: bytes, source: Address) -> bytes | None:
            return mirror(request, source) if source[1] % 2 == 0 else None

        server = await ScriptedServer.start(rtp_only)
        received: list[RtpPacket] = []
        endpoint = await open_endpoint(received)
        started = time.monotonic()
        with pytest.raises(StunError, match="no STUN answer"):
            await endpoint.discover_mapping(server.address, timeout=0.8)
        assert 0.8 <= time.monotonic() - started < 1.2
        # the RTCP socket's request was resent; the RTP one, answered, was not
        rtcp = [source for _, _, source in server.requests if source[1] == endpoint.rtcp_port]
        assert len(rtcp) == 2 and len(server.requests) == 3
        await endpoint.close()
        server.close()

    asyncio.run(main())
