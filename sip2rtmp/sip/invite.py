"""The INVITE dialog usage: one outgoing call from INVITE to BYE (RFC 3261 §9, §13–15, RFC 4028).

A state machine of its own: `calling` → `proceeding` (a provisional response) → `confirmed`
(2xx ACKed) → `terminating` (our BYE out), or ended early by a final failure, a timeout or a
CANCEL. Its timers are the ring timeout, the wait for the 487 after CANCEL and the session
timers; its requests go through the shared transactions. In the confirmed call it answers the
peer's BYE, INFO, OPTIONS, re-INVITE and UPDATE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from sip2rtmp.outcomes import (
    Rejected,
    RingTimeout,
    SipFailure,
    Unanswered,
    Unreachable,
    UnusableAnswer,
)
from sip2rtmp.sip.auth import DigestClient
from sip2rtmp.sip.context import (
    ALLOW,
    MAX_CHALLENGES,
    MAX_DELTA_SECONDS,
    SUPPORTED,
    AgentContext,
    challenges_of,
)
from sip2rtmp.sip.dialog import Dialog
from sip2rtmp.sip.events import (
    CallAnswered,
    CallAttemptFailed,
    CallEnded,
    CallProgress,
    InfoAnswered,
    InfoReceived,
    SessionModified,
)
from sip2rtmp.sip.message import (
    Headers,
    Request,
    Response,
    SipParseError,
    bounded_int,
    parse_name_addr,
    parse_params,
)
from sip2rtmp.sip.offer_answer import SessionState, UnacceptableOffer
from sip2rtmp.sip.prack import MAX_EARLY_DIALOGS, ReliableProvisionals
from sip2rtmp.sip.session_timer import SessionTimer, session_expires, timer_from_2xx
from sip2rtmp.sip.transaction import TIMEOUT

MAX_FORKED_ANSWERS = 8
"""Forked 2xx answers (other To tags) that get a BYE and a kept ACK (§13.2.2.4); any more are
only ACKed, so a stream of invented tags cannot grow our transactions."""
MAX_KEPT_ACKS = 4
"""ACKs kept for 2xx retransmissions: the INVITE's and the latest refresh re-INVITEs'."""
MAX_REDIRECTS = 3
"""3xx redirects followed for one call (RFC 3261 §8.1.3.4); more is a loop or an attack."""

CallState = Literal["calling", "proceeding", "confirmed", "terminating"]


@dataclass
class Call:
    """One outgoing call attempt and, once answered, its dialog and timers."""

    target: str
    offer: bytes
    call_id: str
    from_tag: str
    started: float
    auth: DigestClient
    invite: Request
    cseq: int = 1
    state: CallState = "calling"
    extra: list[tuple[str, str]] = field(default_factory=list)
    challenges: int = 0
    redirects: int = 0
    provisional: bool = False
    rang: bool = False
    cancel_outcome: SipFailure | None = None
    cancel_sent: bool = False
    ring_deadline: float | None = None
    cancel_deadline: float | None = None
    dialog: Dialog | None = None
    acks: dict[int, bytes] = field(default_factory=dict)
    forks: dict[str, bytes] = field(default_factory=dict)
    """The ACK sent to each forked 2xx, by its To tag."""
    remote_allow: frozenset[str] = frozenset()
    session: SessionTimer | None = None
    refresh_pending: bool = False
    sdp: SessionState = field(init=False)
    """Our capabilities (the offer), the last SDP we sent, the answers to the peer's offers."""
    early: dict[str, Dialog] = field(default_factory=dict)
    """Early dialogs by the callee's To tag (RFC 3261 §12.1.2): PRACK and UPDATE use them."""
    reliable: ReliableProvisionals = field(default_factory=ReliableProvisionals)
    early_answers: dict[str, bytes] = field(default_factory=dict)
    """The SDP of the latest provisional response in each early dialog: the answer when the
    2xx carries none (RFC 3262 §5, RFC 3264: an answer is given once)."""
    awaiting_answer: int | None = None
    """CSeq of an offerless re-INVITE we answered with our offer: its ACK brings the answer."""

    def __post_init__(self) -> None:
        self.sdp = SessionState(self.offer, self.offer)

    @property
    def running_session(self) -> SessionTimer | None:
        """The session timer, while it runs: only in a confirmed call. `get_timer` and
        `handle_timer` both ask here, so no deadline is reported that nothing would act on
        (the shell would spin on it)."""
        return self.session if self.state == "confirmed" else None


