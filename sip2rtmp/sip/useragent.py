"""A sans-I/O SIP user agent: registration and one outgoing call (RFC 3261, 3581, 4028).

The owner feeds it bytes and time and drains bytes and events, the shape of aioquic's
QuicConnection: `receive_data`, `data_to_send`, `get_timer`, `handle_timer`, `next_event`,
plus commands (`register`, `invite`, `bye`...). It never touches a socket, a clock or DNS: every
message goes to the one server address it was given, which is outbound-proxy routing (RFC 3261
§8.1.2) and also what a registrar/proxy pair at the SIP domain expects.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from sip2rtmp.errors import (
    AuthenticationFailed,
    BusyOrDeclined,
    CalleeNotFound,
    CallFailed,
    NoAnswer,
    Sip2RtmpError,
    SipUnreachable,
)
from sip2rtmp.sip.auth import Credentials, DigestClient
from sip2rtmp.sip.dialog import Dialog
from sip2rtmp.sip.events import (
    CallAnswered,
    CallAttemptFailed,
    CallEnded,
    CallProgress,
    Event,
    InfoAnswered,
    InfoReceived,
    MessageDropped,
    MessageLogged,
    Registered,
    RegistrationFailed,
    SessionModified,
    Unregistered,
)
from sip2rtmp.sip.message import (
    Headers,
    Request,
    Response,
    SipParseError,
    bounded_int,
    parse_message,
    parse_name_addr,
    parse_params,
    quote,
)
from sip2rtmp.sip.transaction import TIMEOUT, Addr, ClientTransaction, ServerTransaction, State

Transport = Literal["udp", "tcp", "tls"]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
MAX_CHALLENGES = 3
"""Challenges answered per request chain (a request and its authenticated retries); a server
asking more often, `stale=true` or not, is looping."""
SESSION_EXPIRY_MARGIN = 32.0
"""RFC 4028 §10: without a refresh, BYE this long (or a third of the interval) before expiry."""
MAX_DELTA_SECONDS = 2**32 - 1
"""Largest Expires, Min-Expires, contact `expires` (RFC 3261 §20.19), Session-Expires and Min-SE
(RFC 4028 §4) value taken; a longer number is treated as absent."""
MAX_REFRESH_DELAY = 86400.0
"""Longest wait before refreshing a registration or a session we refresh: a grant of years is
legal, but a daily refresh costs nothing and keeps every timer a sane number."""
MAX_SERVER_TRANSACTIONS = 64
"""Server transactions kept. Each request is answered at once, so a transaction only absorbs
retransmissions (§17.2); when a flood of new branches fills the table the oldest is forgotten,
which costs at worst answering one late retransmission again."""
MAX_FORKED_ANSWERS = 8
"""Forked 2xx answers (other To tags) that get a BYE and a kept ACK (§13.2.2.4); any more are
only ACKed, so a stream of invented tags cannot grow our transactions."""
MAX_KEPT_ACKS = 4
"""ACKs kept for 2xx retransmissions: the INVITE's and the latest refresh re-INVITEs'."""


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


def outcome_for(
    status: int, reason: str, *, rang: bool, elapsed: float, target: str
) -> Sip2RtmpError:
    """Map a final failure response of an INVITE to the typed outcome the CLI reports."""
    if status in (401, 403, 407):
        return AuthenticationFailed(status)
    if status in (404, 480, 484, 604):
        return CalleeNotFound(status, reason)
    if status in (486, 600, 603):
        return BusyOrDeclined(status, reason)
    if status == 408:
        return NoAnswer(round(elapsed, 1)) if rang else SipUnreachable(target, f"{status} {reason}")
    return CallFailed(status, reason)


def _registration_outcome(status: int, reason: str, target: str) -> Sip2RtmpError:
    if status in (401, 403, 404, 407):
        return AuthenticationFailed(status)
    if status in (408, 503):
        return SipUnreachable(target, f"REGISTER answered {status} {reason}")
    return CallFailed(status, reason)


_REASONS = {
    200: "OK",
    405: "Method Not Allowed",
    481: "Call/Transaction Does Not Exist",
    491: "Request Pending",
    500: "Server Internal Error",
    603: "Decline",
}


def _ignore_response(call: _Call, response: Response, now: float) -> None:
    """For a BYE that ends a dialog already given up: its answer changes nothing."""


def _ignore_timeout(call: _Call, now: float) -> None:
    """See `_ignore_response`."""


def _answer_dialog(invite: Request, response: Response) -> tuple[Dialog, SipParseError | None]:
    """The dialog a 2xx creates; if its Contact or Record-Route is unusable, the dialog our
    INVITE alone defines (enough to ACK and BYE it) and why."""
    try:
        return Dialog.from_response(invite, response), None
    except SipParseError as exc:
        return Dialog.fallback(invite, response), exc


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_echoable(message: Request | Response) -> None:
    """Refuse NUL or a bare CR in a header field. Neither is legal there outside a quoted-pair
    (RFC 3261 §25.1), and we copy Via, From, To and CSeq into our responses and ACKs, whose
    encoding must never carry them."""
    for name, value in message.headers:
        if "\x00" in value or "\r" in value:
            raise SipParseError(f"NUL or CR in a {name} header field")


def _ip_literal(text: str) -> str | None:
    """`text` as a plain IPv4/IPv6 address (brackets allowed), else None: a Via `received`
    is one (RFC 3261 §18.2.1), and only an address can go into our Contact unescaped."""
    try:
        address = ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return None
    return str(address)


@dataclass
class _Pending:
    transaction: ClientTransaction
    on_response: Callable[[Response, float], None]
    on_timeout: Callable[[float], None]
    timeout_reported: bool = False
    challenges: int = 0
    """Challenges answered so far in this request's chain."""


