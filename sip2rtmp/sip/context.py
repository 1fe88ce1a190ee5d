"""What the parts of the user agent share: the account, the client transactions, the send and
event queues, and the headers that name us (Via, Contact, From).

Registration, the INVITE dialog usage and OPTIONS each start their requests here and are called
back with the responses; none of them reaches into another. The shared object never decides
anything itself: it only builds, sends and matches.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sip2rtmp.netaddr import Address, Transport, format_address
from sip2rtmp.sip.auth import Credentials
from sip2rtmp.sip.events import Event, MessageLogged
from sip2rtmp.sip.message import Headers, Request, Response, SipParseError, bounded_int, quote
from sip2rtmp.sip.transaction import ClientTransaction

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
MAX_CHALLENGES = 3
"""Challenges answered per request chain (a request and its authenticated retries); a server
asking more often, `stale=true` or not, is looping."""
MAX_DELTA_SECONDS = 2**32 - 1
"""Largest Expires, Min-Expires, contact `expires` (RFC 3261 §20.19), Session-Expires and Min-SE
(RFC 4028 §4) value taken; a longer number is treated as absent."""
MAX_REFRESH_DELAY = 86400.0
"""Longest wait before refreshing a registration or a session we refresh: a grant of years is
legal, but a daily refresh costs nothing and keeps every timer a sane number."""

_REASONS = {
    200: "OK",
    405: "Method Not Allowed",
    481: "Call/Transaction Does Not Exist",
    491: "Request Pending",
    500: "Server Internal Error",
    603: "Decline",
}

OnResponse = Callable[[Response, float], None]
OnTimeout = Callable[[float], None]


@dataclass(frozen=True)
class UserAgentConfig:
    """One SIP account and how to reach its server.

    `local_host`/`local_port` are the address the transport is bound to, used in Via and
    Contact; the shell fills them once the socket exists. The core ignores `outbound_proxy`,
    `port` and `tls_ca_file`: they tell the shell where to connect and how.
    """

    user: str
    """The login: user part of our address-of-record sip:user@domain."""
    domain: str
    credentials: Credentials
    """Digest username (often the login, sometimes a separate auth name) and password."""
    transport: Transport = "udp"
    outbound_proxy: str | None = None
    """Host to send everything to instead of the domain (RFC 3261 §8.1.2)."""
    port: int | None = None
    """Server port; None: 5060, or 5061 for TLS."""
    local_host: str = "127.0.0.1"
    local_port: int = 0
    """Port to bind (0: any free one); the shell replaces both with the bound address."""
    register_expires: int = 600
    user_agent: str = "sip2rtmp"
    display_name: str | None = None
    local_sdp: bytes | None = None
    """SDP for answering re-INVITEs/UPDATEs; None means: the offer we sent in our INVITE."""
    tls_ca_file: str | None = None

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"


@dataclass
class Pending:
    """A client transaction and who hears its outcome."""

    transaction: ClientTransaction
    on_response: OnResponse
    on_timeout: OnTimeout
    timeout_reported: bool = False
    challenges: int = 0
    """Challenges answered so far in this request's chain."""


def challenges_of(response: Response) -> list[str]:
    """The challenges of a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate), RFC 3261 §22."""
    header = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
    return response.headers.get_fields(header)


def ip_literal(text: str) -> str | None:
    """`text` as a plain IPv4/IPv6 address (brackets allowed), else None: a Via `received`
    is one (RFC 3261 §18.2.1), and only an address can go into our Contact unescaped."""
    try:
        address = ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return None
    return str(address)


