"""The report: targets, verdicts and the numbers behind them, as the Markdown block written
between a case's markers in docs/performance.md."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import av

from benchmarks.relay.calls import Run
from sip2rtmp.media.pipeline import MediaConfig

if TYPE_CHECKING:
    # Only the type: the report needs neither the runner nor the SIP stack it starts calls with.
    from benchmarks.relay.runner import Case
    from benchmarks.relay.served import Served

CPU_RATIO_TARGETS: dict[str | None, float] = {None: 0.35, "H264/0": 1.0}
"""The share of the ffmpeg baseline's CPU sip2rtmp may use, by the case's video: an
audio-only call at most 35 % (the baseline encodes a slate live), an H.264 passthrough call no
more than ``ffmpeg -c:v copy``; any other case (VP8 transcoded) `CPU_RATIO_TARGET`."""
CPU_RATIO_TARGET = 0.5
ADDED_LATENCY_TARGET_S = 0.100
"""Audio delay beyond the jitter buffer's depth."""
FIRST_PACKET_TARGET_S = 0.200
"""From the 200 OK to the first FLV media packet on the wire."""
RSS_TARGET_MB = 120.0
CORE_SHARE_TARGET = 0.05
"""An H.264 passthrough call may use at most this share of one core."""
SRTP_CPU_TARGET = 0.10
"""An SRTP call may use at most this much more CPU than the same call in plain RTP."""

Row = tuple[str, str, str, str]
"""(target, sip2rtmp measured, baseline for reference, verdict)."""


def machine() -> dict[str, str]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False)
    libavcodec = ".".join(str(n) for n in av.library_versions["libavcodec"])
    return {
        "CPU": f"{model}, {os.cpu_count()} logical CPUs",
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "PyAV": f"{av.__version__} (its FFmpeg: libavcodec {libavcodec})",
        "ffmpeg CLI": " ".join(ffmpeg.stdout.split()[:3]),
    }


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "**missed**")


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _cpu_row(what: str, ours_per_min: float, baseline_per_min: float, target: float) -> Row:
    ratio = ours_per_min / baseline_per_min if baseline_per_min else None
    return (
        f"CPU at most {target:.0%} of the baseline ({what})",
        f"{ours_per_min:.2f} CPU-s/min"
        + (f" ({ratio:.0%} of baseline)" if ratio is not None else ""),
        f"{baseline_per_min:.2f} CPU-s/min",
        _verdict(None if ratio is None else ratio <= target),
    )


def _core_share_row(ours: Run, baseline: Run) -> Row:
    core_cpu = CORE_SHARE_TARGET * 60.0
    return (
        f"H.264 passthrough call at most {CORE_SHARE_TARGET:.0%} of one core"
        f" ({core_cpu:g} CPU-s/min, whole process)",
        f"{ours.cpu_per_min:.2f} CPU-s/min ({ours.cpu_per_min / 60:.1%} of a core;"
        f" steady call {ours.usage.steady_cpu_per_min:.2f})",
        f"{baseline.cpu_per_min:.2f} CPU-s/min",
        _verdict(ours.cpu_per_min <= core_cpu),
    )


def _delay_row(ours: Run, baseline: Run) -> Row:
    """The median delay minus the median jitter buffer depth: what the relay itself adds."""
    depth_ms = _median(ours.depth_ms)
    depth_s = depth_ms / 1000 if depth_ms is not None else None
    median = _median(ours.wire.delays if ours.wire else [])
    added = median - depth_s if median is not None and depth_s is not None else None
    return (
        f"added audio delay at most {_ms(ADDED_LATENCY_TARGET_S)} beyond the jitter buffer",
        f"{_ms(added)} (median delay {_ms(median)} minus depth {_ms(depth_s)})",
        f"median delay {_ms(_median(baseline.wire.delays if baseline.wire else []))}",
        _verdict(None if added is None else added <= ADDED_LATENCY_TARGET_S),
    )


def _first_packet(run: Run) -> float | None:
    return run.wire.since_ok(run.wire.first_media_at) if run.wire else None


def _first_packet_row(ours: Run, baseline: Run) -> Row:
    first = _first_packet(ours)
    return (
        f"first FLV media packet within {_ms(FIRST_PACKET_TARGET_S)} of the 200 OK",
        _ms(first),
        _ms(_first_packet(baseline)),
        _verdict(None if first is None else first <= FIRST_PACKET_TARGET_S),
    )


