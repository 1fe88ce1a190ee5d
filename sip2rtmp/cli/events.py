"""Relay events as the records scripts read: the one place a typed event becomes NDJSON fields.

`record(event)` gives the `event` name, `status` on status events, then the event's fields, in
the order docs/events.md shows them; the JSON printer adds `ts` and `callId` after `event`, the
plain printer writes the same fields as `key=value` words. Values are shown as they are: the
relay masks secrets where it knows them (an output's `target` is already its display form,
reasons come from outcomes), so nothing here searches the text for them, except for SRTP keys:
a reason or an error may quote SDP, so every text value has its `inline:` keys masked.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from sip2rtmp.cli.outcomes import explain
from sip2rtmp.relay.events import (
    AudioStats,
    Codec,
    Dtmf,
    Established,
    Failed,
    Finished,
    Held,
    MediaArrived,
    MediaChanged,
    NatAddress,
    OutputChanged,
    OutputStats,
    Progress,
    Registered,
    Registering,
    RegistrationRetry,
    RelayEvent,
    Resumed,
    SipReconnected,
    SipServerChanged,
    Stats,
    Trying,
    Unregistered,
    VideoMode,
    VideoStats,
)
from sip2rtmp.rtp.source import SourceStats
from sip2rtmp.sip.sdes import mask_keys

Record = dict[str, Any]
_NAMES = {NatAddress: "nat", SipServerChanged: "failover", SipReconnected: "reconnected"}
"""The events whose record is their fields in declaration order, by name."""


def record(event: RelayEvent) -> Record:
    """`event` as its NDJSON record, without the `ts` and `callId` every line also carries."""
    masked: Record = _keys_masked(_record(event))
    return masked


def command_record(command: str, reason: str | None) -> Record:
    """The answer to a well-formed `--control` command: done (or under way), or not and why."""
    answer: Record = {"event": "command", "command": command, "ok": reason is None}
    if reason is not None:
        answer["reason"] = reason
    masked: Record = _keys_masked(answer)
    return masked


def error_record(reason: str) -> Record:
    """A `--control` line that is no command: why, in one line; the call goes on."""
    masked: Record = _keys_masked({"event": "error", "reason": reason})
    return masked


def _keys_masked(value: Any) -> Any:
    """`value` with `mask_keys` applied to every string in it, however deeply nested."""
    if isinstance(value, str):
        return mask_keys(value)
    if isinstance(value, dict):
        return {name: _keys_masked(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_keys_masked(item) for item in value]
    return value


def _record(event: RelayEvent) -> Record:
    if isinstance(event, Registering):
        return {"event": "registering", "server": event.server, "transport": event.transport}
    if isinstance(event, Registered):
        return {"event": "registered", "expires": event.expires}
    if isinstance(event, Unregistered):
        return {"event": "unregistered"}
    if isinstance(event, RegistrationRetry):
        reason = explain(event.outcome).message
        return {"event": "registration_retry", "reason": reason, "retry_in": event.retry_in}
    if isinstance(event, (NatAddress, SipServerChanged, SipReconnected)):
        return {"event": _NAMES[type(event)]} | _fields_of(event)
    if isinstance(event, (Trying, Progress, Established, Finished, Failed)):
        return _status_record(event)
    if isinstance(event, Held):
        return {"event": "status", "status": "HOLD", "direction": event.direction}
    if isinstance(event, Resumed):
        return {"event": "status", "status": "ESTABLISHED", "resumed": True}
    if isinstance(event, MediaChanged):
        return {"event": "media_changed"} | _present(
            audio=_moved(event.audio, event.remote_audio),
            video=_moved(event.video, event.remote_video),
        )
    if isinstance(event, OutputChanged):
        output: Record = {"event": "output", "target": event.target, "state": event.state}
        return output | ({"error": event.error} if event.error is not None else {})
    if isinstance(event, MediaArrived):
        return {"event": "media", "kind": event.kind, "remote": event.remote}
    if isinstance(event, VideoMode):
        return {"event": "video"} | _present(**_fields_of(event))
    if isinstance(event, Dtmf):
        return {
            "event": "dtmf",
            "digit": event.digit,
            "direction": event.direction,
            "method": event.method,
        }
    if isinstance(event, Stats):
        return {"event": "stats", **stats_fields(event)}
    raise TypeError(f"not a relay event: {event!r}")


def status_of(event: RelayEvent) -> str | None:
    """The `status` of a status event (TRYING … BUSY, HOLD), None for every other event."""
    if isinstance(event, Trying):
        return "TRYING"
    if isinstance(event, (Progress, Failed)):
        return event.status.value
    if isinstance(event, (Established, Resumed)):
        return "ESTABLISHED"
    if isinstance(event, Held):
        return "HOLD"
    if isinstance(event, Finished):
        return "FINISH"
    return None


def _status_record(event: Trying | Progress | Established | Finished | Failed) -> Record:
    head: Record = {"event": "status", "status": status_of(event)}
    if isinstance(event, Trying):
        return head | {"callee": event.callee}
    if isinstance(event, Progress):
        return head | {"code": event.code, "reason": event.reason}
    if isinstance(event, Established):
        codecs = _present(audio=_codec(event.audio), video=_codec(event.video))
        return head | {"code": event.code, "reason": event.reason} | codecs | {"srtp": event.srtp}
    if isinstance(event, Finished):
        return head | {"reason": event.reason, "duration": event.duration}
    explained = explain(event.outcome)
    return head | {"reason": explained.message, "exitCode": int(explained.exit_code)}


def _codec(codec: Codec | None) -> Record | None:
    return None if codec is None else {"codec": codec.codec, "rate": codec.rate}


def _moved(codec: Codec | None, remote: str) -> Record | None:
    """A kind's codec and where its media now comes from; None for a kind no longer
    received (declined, or never negotiated)."""
    if codec is None:
        return None
    return {"codec": codec.codec, "rate": codec.rate} | _present(remote=remote or None)


def _present(**values: Any) -> Record:
    """The fields that are set: a None field is absent from the record, not null."""
    return {name: value for name, value in values.items() if value is not None}


def stats_fields(stats: Stats) -> Record:
    """A `stats` event's fields: duration, level, outputs, then the callee's audio and video."""
    shown: Record = {
        "duration": stats.duration,
        "level_dbfs": stats.level_dbfs,
        "outputs": [_output_fields(output) for output in stats.outputs],
    }
    if stats.rtp is not None:
        shown["rtp"] = _counters(stats.rtp)
    if stats.video is not None:
        shown["video"] = _counters(stats.video)
    return shown


def _output_fields(output: OutputStats) -> Record:
    return {
        "target": output.target,
        "state": output.state,
        "bitrate": output.bitrate,
        "bytes": output.bytes,
        "reconnects": output.reconnects,
    }


def _counters(counters: AudioStats | VideoStats) -> Record:
    """The record's own fields in order, then its source-validation counters inline."""
    own = _fields_of(counters)
    source: SourceStats = own.pop("source")
    return own | _fields_of(source)


def _fields_of(value: Any) -> Record:
    """A dataclass's fields by name, in declaration order (not recursing into nested ones)."""
    return {item.name: getattr(value, item.name) for item in fields(value)}
