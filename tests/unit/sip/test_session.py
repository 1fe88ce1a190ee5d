"""The asyncio shell on loopback, without the lab: unreachable servers fail as `Unreachable`."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import cast

import pytest

from sip2rtmp.net.sip_session import MessageLog, SipSession
from sip2rtmp.netaddr import Transport
from sip2rtmp.outcomes import Rejected, RunFailed, SipFailure, Unanswered, Unreachable
from sip2rtmp.sip.auth import Credentials
from sip2rtmp.sip.events import (
    Event,
    OptionsAnswered,
    Registered,
    RegistrationRetrying,
    Unregistered,
)
from sip2rtmp.sip.useragent import UserAgentConfig


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
    port = free_port(socket.SOCK_DGRAM)
    with pytest.raises(RunFailed) as failed:
        asyncio.run(register(config("udp", port)))
    assert time.monotonic() - started < 3
    assert failed.value.outcome == Unreachable(f"127.0.0.1:{port}", "Connection refused")


def test_tcp_connection_refused() -> None:
    port = free_port(socket.SOCK_STREAM)
    with pytest.raises(RunFailed) as failed:
        asyncio.run(register(config("tcp", port)))
    assert isinstance(failed.value.outcome, Unreachable)
    assert failed.value.outcome.target == f"127.0.0.1:{port}"
    assert failed.value.outcome.detail == f"Connect call failed ('127.0.0.1', {port})"


def test_unresolvable_domain() -> None:
    with pytest.raises(RunFailed) as failed:
        asyncio.run(register(config("udp", 5060, domain="no-such-host.invalid")))
    assert isinstance(failed.value.outcome, Unreachable)
    assert failed.value.outcome.target == "no-such-host.invalid:5060"
    assert failed.value.outcome.detail.startswith("cannot resolve: ")


class ScriptedRegistrar(asyncio.DatagramProtocol):
    """A UDP registrar that answers every request with the datagrams `answers` makes from the
    request's Via, From, To, Call-ID and CSeq lines."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        keep = [h for h in head[1:] if h.split(b":")[0] in (b"Via", b"From", b"To",
                                                            b"Call-ID", b"CSeq")]  # fmt: skip
        for datagram in self.answers(keep):
            self.transport.sendto(datagram, addr)

    def answers(self, keep: list[bytes]) -> list[bytes]:
        raise NotImplementedError


def register_through(
    registrar: type[ScriptedRegistrar], message_log: MessageLog | None = None
) -> int:
    """Register through a fresh `registrar` on loopback; the granted interval."""

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        server, _ = await loop.create_datagram_endpoint(registrar, local_addr=("127.0.0.1", 0))
        cfg = config("udp", server.get_extra_info("sockname")[1])
        try:
            async with SipSession(cfg, message_log=message_log) as sip:
                return await asyncio.wait_for(sip.register(), 5)
        finally:
            server.close()

    return asyncio.run(scenario())


class Registrar(ScriptedRegistrar):
    """Accepts anything."""

    def answers(self, keep: list[bytes]) -> list[bytes]:
        return [b"\r\n".join([b"SIP/2.0 200 OK", *keep, b"Expires: 120", b"", b""])]


def test_registration_through_a_scripted_udp_server() -> None:
    """A tiny registrar that accepts anything: the shell sends, times and delivers."""
    seen: list[str] = []
    assert register_through(Registrar, lambda d, a, m: seen.append(d)) == 120
    assert seen == ["sent", "received", "sent", "received"]  # REGISTER, 200, un-REGISTER, 200


class HostileRegistrar(ScriptedRegistrar):
    """Answers every REGISTER with a garbage datagram, then a 200 whose Expires no int() or
    float can hold."""

    def answers(self, keep: list[bytes]) -> list[bytes]:
        huge = b"Expires: " + b"9" * 4301
        return [
            b"\x00\xff Authorization: Digest response=secret",
            b"\r\n".join([b"SIP/2.0 200 OK", *keep, huge, b"", b""]),
        ]


def test_hostile_answers_are_logged_and_dropped_and_register_completes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="sip2rtmp.net.sip_session"):
        assert register_through(HostileRegistrar) == 600  # the huge Expires is ignored
    drops = [r.getMessage() for r in caplog.records if "dropped a SIP message" in r.getMessage()]
    assert drops and all("secret" not in message for message in drops)


