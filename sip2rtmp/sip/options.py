"""Out-of-dialog OPTIONS (RFC 3261 §11): ask a server what it supports, or only whether it is
there.

Each query is its own request chain: a digest challenge is answered like any other request's
(same Call-ID and From tag, CSeq + 1, at most MAX_CHALLENGES times), and the final response,
whatever its status, is reported as `OptionsAnswered`; no final response before the
transaction times out is `OptionsFailed` carrying `Unanswered`. OPTIONS keeps no timers of its
own beyond its transactions'.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from sip2rtmp.outcomes import Unanswered, Unreachable
from sip2rtmp.sip.auth import DigestClient
from sip2rtmp.sip.context import MAX_CHALLENGES, AgentContext, challenges_of
from sip2rtmp.sip.events import OptionsAnswered, OptionsFailed
from sip2rtmp.sip.message import Request, Response
from sip2rtmp.sip.transaction import TIMEOUT


@dataclass
class _Query:
    uri: str
    call_id: str
    from_tag: str
    auth: DigestClient
    cseq: int = 1
    challenges: int = 0
    done: bool = False
    """Reported (answered, timed out or failed with the transport)."""
    silent: bool = False
    """A keep-alive: its answer only refreshes the NAT binding, and is not reported."""


def _tokens(response: Response, name: str) -> tuple[str, ...]:
    """A comma-separated header's values, every field of it, blanks dropped."""
    return tuple(v.strip() for v in response.headers.get_all(name) if v.strip())


class OptionsClient:
    """Sends OPTIONS queries; any number may be out at once, each reported once."""

    def __init__(self, context: AgentContext) -> None:
        self._ctx = context
        self._queries: list[_Query] = []

    def connection_lost(self, outcome: Unreachable) -> None:
        """Every query still out fails with the transport."""
        for query in self._queries:
            if not query.done:
                query.done = True
                self._ctx.events.append(OptionsFailed(outcome))
        self._queries.clear()

    def query(self, now: float, target_uri: str | None = None, *, silent: bool = False) -> None:
        """OPTIONS to `target_uri`, by default to our domain: the server itself (§11.1).
        A `silent` query is a keep-alive: nothing is reported about it."""
        ctx = self._ctx
        query = _Query(
            uri=target_uri or f"sip:{ctx.config.domain}",
            call_id=ctx.token(),
            from_tag=ctx.token(),
            auth=DigestClient(ctx.config.credentials, ctx.token),
            silent=silent,
        )
        self._queries.append(query)
        self._send(query, now)

    def _send(self, query: _Query, now: float) -> None:
        ctx = self._ctx
        from_ = f"{ctx.local_party()};tag={query.from_tag}"
        to = f"<{query.uri}>"
        headers = ctx.out_of_dialog("OPTIONS", from_, to, query.call_id, query.cseq)
        headers.add("Accept", "application/sdp")
        headers.add("User-Agent", ctx.config.user_agent)
        for name, value in query.auth.headers_for("OPTIONS", query.uri):
            headers.add(name, value)
        request = Request("OPTIONS", query.uri, headers)
        ctx.start(
            request,
            now,
            partial(self._on_response, query),
            partial(self._on_timeout, query),
            resend=None if query.silent else partial(self._send, query),
        )

    def _on_response(self, query: _Query, response: Response, now: float) -> None:
        status = response.status
        if status < 200 or query.done:
            return
        if status in (401, 407) and query.challenges < MAX_CHALLENGES:
            query.challenges += 1
            if query.auth.accept(status, challenges_of(response)):
                query.cseq += 1
                self._send(query, now)
                return
        server = response.headers.get("Server") or response.headers.get("User-Agent") or ""
        answered = OptionsAnswered(
            status,
            response.reason,
            allow=_tokens(response, "Allow"),
            supported=_tokens(response, "Supported"),
            server=server,
            sdp=response.sdp,
        )
        self._report(query, answered)

    def _on_timeout(self, query: _Query, now: float) -> None:
        del now
        self._report(query, OptionsFailed(Unanswered("OPTIONS", self._ctx.target_name, TIMEOUT)))

    def _report(self, query: _Query, event: OptionsAnswered | OptionsFailed) -> None:
        if not query.done:
            query.done = True
            if not query.silent:
                self._ctx.events.append(event)
        if query in self._queries:
            self._queries.remove(query)
