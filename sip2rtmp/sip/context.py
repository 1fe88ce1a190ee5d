"""What the parts of the user agent share: the account, the client transactions, the send and
event queues, and the headers that name us (Via, Contact, From).

Registration, the INVITE dialog usage and OPTIONS each start their requests here and are called
back with the responses; none of them reaches into another. The shared object never decides
anything itself: it only builds, sends and matches.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from sip2rtmp.netaddr import Address, Transport, format_address
from sip2rtmp.sip.auth import Credentials
from sip2rtmp.sip.events import Event, MessageLogged, PublicAddressLearned, ServerFailedOver
from sip2rtmp.sip.message import Headers, Request, Response, SipParseError, bounded_int, quote
from sip2rtmp.sip.transaction import T1, ClientTransaction

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK"
SUPPORTED = "timer, 100rel"
"""Session timers (RFC 4028) and reliable provisional responses (RFC 3262)."""
MAX_CHALLENGES = 3
"""Challenges answered per request chain (a request and its authenticated retries); a server
asking more often, `stale=true` or not, is looping."""
MAX_DELTA_SECONDS = 2**32 - 1
"""Largest Expires, Min-Expires, contact `expires` (RFC 3261 §20.19), Session-Expires and Min-SE
(RFC 4028 §4) value taken; a longer number is treated as absent."""
MAX_REFRESH_DELAY = 86400.0
"""Longest wait before refreshing a registration or a session we refresh: a grant of years is
legal, but a daily refresh costs nothing and keeps every timer a sane number."""
SILENT_TARGET_TIMEOUT = 10 * T1
"""How long a server target may stay silent (not even a 100 Trying) before a request goes on
to the next target, when one remains. RFC 3263 §4.3 moves on at the transaction timeout; 64*T1
per dead server would spend a call's whole patience on the first one. Five seconds span the
request and its first four retransmissions; the last target keeps the full timeout."""
MAX_RETRY_AFTER = 3600
"""Longest Retry-After (RFC 3261 §20.33) honoured for skipping a target that answered 503."""

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
    public_host: str | None = None
    """A public IP of our own (a static 1:1 NAT): Contact and Via carry it from the start."""
    learn_address: bool = True
    """Take the address the server saw (Via `received`/`rport`, RFC 3581 §4) as our Contact."""
    keepalive: float | None = None
    """Seconds between keep-alives that hold a NAT binding open (RFC 5626 §4.4): CRLF on
    TCP/TLS, OPTIONS on UDP; None sends none."""
    caller_id: str | None = None
    """The user part of From (RFC 3261 §8.1.1.3) when it is not the login: the number a
    carrier shows and checks."""
    asserted_identity: str | None = None
    """A SIP or tel URI sent in `identity_header` (RFC 3325 §9.1, §9.2)."""
    identity_header: Literal["P-Asserted-Identity", "P-Preferred-Identity"] = "P-Preferred-Identity"

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
    resend: OnTimeout | None = None
    """How the requester sends the request again to another server target (RFC 3263 §4.3);
    None for requests that must stay where they are (in a dialog, CANCEL)."""
    started: float = 0.0
    answered: bool = False
    """Any response arrived: the target is alive, and stays the one for this request."""


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

    def __init__(
        self, config: UserAgentConfig, servers: Sequence[Address], token: Callable[[], str]
    ) -> None:
        if not servers:
            raise ValueError("no server to send to")
        self.config = config
        self.servers = tuple(servers)
        """Every target found for the server (RFC 3263), in the order to try them."""
        self.server = self.servers[0]
        """The target requests go to now."""
        self._skip_until: dict[Address, float] = {}
        self.reliable = config.transport != "udp"
        self.token = token
        self.target_name = config.outbound_proxy or config.domain
        """The server as configured (host, no port), named in failure outcomes."""
        port = config.port or (5061 if config.transport == "tls" else 5060)
        located = config.port is None and ip_literal(self.target_name) is None
        self.server_label = self.target_name if located else f"{self.target_name}:{port}"
        """The server as configured, with its port unless DNS (RFC 3263) chose the ports,
        named when it cannot be reached at all."""
        self.contact_addr: Address = (config.public_host or config.local_host, config.local_port)
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
        resend: OnTimeout | None = None,
    ) -> None:
        """Send `request` in a new client transaction (RFC 3261 §17.1) to the server. With
        `resend`, a silent or failing target hands the request on to the next one."""
        transaction = ClientTransaction(request, self.server, self.reliable, now)
        pending = Pending(
            transaction, on_response, on_timeout, challenges=challenges, resend=resend, started=now
        )
        self.clients[transaction.key] = pending

    # ---- server location: the next target (RFC 3263 §4.3) ---------------------------------

    def next_server(self, now: float) -> Address | None:
        """The target after the current one that is not resting after a 503, if any."""
        index = self.servers.index(self.server)
        for candidate in self.servers[index + 1 :]:
            if self._skip_until.get(candidate, 0.0) <= now:
                return candidate
        return None

    def fail_over(self, pending: Pending, now: float, reason: str, rest: float = 0.0) -> bool:
        """Hand `pending`'s request on to the next target; False when there is none (or the
        request may not move). The failed target rests `rest` seconds (a 503's Retry-After)."""
        if pending.resend is None or pending.answered:
            return False
        failed = pending.transaction.addr
        if rest > 0:
            self._skip_until[failed] = now + rest
        following = self.next_server(now)
        if following is None:
            return False
        resend = pending.resend
        pending.transaction.abandon()
        pending.timeout_reported = True
        pending.resend = None
        self.server = following
        self.events.append(ServerFailedOver(failed, following, reason))
        resend(now)
        return True

    def pending_for(self, response: Response) -> Pending | None:
        """The client transaction a response belongs to: top Via branch and CSeq method
        (§17.1.3)."""
        return self.clients.get((response.top_via.branch or "", response.cseq[1]))

    def client_timer(self) -> float | None:
        deadlines = [p.transaction.get_timer() for p in self.clients.values()]
        deadlines += [self._silence_deadline(p) for p in self.clients.values()]
        return min((d for d in deadlines if d is not None), default=None)

    def _silence_deadline(self, pending: Pending) -> float | None:
        """When a silent target is given up for the next one (SILENT_TARGET_TIMEOUT)."""
        if pending.resend is None or pending.answered or pending.transaction.terminated:
            return None
        if self.next_server(pending.started) is None:
            return None
        return pending.started + SILENT_TARGET_TIMEOUT

    def handle_client_timers(self, now: float) -> None:
        """Fire due transaction timers; a timeout is reported once, to its requester, unless
        the request can go on to another target."""
        for pending in list(self.clients.values()):
            silent_until = self._silence_deadline(pending)
            silent = silent_until is not None and silent_until <= now
            if silent and self.fail_over(pending, now, "no answer"):
                continue
            pending.transaction.handle_timer(now)
            if pending.transaction.timed_out and not pending.timeout_reported:
                if self.fail_over(pending, now, "no answer"):
                    continue
                pending.timeout_reported = True
                pending.on_timeout(now)

    def receive_response(self, pending: Pending, response: Response, now: float) -> None:
        """A response to one of our requests: learn from its Via, fail over on a 503
        (RFC 3263 §4.3), else hand it to the requester."""
        self.learn_public_address(response)
        if not pending.transaction.receive_response(response, now):
            return
        if response.status == 503 and pending.resend is not None and not pending.answered:
            text = (response.headers.get("Retry-After") or "").split(";")[0].split("(")[0]
            rest = bounded_int(text.strip(), MAX_RETRY_AFTER) or 0
            if self.fail_over(pending, now, f"503 {response.reason}".strip(), float(rest)):
                return
        pending.answered = True
        pending.on_response(response, now)

    def connection_failed(self, now: float, detail: str) -> bool:
        """The transport to the current target failed: requests that have had no answer from
        it move on to the next target. True when any did."""
        moved = False
        for pending in list(self.clients.values()):
            if pending.transaction.addr == self.server and pending.resend is not None:
                moved = self.fail_over(pending, now, detail) or moved
        return moved

    def collect(self) -> None:
        """Move every client transaction's outbox to the send queue; forget finished ones."""
        for key, pending in list(self.clients.items()):
            transaction = pending.transaction
            for data in transaction.outbox:
                self.transmit(data, transaction.addr)
            transaction.outbox.clear()
            if transaction.terminated:
                del self.clients[key]

    def transmit(self, data: bytes, addr: Address, *, logged: bool = True) -> None:
        """Queue `data` for `addr`; every SIP message is logged, a keep-alive ping is not."""
        self._outgoing.append((data, addr))
        if logged:
            self.events.append(MessageLogged("sent", addr, data))

    def take_outgoing(self) -> list[tuple[bytes, Address]]:
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    # ---- who we are -----------------------------------------------------------------------

    def via(self) -> str:
        """Our Via with a fresh RFC 3261 branch and rport (RFC 3581 §3). A configured public
        address is our sent-by: a server without rport support answers there."""
        transport = self.config.transport.upper()
        host = self.config.public_host or self.config.local_host
        sent_by = format_address((host, self.config.local_port))
        return f"SIP/2.0/{transport} {sent_by};rport;branch=z9hG4bK{self.token()}"

    def connection_made(self, local: Address) -> None:
        """The shell (re)opened the transport from `local`: Via and Contact follow it."""
        config = self.config
        if local == (config.local_host, config.local_port):
            return
        old_local = (config.local_host, config.local_port)
        self.config = replace(config, local_host=local[0], local_port=local[1])
        if self.contact_addr == old_local:
            self.contact_addr = local
        elif config.public_host is not None:
            self.contact_addr = (config.public_host, local[1])

    def contact(self) -> str:
        suffix = "" if self.config.transport == "udp" else f";transport={self.config.transport}"
        return f"<sip:{self.config.user}@{format_address(self.contact_addr)}{suffix}>"

    def local_party(self) -> str:
        """Our From for calls and queries: the display name and the caller ID (the login
        unless another was given, RFC 3261 §8.1.1.3). A REGISTER names the account itself."""
        config = self.config
        name = config.display_name
        aor = f"<sip:{config.caller_id or config.user}@{config.domain}>"
        return f"{quote(name)} {aor}" if name else aor

    def identity_headers(self) -> list[tuple[str, str]]:
        """The asserted or preferred identity of a call, when one was given (RFC 3325 §9)."""
        uri = self.config.asserted_identity
        return [] if uri is None else [(self.config.identity_header, f"<{uri}>")]

    def learn_public_address(self, response: Response) -> None:
        """Use the address the server saw (Via received/rport, RFC 3581 §4) as our Contact
        for later requests, on every transport, so that requests from the far end find us
        through a NAT. A configured public address outranks it; `--nat off` turns it off."""
        config = self.config
        if not config.learn_address or config.public_host is not None:
            return
        params = response.top_via.params
        received = params.get("received")
        host = received and ip_literal(received)
        port = bounded_int(params.get("rport"), 65535)
        learned = (host or self.contact_addr[0], port or self.contact_addr[1])
        if learned != self.contact_addr:
            self.contact_addr = learned
            self.events.append(PublicAddressLearned(learned, "received"))

    @property
    def public_address(self) -> Address | None:
        """Our address as the server sees it, when it differs from the socket's own."""
        local = (self.config.local_host, self.config.local_port)
        return None if self.contact_addr == local else self.contact_addr

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
        return [("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", SUPPORTED)]

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