InCallResponse = Callable[[Call, Response, float], None]
InCallTimeout = Callable[[Call, float], None]


def _ignore_response(call: Call, response: Response, now: float) -> None:
    """For a BYE that ends a dialog already given up: its answer changes nothing."""


def _ignore_timeout(call: Call, now: float) -> None:
    """See `_ignore_response`."""


def _answer_dialog(invite: Request, response: Response) -> tuple[Dialog, SipParseError | None]:
    """The dialog a 2xx creates; if its Contact or Record-Route is unusable, the dialog our
    INVITE alone defines (enough to ACK and BYE it) and why."""
    try:
        return Dialog.from_response(invite, response), None
    except SipParseError as exc:
        return Dialog.fallback(invite, response), exc


def _allow_of(response: Response) -> frozenset[str]:
    return frozenset(v.strip().upper() for v in response.headers.get_all("Allow"))


def _auth_of(request: Request) -> list[tuple[str, str]]:
    return [(n, v) for n, v in request.headers if n in ("Authorization", "Proxy-Authorization")]


def _redirect_target(response: Response) -> str | None:
    """The 3xx Contact to follow: sip/sips URIs only, the highest q first, then order."""
    best: tuple[float, str] | None = None
    for value in response.headers.get_all("Contact"):
        try:
            contact = parse_name_addr(value)
            uri = contact.sip_uri()
            q = float(contact.params.get("q") or 1.0)
        except (SipParseError, ValueError):
            continue
        if uri.headers or not 0.0 <= q <= 1.0:
            continue  # URI headers would become request headers: not from a redirect
        if best is None or q > best[0]:
            best = (q, contact.uri)
    return None if best is None else best[1]


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


