"""The many-calls report: what one load of N concurrent calls cost and whether its streams held,
and the Markdown block written between the `serve-benchmark` markers of docs/performance.md."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.relay.report import machine

AAC_FRAME_S = 1024 / 48000
"""One AAC frame at the stream's 48 kHz: consecutive audio timestamps are this far apart."""
FLV_ROUNDING_S = 0.002
"""FLV timestamps are whole milliseconds, so two neighbours may be a millisecond further apart
either way; a step is a gap only beyond one frame plus this."""
DROPOUT_WINDOW_S = 0.005
"""Audio is judged in windows this long: two periods of the lab's 440 Hz tone."""
DROPOUT_LEVEL = 0.25
"""A window under this share of the hold's median level (12 dB down) has lost the tone."""
OTHERS_RESOLUTION = 6.0
"""CPU-s/min: the machine's busy time less the measured processes' is noise below this."""
SATURATED_BUSY = 0.95
"""The machine counts as saturated when its CPUs were busy this share of the hold."""


@dataclass(frozen=True)
class RtpCounters:
    """The callee's audio as one `stats` event counts it (cumulative since the answer)."""

    received: int = 0
    lost: int = 0
    late: int = 0
    resyncs: int = 0

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any] | None) -> RtpCounters:
        rtp = (stats or {}).get("rtp") or {}
        return cls(
            received=int(rtp.get("received", 0)),
            lost=int(rtp.get("lost", 0)),
            late=int(rtp.get("late", 0)),
            resyncs=int(rtp.get("timeline_resyncs", 0)),
        )

    def __sub__(self, earlier: RtpCounters) -> RtpCounters:
        return RtpCounters(
            self.received - earlier.received,
            self.lost - earlier.lost,
            self.late - earlier.late,
            self.resyncs - earlier.resyncs,
        )

    def __add__(self, other: RtpCounters) -> RtpCounters:
        return RtpCounters(
            self.received + other.received,
            self.lost + other.lost,
            self.late + other.late,
            self.resyncs + other.resyncs,
        )


def audio_gaps(dts: Sequence[float]) -> list[tuple[float, float]]:
    """(where, how much is missing) for each step between audio timestamps longer than a frame.

    A stream that drops or is late with audio shows it here: each AAC frame follows the last
    by exactly one frame's duration (within FLV's millisecond rounding)."""
    return [
        (a, b - a - AAC_FRAME_S)
        for a, b in itertools.pairwise(dts)
        if b - a > AAC_FRAME_S + FLV_ROUNDING_S
    ]


def audio_dropouts(
    samples: npt.NDArray[np.float32], rate: int, span: tuple[float, float]
) -> list[tuple[float, float]]:
    """(where, how long) each stretch within `span` (seconds from the first sample) where the
    callee's continuous tone is missing.

    Late audio leaves no mark on the timestamps: the relay keeps the stream's timeline and
    sends silence in the slots the audio missed (`timeline_resyncs` counts it). The lab's
    callees send an unbroken tone, so any stretch well under its usual level is audio lost.
    """
    size = int(rate * DROPOUT_WINDOW_S)
    first, last = (max(0, int(edge * rate)) for edge in span)
    body = samples[first:last]
    count = body.size // size
    if count == 0:
        return []
    level = np.sqrt(np.square(body[: count * size].reshape(count, size)).mean(axis=1))
    quiet = np.concatenate(([False], level < DROPOUT_LEVEL * np.median(level), [False]))
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    return [
        (span[0] + begin * DROPOUT_WINDOW_S, (end - begin) * DROPOUT_WINDOW_S)
        for begin, end in zip(edges[::2], edges[1::2], strict=True)
    ]


@dataclass
class CallFigures:
    """One call of a load: how it ended and what its recording and counters show."""

    call_id: str
    callee: str
    status: str
    reason: str | None = None
    held: bool = False
    """Up (ESTABLISHED) from the start of the hold to its end."""
    rtp_hold: RtpCounters = field(default_factory=RtpCounters)
    """The counters' growth between the last stats before the hold and the last before its end."""
    rtp_total: RtpCounters = field(default_factory=RtpCounters)
    """The call's final stats: from the answer to the hangup."""
    reconnects: int = 0
    recorded_s: float = 0.0
    """How long the recording's audio runs; 0 without a recording."""
    gaps: list[tuple[float, float]] = field(default_factory=list)
    """Audio gaps over the whole recording, in the recording's time."""
    hold_span: tuple[float, float] = (0.0, 0.0)
    """The hold in the recording's time (within about half a second)."""
    dropouts: list[tuple[float, float]] = field(default_factory=list)
    """Stretches of the hold where the callee's tone is missing from the recording's audio."""

    @property
    def hold_gaps(self) -> list[tuple[float, float]]:
        start, end = self.hold_span
        return [gap for gap in self.gaps if start <= gap[0] <= end]


