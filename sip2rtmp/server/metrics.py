"""`GET /metrics`: the server's calls and their media health in Prometheus' text format.

Counters follow the workers' events (calls started and ended, RTP packets lost and late,
output reconnects); gauges are read when scraped (calls by status, each running call's loss
and CPU). Worker CPU and memory come from /proc: cheap, and no extra dependency.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from sip2rtmp.server.calls import FINAL_STATUSES, STATUSES, CallRecord

CallsSource = Callable[[], Iterable[CallRecord]]
WorkersSource = Callable[[], Iterable[tuple[str, int]]]
"""(callId, pid) of every running worker."""


@dataclass
class _CallCounters:
    """A call's last cumulative counters, so that each stats event adds only what is new."""

    lost: int = 0
    late: int = 0
    reconnects: int = 0


@dataclass(frozen=True)
class ProcessUsage:
    cpu_seconds: float
    rss_bytes: int


def process_usage(pid: int) -> ProcessUsage | None:
    """CPU time (user + system) and resident memory of a live process, from /proc/PID/stat
    (proc(5): utime and stime are fields 14 and 15, rss field 24); None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name may hold spaces: skip past it
    try:
        ticks = int(fields[11]) + int(fields[12])
        pages = int(fields[21])
    except (IndexError, ValueError):
        return None
    return ProcessUsage(ticks / os.sysconf("SC_CLK_TCK"), pages * os.sysconf("SC_PAGE_SIZE"))


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Metrics:
    """One server's metrics in a registry of its own; `observe` takes each worker event."""

    def __init__(self, calls: CallsSource = tuple, workers: WorkersSource = tuple) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self._calls = calls
        self._workers = workers
        self._known: dict[str, _CallCounters] = {}
        registry = self.registry
        self.started = Counter("sip2rtmp_calls_started", "Calls that began", registry=registry)
        self.finished = Counter(
            "sip2rtmp_calls_finished", "Calls that ended normally (FINISH)", registry=registry
        )
        self.failed = Counter(
            "sip2rtmp_calls_failed", "Calls that failed (FAILED)", registry=registry
        )
        self.busy = Counter(
            "sip2rtmp_calls_busy", "Calls the callee declined (BUSY)", registry=registry
        )
        self.rtp_lost = Counter(
            "sip2rtmp_rtp_lost_packets", "Callee audio RTP packets lost", registry=registry
        )
        self.rtp_late = Counter(
            "sip2rtmp_rtp_late_packets",
            "Callee audio RTP packets that came too late to be played",
            registry=registry,
        )
        self.reconnects = Counter(
            "sip2rtmp_output_reconnects", "RTMP output reconnections", registry=registry
        )
        registry.register(_Scraped(self))

    def observe(self, record: CallRecord, event: dict[str, Any]) -> None:
        """Count what a worker's event adds (a listener of the call server)."""
        kind = event.get("event")
        if kind == "status":
            self._status(record.call_id, event.get("status"))
        elif kind == "stats":
            known = self._known.get(record.call_id)
            if known is not None:
                self._stats(known, event)

    def _status(self, call_id: str, status: object) -> None:
        if call_id not in self._known and status in STATUSES:
            self._known[call_id] = _CallCounters()
            self.started.inc()
        if status in FINAL_STATUSES:
            self._known.pop(call_id, None)
            {"FINISH": self.finished, "FAILED": self.failed, "BUSY": self.busy}[str(status)].inc()

    def _stats(self, known: _CallCounters, event: dict[str, Any]) -> None:
        rtp = event.get("rtp")
        rtp = rtp if isinstance(rtp, dict) else {}
        outputs = event.get("outputs")
        outputs = outputs if isinstance(outputs, list) else []
        lost, late = _int(rtp.get("lost")), _int(rtp.get("late"))
        reconnects = sum(_int(o.get("reconnects")) for o in outputs if isinstance(o, dict))
        self.rtp_lost.inc(max(0, lost - known.lost))
        self.rtp_late.inc(max(0, late - known.late))
        self.reconnects.inc(max(0, reconnects - known.reconnects))
        known.lost = max(known.lost, lost)
        known.late = max(known.late, late)
        known.reconnects = max(known.reconnects, reconnects)

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Scraped(Collector):
    """What is read at scrape time: the records and the workers' /proc entries."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        records = list(self.metrics._calls())
        by_status = GaugeMetricFamily(
            "sip2rtmp_calls", "Calls the server knows, by status", labels=["status"]
        )
        for status in STATUSES:
            by_status.add_metric([status], sum(1 for r in records if r.status == status))
        yield by_status
        loss = GaugeMetricFamily(
            "sip2rtmp_rtp_loss_percent",
            "Callee audio packets lost, in percent of those expected, per running call",
            labels=["call_id"],
        )
        for record in records:
            rtp = (record.stats or {}).get("rtp")
            if not record.finished and isinstance(rtp, dict):
                value = rtp.get("loss_pct")
                if isinstance(value, int | float) and not isinstance(value, bool):
                    loss.add_metric([record.call_id], float(value))
        yield loss
        yield from self._workers()

    def _workers(self) -> Iterator[Metric]:
        per_call = GaugeMetricFamily(
            "sip2rtmp_call_cpu_seconds",
            "CPU time its worker used, per running call",
            labels=["call_id"],
        )
        reaped = os.times()
        cpu, rss = reaped.children_user + reaped.children_system, 0
        for call_id, pid in self.metrics._workers():
            usage = process_usage(pid)
            if usage is not None:
                per_call.add_metric([call_id], usage.cpu_seconds)
                cpu += usage.cpu_seconds
                rss += usage.rss_bytes
        yield per_call
        yield CounterMetricFamily(
            "sip2rtmp_worker_cpu_seconds", "CPU time of every worker, ended ones too", value=cpu
        )
        yield GaugeMetricFamily(
            "sip2rtmp_worker_resident_memory_bytes",
            "Resident memory of the running workers",
            value=rss,
        )


ACTIVE = Metrics()
"""The serving process's metrics (`install` replaces it); `render` serves them."""


def install(metrics: Metrics) -> None:
    global ACTIVE
    ACTIVE = metrics


def render() -> tuple[bytes, str]:
    """`GET /metrics`' body and content type, from the installed metrics."""
    return ACTIVE.render()
