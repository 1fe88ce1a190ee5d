"""`/metrics`: after workers' events, the text exposition has the counters and gauges with the
values those events imply; worker CPU and memory are read from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from sip2rtmp.server import metrics as metrics_module
from sip2rtmp.server.calls import CallRecord
from sip2rtmp.server.metrics import Metrics, process_usage
from tests.unit.server.worker_support import new_record, start_request

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: Metrics) -> Samples:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def feed(metrics: Metrics, record: CallRecord, *events: dict[str, Any]) -> None:
    for event in events:
        record.apply_event(event, time.monotonic())
        metrics.observe(record, event)


def status(name: str, **fields: Any) -> dict[str, Any]:
    return {"event": "status", "status": name, **fields}


def stats(lost: int, late: int, loss_pct: float, reconnects: int) -> dict[str, Any]:
    return {
        "event": "stats",
        "duration": 5.0,
        "rtp": {"received": 500, "lost": lost, "late": late, "loss_pct": loss_pct},
        "outputs": [{"target": "rtmp://h/live/***", "reconnects": reconnects}],
    }


def test_counters_and_gauges_follow_the_events() -> None:
    live, ended, declined = (new_record(start_request(name)) for name in ("a", "b", "c"))
    metrics = Metrics(calls=lambda: [live, ended, declined])
    feed(metrics, live, status("TRYING"), status("ESTABLISHED", code=200))
    feed(metrics, live, stats(3, 1, 0.6, 0), stats(7, 1, 1.4, 2))
    feed(metrics, ended, status("TRYING"), status("ESTABLISHED", code=200), stats(2, 4, 0.4, 1))
    feed(metrics, ended, status("FAILED", reason="media timeout", exitCode=5))
    feed(metrics, declined, status("TRYING"), status("BUSY", reason="486 Busy Here"))

    found = samples(metrics)
    assert found[("sip2rtmp_calls_started_total", ())] == 3
    assert found[("sip2rtmp_calls_finished_total", ())] == 0
    assert found[("sip2rtmp_calls_failed_total", ())] == 1
    assert found[("sip2rtmp_calls_busy_total", ())] == 1
    assert found[("sip2rtmp_rtp_lost_packets_total", ())] == 7 + 2
    assert found[("sip2rtmp_rtp_late_packets_total", ())] == 1 + 4
    assert found[("sip2rtmp_output_reconnects_total", ())] == 2 + 1
    by_status = {
        dict(labels)["status"]: value
        for (name, labels), value in found.items()
        if name == "sip2rtmp_calls"
    }
    assert by_status["ESTABLISHED"] == 1
    assert by_status["FAILED"] == by_status["BUSY"] == 1
    assert sum(by_status.values()) == 3
    loss = {labels: value for (name, labels), value in found.items() if "loss_percent" in name}
    assert loss == {(("call_id", "a"),): 1.4}  # running calls only
    assert found[("process_cpu_seconds_total", ())] > 0


def test_a_call_ends_once_in_the_counters() -> None:
    record = new_record(start_request())
    metrics = Metrics()
    feed(metrics, record, status("TRYING"), status("FINISH", reason="hangup"))
    metrics.observe(record, stats(9, 9, 1.0, 9))  # late stats of an ended call add nothing
    found = samples(metrics)
    assert found[("sip2rtmp_calls_started_total", ())] == 1
    assert found[("sip2rtmp_calls_finished_total", ())] == 1
    assert found[("sip2rtmp_rtp_lost_packets_total", ())] == 0


def test_worker_cpu_and_memory_come_from_proc() -> None:
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    child = subprocess.Popen([sys.executable, "-c", burn + "time.sleep(60)"])
    try:
        deadline = time.monotonic() + 20
        while (usage := process_usage(child.pid)) is None or usage.cpu_seconds < 0.3:
            assert time.monotonic() < deadline, f"child used {usage}"
            time.sleep(0.05)
        metrics = Metrics(workers=lambda: [("busy-call", child.pid)])
        found = samples(metrics)
        assert found[("sip2rtmp_call_cpu_seconds", (("call_id", "busy-call"),))] >= 0.3
        assert found[("sip2rtmp_worker_cpu_seconds_total", ())] >= 0.3
        assert found[("sip2rtmp_worker_resident_memory_bytes", ())] > 1_000_000
    finally:
        child.kill()
        child.wait()
    # Gone from /proc, its CPU still counts among the ended workers'.
    assert process_usage(child.pid) is None
    after = samples(Metrics(workers=lambda: [("busy-call", child.pid)]))
    assert ("sip2rtmp_call_cpu_seconds", (("call_id", "busy-call"),)) not in after
    assert after[("sip2rtmp_worker_cpu_seconds_total", ())] >= 0.3


def test_process_usage_reads_this_process() -> None:
    usage = process_usage(os.getpid())
    assert usage is not None
    assert usage.cpu_seconds > 0
    assert usage.rss_bytes > 10_000_000  # an interpreter with aiohttp loaded


def test_render_serves_the_installed_metrics() -> None:
    record = new_record(start_request())
    installed = Metrics(calls=lambda: [record])
    before = metrics_module.ACTIVE
    metrics_module.install(installed)
    try:
        installed.observe(record, status("TRYING"))
        body, _ = metrics_module.render()
    finally:
        metrics_module.install(before)
    assert b"sip2rtmp_calls_started_total 1.0" in body
