"""What waking costs: an asyncio loop with nothing to do, woken on a timer at several rates.

The relay's event loop does its periodic work on one grid of instants (`sip2rtmp/net/grid.py`)
because a wake-up costs more than the little work a media packet needs. This measures that
cost alone: a fresh interpreter runs an empty loop whose only timer fires ``rate`` times a
second for ``--seconds``, and the CPU it used meanwhile (``time.process_time()`` around the
loop's run, so the interpreter's start and end are left out) is put per minute. No lab is
needed.

    .venv/bin/python -m benchmarks.wakeup_benchmark
    .venv/bin/python -m benchmarks.wakeup_benchmark --write docs/performance.md

``--write`` replaces the block between the ``wakeup-benchmark loop results`` markers.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.relay.report import publish
from benchmarks.startup_benchmark import cpu_model

RATES_HZ = (2.0, 12.5, 25.0, 50.0)
"""Rates around the grid's: 12.5 a second (80 ms, the default) and 25 (`--latency low`)."""

IDLE_LOOP = """
import asyncio, sys, time

async def main(rate, seconds):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    start = loop.time()
    ticks = max(round(rate * seconds), 1)

    def fire(index):
        if index == ticks:
            done.set_result(None)
        else:
            loop.call_at(start + (index + 1) / rate, fire, index + 1)

    loop.call_at(start + 1 / rate, fire, 1)
    used = time.process_time()
    await done
    print(time.process_time() - used)

asyncio.run(main(float(sys.argv[1]), float(sys.argv[2])))
"""
"""An event loop that does nothing but wake ``rate`` times a second, on an absolute schedule
as the grid's timer keeps; at ``rate`` times ``seconds`` wake-ups it prints the CPU-s it
used since the first was booked, and ends."""


@dataclass(frozen=True)
class Rate:
    hz: float
    cpu_per_min: list[float]
    """CPU-s a minute of each run."""

    @property
    def per_wakeup_us(self) -> float:
        return statistics.median(self.cpu_per_min) / (self.hz * 60) * 1e6


def run_cpu_s(rate: float, seconds: float) -> float:
    """The CPU-s one run of ``IDLE_LOOP`` spent in its loop."""
    done = subprocess.run(
        [sys.executable, "-c", IDLE_LOOP, str(rate), str(seconds)],
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + 30,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the idle loop exited with {done.returncode}: {done.stderr[-500:]}")
    return float(done.stdout)


def measure(rates: tuple[float, ...], seconds: float, runs: int) -> list[Rate]:
    """Each rate ``runs`` times, the rates taken in turn so that the machine's load moves
    them alike."""
    per_min: dict[float, list[float]] = {rate: [] for rate in rates}
    for _ in range(runs):
        for rate in rates:
            per_min[rate].append(run_cpu_s(rate, seconds) * 60 / seconds)
    return [Rate(rate, per_min[rate]) for rate in rates]


def results_markdown(rates: list[Rate], seconds: float) -> str:
    runs = len(rates[0].cpu_per_min) if rates else 0
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: an idle asyncio loop woken on a "
        f"timer, {runs} run{'s' if runs != 1 else ''} of {seconds:g} s a rate.",
        "",
        f"- CPU: {cpu_model()}; Python {platform.python_version()}",
        "",
        "| wake-ups a second | CPU-s a minute (median) | range | per wake-up |",
        "| --- | --- | --- | --- |",
    ]
    for rate in rates:
        median = statistics.median(rate.cpu_per_min)
        lines.append(
            f"| {rate.hz:g} | {median:.3f} | {min(rate.cpu_per_min):.3f}-"
            f"{max(rate.cpu_per_min):.3f} | {rate.per_wakeup_us:.0f} µs |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=20.0, help="each run's length")
    parser.add_argument("--runs", type=int, default=3, help="runs of each rate")
    parser.add_argument("--write", type=Path, metavar="MARKDOWN", help="update this results file")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.seconds < 1:
        parser.error("--runs must be at least 1 and --seconds at least 1")
    rates = measure(RATES_HZ, args.seconds, args.runs)
    publish(results_markdown(rates, args.seconds), args.write, "loop", "wakeup-benchmark")
    return 0


if __name__ == "__main__":
    sys.exit(main())
