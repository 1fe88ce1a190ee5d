"""The user agent driven through register, invite, an established call and its refreshes by a
scripted server that turns hostile at random.

The fake server plays registrar, proxy and callee in one: it answers what the agent sends the
way kamailio and a callee would (challenges first, then provisional and final responses, a 2xx
with To tag, Record-Route and Contact), and the callee sends in-dialog requests of its own.
Each message it sends may be mutated: huge numbers, `Contact: *`, tel: URIs, bad or long
Record-Route, non-UTF-8 bytes, NUL, deleted headers, wrong tags or CSeq, duplicates, forked
2xx, flipped bytes, truncation, noise. The invariants: the agent never raises, everything it
sends parses and stays small, every attempt ends with its final event, and once the network
falls silent the agent comes to rest.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sip2rtmp.sip.events import (
    CallAnswered,
    CallAttemptFailed,
    CallEnded,
    CallProgress,
    InfoAnswered,
    MessageDropped,
    Registered,
    RegistrationFailed,
    Unregistered,
)
from sip2rtmp.sip.message import Headers, Request, Response, parse_message
from tests.unit.sip.exchange import ANSWER, OFFER, SERVER, make_ua, reply

CHALLENGE = 'Digest realm="lab.test", nonce="n{}", qop="auth", algorithm=MD5'
STALE = 'Digest realm="lab.test", nonce="s{}", qop="auth", stale=true'
CONTACT = "<sip:tone@192.0.2.20:5070>"
RECORD_ROUTE = "<sip:p2.lab.test;lr>, <sip:p1.lab.test;lr;ftag=x>"
PEER_FROM = "<sip:tone@lab.test>;tag=callee"

MAX_OWN_REQUEST = 4096
"""Bytes of any request the agent builds itself: well inside one UDP datagram."""
MAX_HEADER_LINE = 8192
"""A header line in anything the agent sends; responses echo the peer's Via, so this is the
room a peer's own 4,301-digit parameter takes, and nothing more."""
MAX_DEADLINE_AHEAD = 2**32
"""Seconds ahead a deadline may lie: the longest interval a peer may grant (RFC 3261 §20.19,
RFC 4028 §4); anything further is a number no clock needs."""
SETTLE_STEPS = 500
"""Timer steps after which a silent network must have brought the agent to rest."""
ESTABLISHED_SHARE = 0.15
"""Share of runs that must get a call established, so the rules reach the dialog's depths:
about 40 % with 200 examples, 20-75 % with the 50 of the mutation profile."""
PHASES = ("registering", "calling", "early", "confirmed", "terminating")
"""Where the agent is when a mutated message reaches it: a registration open; an INVITE
sent, nothing but 100 back; a provisional response with a tag (an early dialog, RFC 3261
§12.1); the call answered; a BYE or CANCEL sent and not yet finally answered."""

MUTATIONS = (
    "huge",
    "huge-param",
    "contact-star",
    "contact-tel",
    "rr-tel",
    "rr-bad",
    "rr-many",
    "non-utf8",
    "nul",
    "delete",
    "wrong-tag",
    "wrong-cseq",
    "dup",
    "fork",
    "flip",
    "truncate",
    "noise",
)
NUMERIC_HEADERS = (
    "Expires",
    "Min-Expires",
    "Session-Expires",
    "Min-SE",
    "Retry-After",
    "RSeq",
    "CSeq",
    "Content-Length",
)
OPENINGS = ((), (0,), (0, 0), (0, 1), (0, 2), (0, 1, 5), (0, 2, 6), (0, 7))
"""Choices of `HostileServer.answer` sent unmutated at the start: none; the challenge; 100
Trying; ringing; session progress with early media; ringing or session progress, then 2xx
with a session timer (UPDATE allowed or not); 2xx at once. Each phase of `PHASES` is where
some runs begin to be fuzzed."""
_HEADER_LINE = re.compile(rb"\r\n([A-Za-z-]+):[ \t]*")

Mutation = tuple[str, int]
"""A kind from MUTATIONS and a seed that places it (and makes its noise)."""
CLEAN: Mutation = ("none", 0)
mutations = st.one_of(st.just(CLEAN), st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 2**16)))
"""Half the server's messages are sent as built, half mutated."""


