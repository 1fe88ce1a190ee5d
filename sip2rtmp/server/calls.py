"""What the server knows of each call: its record, fed by the worker's NDJSON events."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sip2rtmp.relay.events import CallStatus

STATUSES: tuple[str, ...] = ("NEW", *CallStatus)
"""The reference system's call statuses, as `find` reports them (docs/events.md): the
relay's own, and NEW for a call whose worker has not spoken yet."""
FINAL_STATUSES = frozenset({CallStatus.FINISH, CallStatus.FAILED, CallStatus.BUSY})
"""A run ends with exactly one of these (docs/events.md)."""
_EVENT_KEYS = frozenset({"event", "ts", "callId"})


@dataclass
class CallRecord:
    call_id: str
    status: str
    sip_status: int | None
    sip_message: str | None
    callee: str
    rtmp_url: str
    """Display form: the stream key masked."""
    has_audio: bool
    has_video: bool
    created: float
    """time.monotonic() when the server accepted the call."""
    answered: float | None = None
    ended: float | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] | None = None
    reason: str | None = None
    exit_code: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    def apply_event(self, event: dict[str, Any], now: float) -> bool:
        """Take one event of the worker's `--json` stream; True when the status changed.

        Events after the final status are ignored: the record keeps the run's outcome.
        """
        if self.finished:
            return False
        kind = event.get("event")
        if kind == "status":
            return self._apply_status(event, now)
        if kind == "output":
            self._apply_output(event)
        elif kind == "stats":
            self.stats = {k: v for k, v in event.items() if k not in _EVENT_KEYS}
        return False

    def _apply_status(self, event: dict[str, Any], now: float) -> bool:
        status = event.get("status")
        if not isinstance(status, str) or status not in STATUSES:
            return False
        code = event.get("code")
        if isinstance(code, int) and not isinstance(code, bool):
            self.sip_status = code
            reason = event.get("reason")
            self.sip_message = reason if isinstance(reason, str) else None
        if status == "ESTABLISHED" and self.answered is None:
            self.answered = now
        if status in FINAL_STATUSES:
            self.ended = now
            reason = event.get("reason")
            self.reason = reason if isinstance(reason, str) else None
            exit_code = event.get("exitCode")
            if isinstance(exit_code, int) and not isinstance(exit_code, bool):
                self.exit_code = exit_code
            elif status == "FINISH":
                self.exit_code = 0
        changed = status != self.status
        self.status = status
        return changed

    def _apply_output(self, event: dict[str, Any]) -> None:
        target = event.get("target")
        if not isinstance(target, str):
            return
        entry: dict[str, Any] = {"target": target, "state": event.get("state")}
        if isinstance(event.get("error"), str):
            entry["error"] = event["error"]
        for index, known in enumerate(self.outputs):
            if known.get("target") == target:
                self.outputs[index] = entry
                return
        self.outputs.append(entry)

    def fail(self, reason: str, now: float, exit_code: int | None = None) -> bool:
        """End the record as FAILED when the worker gave no final status of its own."""
        if self.finished:
            return False
        self.status = "FAILED"
        self.reason = reason
        self.exit_code = exit_code
        self.ended = now
        return True

    def duration(self, now: float) -> float:
        """Seconds since the answer (to the end, for a finished call); 0 before it."""
        if self.answered is None:
            return 0.0
        end = self.ended if self.ended is not None else now
        return round(max(0.0, end - self.answered), 3)

    def to_json(self, now: float) -> dict[str, Any]:
        """The call object `find` returns: no password, the stream key masked."""
        return {
            "callId": self.call_id,
            "status": self.status,
            "sipStatus": self.sip_status,
            "sipMessage": self.sip_message,
            "callee": self.callee,
            "rtmpUrl": self.rtmp_url,
            "hasAudio": self.has_audio,
            "hasVideo": self.has_video,
            "duration": self.duration(now),
            "outputs": [dict(output) for output in self.outputs],
            "stats": self.stats,
            "reason": self.reason,
            "exitCode": self.exit_code,
        }


class CallRegistry:
    """Every call the server knows: the running ones and, for `keep_finished` seconds after
    their end, the finished ones with their outcome."""

    def __init__(self, keep_finished: float) -> None:
        self.keep_finished = keep_finished
        self._records: dict[str, CallRecord] = {}
        self._destinations: dict[str, str] = {}

    def add(self, record: CallRecord, destination: str = "") -> None:
        """Register a new call; `destination` (URL and stream key, never shown) detects two
        running calls streaming to one place."""
        if record.call_id in self._records:
            raise KeyError(record.call_id)
        self._records[record.call_id] = record
        self._destinations[record.call_id] = destination

    def remove(self, call_id: str) -> None:
        self._records.pop(call_id, None)
        self._destinations.pop(call_id, None)

    def get(self, call_id: str) -> CallRecord | None:
        return self._records.get(call_id)

    def find(self, status: str) -> list[CallRecord]:
        return [record for record in self._records.values() if record.status == status]

    def all(self) -> list[CallRecord]:
        return list(self._records.values())

    def running(self) -> Iterator[CallRecord]:
        return (record for record in self._records.values() if not record.finished)

    def running_count(self) -> int:
        return sum(1 for _ in self.running())

    def destination_in_use(self, destination: str) -> CallRecord | None:
        """The running call that streams to `destination`, if any."""
        for record in self.running():
            if destination and self._destinations.get(record.call_id) == destination:
                return record
        return None

    def expire(self, now: float) -> list[str]:
        """Forget calls that ended more than `keep_finished` seconds ago; their ids."""
        gone = [
            record.call_id
            for record in self._records.values()
            if record.ended is not None and now - record.ended >= self.keep_finished
        ]
        for call_id in gone:
            self.remove(call_id)
        return gone
