"""Where a relayed call's CPU goes: a whole lab call under ``perf``, by thread and library.

``perf record`` samples the real ``sip2rtmp call`` (the relay benchmark's command for the
case) from exec to exit at a fixed rate; ``perf report`` then splits the samples by thread
(sip2rtmp names its media threads for the kernel: ``s2r-media``, ``s2r-output``,
``s2r-transcode``; the event loop is the process's first thread; the asyncio worker threads
that render the slates and load the media stack are counted together) and by the library the sampled
instruction was in. Native code shows where it is (FFmpeg's codecs, the kernel's network
stack, libsrtp) and Python's interpreter as one library: what it runs is sip2rtmp's Python.

Needs the lab (``.venv/bin/sip2rtmp lab up``) and ``perf`` (Debian's ``linux-perf``), as root.

    .venv/bin/python -m benchmarks.profile_call --case h264 --duration 60
    .venv/bin/python -m benchmarks.profile_call --case audio --write docs/performance.md
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.relay.calls import Options, stamp
from benchmarks.relay.probes.process import program_env
from benchmarks.relay.report import publish
from benchmarks.relay.runner import CASES, call_command
from sip2rtmp.lab import RELAY_ACCOUNT, Lab

LIBRARIES = (
    ("libpython", "Python interpreter (sip2rtmp's Python)"),
    ("libavcodec", "FFmpeg codecs (Opus/G.711/G.722 decode, AAC encode, H.264/VP8)"),
    ("libx264", "libx264"),
    ("libavformat", "FFmpeg FLV muxer and RTMP"),
    ("libavutil", "FFmpeg utilities"),
    ("libswresample", "FFmpeg resampler"),
    ("libavfilter", "FFmpeg filters"),
    ("[kernel", "kernel (system calls, network stack)"),
    ("libc.so", "C library"),
    ("libm.so", "C maths library"),
    ("_multiarray", "numpy"),
    ("_binding", "libsrtp (pylibsrtp)"),
)
"""How a sampled library is shown; the first prefix that matches wins, the rest is 'other'."""


@dataclass
class Profile:
    frequency: int
    samples: dict[str, dict[str, int]]
    """thread -> library -> samples."""

    def seconds(self, count: int) -> float:
        return count / self.frequency


def _library(dso: str) -> str:
    for prefix, label in LIBRARIES:
        if dso.startswith(prefix):
            return label
    return "other"


def record(case: str, duration: float, frequency: int, work_dir: Path) -> Profile:
    """Run one call of `case` under perf and read its samples by thread and library."""
    spec = CASES[case]
    options = Options(
        duration=duration,
        callee=spec.callee,
        video_codec=spec.video_codec,
        audio_codec=spec.audio_codec,
        capture=False,
        probe=False,
        work_dir=work_dir,
        srtp=spec.srtp,
    )
    data = work_dir / "perf.data"
    env = program_env(SIP2RTMP_SIP_PASSWORD=RELAY_ACCOUNT.password)
    command = call_command(options, f"profile-{case}-{stamp()}")
    with (work_dir / "call.stderr").open("wb") as stderr:
        subprocess.run(
            ["perf", "record", "-q", "-F", str(frequency), "-o", str(data), "--", *command],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            check=True,
            timeout=duration + 60,
        )
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--sort", "pid,dso", "--stdio", "-t", "|", "-n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in report.splitlines():
        fields = [field.strip() for field in line.split("|")]
        if not line.startswith("#") and len(fields) >= 4 and ":" in fields[2]:
            thread_id, name = fields[2].split(":", 1)
            rows.append((int(thread_id), name, fields[3], int(fields[1])))
    # The event loop runs in the process's first thread; the asyncio workers (slates, loading
    # the media stack) keep the program's name, so the lowest such thread id is the loop.
    loop_tid = min((tid for tid, comm, _, _ in rows if comm == "sip2rtmp"), default=0)
    samples: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for tid, comm, dso, count in rows:
        if comm == "sip2rtmp":
            comm = "event loop" if tid == loop_tid else "asyncio workers"
        samples[comm][_library(dso)] += count
    return Profile(frequency, {thread: dict(by) for thread, by in samples.items()})


def results_markdown(profile: Profile, case: str, duration: float) -> str:
    total = sum(sum(by.values()) for by in profile.samples.values())
    lines = [
        f"Profiled {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: one {duration:g} s call, case "
        f"`{case}` ({CASES[case].summary}), {profile.frequency} samples a second over the whole "
        f"process: {profile.seconds(total):.2f} CPU-s in all.",
        "",
        "| thread | CPU-s | share | where (share of the thread) |",
        "| --- | --- | --- | --- |",
    ]
    threads = sorted(profile.samples.items(), key=lambda item: -sum(item[1].values()))
    for thread, by in threads:
        count = sum(by.values())
        if count / total < 0.005:
            continue
        where = ", ".join(
            f"{label} {share / count:.0%}"
            for label, share in sorted(by.items(), key=lambda item: -item[1])
            if share / count >= 0.03
        )
        lines.append(
            f"| `{thread}` | {profile.seconds(count):.2f} | {count / total:.0%} | {where} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--case", choices=CASES, default="audio")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of call")
    parser.add_argument("--frequency", type=int, default=1999, help="samples a second")
    parser.add_argument("--write", type=Path, metavar="MARKDOWN", help="update this results file")
    args = parser.parse_args(argv)
    if shutil.which("perf") is None:
        print("perf not found: apt-get install linux-perf", file=sys.stderr)
        return 2
    if not Lab().is_up():
        print("the lab is not running: .venv/bin/sip2rtmp lab up", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as work_dir:
        profile = record(args.case, args.duration, args.frequency, Path(work_dir))
    publish(results_markdown(profile, args.case, args.duration), args.write, args.case, "profile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