def _rss_row(ours: Run, baseline: Run) -> Row:
    rss = ours.usage.max_rss_kb / 1024
    return (
        f"peak RSS under {RSS_TARGET_MB:.0f} MB",
        f"{rss:.0f} MB",
        f"{baseline.usage.max_rss_kb / 1024:.0f} MB",
        _verdict(rss < RSS_TARGET_MB),
    )


def verdicts(ours: Run, baseline: Run, served: Served | None = None) -> list[Row]:
    """One row per target; the H.264 core-share target only for a passthrough call."""
    target = CPU_RATIO_TARGETS.get(ours.video_codec, CPU_RATIO_TARGET)
    steady = ours.usage.steady_cpu_per_min, baseline.usage.steady_cpu_per_min
    rows = [_cpu_row("whole process", ours.cpu_per_min, baseline.cpu_per_min, target)]
    if served is not None:
        what = "whole worker, the call through `sip2rtmp serve`"
        rows.append(_cpu_row(what, served.cpu_per_min, baseline.cpu_per_min, target))
    rows += [_cpu_row("steady call", *steady, target)]
    if ours.video_codec == "H264/0":
        rows.append(_core_share_row(ours, baseline))
    rows += [
        _delay_row(ours, baseline),
        _first_packet_row(ours, baseline),
        _rss_row(ours, baseline),
    ]
    return rows


def _srtp_cpu_row(what: str, srtp_per_min: float, plain_per_min: float) -> Row:
    extra = srtp_per_min / plain_per_min - 1 if plain_per_min else None
    return (
        f"SRTP call's CPU within {SRTP_CPU_TARGET:.0%} of the same plain call ({what})",
        f"{srtp_per_min:.2f} CPU-s/min" + (f" ({extra:+.1%})" if extra is not None else ""),
        f"{plain_per_min:.2f} CPU-s/min",
        _verdict(None if extra is None else extra <= SRTP_CPU_TARGET),
    )


def srtp_verdicts(ours: Run, baseline: Run) -> list[Row]:
    """What SRTP costs: the SRTP call's CPU against the same call in plain RTP (the
    ``baseline`` of an SRTP case), and the RSS target."""
    steady = ours.usage.steady_cpu_per_min, baseline.usage.steady_cpu_per_min
    return [
        _srtp_cpu_row("whole process", ours.cpu_per_min, baseline.cpu_per_min),
        _srtp_cpu_row("steady call", *steady),
        _rss_row(ours, baseline),
    ]


def _run_lines(run: Run) -> list[str]:
    """What one run cost, and what its capture shows."""
    usage = run.usage
    lines = [
        f"- {run.label} ({' + '.join(filter(None, (run.codec, run.video_codec)))} from the"
        f" callee): {usage.cpu_s:.2f} CPU-s over the whole"
        f" process for a {run.call_s:g} s call; {usage.steady_cpu_s:.2f} CPU-s in the steady"
        f" {usage.steady_s:.1f} s window; peak RSS {usage.max_rss_kb / 1024:.1f} MB."
    ]
    if run.wire is None:
        return lines
    wire = run.wire
    delays = wire.delays
    spread = (
        f"{len(delays)} onsets, min {_ms(min(delays))}, median"
        f" {_ms(statistics.median(delays))}, max {_ms(max(delays))}"
        if delays
        else "no onsets matched"
    )
    return [
        *lines,
        f"  - after the 200 OK: RTMP connection opened at"
        f" {_ms(wire.since_ok(wire.connect_at))}, first media packet at"
        f" {_ms(wire.since_ok(wire.first_media_at))}.",
        f"  - audio delay RTP in → FLV out ({run.probe_note}): {spread}.",
    ]


