"""The asyncio shell on loopback, without the lab: unreachable servers become SipUnreachable."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import cast

import pytest

from sip2rtmp.errors import AuthenticationFailed, SipUnreachable
from sip2rtmp.net.sip_session import SipSession
from sip2rtmp.sip.auth import Credentials
from sip2rtmp.sip.useragent import Transport, UserAgentConfig


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def config(transport: Transport, port: int, domain: str = "example.invalid") -> UserAgentConfig:
    return UserAgentConfig(
        user="relay",
        domain=domain,
        credentials=Credentials("relay", "pw"),
        transport=transport,
        outbound_proxy="127.0.0.1" if domain == "example.invalid" else None,
        port=port,
        local_port=0,
    )


async def register(cfg: UserAgentConfig) -> None:
    async with SipSession(cfg) as sip:
        await sip.register()


def test_udp_port_unreachable_fails_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(SipUnreachable, match=r"127\.0\.0\.1"):
        asyncio.run(register(config("udp", free_port(socket.SOCK_DGRAM))))
    assert time.monotonic() - started < 3


def test_tcp_connection_refused() -> None:
    with pytest.raises(SipUnreachable, match="unreachable"):
        asyncio.run(register(config("tcp", free_port(socket.SOCK_STREAM))))


def test_unresolvable_domain() -> None:
    with pytest.raises(SipUnreachable, match="cannot resolve"):
        asyncio.run(register(config("udp", 5060, domain="no-such-host.invalid")))


def test_registration_through_a_scripted_udp_server() -> None:
    """A tiny registrar that accepts anything: the shell sends, times and delivers."""

    class Registrar(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.DatagramTransport, transport)

        def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
            head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            keep = [h for h in head[1:] if h.split(b":")[0] in (b"Via", b"From", b"To",
                                                                b"Call-ID", b"CSeq")]  # fmt: skip
            reply = b"\r\n".join([b"SIP/2.0 200 OK", *keep, b"Expires: 120", b"", b""])
            self.transport.sendto(reply, addr)

    async def scenario() -> tuple[int, list[str]]:
        loop = asyncio.get_running_loop()
        server, _ = await loop.create_datagram_endpoint(Registrar, local_addr=("127.0.0.1", 0))
        seen: list[str] = []
        cfg = config("udp", server.get_extra_info("sockname")[1])
        try:
            async with SipSession(cfg, message_log=lambda d, a, m: seen.append(d)) as sip:
                return await sip.register(), seen
        finally:
            server.close()

    expires, seen = asyncio.run(scenario())
    assert expires == 120
    assert seen == ["sent", "received", "sent", "received"]  # REGISTER, 200, un-REGISTER, 200


class HostileRegistrar(asyncio.DatagramProtocol):
    """Answers every REGISTER with a garbage datagram, then a 200 whose Expires no int() or
    float can hold."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        keep = [h for h in head[1:] if h.split(b":")[0] in (b"Via", b"From", b"To",
                                                            b"Call-ID", b"CSeq")]  # fmt: skip
        self.transport.sendto(b"\x00\xff Authorization: Digest response=secret", addr)
        huge = b"Expires: " + b"9" * 4301
        self.transport.sendto(b"\r\n".join([b"SIP/2.0 200 OK", *keep, huge, b"", b""]), addr)


def test_hostile_answers_are_logged_and_dropped_and_register_completes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        server, _ = await loop.create_datagram_endpoint(
            HostileRegistrar, local_addr=("127.0.0.1", 0)
        )
        cfg = config("udp", server.get_extra_info("sockname")[1])
        try:
            async with SipSession(cfg) as sip:
                return await asyncio.wait_for(sip.register(), 5)
        finally:
            server.close()

    with caplog.at_level(logging.DEBUG, logger="sip2rtmp.net.sip_session"):
        assert asyncio.run(scenario()) == 600  # the huge Expires is ignored
    drops = [r.getMessage() for r in caplog.records if "dropped a SIP message" in r.getMessage()]
    assert drops and all("secret" not in message for message in drops)


class NonUtf8Challenger(asyncio.DatagramProtocol):
    """Answers every REGISTER with a 401 whose realm is not UTF-8."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        keep = [h for h in head[1:] if h.split(b":")[0] in (b"Via", b"From", b"To",
                                                            b"Call-ID", b"CSeq")]  # fmt: skip
        challenge = b'WWW-Authenticate: Digest realm="\xff\xfe", nonce="n", qop="auth"'
        reply = b"\r\n".join([b"SIP/2.0 401 Unauthorized", *keep, challenge, b"", b""])
        self.transport.sendto(reply, addr)


def test_a_challenge_that_is_not_utf8_ends_register_promptly() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        server, _ = await loop.create_datagram_endpoint(
            NonUtf8Challenger, local_addr=("127.0.0.1", 0)
        )
        cfg = config("udp", server.get_extra_info("sockname")[1])
        try:
            async with SipSession(cfg) as sip:
                await asyncio.wait_for(sip.register(), 5)
        finally:
            server.close()

    with pytest.raises(AuthenticationFailed):
        asyncio.run(scenario())