@dataclass
class _Registration:
    """One binding: Call-ID, From tag and CSeq stay for every refresh (RFC 3261 §10.2.4)."""

    call_id: str
    from_tag: str
    auth: DigestClient
    cseq: int = 0
    state: Literal["registering", "registered", "unregistering", "idle"] = "idle"
    challenges: int = 0
    refresh_at: float | None = None
    in_flight: bool = False


@dataclass
class _SessionTimer:
    """RFC 4028 state: who refreshes, how often, and the two deadlines that follow."""

    interval: int
    we_refresh: bool
    refresh_at: float | None = None
    expire_at: float | None = None

    def restart(self, now: float) -> None:
        if self.we_refresh:
            self.refresh_at = now + min(self.interval / 2, MAX_REFRESH_DELAY)
            self.expire_at = None
        else:
            self.refresh_at = None
            margin = min(SESSION_EXPIRY_MARGIN, self.interval / 3)
            self.expire_at = now + self.interval - margin


@dataclass
class _Call:
    """One outgoing call attempt and, once answered, its dialog and timers."""

    target: str
    offer: bytes
    call_id: str
    from_tag: str
    started: float
    auth: DigestClient
    invite: Request
    cseq: int = 1
    state: Literal["calling", "proceeding", "confirmed", "terminating"] = "calling"
    extra: list[tuple[str, str]] = field(default_factory=list)
    challenges: int = 0
    provisional: bool = False
    rang: bool = False
    cancel_outcome: Sip2RtmpError | None = None
    cancel_sent: bool = False
    ring_deadline: float | None = None
    cancel_deadline: float | None = None
    dialog: Dialog | None = None
    acks: dict[int, bytes] = field(default_factory=dict)
    forks: dict[str, bytes] = field(default_factory=dict)
    """The ACK sent to each forked 2xx, by its To tag."""
    remote_allow: frozenset[str] = frozenset()
    session: _SessionTimer | None = None
    refresh_pending: bool = False


