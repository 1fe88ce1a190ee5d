"""The UAC side of an INVITE dialog (RFC 3261 §12, §13.2.2.4).

The dialog decides what every in-dialog request looks like: Request-URI and Route from the
route set and remote target (§12.2.1.1), tags, Call-ID and CSeq. Getting the ACK for a 2xx
exactly right matters most: a proxy that cannot route it, or a UAS that cannot match it, keeps
retransmitting the 2xx and hangs up after 64*T1 (§13.3.1.4), some 32 s into the call.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sip2rtmp.sip.message import Headers, NameAddr, Request, Response, parse_name_addr


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
        """The dialog a 2xx (or 1xx with a To tag) to our INVITE creates (§12.1.2)."""
        contact = response.headers.get("Contact")
        target = parse_name_addr(contact).uri if contact else invite.uri
        route_set = [
            parse_name_addr(value, require_brackets=True)
            for value in reversed(response.headers.get_all("Record-Route"))
        ]
        remote = invite.to
        remote.params["tag"] = response.to.tag or ""
        return cls(
            call_id=invite.call_id,
            local=invite.from_,
            remote=remote,
            local_seq=invite.cseq[0],
            remote_target=target,
            route_set=route_set,
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

    def refresh_target(self, message: Request | Response) -> None:
        """re-INVITE, UPDATE and their 2xx may move the remote target (§12.2, RFC 3311 §5.1)."""
        contact = message.headers.get("Contact")
        if contact:
            self.remote_target = parse_name_addr(contact).uri

    def fork(self, response: Response) -> Dialog:
        """A second dialog for another 2xx to the same INVITE, forked downstream (§13.2.2.4)."""
        contact = response.headers.get("Contact")
        remote = replace(self.remote, params={**self.remote.params, "tag": response.to.tag or ""})
        return replace(
            self,
            remote=remote,
            remote_target=parse_name_addr(contact).uri if contact else self.remote_target,
            route_set=[
                parse_name_addr(v, require_brackets=True)
                for v in reversed(response.headers.get_all("Record-Route"))
            ],
        )
