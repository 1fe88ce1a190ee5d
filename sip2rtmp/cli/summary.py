"""Throttled plain lines for logs and pipes, and the text forms the live view shares.

Which sink a run uses: `--json` → `EventPrinter(as_json=True)`; stdout a terminal →
`sip2rtmp.cli.live.LiveView`; otherwise → `PlainSummary`, so a log file gets every event but
only one `stats` line per interval. Nothing here imports rich: a run without a terminal does
not pay for loading it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO

from sip2rtmp.cli.events import record, status_of
from sip2rtmp.cli.output import plain_line, terminal_safe, timestamp
from sip2rtmp.relay.events import AudioStats, Codec, RelayEvent, Stats, VideoStats

FINAL_STATUSES = frozenset({"FINISH", "FAILED", "BUSY"})


class PlainSummary:
    """Plain lines for logs and pipes: every event as `plain_line` prints it, except `stats`,
    which becomes one compact summary line at most every `every` seconds.

    The latest unprinted summary is written before the call's final status, so a log always
    ends with the numbers the call ended on.
    """

    def __init__(
        self,
        *,
        stream: IO[str],
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._every = every
        self._clock = clock
        self._last_summary: float | None = None
        self._pending: Stats | None = None

    def __call__(self, event: RelayEvent) -> None:
        if isinstance(event, Stats):
            now = self._clock()
            if self._last_summary is None or now - self._last_summary >= self._every:
                self._last_summary = now
                self._pending = None
                self._write(summary_line(event))
            else:
                self._pending = event
            return
        if status_of(event) in FINAL_STATUSES and self._pending is not None:
            self._write(summary_line(self._pending))
            self._pending = None
        self._write(plain_line(record(event)))

    def _write(self, line: str) -> None:
        self._stream.write(terminal_safe(line) + "\n")
        self._stream.flush()


def summary_line(stats: Stats) -> str:
    """One `stats` event as a line a person can read in a log."""
    words = [timestamp(), "stats", f"duration={clock_text(stats.duration)}"]
    if stats.rtp is not None:
        words.append(f"rtp={_compact(rtp_parts(stats.rtp))}")
    if stats.video is not None:
        words.append(f"video={stats.video.mode},{_compact(video_parts(stats.video))}")
    words.append(f"level={stats.level_dbfs:.1f}dBFS")
    for output in stats.outputs:
        fields = [
            output.target,
            output.state,
            bitrate_text(output.bitrate),
            size_text(output.bytes),
            f"reconnects:{output.reconnects}",
        ]
        words.append("output=" + ",".join(field.replace(" ", "") for field in fields))
    return " ".join(words)


def _compact(parts: list[tuple[str, str]]) -> str:
    """(label, value) pairs as one word: ``loss:0.1%,jitter:4.2ms``."""
    return ",".join(f"{label}:{value.replace(' ', '')}" for label, value in parts)


def codec_text(codec: Codec | None) -> str:
    """`Codec("PCMU", 8000)` → `PCMU/8000`; not negotiated → `none`."""
    if codec is None:
        return "none"
    return f"{codec.codec}/{codec.rate}" if codec.rate else codec.codec


def rtp_parts(rtp: AudioStats | None) -> list[tuple[str, str]]:
    """Receive quality as (label, value) pairs: loss, jitter, jitter-buffer depth, counters."""
    if rtp is None:
        return []
    return [
        ("loss", f"{rtp.loss_pct:.1f}%"),
        ("jitter", f"{rtp.jitter_ms:.1f} ms"),
        ("buffer", f"{rtp.depth_ms:.1f} ms"),
        ("received", str(rtp.received)),
        ("lost", str(rtp.lost)),
        ("late", str(rtp.late)),
    ]


def video_parts(video: VideoStats | None) -> list[tuple[str, str]]:
    """The callee's video as (label, value) pairs: what the stream carried, what was lost,
    how often a keyframe was asked for, and the A/V skew once sender reports told it."""
    if video is None:
        return []
    parts = [
        ("frames", str(video.frames)),
        ("keyframes", str(video.keyframes)),
        ("lost", str(video.lost)),
        ("requests", str(video.keyframe_requests)),
    ]
    if video.av_skew_ms is not None:
        parts.append(("skew", f"{video.av_skew_ms:.0f} ms"))
    return parts


def clock_text(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def bitrate_text(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 1_000_000:
        return f"{value / 1_000_000:.2f} Mbit/s"
    return f"{value / 1000:.0f} kbit/s"


def size_text(value: float | None) -> str:
    if value is None:
        return "—"
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.2f} GB"