class UserAgent:
    """Registration plus at most one call, driven by `now` and bytes (see module docstring)."""

    def __init__(
        self,
        config: UserAgentConfig,
        server: Addr,
        *,
        token_factory: Callable[[], str] | None = None,
    ) -> None:
        self._config = config
        self._server = server
        self._reliable = config.transport != "udp"
        self._token = token_factory or (lambda: secrets.token_hex(8))
        self._target_name = config.outbound_proxy or config.domain
        self._contact_addr: Addr = (config.local_host, config.local_port)
        self._local_sdp = config.local_sdp
        self._clients: dict[tuple[str, str], _Pending] = {}
        self._servers: dict[tuple[str, str], ServerTransaction] = {}
        self._outgoing: list[tuple[bytes, Addr]] = []
        self._events: deque[Event] = deque()
        self._registration: _Registration | None = None
        self._call: _Call | None = None

    # ---- aioquic-shaped interface -----------------------------------------------------

    def receive_data(self, data: bytes, addr: Addr, now: float) -> None:
        """One datagram, or one framed message from a stream, received from `addr`.

        Never raises: a message that cannot be handled is reported as `MessageDropped`. The
        guard is for headers parsed on access (Via, CSeq, From, To), which the parser has
        already checked once.
        """
        self._events.append(MessageLogged("received", addr, data))
        try:
            message = parse_message(data)
            _check_echoable(message)
            if isinstance(message, Response):
                self._receive_response(message, now)
            else:
                self._receive_request(message, addr, now)
        except SipParseError as exc:
            self._events.append(MessageDropped(addr, str(exc)))
        self._collect()

    def data_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        """Everything queued since the last call; `now` keeps aioquic's signature."""
        del now
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def get_timer(self) -> float | None:
        """When `handle_timer` must next be called, or None when nothing is pending."""
        deadlines = [p.transaction.get_timer() for p in self._clients.values()]
        deadlines += [t.get_timer() for t in self._servers.values()]
        reg = self._registration
        if reg is not None:
            deadlines.append(reg.refresh_at)
        call = self._call
        if call is not None:
            deadlines += [call.ring_deadline, call.cancel_deadline]
            session = self._running_session(call)
            if session is not None:
                deadlines += [session.refresh_at, session.expire_at]
        return min((d for d in deadlines if d is not None), default=None)

    def handle_timer(self, now: float) -> None:
        for pending in list(self._clients.values()):
            pending.transaction.handle_timer(now)
            if pending.transaction.timed_out and not pending.timeout_reported:
                pending.timeout_reported = True
                pending.on_timeout(now)
        for server in list(self._servers.values()):
            server.handle_timer(now)
            if server.timed_out and server.method == "INVITE" and server.status < 300:
                server.timed_out = False
                self._no_ack(server.request, now)
        self._registration_timers(now)
        self._call_timers(now)
        self._collect()

    def _no_ack(self, reinvite: Request, now: float) -> None:
        """The peer never ACKed our 2xx to its re-INVITE: the dialog is broken (§13.3.1.4)."""
        call = self._call
        if call is not None and call.dialog is not None and call.dialog.matches(reinvite):
            self._end_call(call, now, "no ACK for our 2xx to the peer's re-INVITE", send_bye=True)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # ---- state the shell may look at ----------------------------------------------------

    @property
    def registered(self) -> bool:
        reg = self._registration
        return reg is not None and reg.state in ("registered", "registering")

    @property
    def in_call(self) -> bool:
        return self._call is not None

    # ---- registration (RFC 3261 §10) ----------------------------------------------------

    def register(self, now: float) -> None:
        reg = self._registration
        if reg is None:
            reg = _Registration(
                call_id=self._token(),
                from_tag=self._token(),
                auth=DigestClient(self._config.credentials, self._token),
            )
            self._registration = reg
        reg.state = "registering"
        reg.challenges = 0
        self._send_register(now, self._config.register_expires)
        self._collect()

    def unregister(self, now: float) -> None:
        """Remove our binding with Expires: 0 (§10.2.2); reports `Unregistered`."""
        reg = self._registration
        if reg is None or reg.state == "idle":
            self._events.append(Unregistered(ok=True))
            return
        reg.state = "unregistering"
        reg.refresh_at = None
        reg.challenges = 0
        self._send_register(now, 0)
        self._collect()

    def _send_register(self, now: float, expires: int) -> None:
        reg = self._registration
        assert reg is not None
        reg.cseq += 1
        reg.in_flight = True
        uri = f"sip:{self._config.domain}"
        aor = f"<{self._config.aor}>"
        headers = Headers()
        headers.add("Via", self._via())
        headers.add("Max-Forwards", "70")
        headers.add("From", f"{aor};tag={reg.from_tag}")
        headers.add("To", aor)
        headers.add("Call-ID", reg.call_id)
        headers.add("CSeq", f"{reg.cseq} REGISTER")
        headers.add("Contact", self._contact())
        headers.add("Expires", str(expires))
        headers.add("Allow", ALLOW)
        headers.add("User-Agent", self._config.user_agent)
        for name, value in reg.auth.headers_for("REGISTER", uri):
            headers.add(name, value)
        request = Request("REGISTER", uri, headers)
        self._start(
            request,
            now,
            partial(self._on_register_response, reg.cseq),
            partial(self._on_register_timeout, reg.cseq),
        )

    def _on_register_response(self, cseq: int, response: Response, now: float) -> None:
        """The final response to the binding's latest REGISTER; one to a REGISTER that a newer
        one replaced (a refresh overtaken by un-REGISTER) no longer decides anything."""
        reg = self._registration
        if reg is None or response.status < 200 or cseq != reg.cseq:
            return
        reg.in_flight = False
        status = response.status
        expires = 0 if reg.state == "unregistering" else self._config.register_expires
        if status in (401, 407):
            header = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
            reg.challenges += 1
            if reg.challenges <= MAX_CHALLENGES and reg.auth.accept(
                status, response.headers.get_fields(header)
            ):
                self._send_register(now, expires)
                return
        if status == 423 and expires and reg.challenges <= MAX_CHALLENGES:
            minimum = bounded_int(response.headers.get("Min-Expires"), MAX_DELTA_SECONDS)
            if minimum is not None and minimum > expires:
                reg.challenges += 1
                self._send_register(now, minimum)
                return
        reg.challenges = 0
        if reg.state == "unregistering":
            reg.state = "idle"
            self._events.append(Unregistered(ok=200 <= status < 300))
            return
        if 200 <= status < 300:
            granted = self._granted_expires(response, expires)
            self._learn_public_address(response)
            reg.state = "registered"
            reg.refresh_at = now + min(max(granted / 2, 1.0), MAX_REFRESH_DELAY)
            self._events.append(Registered(granted))
            return
        reg.state = "idle"
        reg.refresh_at = None
        outcome = _registration_outcome(status, response.reason, self._target_name)
        self._events.append(RegistrationFailed(outcome))

    def _on_register_timeout(self, cseq: int, now: float) -> None:
        reg = self._registration
        if reg is None or cseq != reg.cseq:
            return
        reg.in_flight = False
        if reg.state == "unregistering":
            reg.state = "idle"
            self._events.append(Unregistered(ok=False))
            return
        reg.state = "idle"
        reg.refresh_at = None
        detail = f"no response to REGISTER within {TIMEOUT:g} s"
        self._events.append(RegistrationFailed(SipUnreachable(self._target_name, detail)))

    def _granted_expires(self, response: Response, requested: int) -> int:
        """Our Contact's `expires` in the 2xx, else its Expires header (§10.2.4)."""
        ours = parse_name_addr(self._contact()).sip_uri()
        for value in response.headers.get_all("Contact"):
            try:
                contact = parse_name_addr(value)
                uri = contact.sip_uri()
            except SipParseError:
                continue
            same = (uri.user, uri.host, uri.port) == (ours.user, ours.host, ours.port)
            expires = bounded_int(contact.params.get("expires"), MAX_DELTA_SECONDS)
            if same and expires is not None:
                return expires
        header = bounded_int(response.headers.get("Expires"), MAX_DELTA_SECONDS)
        return requested if header is None else header

    def _registration_timers(self, now: float) -> None:
        reg = self._registration
        if reg is None or reg.refresh_at is None or reg.refresh_at > now:
            return
        reg.refresh_at = None
        if not reg.in_flight:
            reg.challenges = 0
            self._send_register(now, self._config.register_expires)

    # ---- the call: INVITE, CANCEL, ACK, BYE (RFC 3261 §9, §13, §15) ---------------------

    def invite(
        self, now: float, target_uri: str, sdp: bytes, ring_timeout: float | None = None
    ) -> None:
        """Call `target_uri` (a SIP URI, or a user at our domain) offering `sdp`."""
        if self._call is not None:
            raise RuntimeError("a call is already in progress")
        target = target_uri
        if not target.lower().startswith(("sip:", "sips:", "tel:")):
            target = f"sip:{target}" if "@" in target else f"sip:{target}@{self._config.domain}"
        call = _Call(
            target=target,
            offer=sdp,
            call_id=self._token(),
            from_tag=self._token(),
            started=now,
            auth=DigestClient(self._config.credentials, self._token),
            invite=Request("INVITE", target),
            ring_deadline=now + ring_timeout if ring_timeout else None,
        )
        self._call = call
        self._send_invite(call, now)
        self._collect()

    def _send_invite(self, call: _Call, now: float) -> None:
        headers = Headers()
        headers.add("Via", self._via())
        headers.add("Max-Forwards", "70")
        headers.add("From", f"{self._local_party()};tag={call.from_tag}")
        headers.add("To", f"<{call.target}>")
        headers.add("Call-ID", call.call_id)
        headers.add("CSeq", f"{call.cseq} INVITE")
        headers.add("Contact", self._contact())
        headers.add("Allow", ALLOW)
        headers.add("Supported", "timer")
        headers.add("User-Agent", self._config.user_agent)
        for name, value in call.extra:
            headers.add(name, value)
        for name, value in call.auth.headers_for("INVITE", call.target, call.offer):
            headers.add(name, value)
        headers.add("Content-Type", "application/sdp")
        call.invite = Request("INVITE", call.target, headers, call.offer)
        self._start(
            call.invite,
            now,
            partial(self._on_invite_response, call),
            partial(self._on_invite_timeout, call),
        )

    def cancel(self, now: float, outcome: Sip2RtmpError | None = None) -> None:
        """Abandon the call attempt. CANCEL goes out once a provisional response has arrived
        (§9.1); the attempt then ends with `outcome` (default: CallFailed 487)."""
        call = self._call
        if call is None or call.state not in ("calling", "proceeding"):
            return
        if call.cancel_outcome is None:
            call.cancel_outcome = outcome or CallFailed(487, "Request Terminated")
            call.cancel_deadline = now + TIMEOUT
            call.ring_deadline = None
        if call.provisional and not call.cancel_sent:
            self._send_cancel(call, now)
        self._collect()

    def _send_cancel(self, call: _Call, now: float) -> None:
        """Same Request-URI, Call-ID, From, To, CSeq number, top Via and Route (§9.1)."""
        call.cancel_sent = True
        invite = call.invite.headers
        headers = Headers()
        headers.add("Via", invite.get_all("Via")[0])
        for route in invite.get_fields("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", invite.get("From") or "")
        headers.add("To", invite.get("To") or "")
        headers.add("Call-ID", call.call_id)
        headers.add("CSeq", f"{call.cseq} CANCEL")
        headers.add("User-Agent", self._config.user_agent)
        request = Request("CANCEL", call.invite.uri, headers)
        self._start(request, now, lambda response, now: None, lambda now: None)

    def _on_invite_response(self, call: _Call, response: Response, now: float) -> None:
        if call is not self._call:
            return
        status = response.status
        if status < 200:
            call.provisional = True
            call.rang = call.rang or status in (180, 183)
            if call.state == "calling":
                call.state = "proceeding"
            self._events.append(CallProgress(status, response.reason, self._sdp_of(response)))
            if call.cancel_outcome is not None and not call.cancel_sent:
                self._send_cancel(call, now)
            return
        if status < 300:
            self._on_invite_2xx(call, response, now)
            return
        if call.cancel_outcome is None:
            if self._retry_invite(call, response, now):
                return
            elapsed = now - call.started
            outcome = outcome_for(
                status, response.reason, rang=call.rang, elapsed=elapsed, target=self._target_name
            )
        else:
            outcome = call.cancel_outcome
        self._call = None
        self._events.append(CallAttemptFailed(outcome))

    def _retry_invite(self, call: _Call, response: Response, now: float) -> bool:
        """A new INVITE for a 401/407 (credentials) or 422 (RFC 4028 §6): same Call-ID and
        From tag, CSeq + 1 (§8.1.3.5, §22.2)."""
        status = response.status
        call.challenges += 1
        if call.challenges > MAX_CHALLENGES:
            return False
        if status in (401, 407):
            header = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
            if not call.auth.accept(status, response.headers.get_fields(header)):
                return False
        elif status == 422:
            text = (response.headers.get("Min-SE") or "").split(";")[0]
            minimum = bounded_int(text, MAX_DELTA_SECONDS)
            if not minimum:
                return False
            call.extra = [("Session-Expires", str(minimum)), ("Min-SE", str(minimum))]
        else:
            return False
        call.cseq += 1
        call.provisional = False
        self._send_invite(call, now)
        return True

    def _on_invite_timeout(self, call: _Call, now: float) -> None:
        if call is not self._call or call.state not in ("calling", "proceeding"):
            return
        detail = f"no response to INVITE within {TIMEOUT:g} s"
        self._call = None
        self._events.append(
            CallAttemptFailed(call.cancel_outcome or SipUnreachable(self._target_name, detail))
        )

    def _on_invite_2xx(self, call: _Call, response: Response, now: float) -> None:
        if call.dialog is None:
            self._establish(call, response, now)
        elif response.to.tag == call.dialog.remote_tag:
            self._resend_ack(call, response)
        else:
            self._answer_fork(call, response, now)

    def _establish(self, call: _Call, response: Response, now: float) -> None:
        """The first 2xx: ACK it, then either the call is up or it is hung up at once.

        A 2xx whose Contact or Record-Route cannot make a dialog is still ACKed, along the
        INVITE's own path (§13.2.2.4: otherwise the callee retransmits and gives up), then
        BYEd; the attempt fails naming the cause rather than ending as "no answer".
        """
        dialog, unusable = _answer_dialog(call.invite, response)
        call.dialog = dialog
        self._send_ack(call, dialog, call.cseq)
        call.remote_allow = self._allow_of(response)
        # CANCEL lost the race against the answer: the call exists, so end it (§9.1).
        outcome = call.cancel_outcome
        if unusable is not None and outcome is None:
            outcome = CallFailed(response.status, f"answered with an unusable dialog: {unusable}")
        if outcome is not None:
            call.cancel_outcome = outcome
            call.cancel_deadline = call.ring_deadline = None
            self._send_bye(call, now)
            self._events.append(CallAttemptFailed(outcome))
            return
        call.state = "confirmed"
        call.ring_deadline = None
        call.session = self._session_timer_from_2xx(response)
        if call.session is not None:
            call.session.restart(now)
        self._events.append(CallAnswered(response.body))

    def _answer_fork(self, call: _Call, response: Response, now: float) -> None:
        """A 2xx with another To tag: a forked branch answered too. ACK it and BYE that dialog
        (§13.2.2.4); a retransmission gets the kept ACK again, without a second BYE."""
        tag = response.to.tag or ""
        ack = call.forks.get(tag)
        if ack is None:
            forked, _ = _answer_dialog(call.invite, response)
            forked_ack = forked.create_ack(call.cseq, self._auth_of(call.invite))
            forked_ack.headers.prepend("Via", self._via())
            ack = forked_ack.to_bytes()
            if len(call.forks) < MAX_FORKED_ANSWERS:
                call.forks[tag] = ack
                bye = forked.create_request("BYE", [("User-Agent", self._config.user_agent)])
                bye.headers.prepend("Via", self._via())
                self._start(bye, now, lambda response, now: None, lambda now: None)
        self._transmit(ack, self._server)

    def _send_ack(self, call: _Call, dialog: Dialog, cseq: int) -> None:
        """ACK a 2xx: own branch, dialog route set, the INVITE's CSeq number and credentials
        (§13.2.2.4). Kept per CSeq so a retransmitted 2xx gets exactly the same bytes; only
        the latest few, as a 2xx is retransmitted for 64*T1 at most (§13.3.1.4)."""
        ack = dialog.create_ack(cseq, self._auth_of(call.invite))
        ack.headers.prepend("Via", self._via())
        call.acks[cseq] = ack.to_bytes()
        if len(call.acks) > MAX_KEPT_ACKS:
            del call.acks[next(iter(call.acks))]
        self._transmit(call.acks[cseq], self._server)

    def _resend_ack(self, call: _Call, response: Response) -> None:
        ack = call.acks.get(response.cseq[0])
        if ack is not None:
            self._transmit(ack, self._server)

    def bye(self, now: float) -> None:
        """Hang up: BYE when the call is up, CANCEL while it is still ringing."""
        call = self._call
        if call is None:
            return
        if call.state in ("calling", "proceeding"):
            self.cancel(now)
            return
        if call.state == "confirmed":
            self._send_bye(call, now)
        self._collect()

    def _send_bye(self, call: _Call, now: float) -> None:
        dialog = call.dialog
        assert dialog is not None
        call.state = "terminating"
        call.session = None
        self._send_in_dialog(call, "BYE", [], b"", now, self._on_bye_response, self._on_bye_timeout)

    def _on_bye_response(self, call: _Call, response: Response, now: float) -> None:
        if response.status < 200:
            return
        if response.status in (401, 407) and self._retry_in_dialog(call, response, now):
            return
        self._finish_call(by_remote=False, reason="hangup")

    def _on_bye_timeout(self, call: _Call, now: float) -> None:
        del call
        self._finish_call(by_remote=False, reason="hangup (BYE unanswered)")

    def _finish_call(self, *, by_remote: bool, reason: str) -> None:
        """Forget the call; report its end unless the attempt already failed (it was only
        being hung up after a late or unusable answer)."""
        call = self._call
        if call is None:
            return
        self._call = None
        if call.cancel_outcome is None:
            self._events.append(CallEnded(by_remote=by_remote, reason=reason))

    def _end_call(self, call: _Call, now: float, reason: str, *, send_bye: bool) -> None:
        """The dialog failed under us: tell the peer (if it may still listen) and report."""
        if send_bye and call.state == "confirmed":
            self._send_in_dialog(call, "BYE", [], b"", now, _ignore_response, _ignore_timeout)
        self._finish_call(by_remote=True, reason=reason)

    def send_info(self, now: float, content_type: str, body: bytes) -> None:
        """INFO in the dialog, e.g. `application/dtmf-relay` or picture_fast_update
        (`application/media_control+xml`); the answer comes as `InfoAnswered`."""
        call = self._call
        if call is None or call.state != "confirmed":
            raise RuntimeError("no established call to send INFO in")
        extra = [("Content-Type", content_type)]
        self._send_in_dialog(
            call, "INFO", extra, body, now, self._on_info_response, self._on_info_timeout
        )
        self._collect()

    def _on_info_response(self, call: _Call, response: Response, now: float) -> None:
        if response.status < 200:
            return
        if response.status in (401, 407) and self._retry_in_dialog(call, response, now):
            return
        self._events.append(InfoAnswered(response.status, response.reason))
        if response.status in (408, 481):
            self._end_call(call, now, f"INFO answered {response.status} {response.reason}",
                           send_bye=response.status == 408)  # fmt: skip

    def _on_info_timeout(self, call: _Call, now: float) -> None:
        self._events.append(InfoAnswered(408, "Request Timeout"))
        self._end_call(call, now, "INFO unanswered: the peer is gone", send_bye=True)

    def _send_in_dialog(
        self,
        call: _Call,
        method: str,
        extra: list[tuple[str, str]],
        body: bytes,
        now: float,
        on_response: Callable[[_Call, Response, float], None],
        on_timeout: Callable[[_Call, float], None],
    ) -> Request:
        """Send a request in the call's dialog. Its responses and timeout are handled only
        while `call` is still the current call: a late answer to an old call's BYE must not
        end the next one."""
        dialog = call.dialog
        assert dialog is not None
        headers = [*extra, ("User-Agent", self._config.user_agent)]
        if method in ("INVITE", "UPDATE"):
            headers.append(("Contact", self._contact()))
        request = dialog.create_request(method, headers, body)
        request.headers.prepend("Via", self._via())

        def response_in_call(response: Response, now: float) -> None:
            if call is self._call:
                on_response(call, response, now)

        def timeout_in_call(now: float) -> None:
            if call is self._call:
                on_timeout(call, now)

        self._start(request, now, response_in_call, timeout_in_call)
        return request

    def _retry_in_dialog(self, call: _Call, response: Response, now: float) -> bool:
        """Answer a challenge to an in-dialog request, resending it with CSeq + 1, at most
        MAX_CHALLENGES times per request: a server repeating `stale=true` would loop."""
        pending = self._clients.get((response.top_via.branch or "", response.cseq[1]))
        if pending is None or call.dialog is None or pending.challenges >= MAX_CHALLENGES:
            return False
        header = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
        if not call.auth.accept(response.status, response.headers.get_fields(header)):
            return False
        original = pending.transaction.request
        extra = [
            (n, v)
            for n, v in original.headers
            if n in ("Content-Type", "Session-Expires", "Supported", "Contact")
        ]
        request = call.dialog.create_request(original.method, extra, original.body)
        request.headers.add("User-Agent", self._config.user_agent)
        for name, value in call.auth.headers_for(original.method, request.uri, original.body):
            request.headers.add(name, value)
        request.headers.prepend("Via", self._via())
        self._start(request, now, pending.on_response, pending.on_timeout, pending.challenges + 1)
        return True

    # ---- session timers (RFC 4028) ----------------------------------------------------

    def _session_timer_from_2xx(self, response: Response) -> _SessionTimer | None:
        parsed = self._session_expires(response.headers.get("Session-Expires"))
        if parsed is None:
            return None
        interval, refresher = parsed
        return _SessionTimer(interval=interval, we_refresh=refresher == "uac")

    @staticmethod
    def _session_expires(value: str | None) -> tuple[int, str | None] | None:
        """Interval and refresher of a Session-Expires value (RFC 4028 §4); None if unusable."""
        if not value:
            return None
        number, _, rest = value.partition(";")
        interval = bounded_int(number, MAX_DELTA_SECONDS)
        if not interval:
            return None
        try:
            params = parse_params(";" + rest, what="Session-Expires") if rest else {}
        except SipParseError:
            return None
        return interval, params.get("refresher")

    def _call_timers(self, now: float) -> None:
        call = self._call
        if call is None:
            return
        if call.ring_deadline is not None and call.ring_deadline <= now:
            call.ring_deadline = None
            elapsed = round(now - call.started, 1)
            self.cancel(now, NoAnswer(elapsed))
        if call.cancel_deadline is not None and call.cancel_deadline <= now:
            # No final response 64*T1 after CANCEL: consider the attempt over (§9.1).
            outcome = call.cancel_outcome or CallFailed(487, "Request Terminated")
            self._call = None
            self._events.append(CallAttemptFailed(outcome))
            return
        session = self._running_session(call)
        if session is None:
            return
        if session.expire_at is not None and session.expire_at <= now:
            self._end_call(call, now, "session expired: the peer stopped refreshing", send_bye=True)
        elif session.refresh_at is not None and session.refresh_at <= now:
            session.refresh_at = None
            self._refresh_session(call, session, now)

    @staticmethod
    def _running_session(call: _Call) -> _SessionTimer | None:
        """The session timer, while it runs: only in a confirmed call. `get_timer` and
        `handle_timer` both ask here, so no deadline is reported that nothing would act on
        (the shell would spin on it)."""
        return call.session if call.state == "confirmed" else None

    def _refresh_session(self, call: _Call, session: _SessionTimer, now: float) -> None:
        """UPDATE without a body when the peer allows it (RFC 4028 §7.4), else a re-INVITE
        repeating our SDP unchanged."""
        if call.refresh_pending:
            return
        call.refresh_pending = True
        extra = [("Session-Expires", f"{session.interval};refresher=uac"), ("Supported", "timer")]
        if "UPDATE" in call.remote_allow:
            self._send_in_dialog(
                call, "UPDATE", extra, b"", now, self._on_refresh_response, self._on_refresh_timeout
            )
            return
        extra.append(("Content-Type", "application/sdp"))
        self._send_in_dialog(
            call,
            "INVITE",
            extra,
            self._local_sdp or call.offer,
            now,
            self._on_refresh_response,
            self._on_refresh_timeout,
        )

    def _on_refresh_response(self, call: _Call, response: Response, now: float) -> None:
        if call.dialog is None or response.status < 200:
            return
        number, method = response.cseq
        if 200 <= response.status < 300:
            if method == "INVITE" and number in call.acks:
                self._resend_ack(call, response)
                return
            if method == "INVITE":
                self._send_ack(call, call.dialog, number)
            call.refresh_pending = False
            call.dialog.refresh_target(response)  # an unusable Contact keeps the old target
            parsed = self._session_timer_from_2xx(response)
            if parsed is not None:
                call.session = parsed
            if call.session is not None:
                call.session.restart(now)
            return
        if response.status in (401, 407) and self._retry_in_dialog(call, response, now):
            return
        call.refresh_pending = False
        if response.status in (408, 481):
            # §12.2.1.2: these mean the dialog is gone.
            reason = f"session refresh answered {response.status}"
            self._end_call(call, now, reason, send_bye=True)
        elif call.session is not None:
            call.session.restart(now)

    def _on_refresh_timeout(self, call: _Call, now: float) -> None:
        self._end_call(call, now, "session refresh unanswered: the peer is gone", send_bye=True)

    # ---- incoming messages ------------------------------------------------------------

    def _receive_response(self, response: Response, now: float) -> None:
        try:
            key = (response.top_via.branch or "", response.cseq[1])
        except SipParseError:
            return
        pending = self._clients.get(key)
        if pending is None:
            self._stray_response(response)
            return
        if pending.transaction.receive_response(response, now):
            pending.on_response(response, now)

    def _stray_response(self, response: Response) -> None:
        """A 2xx to INVITE after its transaction ended is a retransmission from the UAS:
        it still needs our ACK, or the UAS gives up on the call (§13.2.2.4)."""
        call = self._call
        if (
            call is not None
            and call.dialog is not None
            and 200 <= response.status < 300
            and response.cseq[1] == "INVITE"
            and call.dialog.matches(response)
        ):
            self._resend_ack(call, response)

    def _receive_request(self, request: Request, addr: Addr, now: float) -> None:
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
        server = ServerTransaction(request, addr, self._reliable)
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

    def _answer(self, request: Request, now: float) -> Response:
        """The response to a new incoming request (§8.2, §12.2.2)."""
        method = request.method
        if method == "CANCEL":
            # We answer re-INVITEs at once, so there is never anything left to cancel (§9.2).
            known = (request.top_via.branch or "", "INVITE") in self._servers
            return self._response(request, 200 if known else 481)
        call = self._call
        dialog = call.dialog if call is not None else None
        if request.to.tag is None:
            if method == "OPTIONS":
                return self._response(request, 200, self._capabilities())
            if method == "INVITE":
                return self._response(request, 603, reason="Decline")
            return self._response(request, 405, [("Allow", ALLOW)])
        if call is None or dialog is None or not dialog.matches(request):
            return self._response(request, 481)
        if not dialog.accept_remote_cseq(request):
            return self._response(request, 500, [("Retry-After", "1")])
        if method == "BYE":
            self._finish_call(by_remote=True, reason=self._bye_reason(request))
            return self._response(request, 200)
        if method == "INFO":
            content_type = request.headers.get("Content-Type") or ""
            self._events.append(InfoReceived(content_type, request.body))
            return self._response(request, 200)
        if method == "OPTIONS":
            return self._response(request, 200, self._capabilities())
        if method in ("INVITE", "UPDATE"):
            return self._answer_modification(call, dialog, request, now)
        return self._response(request, 405, [("Allow", ALLOW)])

    def _answer_modification(
        self, call: _Call, dialog: Dialog, request: Request, now: float
    ) -> Response:
        """re-INVITE / UPDATE from the peer: hold, media change, session refresh. The call
        stays up; our SDP is repeated unchanged (RFC 3264 §8)."""
        if request.method == "INVITE" and call.refresh_pending:
            return self._response(request, 491)  # glare: both re-INVITEs pending (§14.2)
        if not dialog.refresh_target(request):
            return self._response(request, 400, reason="Bad Contact")
        if request.body:
            self._events.append(SessionModified(request.body))
        extra = [("Contact", self._contact()), ("Allow", ALLOW)]
        parsed = self._session_expires(request.headers.get("Session-Expires"))
        if parsed is not None:
            interval, refresher = parsed
            refresher = refresher or "uac"
            extra.append(("Session-Expires", f"{interval};refresher={refresher}"))
            if refresher == "uac":
                extra.append(("Require", "timer"))
            call.session = _SessionTimer(interval=interval, we_refresh=refresher == "uas")
        if call.session is not None:
            call.session.restart(now)
        body = b""
        if request.method == "INVITE" or request.body:
            body = self._local_sdp or call.offer
            extra.append(("Content-Type", "application/sdp"))
        return self._response(request, 200, extra, body)

    @staticmethod
    def _bye_reason(request: Request) -> str:
        """The Reason header's text (RFC 3326), if the peer gave one."""
        value = request.headers.get("Reason")
        if not value:
            return "remote hangup"
        _, _, rest = value.partition(";")
        try:
            params = parse_params(";" + rest, what="Reason") if rest else {}
        except SipParseError:
            return value
        return params.get("text") or value

    def _capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", "timer")]

    def _response(
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
            to += f";tag={self._token()}"
        headers.add("To", to)
        headers.add("Call-ID", request.call_id)
        headers.add("CSeq", request.headers.get("CSeq") or "")
        headers.add("Server", self._config.user_agent)
        for name, value in extra or []:
            headers.add(name, value)
        text = reason or _REASONS.get(status, "")
        return Response(status, text, headers, body)

    # ---- helpers ------------------------------------------------------------------------

    def _start(
        self,
        request: Request,
        now: float,
        on_response: Callable[[Response, float], None],
        on_timeout: Callable[[float], None],
        challenges: int = 0,
    ) -> None:
        transaction = ClientTransaction(request, self._server, self._reliable, now)
        pending = _Pending(transaction, on_response, on_timeout, challenges=challenges)
        self._clients[transaction.key] = pending

    def _collect(self) -> None:
        """Move every transaction's outbox to the send queue; forget finished transactions."""
        for key, pending in list(self._clients.items()):
            transaction = pending.transaction
            for data in transaction.outbox:
                self._transmit(data, transaction.addr)
            transaction.outbox.clear()
            if transaction.terminated:
                del self._clients[key]
        for server_key, server in list(self._servers.items()):
            for data in server.outbox:
                self._transmit(data, server.addr)
            server.outbox.clear()
            if server.terminated:
                del self._servers[server_key]

    def _transmit(self, data: bytes, addr: Addr) -> None:
        self._outgoing.append((data, addr))
        self._events.append(MessageLogged("sent", addr, data))

    def _via(self) -> str:
        """Our Via with a fresh RFC 3261 branch and rport (RFC 3581 §3)."""
        transport = self._config.transport.upper()
        host = _hostport(self._config.local_host, self._config.local_port)
        return f"SIP/2.0/{transport} {host};rport;branch=z9hG4bK{self._token()}"

    def _contact(self) -> str:
        host, port = self._contact_addr
        suffix = "" if self._config.transport == "udp" else f";transport={self._config.transport}"
        return f"<sip:{self._config.user}@{_hostport(host, port)}{suffix}>"

    def _local_party(self) -> str:
        name = self._config.display_name
        aor = f"<{self._config.aor}>"
        return f"{quote(name)} {aor}" if name else aor

    def _learn_public_address(self, response: Response) -> None:
        """Use the address the registrar saw (Via received/rport, RFC 3581 §4) as our Contact
        for later requests, so a NAT between us and the server keeps working."""
        if self._config.transport != "udp":
            return
        params = response.top_via.params
        received = params.get("received")
        host = received and _ip_literal(received)
        port = bounded_int(params.get("rport"), 65535)
        self._contact_addr = (host or self._contact_addr[0], port or self._contact_addr[1])

    @staticmethod
    def _sdp_of(message: Response | Request) -> bytes | None:
        content_type = (message.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        return message.body if message.body and content_type == "application/sdp" else None

    @staticmethod
    def _allow_of(response: Response) -> frozenset[str]:
        return frozenset(v.strip().upper() for v in response.headers.get_all("Allow"))

    @staticmethod
    def _auth_of(request: Request) -> list[tuple[str, str]]:
        return [(n, v) for n, v in request.headers if n in ("Authorization", "Proxy-Authorization")]
