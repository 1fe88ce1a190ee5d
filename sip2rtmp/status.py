"""The call's status in the reference system's names, and the events a relay run reports.

Status names are a contract with scripts that already poll the reference system: TRYING, RING,
RING_MEDIA, SESSION_PROGRESS, ESTABLISHED, FINISH, FAILED, BUSY.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class CallStatus(StrEnum):
    TRYING = "TRYING"
    RING = "RING"
    RING_MEDIA = "RING_MEDIA"
    SESSION_PROGRESS = "SESSION_PROGRESS"
    ESTABLISHED = "ESTABLISHED"
    FINISH = "FINISH"
    FAILED = "FAILED"
    BUSY = "BUSY"


def status_for_provisional(code: int, has_sdp: bool) -> CallStatus:
    """RFC 3261 §21.1: 180 rings (with SDP: early media while ringing), 183 is session progress."""
    if code == 180:
        return CallStatus.RING_MEDIA if has_sdp else CallStatus.RING
    if code == 183:
        return CallStatus.SESSION_PROGRESS
    return CallStatus.TRYING


@dataclass(frozen=True)
class RelayEvent:
    """One thing that happened: `event` names it, `status` is set on status changes."""

    event: str
    status: CallStatus | None = None
    data: dict[str, Any] = field(default_factory=dict)


EventSink = Callable[[RelayEvent], None]
