"""Client and server transactions (RFC 3261 §17, with the RFC 6026 Accepted states).

A transaction owns retransmissions and their timers; it never sees a socket or a clock. Its
owner feeds it responses/requests and `now`, then drains `outbox` (bytes for `addr`). Over
TCP/TLS nothing is retransmitted (§17.1.1.2, §17.1.2.2) but the timeouts B, F and H remain.
"""

from __future__ import annotations

from enum import Enum

from sip2rtmp.netaddr import Address
from sip2rtmp.sip.message import Headers, Request, Response

T1 = 0.5
"""RTT estimate (§17.1.1.1)."""
T2 = 4.0
"""Longest interval between retransmissions of non-INVITE requests and INVITE responses."""
T4 = 5.0
"""Longest time a message may stay in the network."""
TIMEOUT = 64 * T1
"""Timers B, F, H, J, L and M: the point where a peer is considered gone."""


class State(Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class _Transaction:
    """Named timers and an outbox shared by every kind of transaction."""

    def __init__(self, addr: Address, reliable: bool) -> None:
        self.addr = addr
        self.reliable = reliable
        self.outbox: list[bytes] = []
        self.timed_out = False
        self.state = State.TRYING
        self._timers: dict[str, float] = {}
        self._interval = T1

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def get_timer(self) -> float | None:
        return min(self._timers.values(), default=None)

    def handle_timer(self, now: float) -> None:
        for name, deadline in sorted(self._timers.items(), key=lambda item: item[1]):
            if deadline <= now and self._timers.get(name) == deadline:
                del self._timers[name]
                self._fire(name, now)

    def _fire(self, name: str, now: float) -> None:
        raise NotImplementedError

    def _terminate(self) -> None:
        self.state = State.TERMINATED
        self._timers.clear()


class ClientTransaction(_Transaction):
    """Sends one request and reports its responses; `receive_response` says what the TU sees."""

    def __init__(self, request: Request, addr: Address, reliable: bool, now: float) -> None:
        super().__init__(addr, reliable)
        self.request = request
        self.branch = request.top_via.branch or ""
        self.method = request.method
        self._ack = b""
        self._bytes = request.to_bytes()
        """Encoded once: every retransmission repeats exactly these bytes."""
        self.outbox.append(self._bytes)
        self._timers["timeout"] = now + TIMEOUT
        if not reliable:
            self._timers["retransmit"] = now + T1
        self.state = State.CALLING if request.method == "INVITE" else State.TRYING

    @property
    def key(self) -> tuple[str, str]:
        """Responses match on the top Via branch and the CSeq method (§17.1.3)."""
        return self.branch, self.method

    def abandon(self) -> None:
        """Stop retransmitting and forget the request: it went on to another server target
        (RFC 3263 §4.3). A late answer from here is then a stray response. A transaction
        that has its final response already stays, to ACK its retransmissions."""
        if self.state in (State.CALLING, State.TRYING, State.PROCEEDING):
            self.outbox.clear()
            self._terminate()

    def receive_response(self, response: Response, now: float) -> bool:
        if self.method == "INVITE":
            return self._invite_response(response, now)
        return self._non_invite_response(response, now)

    def _invite_response(self, response: Response, now: float) -> bool:
        status = response.status
        if self.state in (State.CALLING, State.PROCEEDING):
            self._timers.pop("retransmit", None)
            self._timers.pop("timeout", None)
            if status < 200:
                self.state = State.PROCEEDING
            elif status < 300:
                self.state = State.ACCEPTED
                self._timers["accepted"] = now + TIMEOUT
            else:
                self.state = State.COMPLETED
                self._ack = self._ack_for(response).to_bytes()
                self.outbox.append(self._ack)
                self._timers["completed"] = now + (0 if self.reliable else 32.0)
            return True
        if self.state is State.ACCEPTED:
            return 200 <= status < 300
        if self.state is State.COMPLETED and status >= 300:
            self.outbox.append(self._ack)
        return False

    def _ack_for(self, response: Response) -> Request:
        """ACK for a non-2xx final response: same branch and Route, To from the response
        (§17.1.1.3)."""
        original = self.request.headers
        headers = Headers()
        headers.add("Via", original.get_all("Via")[0])
        for route in original.get_fields("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", original.get("From") or "")
        headers.add("To", response.headers.get("To") or "")
        headers.add("Call-ID", original.get("Call-ID") or "")
        headers.add("CSeq", f"{self.request.cseq[0]} ACK")
        return Request("ACK", self.request.uri, headers)

    def _non_invite_response(self, response: Response, now: float) -> bool:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return False
        if response.status < 200:
            self.state = State.PROCEEDING
            return True
        self.state = State.COMPLETED
        self._timers.clear()
        self._timers["completed"] = now + (0 if self.reliable else T4)
        return True

    def _fire(self, name: str, now: float) -> None:
        if name == "retransmit":
            # Timer A doubles without bound (§17.1.1.2); timer E doubles up to T2, and sits at
            # T2 once a provisional response arrived (§17.1.2.2).
            self.outbox.append(self._bytes)
            if self.method == "INVITE":
                self._interval *= 2
            elif self.state is State.PROCEEDING:
                self._interval = T2
            else:
                self._interval = min(self._interval * 2, T2)
            self._timers["retransmit"] = now + self._interval
        elif name == "timeout":
            self.timed_out = True
            self._terminate()
        else:
            self._terminate()


class ServerTransaction(_Transaction):
    """Answers one incoming request; repeats the final response when the request is repeated.

    For INVITE the 2xx is retransmitted until its ACK arrives (the UAS core duty of §13.3.1.4,
    kept here because it has the same shape), and a non-2xx until the ACK that matches this
    transaction (§17.2.1).
    """

    def __init__(self, request: Request, addr: Address, reliable: bool) -> None:
        super().__init__(addr, reliable)
        self.request = request
        self.method = request.method
        self.state = State.PROCEEDING if request.method == "INVITE" else State.TRYING
        self._last: bytes | None = None
        self.status = 0
        """The last response's status code, 0 before any."""

    @property
    def key(self) -> tuple[str, str]:
        """The request's branch and method, ACK counting as INVITE (§17.2.3)."""
        return self.request.top_via.branch or "", self.method

    def respond(self, response: Response, now: float) -> None:
        self._last = response.to_bytes()
        self.status = response.status
        self.outbox.append(self._last)
        if response.status < 200:
            return
        if self.method != "INVITE":
            self.state = State.COMPLETED
            self._timers["completed"] = now + (0 if self.reliable else TIMEOUT)
            return
        self.state = State.ACCEPTED if response.status < 300 else State.COMPLETED
        self._timers["timeout"] = now + TIMEOUT
        if response.status < 300 or not self.reliable:
            self._timers["retransmit"] = now + T1

    def receive_retransmission(self) -> None:
        if self._last is not None:
            self.outbox.append(self._last)

    def receive_ack(self, now: float) -> None:
        if self.state is State.ACCEPTED:
            self._terminate()
        elif self.state is State.COMPLETED:
            self.state = State.CONFIRMED
            self._timers.clear()
            self._timers["completed"] = now + (0 if self.reliable else T4)

    def _fire(self, name: str, now: float) -> None:
        if name == "retransmit" and self._last is not None:
            self.outbox.append(self._last)
            self._interval = min(self._interval * 2, T2)
            self._timers["retransmit"] = now + self._interval
        elif name == "timeout":
            self.timed_out = True
            self._terminate()
        else:
            self._terminate()
