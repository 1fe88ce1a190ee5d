"""The call's status in the reference system's names, and the events a relay run reports.

Status names are a contract with scripts that already poll the reference system: TRYING, RING,
RING_MEDIA, SESSION_PROGRESS, ESTABLISHED, FINISH, FAILED, BUSY.

Events a relay emits (`event` name: data keys); docs/events.md is the user-facing schema:
- `registering`: server, transport; `registered`: expires; `unregistered`
- `status` (with `status` set): code, reason — TRYING when the INVITE leaves, RING/RING_MEDIA on
  180, SESSION_PROGRESS on 183, ESTABLISHED on 2xx (plus `audio`, `video`: the negotiated codec
  each way, e.g. {"codec": "PCMU", "rate": 8000}), FINISH (reason, duration), FAILED or BUSY
  (reason, exitCode)
- `output`: target (stream key masked), state (connecting, live, reconnecting, failed, closed)
- `media`: kind, first RTP from the callee arrived (remote address)
- `dtmf`: digit, direction ("sent" or "received"), method ("rfc4733" or "info")
- `stats` every few seconds: duration, rtp {received, lost, late, duplicate, reordered,
  jitter_ms, depth_ms, loss_pct}, level_dbfs (incoming audio), outputs [{target, state,
  bitrate, bytes, reconnects}]
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


class RelayControl:
    """What a front end may ask of a running relay: DTMF toward the callee, or a hangup.

    Requests are queued and executed on the relay's event loop; calling from another thread
    (a key reader) is safe.
    """

    def __init__(self) -> None:
        self._dtmf: list[str] = []
        self._hangup = False
        self._listeners: list[Callable[[], None]] = []

    def send_dtmf(self, digits: str) -> None:
        self._dtmf.append(digits)
        self._notify()

    def hangup(self) -> None:
        self._hangup = True
        self._notify()

    def take_dtmf(self) -> list[str]:
        taken, self._dtmf = self._dtmf, []
        return taken

    @property
    def hangup_requested(self) -> bool:
        return self._hangup

    def on_request(self, listener: Callable[[], None]) -> None:
        """`listener` is called (from the requesting thread) after each request."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()
