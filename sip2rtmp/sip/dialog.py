"""The UAC side of an INVITE dialog (RFC 3261 §12, §13.2.2.4).

The dialog decides what every in-dialog request looks like: Request-URI and Route from the
route set and remote target (§12.2.1.1), tags, Call-ID and CSeq. Getting the ACK for a 2xx
exactly right matters most: a proxy that cannot route it, or a UAS that cannot match it, keeps
retransmitting the 2xx and hangs up after 64*T1 (§13.3.1.4), some 32 s into the call.

Every in-dialog request carries the whole route set and the remote target, so both are capped:
a peer that records thousands of routes must not make us send a 76 KB ACK over UDP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sip2rtmp.sip.message import (
    Headers,
    NameAddr,
    Request,
    Response,
    SipParseError,
    parse_name_addr,
    parse_uri,
)

MAX_ROUTE_SET = 16
"""Record-Route entries a dialog accepts: a real path has a few proxies, each recording one or
two entries (double record-routing between transports)."""
MAX_ROUTE_SET_CHARS = 2048
"""Total length of the route set's URIs, which every ACK and BYE repeats: with the target cap
below, an in-dialog request stays a few kilobytes, far from a fragmenting UDP datagram
(RFC 3261 §18.1.1)."""
MAX_TARGET_CHARS = 512
"""Length of the remote target, the peer's Contact URI, repeated as every Request-URI."""


@dataclass
class Dialog:
    call_id: str
    local: NameAddr
    """Our From value, tag included."""
    remote: NameAddr
    """The peer's To value, tag included."""
    local_seq: int
    remote_target: str
    route_set: list[NameAddr] = field(default_factory=list)
    remote_seq: int | None = None

    @property
    def local_tag(self) -> str:
        return self.local.tag or ""

    @property
    def remote_tag(self) -> str:
        return self.remote.tag or ""

    @classmethod
    def from_response(cls, invite: Request, response: Response) -> Dialog:
        """The dialog a 2xx to our INVITE creates (§12.1.2).

        Raises SipParseError when its Contact or Record-Route cannot carry in-dialog requests:
        not a sip:/sips: URI (`*`, `tel:`), malformed, or past the caps above.
        """
        dialog = cls.fallback(invite, response)
        dialog.remote_target = _contact_target(response) or invite.uri
        dialog.route_set = _route_set(response)
        return dialog

    @classmethod
    def fallback(cls, invite: Request, response: Response) -> Dialog:
        """The dialog as far as our own INVITE defines it: no route set, its Request-URI as
        remote target. Enough to ACK and BYE a 2xx whose own Contact or Record-Route is
        unusable, since a 2xx must be ACKed whatever it holds (§13.2.2.4)."""
        remote = invite.to
        remote.params["tag"] = response.to.tag or ""
        return cls(
            call_id=invite.call_id,
            local=invite.from_,
            remote=remote,
            local_seq=invite.cseq[0],
            remote_target=invite.uri,
        )

    def matches(self, message: Request | Response) -> bool:
        """Same Call-ID and tags, seen from the message's direction (§12.2.2)."""
        if message.call_id != self.call_id:
            return False
        if isinstance(message, Request):
            return message.from_.tag == self.remote_tag and message.to.tag == self.local_tag
        return message.from_.tag == self.local_tag and message.to.tag == self.remote_tag

    def request_uri_and_routes(self) -> tuple[str, list[str]]:
        """§12.2.1.1: loose routing keeps the remote target as Request-URI; a strict router
        (no `lr`) becomes the Request-URI and the remote target goes last in Route."""
        routes = [f"<{r.uri}>" for r in self.route_set]
        if not self.route_set or self.route_set[0].sip_uri().loose_route:
            return self.remote_target, routes
        strict = self.route_set[0].sip_uri()
        strict.params = {k: v for k, v in strict.params.items() if k not in ("method", "ttl")}
        strict.headers = ""
        return str(strict), [*routes[1:], f"<{self.remote_target}>"]

    def create_request(
        self, method: str, extra: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> Request:
        """A new in-dialog request with the next CSeq (§12.2.1.1). The caller adds Via."""
        self.local_seq += 1
        return self._build(method, self.local_seq, extra or [], body)

    def create_ack(self, invite_cseq: int, extra: list[tuple[str, str]] | None = None) -> Request:
        """The ACK for a 2xx: a request of its own with the INVITE's CSeq number (§13.2.2.4)."""
        return self._build("ACK", invite_cseq, extra or [], b"")

    def _build(self, method: str, cseq: int, extra: list[tuple[str, str]], body: bytes) -> Request:
        uri, routes = self.request_uri_and_routes()
        headers = Headers()
        for route in routes:
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", str(self.local))
        headers.add("To", str(self.remote))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        for name, value in extra:
            headers.add(name, value)
        return Request(method, uri, headers, body)

    def accept_remote_cseq(self, request: Request) -> bool:
        """False for a request older than the last one seen: answer it 500 (§12.2.2)."""
        number = request.cseq[0]
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_seq is not None and number <= self.remote_seq:
            return False
        self.remote_seq = number
        return True

    def refresh_target(self, message: Request | Response) -> bool:
        """re-INVITE, UPDATE and their 2xx may move the remote target (§12.2, RFC 3311 §5.1).

        False, the target kept, when the message's Contact could not be one (`*`, `tel:`).
        """
        try:
            target = _contact_target(message)
        except SipParseError:
            return False
        if target is not None:
            self.remote_target = target
        return True


def _contact_target(message: Request | Response) -> str | None:
    """The Contact URI as remote target, None without Contact; a target must be a sip:/sips:
    URI (§8.1.1.8, §12.1.1), so anything else raises SipParseError."""
    contact = message.headers.get("Contact")
    if contact is None:
        return None
    uri = parse_name_addr(contact).uri
    if len(uri) > MAX_TARGET_CHARS:
        raise SipParseError(f"Contact URI longer than {MAX_TARGET_CHARS} characters")
    parse_uri(uri)
    return uri


def _route_set(response: Response) -> list[NameAddr]:
    """Record-Route reversed (§12.1.2): sip:/sips: URIs only, as only SIP elements can route
    a request on (§16.12), within MAX_ROUTE_SET and MAX_ROUTE_SET_CHARS."""
    values = response.headers.get_all("Record-Route")
    if len(values) > MAX_ROUTE_SET:
        raise SipParseError(f"Record-Route has {len(values)} entries, over {MAX_ROUTE_SET}")
    route_set = [parse_name_addr(value, require_brackets=True) for value in reversed(values)]
    for route in route_set:
        route.sip_uri()
    if sum(len(route.uri) for route in route_set) > MAX_ROUTE_SET_CHARS:
        raise SipParseError(f"Record-Route longer than {MAX_ROUTE_SET_CHARS} characters")
    return route_set
