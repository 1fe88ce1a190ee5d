"""A stand-in for `sip2rtmp call --json --control stdin`: prints events, reads commands.

Run as `python fake_worker.py MODE [ARGS...]`; the modes are the behaviours a server must
survive (see `main`). Standard library only: it runs as its own program.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "callId": "fake", **fields}), flush=True)


def status(name: str, **fields: Any) -> None:
    emit("status", status=name, **fields)


def answer() -> None:
    status("TRYING", callee="sip:echo@lab")
    status("RING", code=180, reason="Ringing")
    status("ESTABLISHED", code=200, reason="OK")


def serve_commands() -> None:
    """Answer each command line as the real worker does; hang up on `hangup`. End of input
    changes nothing: the call goes on until it is hung up or killed (or a minute passed)."""
    for line in sys.stdin:
        try:
            command = json.loads(line)
        except ValueError:
            emit("error", reason="not JSON")
            continue
        name = command.get("command")
        emit("command", command=name, ok=True)
        if name == "dtmf":
            for digit in command.get("digits", ""):
                emit("dtmf", digit=digit, direction="sent", method="rfc4733")
        elif name == "hangup":
            status("FINISH", reason="hangup", duration=1.0)
            sys.exit(0)
    time.sleep(60)  # long enough for any test; a failed test leaves no process behind


def main(mode: str, args: list[str]) -> None:
    if mode == "call":  # answers, takes commands, ends with FINISH on hangup
        answer()
        serve_commands()
    elif mode == "stubborn":  # answered, then ignores hangup and SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        answer()
        for line in sys.stdin:
            emit("command", command=json.loads(line).get("command"), ok=True)
    elif mode == "crash":  # dies mid-call with a message on stderr
        status("TRYING", callee="sip:echo@lab")
        print("sip2rtmp: internal error: boom", file=sys.stderr, flush=True)
        sys.exit(3)
    elif mode == "garbage":  # noise on stdout between events
        print("not json", flush=True)
        print("[1, 2]", flush=True)
        answer()
        serve_commands()
    elif mode == "probe":  # tells what it was given, then behaves like `call`
        secrets = {name: os.environ.get(name) for name in ("SIP2RTMP_SIP_PASSWORD",
                   "SIP2RTMP_RTMP_STREAM")}  # fmt: skip
        emit("probe", argv=args, env=secrets, pgid=os.getpgid(0), pid=os.getpid())
        answer()
        serve_commands()
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