def huge(seed: int) -> bytes:
    """400 digits overflow a float; more than 4,300 make int() raise."""
    return b"9" * (400 if seed % 2 else 4301)


def noise(seed: int) -> bytes:
    return random.Random(seed).randbytes(seed % 97)


def header_lines(data: bytes) -> list[tuple[int, int, int]]:
    """(start of line, start of value, end of line) for each header line."""
    head_end = data.find(b"\r\n\r\n")
    head = data if head_end < 0 else data[: head_end + 2]
    lines = []
    for match in _HEADER_LINE.finditer(head):
        end = head.find(b"\r\n", match.end())
        lines.append((match.start() + 2, match.end(), len(head) if end < 0 else end))
    return lines


def add_header(data: bytes, line: bytes) -> bytes:
    first = data.find(b"\r\n")
    return data[: first + 2] + line + b"\r\n" + data[first + 2 :]


def mutate(data: bytes, mutation: Mutation) -> list[bytes]:
    """The datagrams a hostile server sends instead of `data`."""
    kind, seed = mutation
    if kind == "none":
        return [data]
    lines = header_lines(data)
    if kind == "huge":
        name = NUMERIC_HEADERS[seed % len(NUMERIC_HEADERS)].encode()
        if name == b"CSeq":
            return [re.sub(rb"CSeq: \d+", b"CSeq: " + huge(seed), data, count=1)]
        return [add_header(data, name + b": " + huge(seed))]
    if kind == "huge-param":
        pattern = (rb";rport(=\d+)?", rb";expires=\d+", rb";received=[^;\r]+")[seed % 3]
        name = (b";rport=", b";expires=", b";received=")[seed % 3]
        value = huge(seed) if seed % 3 < 2 else b'"' + noise(seed).hex().encode() + b'"'
        return [re.sub(pattern, name + value, data, count=1)]
    if kind in ("contact-star", "contact-tel"):
        value = b"*" if kind == "contact-star" else b"<tel:+15551234>"
        data = re.sub(rb"\r\nContact: [^\r]*", b"", data)
        return [add_header(data, b"Contact: " + value)]
    if kind == "rr-tel":
        return [add_header(data, b"Record-Route: <tel:+15551234;lr>")]
    if kind == "rr-bad":
        bad = (b"sip:bare.lab.test;lr", b"<sip:a b;lr>", b"<sip:p1.lab.test;lr", b"<>")[seed % 4]
        return [add_header(data, b"Record-Route: " + bad)]
    if kind == "rr-many":
        count = 2500 if seed % 5 == 0 else 17 + seed % 24
        routes = b", ".join(b"<sip:10.0.%d.%d;lr>" % (i // 250, i % 250) for i in range(count))
        return [add_header(data, b"Record-Route: " + routes)]
    if kind in ("non-utf8", "nul") and lines:
        _, start, _ = lines[seed % len(lines)]
        junk = b"\xff\xfe\x80" if kind == "non-utf8" else b'"\\\x00"'
        if kind == "non-utf8" and b'realm="' in data and seed % 2:
            return [data.replace(b'realm="', b'realm="\xff\xfe', 1)]
        return [data[:start] + junk + data[start:]]
    if kind == "delete" and lines:
        start, _, end = lines[seed % len(lines)]
        return [data[:start] + data[end + 2 :]]
    if kind == "wrong-tag":
        return [data.replace(b"tag=callee", b"tag=intruder").replace(b"tag=tok", b"tag=bad")]
    if kind == "wrong-cseq":
        return [re.sub(rb"CSeq: (\d+)", lambda m: b"CSeq: %d" % (int(m[1]) + 1 + seed), data)]
    if kind == "dup":
        return [data, data]
    if kind == "fork":
        return [data, data.replace(b"tag=callee", b"tag=fork%d" % (seed % 12))]
    if kind == "flip" and data:
        index = seed % len(data)
        return [data[:index] + bytes([data[index] ^ (1 + seed % 255)]) + data[index + 1 :]]
    if kind == "truncate":
        return [data[: seed % (len(data) + 1)]]
    if kind == "noise":
        index = seed % (len(data) + 1)
        return [data[:index] + noise(seed) + data[index:]] if seed % 2 else [noise(seed)]
    return [data]


respond = partial(reply, rport=True)
"""A response as a proxy or the callee makes it, with the agent's received and rport set."""


class HostileServer(RuleBasedStateMachine):
    """Registrar, proxy and callee against one user agent, with a model of what must follow."""

    runs = 0
    established_runs = 0
    mutated_in: ClassVar[Counter[str]] = Counter()
    """Mutated messages delivered, by the phase of the registration or call they reached."""

    def __init__(self) -> None:
        super().__init__()
        self.ua = make_ua()
        self.now = 0.0
        self.nonces = itertools.count()
        self.pending: dict[tuple[str, str], Request] = {}
        """The agent's requests not yet finally answered, by branch and method."""
        self.dialog: tuple[str, str] | None = None
        """Call-ID and our From of the last call the callee answered."""
        self.peer_cseq = 100
        self.peer_branches = itertools.count()
        self.unacked: list[Request] = []
        """The callee's re-INVITEs the agent answered 2xx, to be ACKed."""
        self.registering = self.unregistering = False
        self.registered = False
        self.calling = self.answered = self.hanging_up = False
        self.early = False
        """A provisional response above 100 came for the call being set up."""
        self.cancelled: set[str] = set()
        """Branches of INVITEs the agent sent CANCEL for: they get 487."""
        self.established = False
        self.dropped = 0
        self.infos = 0
        self.seen: set[bytes] = set()
        """Everything the agent sent in this run: the rest are retransmissions."""
        HostileServer.runs += 1

    # ---- what the agent sends and reports --------------------------------------------------

    def settle(self) -> None:
        """Check what the agent sent, remember what needs an answer, follow its events."""
        for data, addr in self.ua.data_to_send(self.now):
            assert addr == SERVER
            sent = check(data)
            if sent.to_answer is not None:
                self.pending[sent.key] = sent.to_answer
            if sent.to_ack is not None and data not in self.seen:
                self.unacked.append(sent.to_ack)
            self.seen.add(data)
        while (happening := self.ua.next_event()) is not None:
            self.follow(happening)

    def follow(self, happening: object) -> None:
        if isinstance(happening, Registered | RegistrationFailed):
            self.registering = False
            self.registered = isinstance(happening, Registered)
        elif isinstance(happening, Unregistered):
            assert self.unregistering
            self.unregistering = self.registered = self.registering = False
        elif isinstance(happening, CallProgress):
            assert self.calling and not self.answered
            self.early = self.early or happening.status > 100
        elif isinstance(happening, CallAnswered):
            assert self.calling and not self.answered
            self.answered = True
            if not self.established:
                self.established = True
                HostileServer.established_runs += 1
                event("a call was established")
        elif isinstance(happening, CallAttemptFailed):
            assert self.calling and not self.answered
            self.calling = self.hanging_up = self.early = False
        elif isinstance(happening, CallEnded):
            assert self.calling and self.answered
            self.calling = self.answered = self.hanging_up = self.early = False
            self.infos = 0  # the session answers what is still open with 481
        elif isinstance(happening, InfoAnswered):
            assert self.infos > 0
            self.infos -= 1
        elif isinstance(happening, MessageDropped):
            self.dropped += 1

    def call_phase(self) -> str:
        """Where the call stands, in the words of `PHASES` ("idle" outside a call)."""
        if self.hanging_up:
            return "terminating"
        if self.answered:
            return "confirmed"
        if self.calling:
            return "early" if self.early else "calling"
        return "idle"

    def deliver(self, data: bytes, mutation: Mutation, phase: str) -> None:
        if mutation != CLEAN:
            HostileServer.mutated_in[phase] += 1
            event(f"mutated in {phase}")
        for datagram in mutate(data, mutation):
            self.ua.receive_data(datagram, SERVER, self.now)
        self.settle()

    # ---- the user's commands --------------------------------------------------------------

    @initialize(register_first=st.booleans(), opening=st.sampled_from(OPENINGS))
    def start(self, register_first: bool, opening: tuple[int, ...]) -> None:
        """Register or not, and call. The call's first answers may come unmutated (the
        challenge; ringing; the 2xx, with or without a session timer), so that many runs
        start near or in an established call and the rules reach the dialog's depths."""
        if register_first:
            self.register()
        self.invite()
        for choice in opening:
            self.answer(0, choice, CLEAN)

    @precondition(lambda self: not self.registering and not self.unregistering)
    @rule()
    def register(self) -> None:
        self.registering = True
        self.ua.register(self.now)
        self.settle()

    @precondition(lambda self: self.registered and not self.registering)
    @rule()
    def unregister(self) -> None:
        self.unregistering = True
        self.ua.unregister(self.now)
        self.settle()

    @precondition(lambda self: not self.calling and not self.ua.in_call)
    @rule()
    def invite(self) -> None:
        self.calling = True
        self.early = False
        self.ua.invite(self.now, "tone", OFFER, ring_timeout=30.0)
        self.settle()

    @precondition(lambda self: self.calling and not self.hanging_up)
    @rule()
    def hang_up(self) -> None:
        self.hanging_up = True
        self.ua.bye(self.now)
        self.settle()

    @precondition(lambda self: self.answered and not self.hanging_up)
    @rule(body=st.binary(max_size=32))
    def send_info(self, body: bytes) -> None:
        self.infos += 1
        self.ua.send_info(self.now, "application/dtmf-relay", body)
        self.settle()

    @rule(delta=st.sampled_from([0.05, 0.5, 2.0, 5.0, 16.0, 33.0, 100.0, -1.0]))
    def wait(self, delta: float) -> None:
        """Time passes: by `delta`, or (-1) to the agent's next deadline."""
        deadline = self.ua.get_timer()
        if delta < 0 and deadline is not None:
            self.now = max(self.now, deadline)
        else:
            self.now += abs(delta)
        self.ua.handle_timer(self.now)
        self.settle()

    # ---- the server's side ------------------------------------------------------------------

    @precondition(lambda self: bool(self.pending))
    @rule(pick=st.integers(0, 7), choice=st.integers(0, 9), mutation=mutations)
    def answer(self, pick: int, choice: int, mutation: Mutation) -> None:
        """One response to one of the agent's open requests, the newest by preference."""
        key = list(self.pending)[-1 - pick % len(self.pending)]
        request = self.pending[key]
        phase = "registering" if request.method == "REGISTER" else self.call_phase()
        data, final = self.response_to(request, choice)
        if final:
            del self.pending[key]
        self.deliver(data, mutation, phase)

    def response_to(self, request: Request, choice: int) -> tuple[bytes, bool]:
        method = request.method
        nonce = next(self.nonces)
        if method == "REGISTER":
            if "Authorization" not in request.headers or choice == 9:
                challenge = [("WWW-Authenticate", CHALLENGE.format(nonce))]
                return respond(request, 401, "Unauthorized", challenge), True
            if choice == 8:
                return respond(request, 423, "Too Brief", [("Min-Expires", "900")]), True
            expires = request.headers.get("Expires") or "0"
            contact = [("Contact", f"{request.headers.get('Contact')};expires={expires}")]
            return respond(request, 200, "OK", contact, to_tag="reg"), True
        if method == "INVITE" and request.to.tag is None:
            return self.answer_invite(request, choice, nonce)
        if method == "CANCEL":
            self.cancelled.add(request.top_via.branch or "")
            return respond(request, 200, "OK", to_tag="callee"), True
        if choice == 9:
            challenge = [("Proxy-Authenticate", STALE.format(nonce))]
            return respond(request, 407, "Proxy Authentication Required", challenge), True
        if choice == 8:
            return respond(request, 481, "Call/Transaction Does Not Exist"), True
        extra = [("Contact", CONTACT), ("Session-Expires", "90;refresher=uac")]
        body = ANSWER if method == "INVITE" else b""
        if body:
            extra.append(("Content-Type", "application/sdp"))
        return respond(request, 200, "OK", extra, body=body), True

    def answer_invite(self, request: Request, choice: int, nonce: int) -> tuple[bytes, bool]:
        if request.top_via.branch in self.cancelled:
            return respond(request, 487, "Request Terminated", to_tag="callee"), True
        if "Proxy-Authorization" not in request.headers:
            challenge = [("Proxy-Authenticate", CHALLENGE.format(nonce))]
            return respond(request, 407, "Proxy Authentication Required", challenge), True
        if choice == 0:
            return respond(request, 100, "Trying"), False
        if choice in (1, 2):
            # an early dialog (RFC 3261 §12.1): the callee may send requests in it
            self.dialog = (request.call_id, request.headers.get("From") or "")
        if choice == 1:
            return respond(request, 180, "Ringing", [("Contact", CONTACT)], to_tag="callee"), False
        if choice == 2:
            sdp = [("Contact", CONTACT), ("Content-Type", "application/sdp")]
            reply = respond(request, 183, "Session Progress", sdp, to_tag="callee", body=ANSWER)
            return reply, False
        if choice == 3:
            return respond(request, 486, "Busy Here", to_tag="callee"), True
        if choice == 4:
            return respond(request, 422, "Session Interval Too Small", [("Min-SE", "120")]), True
        extra = [("Record-Route", RECORD_ROUTE), ("Contact", CONTACT)]
        if choice in (5, 6):
            allow = "INVITE, ACK, BYE, CANCEL, UPDATE" if choice == 5 else "INVITE, ACK, BYE"
            extra += [("Session-Expires", "90;refresher=uac"), ("Allow", allow)]
        extra.append(("Content-Type", "application/sdp"))
        self.dialog = (request.call_id, request.headers.get("From") or "")
        return respond(request, 200, "OK", extra, to_tag="callee", body=ANSWER), True

    @precondition(lambda self: self.dialog is not None)
    @rule(
        method=st.sampled_from(["INVITE", "UPDATE", "INFO", "OPTIONS", "BYE", "MESSAGE"]),
        timer=st.sampled_from([None, "90;refresher=uas", "90;refresher=uac", "1800"]),
        mutation=mutations,
    )
    def callee_request(self, method: str, timer: str | None, mutation: Mutation) -> None:
        """The callee sends a request in the dialog: hold, refresh, DTMF, probe, hang-up."""
        assert self.dialog is not None
        call_id, ours = self.dialog
        self.peer_cseq += 1
        headers = Headers()
        headers.add("Via", f"SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKpeer{next(self.peer_branches)}")
        headers.add("Max-Forwards", "70")
        headers.add("From", PEER_FROM)
        headers.add("To", ours)
        headers.add("Call-ID", call_id)
        headers.add("CSeq", f"{self.peer_cseq} {method}")
        headers.add("Contact", CONTACT)
        if timer is not None and method in ("INVITE", "UPDATE"):
            headers.add("Session-Expires", timer)
        body = ANSWER if method == "INVITE" else b""
        if body:
            headers.add("Content-Type", "application/sdp")
        request = Request(method, "sip:relay@192.0.2.1:5062", headers, body)
        self.deliver(request.to_bytes(), mutation, self.call_phase())

    @precondition(lambda self: bool(self.unacked))
    @rule(mutation=mutations)
    def callee_ack(self, mutation: Mutation) -> None:
        """The callee ACKs the agent's 2xx to its re-INVITE (§13.2.2.4)."""
        reinvite = self.unacked.pop(0)
        headers = Headers()
        headers.add("Via", f"SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKpeer{next(self.peer_branches)}")
        for name in ("From", "To", "Call-ID"):
            headers.add(name, reinvite.headers.get(name) or "")
        headers.add("CSeq", f"{reinvite.cseq[0]} ACK")
        self.deliver(Request("ACK", CONTACT[1:-1], headers).to_bytes(), mutation, self.call_phase())

    @invariant()
    def timers_are_clock_values(self) -> None:
        deadline = self.ua.get_timer()
        assert deadline is None or (
            math.isfinite(deadline) and deadline <= self.now + MAX_DEADLINE_AHEAD
        )

    def teardown(self) -> None:
        """Hang up, remove the binding, let the network fall silent, and follow the timers to
        rest (a binding still wanted is retried for ever, as it should be)."""
        self.ua.bye(self.now)
        self.unregistering = True
        self.ua.unregister(self.now)
        self.settle()
        for _ in range(SETTLE_STEPS):
            deadline = self.ua.get_timer()
            if deadline is None:
                break
            self.now = max(self.now, deadline)
            self.ua.handle_timer(self.now)
            self.settle()
            after = self.ua.get_timer()  # a past deadline left would make the shell spin
            assert after is None or after > self.now
        assert self.ua.get_timer() is None
        assert not self.ua.in_call
        assert not (self.calling or self.registering or self.unregistering or self.infos)
        event(f"messages dropped: {min(self.dropped, 3)}{'+' if self.dropped > 2 else ''}")


@dataclass(frozen=True)
class Sent:
    """What the server learns from a message the agent sent."""

    key: tuple[str, str] = ("", "")
    """Branch and method of a request to answer."""
    to_answer: Request | None = None
    to_ack: Request | None = None
    """The callee's re-INVITE, when this is the agent's 2xx to it."""


_CHECKED: dict[bytes, Sent] = {}
"""Messages already checked, across runs: runs share their openings byte for byte."""
CHECKED_CACHE = 50_000


def check(data: bytes) -> Sent:
    """A message the agent sent must parse, and stay small (see the caps above)."""
    sent = _CHECKED.get(data)
    if sent is not None:
        return sent
    message = parse_message(data)
    head = data.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= MAX_HEADER_LINE for line in head.split(b"\r\n"))
    if isinstance(message, Response):
        reinvite_ok = message.cseq[1] == "INVITE" and message.status < 300
        sent = Sent(to_ack=parse_peer_request(message) if reinvite_ok else None)
    else:
        assert len(data) <= MAX_OWN_REQUEST, message.method
        ack = message.method == "ACK"
        sent = Sent() if ack else Sent((message.top_via.branch or "", message.method), message)
    if len(_CHECKED) >= CHECKED_CACHE:
        _CHECKED.clear()
    _CHECKED[data] = sent
    return sent


def parse_peer_request(response: Response) -> Request:
    """The callee's request a response answers, rebuilt from the headers it echoes."""
    headers = Headers([(n, v) for n, v in response.headers if n in ("From", "To", "Call-ID")])
    headers.add("CSeq", f"{response.cseq[0]} INVITE")
    return Request("INVITE", CONTACT[1:-1], headers)


@pytest.mark.fuzz
def test_the_agent_survives_a_hostile_server() -> None:
    HostileServer.runs = HostileServer.established_runs = 0
    HostileServer.mutated_in.clear()
    run_state_machine_as_test(HostileServer, settings=settings(stateful_step_count=8))
    assert HostileServer.established_runs >= ESTABLISHED_SHARE * HostileServer.runs, (
        HostileServer.established_runs,
        HostileServer.runs,
    )
    assert set(HostileServer.mutated_in) & set(PHASES), "no mutated message reached the agent"


OPENING_TO = {
    "registering": (),
    "calling": (0,),
    "early": (0, 1),
    "confirmed": (0, 7),
    "terminating": (0, 7),
}
"""Clean answers (choices of `HostileServer.answer`) that bring a call to each phase."""


def mutated_in_phase(
    phase: str, mutation: Mutation, choice: int, from_callee: bool, method: str
) -> HostileServer:
    """Drive an agent to ``phase`` with clean messages, then send it one mutated message: a
    response to its open request or, in a dialog, a request from the callee. Returns the
    server, its agent brought to rest (`HostileServer.teardown`)."""
    server = HostileServer()
    if phase == "registering":
        server.register()
    else:
        server.invite()
        for clean in OPENING_TO[phase]:
            server.answer(0, clean, CLEAN)
        if phase == "terminating":
            server.hang_up()
    reached = "registering" if server.registering else server.call_phase()
    assert reached == phase, f"clean messages brought the agent to {reached}, not {phase}"
    if server.dialog is not None and (from_callee or not server.pending):
        server.callee_request(method, None, mutation)
    else:
        assert server.pending, f"nothing open to answer in {phase}"
        server.answer(0, choice, mutation)
    server.timers_are_clock_values()
    server.teardown()
    return server


PHASE_CASES = st.tuples(
    st.sampled_from(PHASES),
    st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 2**16)),
    st.integers(0, 9),
    st.booleans(),
    st.sampled_from(["INVITE", "UPDATE", "INFO", "BYE"]),
)
"""(phase, mutation, the server's answer, whether the callee sends a request instead, its
method): the arguments of `mutated_in_phase`."""


@pytest.mark.fuzz
@given(PHASE_CASES)
def test_a_mutated_message_in_each_phase_leaves_the_agent_sound(
    case: tuple[str, Mutation, int, bool, str],
) -> None:
    """The stateful run above reaches some phases rarely: here every phase gets its share."""
    mutated_in_phase(*case)
    event(f"mutated in {case[0]}")
