"""SIP transports on 127.0.0.1: a message the handler fails on is logged and dropped, and the
read goes on; only a stream that cannot be framed, or a socket error, ends a connection."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from sip2rtmp.net.sip_transport import open_transport
from sip2rtmp.netaddr import Address
from sip2rtmp.sip.message import SipParseError

LOCALHOST = "127.0.0.1"
LOGGER = "sip2rtmp.net.sip_transport"


def options(n: int) -> bytes:
    return (
        f"OPTIONS sip:relay@{LOCALHOST} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP {LOCALHOST};branch=z9hG4bK-{n}\r\n"
        "From: <sip:peer@lab>;tag=p\r\nTo: <sip:relay@lab>\r\n"
        f"Call-ID: secret-call-{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


class Handler:
    """Fails on the messages it is told to, with the exception it is given."""

    def __init__(self, fail_on: set[int], error: Exception) -> None:
        self.fail_on = fail_on
        self.error = error
        self.received: list[bytes] = []
        self.errors: list[Exception] = []
        self.changed = asyncio.Event()

    def on_message(self, data: bytes, addr: Address) -> None:
        self.received.append(data)
        self.changed.set()
        if len(self.received) in self.fail_on:
            raise self.error

    def on_error(self, exc: Exception) -> None:
        self.errors.append(exc)
        self.changed.set()

    async def until(self, done: object) -> None:
        async def loop() -> None:
            while not done():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), 5.0)


async def _stream_peer(payload: bytes) -> tuple[asyncio.Server, Address]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        await reader.read()  # hold the connection open until the client closes it

    server = await asyncio.start_server(serve, LOCALHOST, 0)
    return server, server.sockets[0].getsockname()[:2]


@pytest.mark.parametrize(
    ("error", "level", "logged"),
    [
        (KeyError("branch"), logging.WARNING, "KeyError: 'branch'"),
        (SipParseError("bad Via"), logging.DEBUG, "bad Via"),
    ],
    ids=["bug", "typed"],
)
def test_stream_read_survives_a_handler_that_raises(
    error: Exception, level: int, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the first exception out of the handler ended the read task silently: every later
    message on the connection was lost and nobody was told."""

    async def main() -> None:
        server, addr = await _stream_peer(options(1) + options(2) + options(3))
        handler = Handler({1, 2}, error)
        transport = await open_transport("tcp", addr, handler.on_message, handler.on_error)
        await handler.until(lambda: len(handler.received) == 3)
        transport.close()
        server.close()
        assert handler.received == [options(1), options(2), options(3)]
        assert handler.errors == []

    caplog.set_level(logging.DEBUG, logger=LOGGER)
    asyncio.run(main())
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [r.levelno for r in records] == [level, level]
    assert logged in records[0].getMessage()
    assert all("secret-call" not in r.getMessage() for r in records)


def test_a_stream_that_cannot_be_framed_ends_the_connection() -> None:
    async def main() -> None:
        server, addr = await _stream_peer(b"X sip:a SIP/2.0\r\nl: -1\r\n\r\n" + options(1))
        handler = Handler(set(), RuntimeError())
        transport = await open_transport("tcp", addr, handler.on_message, handler.on_error)
        await handler.until(lambda: handler.errors)
        transport.close()
        server.close()
        assert handler.received == []
        [error] = handler.errors
        assert isinstance(error, SipParseError)

    asyncio.run(main())


def test_datagram_handler_failures_are_logged_by_us_and_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncio logged a handler's exception as an unhandled error with the whole traceback;
    now the transport logs one line and goes on."""

    async def main() -> None:
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind((LOCALHOST, 0))
        handler = Handler({1}, ValueError("Exceeds the limit (4300 digits)"))
        transport = await open_transport(
            "udp", peer.getsockname(), handler.on_message, handler.on_error
        )
        for n in (1, 2):
            peer.sendto(options(n), transport.local_addr)
        await handler.until(lambda: len(handler.received) == 2)
        transport.close()
        peer.close()
        assert handler.errors == []

    caplog.set_level(logging.DEBUG)
    asyncio.run(main())
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.name == LOGGER and "ValueError" in record.getMessage()
