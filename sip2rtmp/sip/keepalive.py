"""Keep-alives that hold the path to the server open through a NAT (RFC 5626 §4.4).

A NAT forgets a UDP mapping after 30 to 120 s without traffic, and a TCP one after longer;
once it has, requests from the far end (its BYE, a re-INVITE) no longer reach us, although
our own requests still get out. Registration refreshes come every few minutes, too rarely.
So while there is a binding or a call, every `keepalive` seconds: on TCP/TLS a CRLFCRLF
"ping" (RFC 5626 §4.4.1; the server answers CRLF, which the stream framer skips), on UDP an
OPTIONS to the server, which every SIP server answers and whose answer crosses the NAT too.
"""

from __future__ import annotations

from collections.abc import Callable

from sip2rtmp.sip.context import AgentContext
from sip2rtmp.sip.options import OptionsClient

PING = b"\r\n\r\n"
"""RFC 5626 §3.5.1: the double-CRLF keep-alive of connection-oriented transports."""


class KeepAlive:
    """One timer; sends only while `needed()` says there is something to keep open."""

    def __init__(
        self, context: AgentContext, options: OptionsClient, needed: Callable[[], bool]
    ) -> None:
        self._ctx = context
        self._options = options
        self._needed = needed
        self._next: float | None = None

    def start(self, now: float) -> None:
        """(Re)start the interval: the connection was just opened."""
        interval = self._ctx.config.keepalive
        self._next = None if interval is None else now + interval

    def get_timer(self) -> float | None:
        return self._next

    def handle_timer(self, now: float) -> None:
        if self._next is None or self._next > now:
            return
        self.start(now)
        if self._needed():
            self.ping(now)

    def ping(self, now: float) -> None:
        """One keep-alive now."""
        ctx = self._ctx
        if ctx.reliable:
            ctx.transmit(PING, ctx.server, logged=False)  # not a SIP message
        else:
            self._options.query(now, silent=True)
