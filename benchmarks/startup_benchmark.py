"""Start-up of ``sip2rtmp call``: from exec to its first REGISTER, wall time and CPU.

The command runs as a user would run it, with the lab's account and a callee, but its SIP
server is a UDP socket of this benchmark: the first datagram that arrives is the REGISTER.
At that moment the process's CPU is read from the kernel (``/proc/<pid>/stat``: user and
system time of every thread, those that ended included) and the process is killed. Nothing
else runs, so the figure is the start-up alone: the interpreter, the imports, parsing the
options, and whatever else happens before the first packet leaves. No lab is needed.

Beside it, the floor under any relay built on this stack: an interpreter that only imports
asyncio, PyAV and numpy, read the same way the moment it has (``STACK_IMPORTS``).

    .venv/bin/python -m benchmarks.startup_benchmark --runs 10
    .venv/bin/python -m benchmarks.startup_benchmark --write docs/performance.md

``--write`` replaces the block between the ``startup-benchmark call results`` markers.
"""

from __future__ import annotations

import argparse
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.relay.probes.process import process_cpu_s, program_env
from benchmarks.relay.report import publish

TARGET_CPU_S = 0.2
"""The start-up CPU the relay is held to (exec to the first REGISTER)."""

STACK_IMPORTS = "import asyncio, av, numpy, sys; print('imported', flush=True); sys.stdin.read()"
"""A program that loads what sip2rtmp's relay cannot do without (the interpreter, asyncio
with ssl, PyAV, numpy), says so, and waits to be killed: its CPU at that line is what a
relay on this stack pays before any code of its own runs."""


@dataclass(frozen=True)
class Startup:
    wall_s: float
    cpu_s: float


def _command(port: int, extra: list[str]) -> list[str]:
    script = Path(sys.executable).with_name("sip2rtmp")
    program = [str(script)] if script.exists() else [sys.executable, "-m", "sip2rtmp"]
    return [
        *program,
        "call",
        "--callee", "tone",
        "--sip-login", "relay",
        "--sip-domain", "lab.sip2rtmp.test",
        "--sip-outbound-proxy", f"127.0.0.1:{port}",
        "--rtmp-url", "rtmp://127.0.0.1:9/live",
        "--rtmp-stream", "startup",
        "--max-duration", "5",
        "--json",
        *extra,
    ]  # fmt: skip


def measure_once(extra: list[str]) -> Startup:
    """One start: exec, wait for the REGISTER, read the CPU, kill."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(10.0)
        env = program_env(SIP2RTMP_SIP_PASSWORD="startup-benchmark")
        started = time.monotonic()
        process = subprocess.Popen(
            _command(server.getsockname()[1], extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            data, _ = server.recvfrom(65535)
            wall = time.monotonic() - started
            cpu = process_cpu_s(process.pid)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    if not data.startswith(b"REGISTER "):
        raise RuntimeError(f"the first datagram was not a REGISTER: {data[:40]!r}")
    return Startup(wall, cpu)


def measure_stack_floor() -> Startup:
    """One start of ``STACK_IMPORTS``: exec, wait for its line, read the CPU, kill. numpy's
    OpenBLAS gets one thread, as sip2rtmp's command line gives it."""
    env = program_env()
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-c", STACK_IMPORTS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        wall = time.monotonic() - started
        cpu = process_cpu_s(process.pid)
    finally:
        process.kill()
        process.communicate()
    if line != b"imported\n":
        raise RuntimeError(f"the stack's imports failed: {line[:40]!r}")
    return Startup(wall, cpu)


def results_markdown(runs: list[Startup], extra: list[str], floor: list[Startup]) -> str:
    cpu = [run.cpu_s for run in runs]
    wall = [run.wall_s for run in runs]
    floor_cpu = [run.cpu_s for run in floor]
    median_cpu = statistics.median(cpu)
    verdict = "met" if median_cpu <= TARGET_CPU_S else "**missed**"
    flags = f" `{' '.join(extra)}`" if extra else ""
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `sip2rtmp call`{flags} from exec to "
        f"its first REGISTER, {len(runs)} runs.",
        "",
        f"- CPU: {cpu_model()}; Python {platform.python_version()}",
        "",
        "| target | measured (median) | range | verdict |",
        "| --- | --- | --- | --- |",
        f"| start-up CPU at most {TARGET_CPU_S:.1f} s | {median_cpu:.3f} CPU-s | "
        f"{min(cpu):.3f}-{max(cpu):.3f} s | {verdict} |",
        f"| exec to first REGISTER (wall) | {statistics.median(wall) * 1000:.0f} ms | "
        f"{min(wall) * 1000:.0f}-{max(wall) * 1000:.0f} ms | |",
        f"| the stack alone: Python, asyncio, PyAV and numpy imported | "
        f"{statistics.median(floor_cpu):.3f} CPU-s | "
        f"{min(floor_cpu):.3f}-{max(floor_cpu):.3f} s | |",
    ]
    return "\n".join(lines)


def cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        names = re.findall(r"^model name\s*:\s*(.+)$", info.read(), re.M)
    return f"{names[0] if names else platform.processor()}, {len(names)} logical CPUs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10, help="starts to measure")
    parser.add_argument("--write", type=Path, metavar="MARKDOWN", help="update this results file")
    parser.add_argument(
        "extra", nargs="*", help="more `sip2rtmp call` options (after --), e.g. --srtp required"
    )
    args = parser.parse_args(argv)
    measure_once(args.extra)  # the first start also writes bytecode caches: not counted
    runs = [measure_once(args.extra) for _ in range(args.runs)]
    floor = [measure_stack_floor() for _ in range(args.runs)]
    publish(results_markdown(runs, args.extra, floor), args.write, "call", "startup-benchmark")
    return 0


if __name__ == "__main__":
    sys.exit(main())
