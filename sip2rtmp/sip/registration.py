"""Registration (RFC 3261 §10): one binding of our Contact, refreshed until removed.

A state machine of its own: `idle` → `registering` → `registered` (refreshed at half the
granted interval) → `unregistering` → `idle`. Its one timer is the refresh; its requests go
through the shared transactions, and it reports `Registered`, `RegistrationFailed` and
`Unregistered`.

Only the first REGISTER can fail the binding. Once the registrar has accepted it, a refresh
that fails (no answer, a transport error, a rejection) is tried again with a doubling delay
(RFC 5626 §4.5 backs off the same way), reported as `RegistrationRetrying`, while a call goes
on. When the server saw us at another address than our Contact (a NAT, RFC 3581), the binding
is refreshed at once with the address it saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

from sip2rtmp.outcomes import Rejected, SipFailure, Unanswered, Unreachable
from sip2rtmp.sip.auth import DigestClient
from sip2rtmp.sip.context import (
    ALLOW,
    MAX_CHALLENGES,
    MAX_DELTA_SECONDS,
    MAX_REFRESH_DELAY,
    AgentContext,
    challenges_of,
)
from sip2rtmp.sip.events import (
    Registered,
    RegistrationFailed,
    RegistrationRetrying,
    Unregistered,
)
from sip2rtmp.sip.message import (
    Request,
    Response,
    SipParseError,
    bounded_int,
    parse_name_addr,
)
from sip2rtmp.sip.transaction import TIMEOUT

State = Literal["registering", "registered", "unregistering", "idle"]

MAX_RETRY_DELAY = 60.0
"""Longest wait between attempts to refresh a binding whose refresh failed (1 s doubling)."""


@dataclass
class _Binding:
    """Call-ID, From tag and CSeq stay for every refresh (RFC 3261 §10.2.4)."""

    call_id: str
    from_tag: str
    auth: DigestClient
    cseq: int = 0
    state: State = "idle"
    challenges: int = 0
    refresh_at: float | None = None
    in_flight: bool = False
    established: bool = False
    """The registrar accepted the binding once: from then on failures are retried."""
    failures: int = 0
    """Refreshes failed in a row."""
    contact: str = ""
    """The Contact the latest REGISTER carried."""


class Registration:
    """The binding's state machine; `get_timer`/`handle_timer` drive its refresh."""

    def __init__(self, context: AgentContext) -> None:
        self._ctx = context
        self._binding: _Binding | None = None

    @property
    def state(self) -> State:
        return "idle" if self._binding is None else self._binding.state

    @property
    def registered(self) -> bool:
        return self.state in ("registered", "registering")

    def register(self, now: float) -> None:
        binding = self._binding
        if binding is None:
            binding = _Binding(
                call_id=self._ctx.token(),
                from_tag=self._ctx.token(),
                auth=DigestClient(self._ctx.config.credentials, self._ctx.token),
            )
            self._binding = binding
        binding.state = "registering"
        binding.challenges = 0
        self._send(binding, now, self._ctx.config.register_expires)

    def unregister(self, now: float) -> None:
        """Remove our binding with Expires: 0 (§10.2.2); reports `Unregistered`."""
        binding = self._binding
        if binding is None or binding.state == "idle":
            self._ctx.events.append(Unregistered(ok=True))
            return
        binding.state = "unregistering"
        binding.refresh_at = None
        binding.challenges = 0
        self._send(binding, now, 0)

    def get_timer(self) -> float | None:
        return None if self._binding is None else self._binding.refresh_at

    def handle_timer(self, now: float) -> None:
        binding = self._binding
        if binding is None or binding.refresh_at is None or binding.refresh_at > now:
            return
        binding.refresh_at = None
        if not binding.in_flight:
            binding.challenges = 0
            self._send(binding, now, self._ctx.config.register_expires)

    def refresh_now(self, now: float) -> bool:
        """Refresh an accepted binding at once (the connection was opened again); False when
        there is none to refresh."""
        binding = self._binding
        if binding is None or not binding.established or binding.state != "registered":
            return False
        if not binding.in_flight:
            binding.refresh_at = None
            binding.challenges = 0
            self._send(binding, now, self._ctx.config.register_expires)
        return True

    def _send(self, binding: _Binding, now: float, expires: int) -> None:
        ctx = self._ctx
        binding.cseq += 1
        binding.in_flight = True
        binding.contact = ctx.contact()
        uri = f"sip:{ctx.config.domain}"
        aor = f"<{ctx.config.aor}>"
        headers = ctx.out_of_dialog(
            "REGISTER", f"{aor};tag={binding.from_tag}", aor, binding.call_id, binding.cseq
        )
        headers.add("Contact", binding.contact)
        headers.add("Expires", str(expires))
        headers.add("Allow", ALLOW)
        headers.add("User-Agent", ctx.config.user_agent)
        for name, value in binding.auth.headers_for("REGISTER", uri):
            headers.add(name, value)
        ctx.start(
            Request("REGISTER", uri, headers),
            now,
            partial(self._on_response, binding.cseq),
            partial(self._on_timeout, binding.cseq),
            resend=lambda now: self._send(binding, now, expires),
        )

    def _on_response(self, cseq: int, response: Response, now: float) -> None:
        """The final response to the binding's latest REGISTER; one to a REGISTER that a newer
        one replaced (a refresh overtaken by un-REGISTER) no longer decides anything."""
        binding = self._binding
        if binding is None or response.status < 200 or cseq != binding.cseq:
            return
        binding.in_flight = False
        if self._retry(binding, response, now):
            return
        binding.challenges = 0
        status = response.status
        if binding.state == "unregistering":
            binding.state = "idle"
            self._ctx.events.append(Unregistered(ok=200 <= status < 300))
            return
        if 200 <= status < 300:
            granted = self._granted_expires(response, binding.contact)
            binding.state = "registered"
            binding.established = True
            binding.failures = 0
            binding.refresh_at = now + min(max(granted / 2, 1.0), MAX_REFRESH_DELAY)
            if binding.contact != self._ctx.contact():
                binding.refresh_at = now  # register the address the server saw
            self._ctx.events.append(Registered(granted))
            return
        outcome = Rejected("REGISTER", status, response.reason, target=self._ctx.target_name)
        self._failed(binding, outcome, now)

    def _failed(self, binding: _Binding, outcome: SipFailure, now: float) -> None:
        """The first REGISTER fails the binding; a refresh is tried again later."""
        if binding.established:
            binding.state = "registered"
            binding.failures += 1
            retry_in = min(2.0 ** (binding.failures - 1), MAX_RETRY_DELAY)
            binding.refresh_at = now + retry_in
            self._ctx.events.append(RegistrationRetrying(outcome, retry_in))
            return
        binding.state = "idle"
        binding.refresh_at = None
        self._ctx.events.append(RegistrationFailed(outcome))

    def _retry(self, binding: _Binding, response: Response, now: float) -> bool:
        """Send again for a 401/407 we can answer, or a 423 naming a longer interval
        (§10.2.8); both count against MAX_CHALLENGES."""
        status = response.status
        expires = 0 if binding.state == "unregistering" else self._ctx.config.register_expires
        if status in (401, 407):
            binding.challenges += 1
            if binding.challenges <= MAX_CHALLENGES and binding.auth.accept(
                status, challenges_of(response)
            ):
                self._send(binding, now, expires)
                return True
        if status == 423 and expires and binding.challenges <= MAX_CHALLENGES:
            minimum = bounded_int(response.headers.get("Min-Expires"), MAX_DELTA_SECONDS)
            if minimum is not None and minimum > expires:
                binding.challenges += 1
                self._send(binding, now, minimum)
                return True
        return False

    def connection_lost(self, outcome: Unreachable, now: float) -> None:
        """A REGISTER in flight fails with the transport (its late timeout is ignored)."""
        binding = self._binding
        if binding is None or not binding.in_flight:
            return
        binding.in_flight = False
        if binding.state == "unregistering":
            binding.state = "idle"
            binding.refresh_at = None
            self._ctx.events.append(Unregistered(ok=False))
            return
        self._failed(binding, outcome, now)

    def _on_timeout(self, cseq: int, now: float) -> None:
        binding = self._binding
        if binding is None or cseq != binding.cseq or not binding.in_flight:
            return
        binding.in_flight = False
        if binding.state == "unregistering":
            binding.state = "idle"
            self._ctx.events.append(Unregistered(ok=False))
            return
        self._failed(binding, Unanswered("REGISTER", self._ctx.target_name, TIMEOUT), now)

    def _granted_expires(self, response: Response, registered: str) -> int:
        """The `expires` of the Contact we registered in the 2xx, else its Expires header
        (§10.2.4), else what we asked for."""
        requested = self._ctx.config.register_expires
        ours = parse_name_addr(registered).sip_uri()
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