class NonUtf8Challenger(ScriptedRegistrar):
    """Answers every REGISTER with a 401 whose realm is not UTF-8."""

    def answers(self, keep: list[bytes]) -> list[bytes]:
        challenge = b'WWW-Authenticate: Digest realm="\xff\xfe", nonce="n", qop="auth"'
        return [b"\r\n".join([b"SIP/2.0 401 Unauthorized", *keep, challenge, b"", b""])]


def test_a_challenge_that_is_not_utf8_ends_register_promptly() -> None:
    with pytest.raises(RunFailed) as failed:
        register_through(NonUtf8Challenger)
    assert failed.value.outcome == Rejected("REGISTER", 401, "Unauthorized", "127.0.0.1")


async def _serve(registrar: type[ScriptedRegistrar]) -> tuple[asyncio.DatagramTransport, int]:
    loop = asyncio.get_running_loop()
    server, _ = await loop.create_datagram_endpoint(registrar, local_addr=("127.0.0.1", 0))
    return server, int(server.get_extra_info("sockname")[1])


class CapableServer(ScriptedRegistrar):
    """Answers every request 200 with its capabilities and a 2 s registration."""

    def answers(self, keep: list[bytes]) -> list[bytes]:
        extra = [b"Allow: INVITE, OPTIONS", b"Supported: timer", b"Server: stub", b"Expires: 2"]
        return [b"\r\n".join([b"SIP/2.0 200 OK", *keep, *extra, b"", b""])]


class SilentServer(ScriptedRegistrar):
    def answers(self, keep: list[bytes]) -> list[bytes]:
        return []


def test_options_through_the_session() -> None:
    async def scenario() -> OptionsAnswered:
        server, port = await _serve(CapableServer)
        try:
            async with SipSession(config("udp", port)) as sip:
                return await asyncio.wait_for(sip.options(), 5)
        finally:
            server.close()

    answer = asyncio.run(scenario())
    assert answer == OptionsAnswered(200, "OK", ("INVITE", "OPTIONS"), ("timer",), "stub")


def test_options_unanswered_within_the_callers_timeout() -> None:
    async def scenario() -> None:
        server, port = await _serve(SilentServer)
        try:
            async with SipSession(config("udp", port)) as sip:
                await sip.options(timeout=0.3)
        finally:
            server.close()

    started = time.monotonic()
    with pytest.raises(RunFailed) as failed:
        asyncio.run(scenario())
    assert time.monotonic() - started < 2
    assert failed.value.outcome == Unanswered("OPTIONS", "127.0.0.1", 0.3)


class RefusedRefresh(ScriptedRegistrar):
    """Grants the first REGISTER for 2 s (a refresh due after 1 s) and refuses the rest."""

    registers = 0

    def answers(self, keep: list[bytes]) -> list[bytes]:
        if not any(line.startswith(b"CSeq:") and line.endswith(b"REGISTER") for line in keep):
            return []
        self.registers += 1
        if self.registers == 1:
            return [b"\r\n".join([b"SIP/2.0 200 OK", *keep, b"Expires: 2", b"", b""])]
        return [b"\r\n".join([b"SIP/2.0 403 Forbidden", *keep, b"", b""])]


def test_every_core_event_but_the_message_log_reaches_on_event() -> None:
    """Pushed in order after the session's own bookkeeping: a refresh refused while
    registered reaches the listener (it is retried), as `registration_error` records it; the
    binding still wanted is removed on the way out."""
    heard: list[tuple[Event, SipFailure | None]] = []
    logged: list[str] = []

    async def scenario() -> None:
        server, port = await _serve(RefusedRefresh)

        def listen(event: Event) -> None:
            heard.append((event, session.registration_error))

        try:
            session = SipSession(
                config("udp", port),
                message_log=lambda direction, addr, data: logged.append(direction),
                on_event=listen,
            )
            async with session:
                session.command(lambda ua, now: ua.register(now))
                for _ in range(50):
                    if len(heard) == 2:
                        break
                    await asyncio.sleep(0.1)
        finally:
            server.close()

    asyncio.run(scenario())
    refused = Rejected("REGISTER", 403, "Forbidden", "127.0.0.1")
    assert heard == [
        (Registered(2), None),
        (RegistrationRetrying(refused, 1.0), refused),
        (Unregistered(ok=False), refused),
    ]
    assert logged == ["sent", "received"] * 3
