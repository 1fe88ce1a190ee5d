"""A call's record as the worker's events drive it, and how long the registry keeps it."""

from __future__ import annotations

from typing import Any

from sip2rtmp.server.calls import CallRecord, CallRegistry


def record(call_id: str = "c1") -> CallRecord:
    return CallRecord(
        call_id=call_id,
        status="NEW",
        sip_status=None,
        sip_message=None,
        callee="sip:echo@lab.example",
        rtmp_url="rtmp://127.0.0.1/live/stre****",
        has_audio=True,
        has_video=False,
        created=0.0,
    )


def status(name: str, **fields: Any) -> dict[str, Any]:
    return {"event": "status", "ts": "2025-01-01T00:00:00.000Z", "status": name, **fields}


def test_status_events_move_the_record_and_say_when_it_changed() -> None:
    call = record()
    changes = [
        call.apply_event(status("TRYING"), 1.0),
        call.apply_event(status("RING", code=180, reason="Ringing"), 2.0),
        call.apply_event(status("ESTABLISHED", code=200, reason="OK"), 3.0),
        call.apply_event(status("HOLD", direction="sendonly"), 4.0),
        call.apply_event(status("ESTABLISHED", resumed=True), 5.0),
        call.apply_event({"event": "stats", "callId": "c1", "rtp": {"lost": 2}}, 6.0),
        call.apply_event(status("FINISH", reason="hung up", duration=7.0), 10.0),
        call.apply_event(status("FAILED", reason="late", exitCode=9), 11.0),
    ]
    assert changes == [True, True, True, True, True, False, True, False]
    found = call.to_json(now=50.0)
    assert (found["status"], found["sipStatus"], found["sipMessage"]) == ("FINISH", 200, "OK")
    assert (found["duration"], found["reason"], found["exitCode"]) == (7.0, "hung up", 0)
    assert found["stats"] == {"rtp": {"lost": 2}}


def test_output_events_keep_one_entry_per_target() -> None:
    call = record()
    target = "rtmp://127.0.0.1/live/***"
    for state, error in (("connecting", None), ("live", None), ("reconnecting", "EOF")):
        event = {"event": "output", "target": target, "state": state}
        if error:
            event["error"] = error
        call.apply_event(event, 1.0)
    assert call.to_json(2.0)["outputs"] == [
        {"target": target, "state": "reconnecting", "error": "EOF"}
    ]


def test_unknown_statuses_and_events_change_nothing() -> None:
    call = record()
    assert not call.apply_event(status("DANCING"), 1.0)
    assert not call.apply_event({"event": "nat", "kind": "sip"}, 1.0)
    assert not call.apply_event({"status": "RING"}, 1.0)
    assert call.status == "NEW" and call.to_json(5.0)["duration"] == 0.0


def test_a_worker_that_died_fails_the_record_once() -> None:
    call = record()
    call.apply_event(status("ESTABLISHED", code=200, reason="OK"), 1.0)
    assert call.fail("worker killed by signal 9", 4.0)
    assert not call.fail("again", 5.0)
    found = call.to_json(9.0)
    assert (found["status"], found["reason"], found["duration"]) == (
        "FAILED",
        "worker killed by signal 9",
        3.0,
    )


def test_the_registry_keeps_finished_calls_for_keep_finished_seconds() -> None:
    registry = CallRegistry(keep_finished=60.0)
    done, running = record("done"), record("running")
    registry.add(done, "rtmp://h/live/a")
    registry.add(running, "rtmp://h/live/b")
    done.apply_event(status("BUSY", reason="busy", exitCode=5), 100.0)
    assert registry.running_count() == 1
    assert registry.destination_in_use("rtmp://h/live/a") is None
    assert registry.destination_in_use("rtmp://h/live/b") is running
    assert [r.call_id for r in registry.find("BUSY")] == ["done"]
    assert registry.expire(159.9) == []
    assert registry.expire(160.0) == ["done"]
    assert registry.get("done") is None and registry.all() == [running]
