"""A sans-I/O SIP user agent: registration, one outgoing call and OPTIONS (RFC 3261, 3581, 4028).

The owner feeds it bytes and time and drains bytes and events, the shape of aioquic's
QuicConnection: `receive_data`, `data_to_send`, `get_timer`, `handle_timer`, `next_event`,
plus commands (`register`, `invite`, `bye`, `options`...), and `connection_made` /
`connection_lost` from the transport. It never touches a socket, a clock or DNS: every message
goes to one server target, which is outbound-proxy routing (RFC 3261 §8.1.2) and also what a
registrar/proxy pair at the SIP domain expects; the shell opens a transport to whichever
target the data is addressed to. The targets come from RFC 3263 server location, in order: a
request that a target leaves unanswered, fails to carry or answers 503 goes on to the next.

`UserAgent` is the facade over three state machines, each with its own timers:
`Registration` (sip/registration.py), `InviteUsage` (sip/invite.py) and `OptionsClient`
(sip/options.py). They share one `AgentContext` (the client transactions, the send and event
queues, our Via and Contact). The facade itself keeps the server transactions and routes what
arrives: responses to the transaction that sent the request, requests in our dialog to the
INVITE usage, requests outside any dialog answered here (§8.2).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

from sip2rtmp.netaddr import Address
from sip2rtmp.outcomes import SipFailure, Unreachable
from sip2rtmp.sip.context import (
    ALLOW,
    MAX_CHALLENGES,
    MAX_REFRESH_DELAY,
    AgentContext,
    UserAgentConfig,
    check_echoable,
)
from sip2rtmp.sip.events import ConnectionRestored, Event, MessageDropped, MessageLogged
from sip2rtmp.sip.invite import MAX_FORKED_ANSWERS, MAX_KEPT_ACKS, InviteUsage
from sip2rtmp.sip.keepalive import KeepAlive
from sip2rtmp.sip.message import Request, Response, SipParseError, parse_message
from sip2rtmp.sip.options import OptionsClient
from sip2rtmp.sip.registration import Registration
from sip2rtmp.sip.transaction import ServerTransaction, State

MAX_SERVER_TRANSACTIONS = 64
"""Server transactions kept. Each request is answered at once, so a transaction only absorbs
retransmissions (§17.2); when a flood of new branches fills the table the oldest is forgotten,
which costs at worst answering one late retransmission again."""
MAX_RECONNECT_DELAY = 30.0
"""Longest wait between attempts to re-open a dropped TCP/TLS connection."""

__all__ = [
    "MAX_CHALLENGES",
    "MAX_FORKED_ANSWERS",
    "MAX_KEPT_ACKS",
    "MAX_REFRESH_DELAY",
    "MAX_SERVER_TRANSACTIONS",
    "UserAgent",
    "UserAgentConfig",
]
"""The limits docs/security.md names are read here, wherever each part defines them."""


class UserAgent:
    """Registration plus at most one call, driven by `now` and bytes (see module docstring)."""

    def __init__(
        self,
        config: UserAgentConfig,
        servers: Sequence[Address],
        *,
        token_factory: Callable[[], str] | None = None,
    ) -> None:
        """`servers`: every target RFC 3263 server location found, in the order to try."""
        token = token_factory or (lambda: secrets.token_hex(8))
        self._ctx = AgentContext(config, servers, token)
        self._registration = Registration(self._ctx)
        self._invite = InviteUsage(self._ctx)
        self._options = OptionsClient(self._ctx)
        self._keepalive = KeepAlive(self._ctx, self._options, self._needs_flow)
        self._servers: dict[tuple[str, str], ServerTransaction] = {}
        self._connection_down = False
        self._reconnect_wait = 0.0
        """Delay before the next attempt to re-open a dropped connection: at once, then 1 s
        doubling up to MAX_RECONNECT_DELAY."""
        self._reconnect_at: float | None = None

    # ---- aioquic-shaped interface -----------------------------------------------------

    def receive_data(self, data: bytes, addr: Address, now: float) -> None:
        """One datagram, or one framed message from a stream, received from `addr`.

        Never raises: a message that cannot be handled is reported as `MessageDropped`. The
        guard is for headers parsed on access (Via, CSeq, From, To), which the parser has
        already checked once.
        """
        self._ctx.events.append(MessageLogged("received", addr, data))
        try:
            message = parse_message(data)
            check_echoable(message)
            if isinstance(message, Response):
                self._receive_response(message, now)
            else:
                self._receive_request(message, addr, now)
        except SipParseError as exc:
            self._ctx.events.append(MessageDropped(addr, str(exc)))
        self._collect()

    def data_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Everything queued since the last call; `now` keeps aioquic's signature."""
        del now
        return self._ctx.take_outgoing()

    def get_timer(self) -> float | None:
        """When `handle_timer` must next be called, or None when nothing is pending."""
        deadlines = [self._ctx.client_timer(), self._registration.get_timer()]
        deadlines += [t.get_timer() for t in self._servers.values()]
        deadlines += [self._invite.get_timer(), self._keepalive.get_timer(), self._reconnect_at]
        return min((d for d in deadlines if d is not None), default=None)

    def handle_timer(self, now: float) -> None:
        self._ctx.handle_client_timers(now)
        for server in list(self._servers.values()):
            server.handle_timer(now)
            if server.timed_out and server.method == "INVITE" and server.status < 300:
                server.timed_out = False
                self._invite.no_ack(server.request, now)
        self._registration.handle_timer(now)
        self._invite.handle_timer(now)
        self._keepalive.handle_timer(now)
        if self._reconnect_at is not None and self._reconnect_at <= now:
            self._reconnect_at = None
            self._reopen(now)
        self._collect()

    def connection_made(self, now: float, local: Address) -> None:
        """The shell opened the transport to the current target from `local` (at the start,
        after a failover, or again after it dropped)."""
        ctx = self._ctx
        ctx.connection_made(local)
        self._keepalive.start(now)
        if self._connection_down:
            self._connection_down = False
            self._reconnect_wait = 0.0
            self._reconnect_at = None
            ctx.events.append(ConnectionRestored(ctx.server))
        self._collect()

    def connection_lost(self, now: float, detail: str) -> None:
        """The transport failed (ICMP unreachable; a refused, reset or closed connection).

        A request that has had no answer yet goes on to the next server target when there is
        one (RFC 3263 §4.3). Otherwise what waits for an answer fails now rather than after
        64*T1, as a transport error is final for a client transaction (RFC 3261 §8.1.3.1,
        §17.1.4). Over TCP or TLS the connection is gone with its transactions, but not the
        call or the registration: the connection is opened again (the registration refreshed
        over it, RFC 5626 §4.4.1), retried with a doubling delay while it fails. Over UDP an
        ICMP error may pass, so the call and its transactions go on.
        """
        ctx = self._ctx
        if ctx.connection_failed(now, detail):
            self._collect()
            return
        outcome = Unreachable(ctx.server_label, detail)
        if ctx.reliable:
            ctx.clients.clear()
        self._registration.connection_lost(outcome, now)
        self._options.connection_lost(outcome)
        self._invite.connection_lost(outcome)
        if ctx.reliable and self._needs_flow():
            self._connection_down = True
            self._reconnect_at = now + self._reconnect_wait
            self._reconnect_wait = min(max(self._reconnect_wait * 2, 1.0), MAX_RECONNECT_DELAY)
        self._collect()

    def _needs_flow(self) -> bool:
        """Whether anything needs the path to the server kept open: a binding or a call."""
        return self._registration.registered or self._invite.call is not None

    def _reopen(self, now: float) -> None:
        """Make the shell open the connection again: a registration refresh when there is a
        binding (the registrar learns the new flow), else a CRLF keep-alive."""
        if not self._needs_flow():
            return
        if not self._registration.refresh_now(now):
            self._keepalive.ping(now)

    def next_event(self) -> Event | None:
        events = self._ctx.events
        return events.popleft() if events else None

    # ---- state the shell may look at ----------------------------------------------------

    @property
    def registered(self) -> bool:
        return self._registration.registered

    @property
    def in_call(self) -> bool:
        return self._invite.call is not None

    @property
    def server(self) -> Address:
        """The server target requests go to now."""
        return self._ctx.server

    @property
    def public_address(self) -> Address | None:
        """Our address as the server sees it (Via received/rport, or configured), when it
        differs from the socket's own."""
        return self._ctx.public_address

    # ---- commands -------------------------------------------------------------------------

    def register(self, now: float) -> None:
        """REGISTER our Contact (RFC 3261 §10) and keep it refreshed."""
        self._registration.register(now)
        self._collect()

    def unregister(self, now: float) -> None:
        """Remove our binding with Expires: 0 (§10.2.2); reports `Unregistered`."""
        self._registration.unregister(now)
        self._collect()

    def invite(
        self, now: float, target_uri: str, sdp: bytes, ring_timeout: float | None = None
    ) -> None:
        """Call `target_uri` (a SIP URI, or a user at our domain) offering `sdp`."""
        self._invite.invite(now, target_uri, sdp, ring_timeout)
        self._collect()

    def cancel(self, now: float, outcome: SipFailure | None = None) -> None:
        """Abandon the call attempt (§9.1); it ends with `outcome`, by default the 487."""
        self._invite.cancel(now, outcome)
        self._collect()

    def bye(self, now: float) -> None:
        """Hang up: BYE when the call is up, CANCEL while it is still ringing."""
        self._invite.bye(now)
        self._collect()

    def send_info(self, now: float, content_type: str, body: bytes) -> None:
        """INFO in the dialog; the answer comes as `InfoAnswered`."""
        self._invite.send_info(now, content_type, body)
        self._collect()

    def options(self, now: float, target_uri: str | None = None) -> None:
        """OPTIONS outside any dialog (§11), by default to our domain; the answer comes as
        `OptionsAnswered`, a timeout as `OptionsFailed`."""
        self._options.query(now, target_uri)
        self._collect()

    # ---- routing what arrives -------------------------------------------------------------

    def _receive_response(self, response: Response, now: float) -> None:
        try:
            pending = self._ctx.pending_for(response)
        except SipParseError:
            return
        if pending is None:
            self._invite.stray_response(response)
            return
        self._ctx.receive_response(pending, response, now)

    def _receive_request(self, request: Request, addr: Address, now: float) -> None:
        branch = request.top_via.branch or ""
        if request.method == "ACK":
            self._receive_ack(request, branch, now)
            return
        existing = self._servers.get((branch, request.method))
        if existing is not None:
            existing.receive_retransmission()
            return
        if len(self._servers) >= MAX_SERVER_TRANSACTIONS:
            del self._servers[next(iter(self._servers))]
        server = ServerTransaction(request, addr, self._ctx.reliable)
        self._servers[server.key] = server
        server.respond(self._answer(request, now), now)

    def _receive_ack(self, ack: Request, branch: str, now: float) -> None:
        server = self._servers.get((branch, "INVITE"))
        if server is not None and server.state is State.COMPLETED:
            server.receive_ack(now)
            return
        for server in self._servers.values():
            same = server.request.call_id == ack.call_id
            if same and server.method == "INVITE" and server.request.cseq[0] == ack.cseq[0]:
                server.receive_ack(now)
        self._invite.ack_received(ack)

    def _answer(self, request: Request, now: float) -> Response:
        """The response to a new incoming request (§8.2); in-dialog ones are the INVITE
        usage's (§12.2.2)."""
        ctx = self._ctx
        method = request.method
        if method == "CANCEL":
            # We answer re-INVITEs at once, so there is never anything left to cancel (§9.2).
            known = (request.top_via.branch or "", "INVITE") in self._servers
            return ctx.response(request, 200 if known else 481)
        if request.to.tag is not None:
            return self._invite.answer(request, now)
        if method == "OPTIONS":
            return ctx.response(request, 200, ctx.capabilities())
        if method == "INVITE":
            return ctx.response(request, 603, reason="Decline")
        return ctx.response(request, 405, [("Allow", ALLOW)])

    def _collect(self) -> None:
        """Move every transaction's outbox to the send queue; forget finished transactions."""
        self._ctx.collect()
        for key, server in list(self._servers.items()):
            for data in server.outbox:
                self._ctx.transmit(data, server.addr)
            server.outbox.clear()
            if server.terminated:
                del self._servers[key]