@dataclass
class LoadRun:
    """What one load cost, over the hold (CPU in seconds, memory in KiB)."""

    calls: int
    hold_s: float
    ramp_s: float
    figures: list[CallFigures]
    refused: list[str] = field(default_factory=list)
    """Startup requests the server did not accept: the status and the reason it gave."""
    workers: int = 0
    """Worker processes there at both edges of the hold: the CPU per call is theirs."""
    worker_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    lab_cpu_s: float = 0.0
    """kamailio, nginx and the callees' baresip, which share the machine's CPUs."""
    machine_busy: float = 0.0
    """Share of all CPUs busy over the hold, whoever used them."""
    machine_cpu_s: float = 0.0
    """CPU seconds the whole machine was busy over the hold."""
    rss_kb: int = 0
    """Largest sum over the server and its workers, sampled every few seconds of the hold."""
    pss_kb: int = 0
    """The same sum of PSS, read once at the hold's end."""
    lifetime_worker_cpu_s: float = 0.0
    """Every worker over its whole life: start-up, the call, the hangup."""
    zygote_cpu_s: float = 0.0
    """The zygote's own CPU: loading the call's code once, then forking and reaping."""

    @property
    def held(self) -> int:
        return sum(call.held for call in self.figures)

    @property
    def cpu_per_call_min(self) -> float:
        """Steady CPU seconds per minute of one call, the workers' sum over the hold."""
        if not self.workers or not self.hold_s:
            return 0.0
        return self.worker_cpu_s / self.workers * 60.0 / self.hold_s

    @property
    def rtp_hold(self) -> RtpCounters:
        return sum((call.rtp_hold for call in self.figures), RtpCounters())

    @property
    def rtp_total(self) -> RtpCounters:
        return sum((call.rtp_total for call in self.figures), RtpCounters())

    @property
    def hold_gaps(self) -> int:
        return sum(len(call.hold_gaps) for call in self.figures)

    @property
    def unrecorded(self) -> int:
        """Calls whose recording is missing or has no audio: their gaps cannot be counted."""
        return sum(not call.recorded_s for call in self.figures)

    @property
    def hold_dropouts(self) -> int:
        return sum(len(call.dropouts) for call in self.figures)

    def problems(self) -> list[str]:
        """What keeps this load from the goal: every call held, nothing late, lost or missing."""
        found = []
        if self.held < self.calls:
            found.append(f"{self.calls - self.held} of {self.calls} calls not up for the hold")
        rtp = self.rtp_hold
        if rtp.late or rtp.lost:
            found.append(f"{rtp.late} late and {rtp.lost} lost RTP packets")
        if self.unrecorded:
            found.append(f"{self.unrecorded} of {self.calls} calls without a recording")
        if self.hold_gaps:
            found.append(f"{self.hold_gaps} AAC gaps")
        if self.hold_dropouts:
            found.append(f"{self.hold_dropouts} audio dropouts")
        if self.machine_busy >= SATURATED_BUSY:
            found.append(f"both CPUs {self.machine_busy:.0%} busy")
        return found


def saturation(runs: Sequence[LoadRun]) -> str:
    """The smallest load that missed the goal, and why; or that none did."""
    ordered = sorted(runs, key=lambda run: run.calls)
    for run in ordered:
        problems = run.problems()
        if problems:
            return f"Saturates at {run.calls} calls: {'; '.join(problems)}."
    largest = ordered[-1].calls if ordered else 0
    return f"No saturation up to {largest} calls: every call held, nothing late, lost or missing."


def _mb(kb: int) -> str:
    return f"{kb / 1024:.0f} MB"


