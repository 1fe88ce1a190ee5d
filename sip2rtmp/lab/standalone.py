"""A baresip callee that answers on its own, without kamailio: for calls in a network namespace.

A namespace has its own loopback, so the lab's kamailio is out of reach there; a callee that
does not register is called directly at `sip:<user>@127.0.0.1:<port>` instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from sip2rtmp.lab.lab import SIP_HOST, write_baresip_config
from sip2rtmp.outcomes import LabError

READY_LINE = "baresip is ready."
VIDEO_MODULES = ("avcodec.so", "vp8.so", "fakevideo.so")
"""Encoders for every video codec a lab account names; `video_codecs=` picks the one offered."""


class StandaloneCallee:
    """A running standalone baresip; `stop()` ends it and whatever it started."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path, uri: str) -> None:
        self.process = process
        self.log_path = log_path
        self.uri = uri

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL to the whole process group if baresip does not quit in time."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)


def start_standalone_callee(
    run_dir: Path,
    tone: Path,
    *,
    user: str = "tone",
    sip_port: int = 5080,
    ctrl_port: int = 4480,
    rtp_ports: tuple[int, int] = (11000, 11099),
    audio_codecs: Sequence[str] = ("PCMU/8000/1",),
    video_codec: str | None = None,
    prefix: Sequence[str] = (),
    ready_timeout: float = 5.0,
) -> StandaloneCallee:
    """Start an auto-answering baresip that plays `tone` and never registers.

    With `video_codec` ("H264" or "VP8", as a lab account names it) it also sends the lab's
    fakevideo test pattern in that codec, at the size and rate of the lab's template.
    `prefix` runs it elsewhere, e.g. `["ip", "netns", "exec", NS]`; everything it writes stays
    in `run_dir`. Returns once baresip reports ready, or raises LabError with its last words.
    """
    config_dir = run_dir / "baresip"
    received_dir = run_dir / "received"
    received_dir.mkdir(parents=True, exist_ok=True)
    params = ["regint=0", "answermode=auto"]
    if audio_codecs:
        params.append("audio_codecs=" + ",".join(audio_codecs))
    modules = ["g711.so", "g722.so", "opus.so", "aufile.so", "aubridge.so"]
    if video_codec:
        params.append(f"video_codecs={video_codec}")
        modules += VIDEO_MODULES
    write_baresip_config(
        config_dir,
        sip_port=sip_port,
        ctrl_port=ctrl_port,
        rtp_ports=rtp_ports,
        tone=tone,
        received_dir=received_dir,
        modules=modules,
        account_line=f"<sip:{user}@{SIP_HOST}:{sip_port};transport=udp>;" + ";".join(params),
    )
    log_path = run_dir / "baresip.log"
    argv = [*prefix, "stdbuf", "-oL", "-eL", "baresip", "-f", str(config_dir)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=run_dir,
            start_new_session=True,
        )
    callee = StandaloneCallee(process, log_path, f"sip:{user}@{SIP_HOST}:{sip_port}")
    deadline = time.monotonic() + ready_timeout
    while READY_LINE not in callee.log():
        if process.poll() is not None or time.monotonic() > deadline:
            callee.stop()
            lines = callee.log().strip().splitlines()
            raise LabError(
                f"standalone baresip did not start: {lines[-1] if lines else 'no output'} "
                f"(see {log_path})"
            )
        time.sleep(0.05)
    return callee
