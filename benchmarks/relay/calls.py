"""What both runs share: their options, the figures of one run, and the call's timeline.

Each run holds one call for ``Options.duration`` seconds after the answer; the steady window
and the mutes that make tone onsets follow the same timeline in both, so their figures compare.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.relay.probes.callee import Callee
from benchmarks.relay.probes.capture import Capture
from benchmarks.relay.probes.process import Usage, Watched, sleep_until
from benchmarks.relay.probes.wire import Wire, analyse
from sip2rtmp.lab import Lab
from sip2rtmp.lab import account as lab_account

STEADY_SKIP_S = 2.0
"""The steady-state CPU window starts this long after the answer (call set-up excluded)."""
STEADY_END_S = 0.5
"""...and ends this long before the call does (shutdown excluded)."""
PROBE_FIRST_S = 3.0
"""The first mute, this long after the answer."""


@dataclass
class Options:
    duration: float
    callee: str
    video_codec: str | None
    capture: bool
    probe: bool
    work_dir: Path
    audio_codec: str | None = None
    srtp: bool = False
    """The call runs with ``--srtp required`` (the callee must be one that takes SDES-SRTP)."""
    latency: str = "normal"
    """sip2rtmp's ``--latency``."""


@dataclass
class Run:
    label: str
    codec: str
    call_s: float
    usage: Usage
    wire: Wire | None
    probe_note: str
    depth_ms: list[float] = field(default_factory=list)
    live_event_s: float | None = None
    """ESTABLISHED event to the output's `live` event (sip2rtmp polls output state at 2 Hz)."""
    video_codec: str | None = None

    @property
    def cpu_per_min(self) -> float:
        return self.usage.cpu_s * 60.0 / self.call_s


def stamp() -> str:
    """A stream key suffix: nginx records every lab stream under its key."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


class MeasuredCall:
    """One run's call as the benchmark measures it: its stream key, capture and timeline."""

    def __init__(self, options: Options, name: str, label: str) -> None:
        """`name` names the stream key and the capture file; `label`, the run in the report."""
        self.options = options
        self.label = label
        self.stream_key = f"bench-{name}-{stamp()}"
        self.capture: Capture | None = None
        if options.capture:
            callee = lab_account(options.callee)
            assert callee.rtp_ports is not None
            self.capture = Capture(options.work_dir / f"{name}.pcap", callee.rtp_ports)

    def steady_window(self, watched: Watched, answered_at: float) -> str:
        """Mark the steady window around the call's middle, muting the callee inside it.

        Returns the probe's note (how many onsets were made or skipped). `answered_at` is
        monotonic.
        """
        sleep_until(answered_at + STEADY_SKIP_S)
        watched.mark()
        note = self._probe(answered_at)
        sleep_until(answered_at + self.options.duration - STEADY_END_S)
        watched.mark()
        return note

    def _probe(self, answered_at: float) -> str:
        if not self.options.probe:
            return "not probed"
        end = answered_at + self.options.duration - 1.0
        return Callee(self.options.callee).probe(answered_at + PROBE_FIRST_S, end)

    def abandon(self, watched: Watched, signum: int) -> None:
        """The call failed: end the process with `signum` and the capture, measuring nothing."""
        watched.abandon(signum)
        if self.capture is not None:
            self.capture.stop()

    def finish(
        self,
        watched: Watched,
        usage: Usage,
        *,
        codec: str,
        note: str,
        sip_ports: set[int],
        rtp_ports: set[int],
    ) -> Run:
        """Stop the capture, drop the call's recordings, and read what the capture shows."""
        if self.capture is not None:
            self.capture.stop()
        forget_recordings(self.stream_key)
        wire = None
        if self.capture is not None:
            wire = analyse(
                self.capture.path,
                sip_ports=sip_ports,
                rtp_ports=rtp_ports,
                rtmp_ports=watched.tcp_ports,
                codec=codec,
            )
        return Run(
            label=self.label,
            codec=codec,
            call_s=self.options.duration,
            usage=usage,
            wire=wire,
            probe_note=note,
            video_codec=self.options.video_codec,
        )


def forget_recordings(stream_key: str) -> None:
    """nginx records every lab stream; a benchmark's recordings are of no use afterwards."""
    time.sleep(0.5)
    for path in Lab().recordings(stream_key):
        path.unlink(missing_ok=True)
