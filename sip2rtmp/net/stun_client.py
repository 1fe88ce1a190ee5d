"""STUN binding transactions over UDP (RFC 5389 §7.2.1): what a NAT maps one of our sockets
to, asked from that very socket, since the mapping belongs to the socket.

`query` owns a socket while it asks. A socket that something else already reads (the RTP
endpoint drains its own) runs a `BindingTransaction` and hands it every STUN datagram.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable

from sip2rtmp.nat.stun import (
    StunError,
    binding_request,
    is_stun,
    new_transaction_id,
    parse_binding_response,
)
from sip2rtmp.netaddr import Address, format_address

__all__ = ["INITIAL_RTO", "BindingTransaction", "query", "resolve_server"]

log = logging.getLogger(__name__)

INITIAL_RTO = 0.5
"""RFC 5389 §7.2.1's initial retransmission timeout; it doubles after each request."""
MAX_REQUESTS = 7
"""Rc (§7.2.1): requests sent before the last wait."""
LAST_WAIT_FACTOR = 16
"""Rm (§7.2.1): the last request waits Rm × the initial RTO."""

_MAX_PER_READ = 64
"""Datagrams taken per wake-up: a flood to the port cannot hold the loop."""

Send = Callable[[bytes, Address], object]


class BindingTransaction:
    """One Binding request to `server` and the wait for its answer.

    `feed` takes any datagram the socket received; it keeps the one from the server that
    carries our transaction id and leaves every other for the caller.
    """

    def __init__(self, server: Address) -> None:
        self.server = server
        self.transaction_id = new_transaction_id()
        self._request = binding_request(self.transaction_id)
        self._answer: asyncio.Future[Address] = asyncio.get_running_loop().create_future()

    def feed(self, data: bytes, source: Address) -> bool:
        """Whether `data` was this transaction's answer (or error answer)."""
        if (
            self._answer.done()
            or not is_stun(data)
            or data[8:20] != self.transaction_id
            or not _same_address(source, self.server)
        ):
            return False
        try:
            self._answer.set_result(parse_binding_response(data, self.transaction_id))
        except StunError as error:
            self._answer.set_exception(error)
        return True

    async def run(self, send: Send, timeout: float) -> Address:
        """Send, and resend after 0.5, 1, 2 … s (§7.2.1) until answered or `timeout` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        wait = INITIAL_RTO
        send_error: OSError | None = None
        for attempt in range(1, MAX_REQUESTS + 1):
            try:
                send(self._request, self.server)
            except OSError as error:  # no route yet, a firewall's reject: the next try may pass
                send_error = error
            if attempt == MAX_REQUESTS:
                wait = LAST_WAIT_FACTOR * INITIAL_RTO
            remaining = max(deadline - loop.time(), 0.0)
            done, _ = await asyncio.wait({self._answer}, timeout=min(wait, remaining))
            if done:
                return self._answer.result()
            if remaining <= wait:  # that wait ran to the deadline
                break
            wait *= 2
        why = f" (send failed: {send_error})" if send_error is not None else ""
        raise StunError(f"no STUN answer from {format_address(self.server)} in {timeout:g} s{why}")


async def resolve_server(server: Address, family: int) -> Address:
    """`server` with its host as an IP literal of the socket's family (`--stun` may name a
    host); a name that does not resolve raises `StunError`."""
    host, port = server
    try:
        ipaddress.ip_address(host)
        return server
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
    except OSError as error:
        raise StunError(f"STUN server {format_address(server)}: {error}") from None
    if not infos:
        raise StunError(f"STUN server {format_address(server)} has no address")
    return str(infos[0][4][0]), port


async def query(sock: socket.socket, server: Address, *, timeout: float = 3.0) -> Address:
    """What `server` sees as the source of `sock` (a non-blocking UDP socket that nothing
    else reads meanwhile); `StunError` on no answer or an error answer."""
    loop = asyncio.get_running_loop()
    target = await resolve_server(server, sock.family)
    transaction = BindingTransaction(target)

    def readable() -> None:
        for _ in range(_MAX_PER_READ):
            try:
                data, source = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # ICMP errors of earlier sends, and the like
                log.debug("STUN socket error: %s", error)
                return
            transaction.feed(data, (str(source[0]), int(source[1])))

    loop.add_reader(sock.fileno(), readable)
    try:
        return await transaction.run(sock.sendto, timeout)
    finally:
        loop.remove_reader(sock.fileno())


def _same_address(a: Address, b: Address) -> bool:
    """Equal endpoints, however the host is spelled (IPv6 zeros, IPv4-mapped IPv6)."""
    if a[1] != b[1]:
        return False
    try:
        first, second = ipaddress.ip_address(a[0]), ipaddress.ip_address(b[0])
    except ValueError:
        return a[0] == b[0]
    return _unmapped(first) == _unmapped(second)


def _unmapped(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> object:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
