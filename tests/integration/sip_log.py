"""The SIP messages a run sent and received, read back from its debug log (`--log-file`).

The log says what the user agent believes it did; a claim about the wire is better proven by
a capture (tests/support/sip_wire.py), whose messages `count` takes as well.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sip2rtmp.sip.message import Request, Response, parse_cseq, parse_message

_RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ \w+ sip2rtmp\.sip\.wire: (sent|received) (\S+)\n",
    re.MULTILINE,
)
_ANY_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ \w+ ", re.MULTILINE)


@dataclass(frozen=True)
class Logged:
    direction: str
    peer: str
    message: Request | Response

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.message.headers.get("CSeq") or "")

    def is_request(self, method: str) -> bool:
        return isinstance(self.message, Request) and self.message.method == method

    def is_response(self, status: int, method: str) -> bool:
        return (
            isinstance(self.message, Response)
            and self.message.status == status
            and self.cseq[1] == method
        )


def sip_messages(log: str) -> list[Logged]:
    """Every wire record of the log, parsed with our own parser, in order."""
    messages = []
    for match in _RECORD.finditer(log):
        rest = log[match.end() :]
        following = _ANY_RECORD.search(rest)
        text = rest[: following.start()] if following else rest
        # The log was read with universal newlines: restore SIP's CRLF line ends.
        data = text.removesuffix("\n").replace("\n", "\r\n").encode()
        messages.append(Logged(match.group(1), match.group(2), parse_message(data)))
    return messages


class Message(Protocol):
    """A logged or a captured message (tests.support.sip_wire.WireMessage)."""

    @property
    def direction(self) -> str: ...

    def is_request(self, method: str) -> bool: ...

    def is_response(self, status: int, method: str) -> bool: ...


def count(
    messages: Sequence[Message],
    direction: str,
    *,
    method: str = "",
    status: int = 0,
    of: str = "",
) -> int:
    """How many requests of `method`, or responses `status` to `of`, went in `direction`."""
    return sum(
        1
        for logged in messages
        if logged.direction == direction
        and ((method and logged.is_request(method)) or (status and logged.is_response(status, of)))
    )
