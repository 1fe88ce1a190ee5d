"""Cost and delay of relaying one lab call, against the ffmpeg pipeline a user would script.

Two runs, one after the other, each holding a call to a lab callee for the same time and
publishing into the lab's nginx-rtmp; ``--case`` picks an audio-only call, an H.264 video call
(passed through) or a VP8 one (transcoded to H.264), or an SRTP call, whose baseline is the
same sip2rtmp call in plain RTP (what encryption costs):

1. ``sip2rtmp call … --json``: the real CLI, measured as a whole process.
2. The do-it-yourself baseline: sip2rtmp's SIP core places the call with an offer whose RTP
   ports belong to ``ffmpeg``, which reads the call through an SDP file and publishes AAC plus
   H.264 into nginx: the callee's H.264 copied, its VP8 transcoded, or for an audio-only call
   a black 1280x720 10 fps slate. Only the ffmpeg process is measured.

CPU and peak RSS come from the kernel (``wait4`` rusage over the whole process life, and
``/proc/<pid>/stat`` over the steady part of the call). Timings come from a tcpdump capture on
loopback: the SIP 200 OK, the first RTMP media message, and the audio delay, found by muting
the callee for a second now and then and matching each tone onset in the RTP it sends with the
same onset in the decoded AAC of the published stream.

    .venv/bin/python -m benchmarks.relay_benchmark --case h264 --write docs/performance.md

This module is the command; ``benchmarks/relay/`` holds the runner, the probes, the baseline
and the report.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.relay.calls import Options
from benchmarks.relay.report import median_run, publish, results_markdown
from benchmarks.relay.runner import CASES, run_case
from sip2rtmp.lab import Lab
from sip2rtmp.relay.options import LATENCIES

DEFAULT_DURATION_S = 60.0


def _positive(text: str) -> int:
    """A count of rounds: a whole number of at least one."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of rounds (1 or more)")
    return int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--duration",
        type=float,
        default=DEFAULT_DURATION_S,
        help="seconds per call; a results block of its own when not the default",
    )
    parser.add_argument(
        "--case",
        choices=CASES,
        default="audio",
        help="; ".join(f"{name}: {case.summary}" for name, case in CASES.items()),
    )
    parser.add_argument("--callee", help="lab callee (default: the case's)")
    parser.add_argument(
        "--baseline-codec",
        help="codec the baseline offers (default: the one sip2rtmp's call negotiated)",
    )
    parser.add_argument(
        "--latency",
        choices=LATENCIES,
        default="normal",
        help="sip2rtmp's --latency; a results block of its own when not normal",
    )
    parser.add_argument(
        "--rounds",
        type=_positive,
        default=1,
        help="run the case this many times, one after the other; the report compares each"
        " side's median round and lists every round's CPU",
    )
    parser.add_argument("--write", type=Path, metavar="MARKDOWN", help="update this results file")
    parser.add_argument(
        "--no-probe", action="store_true", help="never mute the callee (no delay measurement)"
    )
    parser.add_argument("--work-dir", type=Path, help="keep captures and logs here")
    parser.add_argument(
        "--no-served",
        action="store_true",
        help="leave out the same call through `sip2rtmp serve`",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Lab().is_up():
        print("the lab is not running: .venv/bin/sip2rtmp lab up", file=sys.stderr)
        return 2
    capture = shutil.which("tcpdump") is not None
    if not capture:
        print("tcpdump not found: timings and audio delay will not be measured", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        work_dir = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work_dir.mkdir(parents=True, exist_ok=True)
        case = CASES[args.case]
        options = Options(
            duration=args.duration,
            callee=args.callee or case.callee,
            video_codec=case.video_codec,
            audio_codec=case.audio_codec,
            capture=capture,
            probe=capture and not args.no_probe,
            work_dir=work_dir,
            srtp=case.srtp,
            latency=args.latency,
        )
        rounds = []
        for number in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"round {number} of {args.rounds}", file=sys.stderr)
            rounds.append(run_case(options, args.baseline_codec, not args.no_served))
    ours_runs, baseline_runs = [r[0] for r in rounds], [r[1] for r in rounds]
    served_runs = [r[2] for r in rounds if r[2] is not None]
    ours, baseline = median_run(ours_runs), median_run(baseline_runs)
    served = median_run(served_runs) if served_runs else None
    spread: list[tuple[str, list[float]]] = []
    if args.rounds > 1:
        for runs in (ours_runs, served_runs, baseline_runs):
            if runs:
                spread.append((runs[0].label, [run.cpu_per_min for run in runs]))
    block = results_markdown(ours, baseline, args.duration, case, args.latency, served, spread)
    name = args.case if args.latency == "normal" else f"{args.case} --latency {args.latency}"
    if args.duration != DEFAULT_DURATION_S:
        name += f" {args.duration:g} s"
    publish(block, args.write, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
