"""Reliable provisional responses on the calling side (RFC 3262).

A callee or carrier that needs its 180/183 to arrive (because it carries the early-media SDP,
or because the carrier requires it) sends it with `Require: 100rel` and an RSeq, and repeats
it until a PRACK with the matching RAck arrives. We acknowledge each one once, in order, per
early dialog (§4): a repeat (RSeq not above the last one acknowledged) needs no new PRACK,
since our PRACK transaction retransmits on its own, and one that skips ahead is ignored until
the missing one arrives (§4: "in order").
"""

from __future__ import annotations

from sip2rtmp.sip.message import Response, bounded_int

MAX_RSEQ = 2**31 - 1
"""RSeq is 1 to 2**31 - 1 (RFC 3262 §7.1)."""
MAX_EARLY_DIALOGS = 8
"""Early dialogs (To tags) whose RSeq we track; forking beyond that is not acknowledged."""


def is_reliable(response: Response) -> bool:
    """A provisional response sent reliably: `Require: 100rel` (RFC 3262 §3) and an RSeq."""
    if not 100 < response.status < 200:
        return False
    required = {v.strip().lower() for v in response.headers.get_all("Require")}
    return "100rel" in required and response.headers.get("RSeq") is not None


class ReliableProvisionals:
    """The RSeq last acknowledged in each early dialog, and the RAck for the next one."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def rack_for(self, response: Response) -> str | None:
        """The RAck value (`RSeq CSeq-number method`, §7.2) to PRACK `response` with, or None
        when it needs no PRACK: not reliable, a repeat, out of order, or malformed."""
        if not is_reliable(response):
            return None
        rseq = bounded_int(response.headers.get("RSeq"), MAX_RSEQ)
        tag = response.to.tag or ""
        if rseq is None or rseq == 0:
            return None
        last = self._last.get(tag)
        if last is None and len(self._last) >= MAX_EARLY_DIALOGS:
            return None
        if last is not None and rseq != last + 1:
            return None
        self._last[tag] = rseq
        number, method = response.cseq
        return f"{rseq} {number} {method}"
