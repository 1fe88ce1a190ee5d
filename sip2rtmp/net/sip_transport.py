"""Sockets for SIP: UDP, TCP and TLS to one server, delivering whole messages (RFC 3261 §18).

UDP uses a connected socket: the kernel picks the source address from the route to the server
(what we put in Via and Contact) and reports ICMP port-unreachable as an error instead of
silence. TCP and TLS are asyncio streams cut into messages by `StreamFramer`; TLS verifies the
server certificate unless told which CA file to trust instead of the system store.

A message the handler fails on is logged and dropped, never allowed to end the read: only a
stream that cannot be framed any more, or a socket error, ends a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

from sip2rtmp.netaddr import Address, Transport
from sip2rtmp.sip.message import SipParseError, StreamFramer

OnMessage = Callable[[bytes, Address], None]
OnError = Callable[[Exception], None]

READ_SIZE = 65536

log = logging.getLogger(__name__)


def _deliver(on_message: OnMessage, data: bytes, addr: Address) -> None:
    """Hand one message to the handler; whatever it raises is logged (the kind and the reason,
    never the message, which may hold credentials) and the message dropped."""
    try:
        on_message(data, addr)
    except SipParseError as exc:
        log.debug("dropped a SIP message from %s:%s: %s", *addr, exc)
    except Exception as exc:
        log.warning(
            "dropped a SIP message from %s:%s: %s: %s",
            *addr,
            type(exc).__name__,
            exc,
            exc_info=True,
        )


class SipTransport:
    """What the session needs from any transport: send, where we are, close."""

    def __init__(self, local_addr: Address, remote_addr: Address) -> None:
        self.local_addr = local_addr
        self.remote_addr = remote_addr

    def send(self, data: bytes, addr: Address) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def wait_closed(self) -> None:
        """Until the socket is really closed (asyncio closes it a loop turn after `close`),
        so that its local port can be bound again."""


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_message: OnMessage, on_error: OnError) -> None:
        self._on_message = on_message
        self._on_error = on_error
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        _deliver(self._on_message, data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        self._on_error(exc)


class UdpTransport(SipTransport):
    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        protocol: _UdpProtocol,
        local: Address,
        remote: Address,
    ) -> None:
        super().__init__(local, remote)
        self._transport = transport
        self._protocol = protocol

    def send(self, data: bytes, addr: Address) -> None:
        # The socket is connected to the server; `addr` is always that server.
        self._transport.sendto(data)

    def close(self) -> None:
        self._transport.close()

    async def wait_closed(self) -> None:
        await self._protocol.closed


class StreamTransport(SipTransport):
    """TCP or TLS: one connection, read by a task that frames messages."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_message: OnMessage,
        on_error: OnError,
    ) -> None:
        local = writer.get_extra_info("sockname")
        remote = writer.get_extra_info("peername")
        super().__init__((local[0], local[1]), (remote[0], remote[1]))
        self._writer = writer
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(
            self._read(reader, on_message, on_error)
        )

    async def _read(
        self, reader: asyncio.StreamReader, on_message: OnMessage, on_error: OnError
    ) -> None:
        framer = StreamFramer()
        try:
            while data := await reader.read(READ_SIZE):
                for message in framer.feed(data):
                    _deliver(on_message, message, self.remote_addr)
            error: Exception = ConnectionResetError("the server closed the connection")
        except (OSError, SipParseError) as exc:
            error = exc
        if not self._closing:
            on_error(error)

    def send(self, data: bytes, addr: Address) -> None:
        if not self._writer.is_closing():
            self._writer.write(data)

    def close(self) -> None:
        self._closing = True
        self._task.cancel()
        self._writer.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Certificate and host name verified; `ca_file` replaces the system trust store."""
    return ssl.create_default_context(cafile=ca_file)


async def open_transport(
    kind: Transport,
    remote: Address,
    on_message: OnMessage,
    on_error: OnError,
    *,
    local_port: int = 0,
    server_hostname: str | None = None,
    tls_ca_file: str | None = None,
    connect_timeout: float = 10.0,
) -> SipTransport:
    """Open a transport to `remote`; OSError (refused, unreachable) propagates."""
    loop = asyncio.get_running_loop()
    local_bind = ("0.0.0.0" if ":" not in remote[0] else "::", local_port)
    if kind == "udp":
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(on_message, on_error),
            remote_addr=remote,
            local_addr=local_bind if local_port else None,
        )
        local = transport.get_extra_info("sockname")
        return UdpTransport(transport, protocol, (local[0], local[1]), remote)
    context = tls_context(tls_ca_file) if kind == "tls" else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            remote[0],
            remote[1],
            ssl=context,
            server_hostname=(server_hostname or remote[0]) if context else None,
            local_addr=local_bind if local_port else None,
        ),
        connect_timeout,
    )
    return StreamTransport(reader, writer, on_message, on_error)
