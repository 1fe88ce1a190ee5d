"""How many concurrent calls one `sip2rtmp serve` holds on this machine, and at what cost.

For each N (10, 25 and 50 by default) the server starts N audio-only calls to the lab's
callees, each publishing the slate and the callee's audio to its own nginx stream key, holds
them for ``--hold`` seconds once all are up, and hangs them up through its REST API. Reported
per N: CPU per call (the workers' /proc stat over the hold), the RSS of the server and its
workers, RTP packets late and lost (the calls' stats from ``/call/find_all``), AAC gaps and
audio dropouts in nginx's recordings, and the smallest N that misses the goal: every call held,
nothing late, lost or missing, CPUs not saturated.

    .venv/bin/python -m benchmarks.serve_benchmark --write docs/performance.md
    .venv/bin/python -m benchmarks.serve_benchmark --calls 10 --hold 20   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

from benchmarks.relay.report import publish
from benchmarks.serve.report import LoadRun, load_markdown
from benchmarks.serve.runner import LoadOptions, run_load
from sip2rtmp.lab import Lab

CALLEES = ("tone", "pcmu", "opus", "pcma", "g722")
"""The lab's audio-only callees that answer at once: Opus (`tone` takes it from sip2rtmp's
offer), G.711 µ-law and A-law, G.722. The lab's baresip takes at most 16 calls each
(`call_max_calls`), so these hold 80. `video` and `vp8` would end an audio-only call after 30 s:
their baresip waits for video RTP even then (`rtp_timeout`: "no video RTP packets received")."""
CALLS_PER_CALLEE = 16


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, nargs="+", default=[10, 25, 50], metavar="N")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds all calls are held")
    parser.add_argument(
        "--ramp", type=float, default=1.0, metavar="PER_S", help="calls started per second"
    )
    parser.add_argument("--callees", default=",".join(CALLEES), help="lab callees, in turn")
    parser.add_argument("--write", type=Path, metavar="MARKDOWN", help="update this results file")
    parser.add_argument("--work-dir", type=Path, help="keep the server's log and profile here")
    parser.add_argument(
        "--keep-recordings", action="store_true", help="leave nginx's recordings in the lab"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    callees = tuple(name.strip() for name in args.callees.split(",") if name.strip())
    if max(args.calls) > CALLS_PER_CALLEE * len(callees):
        print(f"{len(callees)} callees take at most {CALLS_PER_CALLEE} calls each", file=sys.stderr)
        return 2
    if not Lab().is_up():
        print("the lab is not running: .venv/bin/sip2rtmp lab up", file=sys.stderr)
        return 2
    runs: list[LoadRun] = []
    with contextlib.ExitStack() as stack:
        work_dir = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work_dir.mkdir(parents=True, exist_ok=True)
        for calls in args.calls:
            print(f"{calls} calls, held {args.hold:g} s …", file=sys.stderr)
            options = LoadOptions(
                calls, args.hold, args.ramp, callees, work_dir, args.keep_recordings
            )
            runs.append(run_load(options))
            print(load_markdown(runs[-1:], callees), file=sys.stderr)
    publish(load_markdown(runs, callees), args.write, "load", "serve-benchmark")
    return 0


if __name__ == "__main__":
    sys.exit(main())