def details(
    ours: Run, baseline: Run, latency: str = "normal", served: Served | None = None
) -> list[str]:
    """Supporting measurements: the numbers behind each verdict."""
    lines = [*_run_lines(ours), *_run_lines(baseline)]
    if served is not None:
        lines.append(
            f"- {served.label} (the same call started over its REST API, its worker forked"
            f" from the server's loaded zygote): {served.cpu_s:.2f} CPU-s over the worker's"
            f" whole life for a {served.call_s:g} s call ({served.reason}); peak RSS"
            f" {served.max_rss_kb / 1024:.1f} MB; the zygote loaded the call's code once, for"
            f" {served.zygote_cpu_s:.2f} CPU-s."
        )
    if ours.depth_ms:
        designed = (
            f"designed output delay MediaConfig.latency_s = {MediaConfig().latency_s * 1000:.0f}"
            " ms and up to a media tick on top of it"
            if latency == "normal"
            else "audio encoded as it arrives (MediaConfig.audio_on_arrival) after it"
        )
        lines.append(
            f"- sip2rtmp jitter buffer depth (stats events): median"
            f" {statistics.median(ours.depth_ms):.0f} ms, range {min(ours.depth_ms):.0f}-"
            f"{max(ours.depth_ms):.0f} ms; {designed}."
        )
    if ours.live_event_s is not None:
        lines.append(
            f"- sip2rtmp `output` live event {_ms(ours.live_event_s)} after the ESTABLISHED event"
            " (state is polled every 0.5 s, so this is coarse)."
        )
    for run in (ours, baseline) if baseline.label.startswith("sip2rtmp") else (ours,):
        if run.usage.threads:
            busiest = ", ".join(f"{name} {cpu:.2f} s" for name, cpu in run.usage.threads[:5])
            lines.append(f"- {run.label} CPU by thread in the steady window: {busiest}.")
    return lines


class _Costed(Protocol):
    @property
    def cpu_per_min(self) -> float: ...


CostedRun = TypeVar("CostedRun", bound=_Costed)


def median_run(runs: Sequence[CostedRun]) -> CostedRun:
    """The run of median whole-process CPU; of an even count, the lower of the middle two.

    The load of the machine moves one side's CPU between runs minutes apart by as much as a
    fifth, so a comparison of single runs can go either way by luck."""
    return sorted(runs, key=lambda run: run.cpu_per_min)[(len(runs) - 1) // 2]


def rounds_line(spread: Sequence[tuple[str, Sequence[float]]]) -> str:
    """Every round's whole-process CPU per minute, by side."""
    sides = "; ".join(
        f"{label} {', '.join(f'{cpu:.2f}' for cpu in figures)}" for label, figures in spread
    )
    count = len(spread[0][1])
    return (
        f"- {count} rounds, one after the other, each running the sides in turn; whole-process"
        f" CPU-s/min by round: {sides}. The table and the lines above are each side's median"
        " round."
    )


def results_markdown(
    ours: Run,
    baseline: Run,
    duration: float,
    case: Case,
    latency: str = "normal",
    served: Served | None = None,
    spread: Sequence[tuple[str, Sequence[float]]] = (),
) -> str:
    today = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "" if latency == "normal" else f", sip2rtmp with `--latency {latency}`"
    lines = [
        f"Measured {today}, {duration:g} s calls to the lab callee `{case.callee}`"
        f" ({case.summary}){mode}.",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in machine().items()]
    if case.srtp:
        header = "| target | SRTP call | plain RTP call | verdict |"
    else:
        header = "| target | sip2rtmp | ffmpeg baseline | verdict |"
    lines += ["", header, "| --- | --- | --- | --- |"]
    table = srtp_verdicts(ours, baseline) if case.srtp else verdicts(ours, baseline, served)
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in table]
    lines += ["", *details(ours, baseline, latency, served)]
    if spread:
        lines.append(rounds_line(spread))
    return "\n".join(lines)


DOCUMENT = """# Performance

How much a relayed call costs and how late its audio reaches the stream, measured against
the ffmpeg pipeline a user would otherwise script. `benchmarks/README.md` says how it is
measured; rerun with:

    .venv/bin/python -m benchmarks.relay_benchmark --case audio --write docs/performance.md
"""


def markers(case: str, benchmark: str = "relay-benchmark") -> tuple[str, str]:
    """Each case has its own results block, so rerunning one leaves the others alone."""
    return (
        f"<!-- {benchmark} {case} results: start -->",
        f"<!-- {benchmark} {case} results: end -->",
    )


def publish(block: str, path: Path | None, case: str, benchmark: str = "relay-benchmark") -> None:
    """Print a results block, and write it into `path` when one is given."""
    print(block)
    if path is not None:
        write_results(path, block, case, benchmark)


def write_results(path: Path, block: str, case: str, benchmark: str = "relay-benchmark") -> None:
    """Replace the case's results block of `path`, keeping everything around it.

    A case without a block yet gets one at the end of the file. `benchmark` names the command
    whose block it is: several write into one results file.
    """
    start, end = markers(case, benchmark)
    text = path.read_text() if path.exists() else DOCUMENT
    if start not in text or end not in text:
        text = f"{text.rstrip()}\n\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(f"{head}{start}\n{block}\n{end}{tail}")