class InviteUsage:
    """At most one call; `get_timer`/`handle_timer` drive its ring, CANCEL and session timers."""

    def __init__(self, context: AgentContext) -> None:
        self._ctx = context
        self.call: Call | None = None
        """The current call attempt or call, None between calls."""

    # ---- the attempt: INVITE, CANCEL (RFC 3261 §9, §13.2) ------------------------------------

    def invite(
        self, now: float, target_uri: str, sdp: bytes, ring_timeout: float | None = None
    ) -> None:
        """Call `target_uri` (a SIP URI, or a user at our domain) offering `sdp`."""
        if self.call is not None:
            raise RuntimeError("a call is already in progress")
        ctx = self._ctx
        target = target_uri
        if not target.lower().startswith(("sip:", "sips:", "tel:")):
            target = f"sip:{target}" if "@" in target else f"sip:{target}@{ctx.config.domain}"
        call = Call(
            target=target,
            offer=sdp,
            call_id=ctx.token(),
            from_tag=ctx.token(),
            started=now,
            auth=DigestClient(ctx.config.credentials, ctx.token),
            invite=Request("INVITE", target),
            ring_deadline=now + ring_timeout if ring_timeout else None,
        )
        self.call = call
        self._send_invite(call, now)

    def _send_invite(self, call: Call, now: float) -> None:
        ctx = self._ctx
        from_ = f"{ctx.local_party()};tag={call.from_tag}"
        headers = ctx.out_of_dialog("INVITE", from_, f"<{call.target}>", call.call_id, call.cseq)
        headers.add("Contact", ctx.contact())
        headers.add("Allow", ALLOW)
        headers.add("Supported", SUPPORTED)
        headers.add("User-Agent", ctx.config.user_agent)
        for name, value in [*ctx.identity_headers(), *call.extra]:
            headers.add(name, value)
        for name, value in call.auth.headers_for("INVITE", call.target, call.offer):
            headers.add(name, value)
        headers.add("Content-Type", "application/sdp")
        call.invite = Request("INVITE", call.target, headers, call.offer)
        ctx.start(
            call.invite,
            now,
            partial(self._on_invite_response, call),
            partial(self._on_invite_timeout, call),
            resend=partial(self._resend_invite, call),
        )

    def _resend_invite(self, call: Call, now: float) -> None:
        """The same INVITE, in a new transaction, to the next server target (RFC 3263 §4.3)."""
        if call is self.call and call.state == "calling" and call.cancel_outcome is None:
            call.cseq += 1
            self._send_invite(call, now)

    def cancel(self, now: float, outcome: SipFailure | None = None) -> None:
        """Abandon the call attempt. CANCEL goes out once a provisional response has arrived
        (§9.1); the attempt then ends with `outcome` (default: the 487 a CANCEL brings)."""
        call = self.call
        if call is None or call.state not in ("calling", "proceeding"):
            return
        if call.cancel_outcome is None:
            default = Rejected("INVITE", 487, "Request Terminated", self._ctx.target_name)
            call.cancel_outcome = outcome or default
            call.cancel_deadline = now + TIMEOUT
            call.ring_deadline = None
        if call.provisional and not call.cancel_sent:
            self._send_cancel(call, now)

    def _send_cancel(self, call: Call, now: float) -> None:
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
        headers.add("User-Agent", self._ctx.config.user_agent)
        request = Request("CANCEL", call.invite.uri, headers)
        self._ctx.start(request, now, lambda response, now: None, lambda now: None)

    def _on_invite_response(self, call: Call, response: Response, now: float) -> None:
        if call is not self.call:
            return
        status = response.status
        if status < 200:
            self._on_provisional(call, response, now)
            return
        if status < 300:
            self._on_invite_2xx(call, response, now)
            return
        outcome = call.cancel_outcome
        if outcome is None:
            if self._retry_invite(call, response, now):
                return
            outcome = Rejected(
                "INVITE",
                status,
                response.reason,
                self._ctx.target_name,
                rang=call.rang,
                elapsed=now - call.started,
                authenticated=bool(_auth_of(call.invite)),
            )
        self.call = None
        self._ctx.events.append(CallAttemptFailed(outcome))

    def _on_provisional(self, call: Call, response: Response, now: float) -> None:
        call.provisional = True
        call.rang = call.rang or response.status in (180, 183)
        if call.state == "calling":
            call.state = "proceeding"
        early = self._early_dialog(call, response)
        rack = call.reliable.rack_for(response) if early is not None else None
        if rack is None and response.headers.get("RSeq") is not None:
            return  # a reliable response repeated (or out of order): reported once
        sdp = response.sdp
        if sdp is not None and early is not None:
            call.early_answers[early.remote_tag] = sdp
        self._ctx.events.append(CallProgress(response.status, response.reason, sdp))
        if early is not None and rack is not None:
            self._send_prack(call, early, rack, now)
        if call.cancel_outcome is not None and not call.cancel_sent:
            self._send_cancel(call, now)

    def _early_dialog(self, call: Call, response: Response) -> Dialog | None:
        """The early dialog a provisional response with a To tag makes (§12.1.2), kept per
        tag (at most MAX_EARLY_DIALOGS); None without a tag or with an unusable Contact."""
        tag = response.to.tag
        if not tag or response.status == 100:
            return None
        dialog = call.early.get(tag)
        if dialog is None and len(call.early) < MAX_EARLY_DIALOGS:
            try:
                dialog = Dialog.from_response(call.invite, response)
            except SipParseError:
                return None
            call.early[tag] = dialog
        return dialog

    def _send_prack(self, call: Call, early: Dialog, rack: str, now: float) -> None:
        """PRACK in the early dialog (RFC 3262 §7.2); its answer changes nothing for us."""
        ctx = self._ctx
        request = early.create_request(
            "PRACK", [("RAck", rack), ("User-Agent", ctx.config.user_agent)]
        )
        for name, value in call.auth.headers_for("PRACK", request.uri):
            request.headers.add(name, value)
        request.headers.prepend("Via", ctx.via())
        ctx.start(request, now, lambda response, now: None, lambda now: None)

    def _retry_invite(self, call: Call, response: Response, now: float) -> bool:
        """A new INVITE for a 401/407 (credentials) or 422 (RFC 4028 §6): same Call-ID and
        From tag, CSeq + 1 (§8.1.3.5, §22.2)."""
        status = response.status
        call.challenges += 1
        if call.challenges > MAX_CHALLENGES:
            return False
        if 300 <= status < 400:
            return self._redirect(call, response, now)
        if status in (401, 407):
            if not call.auth.accept(status, challenges_of(response)):
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

    def _redirect(self, call: Call, response: Response, now: float) -> bool:
        """Follow a 3xx to its most preferred SIP contact (highest q, RFC 3261 §8.1.3.4):
        the same call, a new Request-URI, still through our server. At most MAX_REDIRECTS."""
        call.challenges -= 1  # a redirect is no challenge
        if call.redirects >= MAX_REDIRECTS:
            return False
        target = _redirect_target(response)
        if target is None or target == call.target:
            return False
        call.redirects += 1
        call.target = target
        call.cseq += 1
        call.provisional = False
        self._send_invite(call, now)
        return True

    def _on_invite_timeout(self, call: Call, now: float) -> None:
        if call is not self.call or call.state not in ("calling", "proceeding"):
            return
        self.call = None
        outcome = call.cancel_outcome or Unanswered("INVITE", self._ctx.target_name, TIMEOUT)
        self._ctx.events.append(CallAttemptFailed(outcome))

    # ---- the answer: ACK, forks (RFC 3261 §13.2.2.4) ----------------------------------------

    def _on_invite_2xx(self, call: Call, response: Response, now: float) -> None:
        if call.dialog is None:
            self._establish(call, response, now)
        elif response.to.tag == call.dialog.remote_tag:
            self._resend_ack(call, response)
        else:
            self._answer_fork(call, response, now)

    def _establish(self, call: Call, response: Response, now: float) -> None:
        """The first 2xx: ACK it, then either the call is up or it is hung up at once.

        A 2xx whose Contact or Record-Route cannot make a dialog is still ACKed, along the
        INVITE's own path (§13.2.2.4: otherwise the callee retransmits and gives up), then
        BYEd; the attempt fails naming the cause rather than ending as "no answer".
        """
        dialog, unusable = _answer_dialog(call.invite, response)
        early = call.early.get(dialog.remote_tag)
        if early is not None:  # its PRACKs and UPDATEs used CSeq numbers (RFC 3262 §7.1)
            dialog.local_seq = max(dialog.local_seq, early.local_seq)
            dialog.remote_seq = early.remote_seq
        call.dialog = dialog
        self._send_ack(call, dialog, call.cseq)
        call.remote_allow = _allow_of(response)
        # CANCEL lost the race against the answer: the call exists, so end it (§9.1).
        outcome = call.cancel_outcome
        if unusable is not None and outcome is None:
            detail = f"answered with an unusable dialog: {unusable}"
            outcome = UnusableAnswer(response.status, detail)
        if outcome is not None:
            call.cancel_outcome = outcome
            call.cancel_deadline = call.ring_deadline = None
            self._send_bye(call, now)
            self._ctx.events.append(CallAttemptFailed(outcome))
            return
        call.state = "confirmed"
        call.ring_deadline = None
        call.session = timer_from_2xx(response)
        if call.session is not None:
            call.session.restart(now)
        answer = response.sdp or call.early_answers.get(dialog.remote_tag, response.body)
        self._ctx.events.append(CallAnswered(answer))

    def _answer_fork(self, call: Call, response: Response, now: float) -> None:
        """A 2xx with another To tag: a forked branch answered too. ACK it and BYE that dialog
        (§13.2.2.4); a retransmission gets the kept ACK again, without a second BYE."""
        ctx = self._ctx
        tag = response.to.tag or ""
        ack = call.forks.get(tag)
        if ack is None:
            forked, _ = _answer_dialog(call.invite, response)
            forked_ack = forked.create_ack(call.cseq, _auth_of(call.invite))
            forked_ack.headers.prepend("Via", ctx.via())
            ack = forked_ack.to_bytes()
            if len(call.forks) < MAX_FORKED_ANSWERS:
                call.forks[tag] = ack
                bye = forked.create_request("BYE", [("User-Agent", ctx.config.user_agent)])
                bye.headers.prepend("Via", ctx.via())
                ctx.start(bye, now, lambda response, now: None, lambda now: None)
        ctx.transmit(ack, ctx.server)

    def _send_ack(self, call: Call, dialog: Dialog, cseq: int) -> None:
        """ACK a 2xx: own branch, dialog route set, the INVITE's CSeq number and credentials
        (§13.2.2.4). Kept per CSeq so a retransmitted 2xx gets exactly the same bytes; only
        the latest few, as a 2xx is retransmitted for 64*T1 at most (§13.3.1.4)."""
        ack = dialog.create_ack(cseq, _auth_of(call.invite))
        ack.headers.prepend("Via", self._ctx.via())
        call.acks[cseq] = ack.to_bytes()
        if len(call.acks) > MAX_KEPT_ACKS:
            del call.acks[next(iter(call.acks))]
        self._ctx.transmit(call.acks[cseq], self._ctx.server)

    def _resend_ack(self, call: Call, response: Response) -> None:
        ack = call.acks.get(response.cseq[0])
        if ack is not None:
            self._ctx.transmit(ack, self._ctx.server)

    def stray_response(self, response: Response) -> None:
        """A 2xx to INVITE after its transaction ended is a retransmission from the UAS:
        it still needs our ACK, or the UAS gives up on the call (§13.2.2.4)."""
        call = self.call
        if (
            call is not None
            and call.dialog is not None
            and 200 <= response.status < 300
            and response.cseq[1] == "INVITE"
            and call.dialog.matches(response)
        ):
            self._resend_ack(call, response)

    # ---- the established call: BYE, INFO (RFC 3261 §15, RFC 6086) ---------------------------

    def bye(self, now: float) -> None:
        """Hang up: BYE when the call is up, CANCEL while it is still ringing."""
        call = self.call
        if call is None:
            return
        if call.state in ("calling", "proceeding"):
            self.cancel(now)
        elif call.state == "confirmed":
            self._send_bye(call, now)

    def _send_bye(self, call: Call, now: float) -> None:
        call.state = "terminating"
        call.session = None
        self._send_in_dialog(call, "BYE", [], b"", now, self._on_bye_response, self._on_bye_timeout)

    def _on_bye_response(self, call: Call, response: Response, now: float) -> None:
        if response.status < 200:
            return
        if response.status in (401, 407) and self._retry_in_dialog(call, response, now):
            return
        self._finish_call(by_remote=False, reason="hangup")

    def _on_bye_timeout(self, call: Call, now: float) -> None:
        del call
        self._finish_call(by_remote=False, reason="hangup (BYE unanswered)")

    def connection_lost(self, outcome: Unreachable) -> None:
        """An attempt in progress fails with the transport; a BYE in flight has done its
        part. An established call goes on: its media does not travel over the signalling
        connection, which the agent opens again."""
        call = self.call
        if call is None:
            return
        if call.state in ("calling", "proceeding"):
            self.call = None
            self._ctx.events.append(CallAttemptFailed(call.cancel_outcome or outcome))
        elif call.state == "terminating":
            self._finish_call(by_remote=False, reason="hangup")

    def _finish_call(self, *, by_remote: bool, reason: str) -> None:
        """Forget the call; report its end unless the attempt already failed (it was only
        being hung up after a late or unusable answer)."""
        call = self.call
        if call is None:
            return
        self.call = None
        if call.cancel_outcome is None:
            self._ctx.events.append(CallEnded(by_remote=by_remote, reason=reason))

    def _end_call(self, call: Call, now: float, reason: str, *, send_bye: bool) -> None:
        """The dialog failed under us: tell the peer (if it may still listen) and report."""
        if send_bye and call.state == "confirmed":
            self._send_in_dialog(call, "BYE", [], b"", now, _ignore_response, _ignore_timeout)
        self._finish_call(by_remote=True, reason=reason)

    def send_info(self, now: float, content_type: str, body: bytes) -> None:
        """INFO in the dialog, e.g. `application/dtmf-relay` or picture_fast_update
        (`application/media_control+xml`); the answer comes as `InfoAnswered`."""
        call = self.call
        if call is None or call.state != "confirmed":
            raise RuntimeError("no established call to send INFO in")
        extra = [("Content-Type", content_type)]
        self._send_in_dialog(
            call, "INFO", extra, body, now, self._on_info_response, self._on_info_timeout
        )

    def _on_info_response(self, call: Call, response: Response, now: float) -> None:
        if response.status < 200:
            return
        if response.status in (401, 407) and self._retry_in_dialog(call, response, now):
            return
        self._ctx.events.append(InfoAnswered(response.status, response.reason))
        if response.status in (408, 481):
            self._end_call(call, now, f"INFO answered {response.status} {response.reason}",
                           send_bye=response.status == 408)  # fmt: skip

    def _on_info_timeout(self, call: Call, now: float) -> None:
        self._ctx.events.append(InfoAnswered(408, "Request Timeout"))
        self._end_call(call, now, "INFO unanswered: the peer is gone", send_bye=True)

    def _send_in_dialog(
        self,
        call: Call,
        method: str,
        extra: list[tuple[str, str]],
        body: bytes,
        now: float,
        on_response: InCallResponse,
        on_timeout: InCallTimeout,
    ) -> None:
        """Send a request in the call's dialog. Its responses and timeout are handled only
        while `call` is still the current call: a late answer to an old call's BYE must not
        end the next one."""
        ctx = self._ctx
        dialog = call.dialog
        assert dialog is not None
        headers = [*extra, ("User-Agent", ctx.config.user_agent)]
        if method in ("INVITE", "UPDATE"):
            headers.append(("Contact", ctx.contact()))
        request = dialog.create_request(method, headers, body)
        request.headers.prepend("Via", ctx.via())

        def response_in_call(response: Response, now: float) -> None:
            if call is self.call:
                on_response(call, response, now)

        def timeout_in_call(now: float) -> None:
            if call is self.call:
                on_timeout(call, now)

        ctx.start(request, now, response_in_call, timeout_in_call)

    def _retry_in_dialog(self, call: Call, response: Response, now: float) -> bool:
        """Answer a challenge to an in-dialog request, resending it with CSeq + 1, at most
        MAX_CHALLENGES times per request: a server repeating `stale=true` would loop."""
        ctx = self._ctx
        pending = ctx.pending_for(response)
        if pending is None or call.dialog is None or pending.challenges >= MAX_CHALLENGES:
            return False
        if not call.auth.accept(response.status, challenges_of(response)):
            return False
        original = pending.transaction.request
        extra = [
            (n, v)
            for n, v in original.headers
            if n in ("Content-Type", "Session-Expires", "Supported", "Contact")
        ]
        request = call.dialog.create_request(original.method, extra, original.body)
        request.headers.add("User-Agent", ctx.config.user_agent)
        for name, value in call.auth.headers_for(original.method, request.uri, original.body):
            request.headers.add(name, value)
        request.headers.prepend("Via", ctx.via())
        ctx.start(request, now, pending.on_response, pending.on_timeout, pending.challenges + 1)
        return True

    # ---- timers -----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        call = self.call
        if call is None:
            return None
        deadlines = [call.ring_deadline, call.cancel_deadline]
        session = call.running_session
        if session is not None:
            deadlines += [session.refresh_at, session.expire_at]
        return min((d for d in deadlines if d is not None), default=None)

    def handle_timer(self, now: float) -> None:
        call = self.call
        if call is None:
            return
        if call.ring_deadline is not None and call.ring_deadline <= now:
            call.ring_deadline = None
            self.cancel(now, RingTimeout(round(now - call.started, 1)))
        if call.cancel_deadline is not None and call.cancel_deadline <= now:
            # No final response 64*T1 after CANCEL: consider the attempt over (§9.1).
            default = Rejected("INVITE", 487, "Request Terminated", self._ctx.target_name)
            self.call = None
            self._ctx.events.append(CallAttemptFailed(call.cancel_outcome or default))
            return
        session = call.running_session
        if session is None:
            return
        if session.expire_at is not None and session.expire_at <= now:
            self._end_call(call, now, "session expired: the peer stopped refreshing", send_bye=True)
        elif session.refresh_at is not None and session.refresh_at <= now:
            session.refresh_at = None
            self._refresh_session(call, session, now)

    # ---- session refresh (RFC 4028) ---------------------------------------------------------

    def _refresh_session(self, call: Call, session: SessionTimer, now: float) -> None:
        """UPDATE without a body when the peer allows it (RFC 4028 §7.4), else a re-INVITE
        repeating our SDP unchanged."""
        if call.refresh_pending:
            return
        call.refresh_pending = True
        extra = [("Session-Expires", f"{session.interval};refresher=uac"), ("Supported", "timer")]
        on_response, on_timeout = self._on_refresh_response, self._on_refresh_timeout
        if "UPDATE" in call.remote_allow:
            self._send_in_dialog(call, "UPDATE", extra, b"", now, on_response, on_timeout)
            return
        extra.append(("Content-Type", "application/sdp"))
        self._send_in_dialog(call, "INVITE", extra, call.sdp.local, now, on_response, on_timeout)

    def _on_refresh_response(self, call: Call, response: Response, now: float) -> None:
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
            parsed = timer_from_2xx(response)
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

    def _on_refresh_timeout(self, call: Call, now: float) -> None:
        self._end_call(call, now, "session refresh unanswered: the peer is gone", send_bye=True)

    # ---- requests from the peer in the dialog (RFC 3261 §12.2.2) ----------------------------

    def answer(self, request: Request, now: float) -> Response:
        """The response to a request carrying a To tag: ours if it is in our dialog (or an
        UPDATE in an early one, RFC 3311 §5.2), else 481."""
        ctx = self._ctx
        call = self.call
        dialog = call.dialog if call is not None else None
        if call is not None and dialog is None and request.method == "UPDATE":
            early = call.early.get(request.from_.tag or "")
            if early is not None and early.matches(request):
                return self._answer_early_update(call, early, request)
        if call is None or dialog is None or not dialog.matches(request):
            return ctx.response(request, 481)
        if not dialog.accept_remote_cseq(request):
            return ctx.response(request, 500, [("Retry-After", "1")])
        method = request.method
        if method == "BYE":
            self._finish_call(by_remote=True, reason=_bye_reason(request))
            return ctx.response(request, 200)
        if method == "INFO":
            content_type = request.headers.get("Content-Type") or ""
            ctx.events.append(InfoReceived(content_type, request.body))
            return ctx.response(request, 200)
        if method == "OPTIONS":
            return ctx.response(request, 200, ctx.capabilities())
        if method in ("INVITE", "UPDATE"):
            return self._answer_modification(call, dialog, request, now)
        return ctx.response(request, 405, [("Allow", ALLOW)])

    def _answer_early_update(self, call: Call, early: Dialog, request: Request) -> Response:
        """An UPDATE before the answer (RFC 3311 §5.2): its offer answered like a re-INVITE's,
        reported as an early session change."""
        ctx = self._ctx
        if not early.accept_remote_cseq(request):
            return ctx.response(request, 500, [("Retry-After", "1")])
        offer = request.sdp
        if offer is None:
            return ctx.response(request, 200, [("Contact", ctx.contact())])
        try:
            answer, session = call.sdp.answer(offer)
        except UnacceptableOffer as refused:
            return ctx.response(request, refused.status, reason=refused.reason)
        ctx.events.append(SessionModified(offer, answer, session, early=True))
        extra = [("Contact", ctx.contact()), ("Content-Type", "application/sdp")]
        return ctx.response(request, 200, extra, answer)

    def _answer_modification(
        self, call: Call, dialog: Dialog, request: Request, now: float
    ) -> Response:
        """re-INVITE / UPDATE from the peer: hold, a media change, a session refresh. An
        offer is answered by RFC 3264 §8 (`SessionState.answer`) and reported; one we cannot
        take gets 488 and the session stays. A re-INVITE without SDP gets our current SDP as
        the offer, answered in its ACK (§14.2)."""
        ctx = self._ctx
        if request.method == "INVITE" and call.refresh_pending:
            return ctx.response(request, 491)  # glare: both re-INVITEs pending (§14.2)
        if not dialog.refresh_target(request):
            return ctx.response(request, 400, reason="Bad Contact")
        offer = request.sdp
        body = b""
        if offer is not None:
            try:
                body, session = call.sdp.answer(offer)
            except UnacceptableOffer as refused:
                return ctx.response(request, refused.status, reason=refused.reason)
            ctx.events.append(SessionModified(offer, body, session))
        elif request.method == "INVITE":
            body = call.sdp.local
            call.awaiting_answer = request.cseq[0]
        extra = [("Contact", ctx.contact()), ("Allow", ALLOW)]
        extra += self._session_timer_headers(call, request, now)
        if body:
            extra.append(("Content-Type", "application/sdp"))
        return ctx.response(request, 200, extra, body)

    def _session_timer_headers(
        self, call: Call, request: Request, now: float
    ) -> list[tuple[str, str]]:
        """RFC 4028 §9: the peer's Session-Expires taken over in our 2xx, the timer restarted."""
        extra: list[tuple[str, str]] = []
        parsed = session_expires(request.headers.get("Session-Expires"))
        if parsed is not None:
            interval, refresher = parsed
            refresher = refresher or "uac"
            extra.append(("Session-Expires", f"{interval};refresher={refresher}"))
            if refresher == "uac":
                extra.append(("Require", "timer"))
            call.session = SessionTimer(interval=interval, we_refresh=refresher == "uas")
        if call.session is not None:
            call.session.restart(now)
        return extra

    def ack_received(self, ack: Request) -> None:
        """The ACK of a re-INVITE we answered with our offer brings the peer's answer."""
        call = self.call
        if call is None or call.awaiting_answer != ack.cseq[0] or call.dialog is None:
            return
        if not call.dialog.matches(ack):
            return
        call.awaiting_answer = None
        answer = ack.sdp
        if answer is None:
            return
        try:
            session = call.sdp.take_answer(answer)
        except UnacceptableOffer:
            return  # the session stays as it was; a later offer can fix it
        self._ctx.events.append(SessionModified(call.sdp.local, answer, session))

    def no_ack(self, reinvite: Request, now: float) -> None:
        """The peer never ACKed our 2xx to its re-INVITE: the dialog is broken (§13.3.1.4)."""
        call = self.call
        if call is not None and call.dialog is not None and call.dialog.matches(reinvite):
            self._end_call(call, now, "no ACK for our 2xx to the peer's re-INVITE", send_bye=True)