def _row(run: LoadRun) -> str:
    hold, total = run.rtp_hold, run.rtp_total
    with_gap = sum(bool(call.hold_gaps) for call in run.figures)
    with_dropout = sum(bool(call.dropouts) for call in run.figures)
    lost_ms = 1000 * sum(length for call in run.figures for _, length in call.dropouts)
    cells = [
        str(run.calls),
        f"{run.held}",
        f"{run.cpu_per_call_min:.2f} CPU-s/min ({run.cpu_per_call_min / 60:.1%} of a core)",
        f"{run.server_cpu_s * 60 / run.hold_s:.2f} CPU-s/min" if run.hold_s else "n/a",
        f"{run.lab_cpu_s * 60 / run.hold_s:.1f} CPU-s/min" if run.hold_s else "n/a",
        f"{run.machine_busy:.0%}",
        f"{_mb(run.rss_kb)} ({_mb(run.pss_kb)} PSS)",
        f"{hold.late} / {hold.lost}",
        f"{total.late} / {total.lost}",
        f"{run.hold_gaps} in {with_gap} recordings",
        f"{run.hold_dropouts} in {with_dropout} recordings, {lost_ms:.0f} ms",
    ]
    return f"| {' | '.join(cells)} |"


HEADER = (
    "| calls | up for the hold | CPU per call (workers, steady) | server CPU | lab CPU"
    " | machine busy (2 CPUs) | RSS, server + workers | RTP late / lost, hold"
    " | RTP late / lost, whole calls | AAC gaps, hold | audio dropouts, hold |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
)


def _details(run: LoadRun) -> list[str]:
    """The figures behind one row: start-up cost, resyncs, failures and the worst gaps."""
    per_call = run.lifetime_worker_cpu_s / run.calls if run.calls else 0.0
    hold, total = run.rtp_hold, run.rtp_total
    lines = [
        f"- {run.calls} calls, started over {run.ramp_s:.0f} s, held {run.hold_s:.0f} s:"
        f" {run.workers} workers; each worker {per_call:.2f} CPU-s over its whole life"
        f" (and their zygote {run.zygote_cpu_s:.2f} CPU-s once);"
        f" {hold.received} RTP packets received in the hold ({total.received} in all),"
        f" {hold.resyncs} timeline resyncs in the hold ({total.resyncs} in all);"
        f" {sum(call.reconnects for call in run.figures)} output reconnects."
    ]
    others = run.machine_cpu_s - run.worker_cpu_s - run.server_cpu_s - run.lab_cpu_s
    if run.hold_s:
        # /proc/stat counts the machine's CPUs by tick, a process's stat by its scheduled
        # time: the two differ by a few CPU-s/min, so a small remainder means nothing.
        rest = others * 60 / run.hold_s
        used = f"{rest:.1f} CPU-s/min" if rest >= OTHERS_RESOLUTION else "nothing measurable"
        lines.append(
            f"  - the rest of the machine (the benchmark itself, other work): {used} in the hold."
        )
    recorded = [call.recorded_s for call in run.figures if call.recorded_s]
    if recorded:
        lines.append(
            f"  - {len(recorded)} recordings, their audio {min(recorded):.1f}-"
            f"{max(recorded):.1f} s long."
        )
    if run.refused:
        lines.append(f"  - refused: {'; '.join(run.refused)}.")
    for call in run.figures:
        if not call.held or call.status != "FINISH":
            lines.append(f"  - {call.call_id} ({call.callee}): {call.status}, {call.reason}.")
    for what, found in (
        ("AAC gaps", [(call.call_id, gap) for call in run.figures for gap in call.hold_gaps]),
        ("audio dropouts", [(call.call_id, gap) for call in run.figures for gap in call.dropouts]),
    ):
        if found:
            found.sort(key=lambda item: -item[1][1])
            worst = ", ".join(
                f"{cid} {length * 1000:.0f} ms at {at:.1f} s" for cid, (at, length) in found[:8]
            )
            lines.append(f"  - {what} in the hold, longest first: {worst}.")
    return lines


def load_markdown(runs: Sequence[LoadRun], callees: Sequence[str]) -> str:
    """The results block: the machine, one row per load, where it saturates, the details."""
    today = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    hold = max((run.hold_s for run in runs), default=0.0)
    lines = [
        f"Measured {today}: `sip2rtmp serve` holding N audio-only calls (each streams the"
        f" slate with the callee's audio) for {hold:.0f} s, to the lab callees"
        f" {', '.join(f'`{name}`' for name in callees)} in turn, each call to its own nginx"
        " stream key.",
        "",
        *(f"- {key}: {value}" for key, value in machine().items()),
        "",
        *HEADER,
        *(_row(run) for run in sorted(runs, key=lambda run: run.calls)),
        "",
        saturation(runs),
        "",
    ]
    for run in sorted(runs, key=lambda run: run.calls):
        lines += _details(run)
    return "\n".join(lines)