class AgentContext:
    """The user agent's shared state; every part holds the same one."""

    def __init__(self, config: UserAgentConfig, server: Address, token: Callable[[], str]) -> None:
        self.config = config
        self.server = server
        self.reliable = config.transport != "udp"
        self.token = token
        self.target_name = config.outbound_proxy or config.domain
        """The server as configured (host, no port), named in failure outcomes."""
        port = config.port or (5061 if config.transport == "tls" else 5060)
        self.server_label = f"{self.target_name}:{port}"
        """The server with its port, named when it cannot be reached at all."""
        self.contact_addr: Address = (config.local_host, config.local_port)
        self.clients: dict[tuple[str, str], Pending] = {}
        self.events: deque[Event] = deque()
        self._outgoing: list[tuple[bytes, Address]] = []

    # ---- transactions and queues ----------------------------------------------------------

    def start(
        self,
        request: Request,
        now: float,
        on_response: OnResponse,
        on_timeout: OnTimeout,
        challenges: int = 0,
    ) -> None:
        """Send `request` in a new client transaction (RFC 3261 §17.1) to the server."""
        transaction = ClientTransaction(request, self.server, self.reliable, now)
        pending = Pending(transaction, on_response, on_timeout, challenges=challenges)
        self.clients[transaction.key] = pending

    def pending_for(self, response: Response) -> Pending | None:
        """The client transaction a response belongs to: top Via branch and CSeq method
        (§17.1.3)."""
        return self.clients.get((response.top_via.branch or "", response.cseq[1]))

    def client_timer(self) -> float | None:
        deadlines = [p.transaction.get_timer() for p in self.clients.values()]
        return min((d for d in deadlines if d is not None), default=None)

    def handle_client_timers(self, now: float) -> None:
        """Fire due transaction timers; a timeout is reported once, to its requester."""
        for pending in list(self.clients.values()):
            pending.transaction.handle_timer(now)
            if pending.transaction.timed_out and not pending.timeout_reported:
                pending.timeout_reported = True
                pending.on_timeout(now)

    def collect(self) -> None:
        """Move every client transaction's outbox to the send queue; forget finished ones."""
        for key, pending in list(self.clients.items()):
            transaction = pending.transaction
            for data in transaction.outbox:
                self.transmit(data, transaction.addr)
            transaction.outbox.clear()
            if transaction.terminated:
                del self.clients[key]

    def transmit(self, data: bytes, addr: Address) -> None:
        self._outgoing.append((data, addr))
        self.events.append(MessageLogged("sent", addr, data))

    def take_outgoing(self) -> list[tuple[bytes, Address]]:
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    # ---- who we are -----------------------------------------------------------------------

    def via(self) -> str:
        """Our Via with a fresh RFC 3261 branch and rport (RFC 3581 §3)."""
        transport = self.config.transport.upper()
        host = format_address((self.config.local_host, self.config.local_port))
        return f"SIP/2.0/{transport} {host};rport;branch=z9hG4bK{self.token()}"

    def contact(self) -> str:
        suffix = "" if self.config.transport == "udp" else f";transport={self.config.transport}"
        return f"<sip:{self.config.user}@{format_address(self.contact_addr)}{suffix}>"

    def local_party(self) -> str:
        name = self.config.display_name
        aor = f"<{self.config.aor}>"
        return f"{quote(name)} {aor}" if name else aor

    def learn_public_address(self, response: Response) -> None:
        """Use the address the registrar saw (Via received/rport, RFC 3581 §4) as our Contact
        for later requests, so a NAT between us and the server keeps working."""
        if self.config.transport != "udp":
            return
        params = response.top_via.params
        received = params.get("received")
        host = received and ip_literal(received)
        port = bounded_int(params.get("rport"), 65535)
        self.contact_addr = (host or self.contact_addr[0], port or self.contact_addr[1])

    def out_of_dialog(self, method: str, from_: str, to: str, call_id: str, cseq: int) -> Headers:
        """The headers every request outside a dialog starts with (RFC 3261 §8.1.1); `from_`
        carries our tag."""
        headers = Headers()
        headers.add("Via", self.via())
        headers.add("Max-Forwards", "70")
        headers.add("From", from_)
        headers.add("To", to)
        headers.add("Call-ID", call_id)
        headers.add("CSeq", f"{cseq} {method}")
        return headers

    # ---- answering ------------------------------------------------------------------------

    def capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", "timer")]

    def response(
        self,
        request: Request,
        status: int,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        reason: str | None = None,
    ) -> Response:
        """Via, From, To, Call-ID and CSeq copied from the request, To tagged (§8.2.6.2)."""
        headers = Headers()
        for via in request.headers.get_fields("Via"):
            headers.add("Via", via)
        headers.add("From", request.headers.get("From") or "")
        to = request.headers.get("To") or ""
        if request.to.tag is None:
            to += f";tag={self.token()}"
        headers.add("To", to)
        headers.add("Call-ID", request.call_id)
        headers.add("CSeq", request.headers.get("CSeq") or "")
        headers.add("Server", self.config.user_agent)
        for name, value in extra or []:
            headers.add(name, value)
        text = reason or _REASONS.get(status, "")
        return Response(status, text, headers, body)


def check_echoable(message: Request | Response) -> None:
    """Refuse NUL or a bare CR in a header field. Neither is legal there outside a quoted-pair
    (RFC 3261 §25.1), and we copy Via, From, To and CSeq into our responses and ACKs, whose
    encoding must never carry them."""
    for name, value in message.headers:
        if "\x00" in value or "\r" in value:
            raise SipParseError(f"NUL or CR in a {name} header field")
