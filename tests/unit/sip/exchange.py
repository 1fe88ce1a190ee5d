"""The user agent under test and the server side of its exchanges, shared by the scripted
tests and the hostile-server state machine."""

from __future__ import annotations

import itertools

from sip2rtmp.sip.auth import Credentials
from sip2rtmp.sip.context import AgentContext
from sip2rtmp.sip.events import Event, MessageLogged
from sip2rtmp.sip.message import Headers, Request, Response, parse_message
from sip2rtmp.sip.sdp import build_offer
from sip2rtmp.sip.useragent import UserAgent, UserAgentConfig

SERVER = ("192.0.2.10", 5060)
CONFIG = UserAgentConfig(
    user="relay",
    domain="lab.test",
    credentials=Credentials("relay", "s3cret"),
    local_host="192.0.2.1",
    local_port=5062,
    register_expires=600,
)
OFFER = build_offer("192.0.2.1", 40000, session_id=1, audio_codecs=("PCMU", "PCMA")).encode()
ANSWER = (
    b"v=0\r\no=- 7 7 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n"
    b"m=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)
"""The callee's answer: PCMU and telephone-events from 192.0.2.20:30000."""


def make_ua(config: UserAgentConfig = CONFIG) -> UserAgent:
    """An agent whose tags, branches and Call-IDs are `tok0`, `tok1`, ... in order."""
    counter = itertools.count()
    return UserAgent(config, [SERVER], token_factory=lambda: f"tok{next(counter)}")


def reply(
    request: Request,
    status: int,
    reason: str,
    extra: list[tuple[str, str]] | None = None,
    *,
    to_tag: str | None = None,
    body: bytes = b"",
    rport: bool = False,
) -> bytes:
    """A response as a proxy or the callee makes it (RFC 3261 §8.2.6): every Via gets
    `received`, or with `rport` the top Via gets `rport` and `received` (RFC 3581 §4)."""
    received = f"received={CONFIG.local_host}"
    vias = request.headers.get_fields("Via")
    if rport:
        vias[:1] = [
            via.replace(";rport", f";rport={CONFIG.local_port};{received}", 1) for via in vias[:1]
        ]
    else:
        vias = [via if "received" in via else f"{via};{received}" for via in vias]
    headers = Headers()
    for via in vias:
        headers.add("Via", via)
    headers.add("From", request.headers.get("From") or "")
    to = request.headers.get("To") or ""
    headers.add("To", to + (f";tag={to_tag}" if to_tag and "tag=" not in to else ""))
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", request.headers.get("CSeq") or "")
    for name, value in extra or []:
        headers.add(name, value)
    return Response(status, reason, headers, body).to_bytes()


def options_request(branch: str, user: str = "peer") -> bytes:
    """An out-of-dialog OPTIONS from `user` at 198.51.100.9; `branch` names its server
    transaction (RFC 3261 §17.2.3) and also serves as tag and Call-ID."""
    headers = Headers()
    headers.add("Via", f"SIP/2.0/UDP 198.51.100.9;branch=z9hG4bK{branch}")
    headers.add("From", f"<sip:{user}@198.51.100.9>;tag={branch}")
    headers.add("To", "<sip:relay@lab.test>")
    headers.add("Call-ID", branch)
    headers.add("CSeq", "1 OPTIONS")
    return Request("OPTIONS", "sip:relay@192.0.2.1", headers).to_bytes()


def make_context(config: UserAgentConfig = CONFIG) -> AgentContext:
    """The shared state one part of the agent runs on, tokens `tok0`, `tok1`, ... in order."""
    counter = itertools.count()
    return AgentContext(config, [SERVER], lambda: f"tok{next(counter)}")


def drain(context: AgentContext) -> list[Request]:
    """The requests the parts queued since the last call, parsed."""
    context.collect()
    requests = []
    for data, addr in context.take_outgoing():
        assert addr == SERVER
        message = parse_message(data)
        assert isinstance(message, Request)
        requests.append(message)
    return requests


def deliver(context: AgentContext, data: bytes, now: float) -> None:
    """A response routed to the client transaction that sent its request, as the facade does."""
    response = parse_message(data)
    assert isinstance(response, Response)
    pending = context.pending_for(response)
    assert pending is not None, "no transaction for this response"
    context.receive_response(pending, response, now)


def happenings(context: AgentContext) -> list[Event]:
    """The events queued since the last call, the message log left out."""
    events: list[Event] = [e for e in context.events if not isinstance(e, MessageLogged)]
    context.events.clear()
    return events


def agent_events(ua: UserAgent) -> list[Event]:
    """The agent's events since the last call, the message log left out."""
    found: list[Event] = []
    while (event := ua.next_event()) is not None:
        if not isinstance(event, MessageLogged):
            found.append(event)
    return found


def retransmission_times(ua: UserAgent) -> list[float]:
    """Run the agent's timers until none is left; the instants at which it sent something."""
    times: list[float] = []
    while (deadline := ua.get_timer()) is not None:
        ua.handle_timer(deadline)
        if ua.data_to_send(deadline):
            times.append(deadline)
    return times
