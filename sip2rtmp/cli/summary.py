"""Throttled plain lines for logs and pipes, and the text forms the live view shares.

Which sink a run uses: `--json` → `EventPrinter(as_json=True)`; stdout a terminal →
`sip2rtmp.cli.live.LiveView`; otherwise → `PlainSummary`, so a log file gets every event but
only one `stats` line per interval. Nothing here imports rich: a run without a terminal does
not pay for loading it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from sip2rtmp.cli.output import Redactor, plain_line, terminal_safe, timestamp
from sip2rtmp.status import CallStatus, RelayEvent

FINAL_STATUSES = frozenset({CallStatus.FINISH, CallStatus.FAILED, CallStatus.BUSY})


class PlainSummary:
    """Plain lines for logs and pipes: every event as `plain_line` prints it, except `stats`,
    which becomes one compact summary line at most every `every` seconds.

    The latest unprinted summary is written before the call's final status, so a log always
    ends with the numbers the call ended on.
    """

    def __init__(
        self,
        redactor: Redactor,
        *,
        stream: IO[str],
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redact = redactor
        self._stream = stream
        self._every = every
        self._clock = clock
        self._last_summary: float | None = None
        self._pending: RelayEvent | None = None

    def __call__(self, event: RelayEvent) -> None:
        event = self._redact.event(event)
        if event.event == "stats":
            now = self._clock()
            if self._last_summary is None or now - self._last_summary >= self._every:
                self._last_summary = now
                self._pending = None
                self._write(summary_line(event))
            else:
                self._pending = event
            return
        if event.status in FINAL_STATUSES and self._pending is not None:
            self._write(summary_line(self._pending))
            self._pending = None
        self._write(plain_line(event))

    def _write(self, line: str) -> None:
        self._stream.write(terminal_safe(line) + "\n")
        self._stream.flush()


def summary_line(event: RelayEvent) -> str:
    """One `stats` event as a line a person can read in a log."""
    data = event.data
    words = [timestamp(), "stats"]
    duration = data.get("duration")
    if isinstance(duration, (int, float)):
        words.append(f"duration={clock_text(float(duration))}")
    rtp = data.get("rtp")
    if isinstance(rtp, dict):
        words.append(f"rtp={_compact(rtp_parts(rtp))}")
    video = data.get("video")
    if isinstance(video, dict):
        words.append(f"video={video.get('mode', '?')},{_compact(video_parts(video))}")
    level = data.get("level_dbfs")
    if isinstance(level, (int, float)):
        words.append(f"level={level:.1f}dBFS")
    for output in data.get("outputs") or []:
        fields = [
            str(output.get("target", "?")),
            str(output.get("state", "?")),
            bitrate_text(output.get("bitrate")),
            size_text(output.get("bytes")),
            f"reconnects:{output.get('reconnects', 0)}",
        ]
        words.append("output=" + ",".join(field.replace(" ", "") for field in fields))
    return " ".join(words)


def _compact(parts: list[tuple[str, str]]) -> str:
    """(label, value) pairs as one word: ``loss:0.1%,jitter:4.2ms``."""
    return ",".join(f"{label}:{value.replace(' ', '')}" for label, value in parts)


def codec_text(value: object) -> str:
    """`{"codec": "PCMU", "rate": 8000}` → `PCMU/8000`; absent → `none`."""
    if isinstance(value, dict):
        codec = str(value.get("codec", "?"))
        rate = value.get("rate")
        return f"{codec}/{rate}" if rate else codec
    return str(value) if value else "none"


def rtp_parts(rtp: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Receive quality as (label, value) pairs: loss, jitter, jitter-buffer depth, counters."""
    parts = []
    for key, label, unit in (
        ("loss_pct", "loss", "%"),
        ("jitter_ms", "jitter", " ms"),
        ("depth_ms", "buffer", " ms"),
    ):
        value = rtp.get(key)
        if isinstance(value, (int, float)):
            parts.append((label, f"{value:.1f}{unit}"))
    parts += [(key, str(rtp[key])) for key in ("received", "lost", "late") if key in rtp]
    return parts


def video_parts(video: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The callee's video as (label, value) pairs: what the stream carried, what was lost,
    how often a keyframe was asked for, and the A/V skew once sender reports told it."""
    parts = [
        (label, str(video[key]))
        for key, label in (
            ("frames", "frames"),
            ("keyframes", "keyframes"),
            ("lost", "lost"),
            ("keyframe_requests", "requests"),
        )
        if key in video
    ]
    skew = video.get("av_skew_ms")
    if isinstance(skew, (int, float)):
        parts.append(("skew", f"{skew:.0f} ms"))
    return parts


def clock_text(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def bitrate_text(value: object) -> str:
    if not isinstance(value, (int, float)):
        return "—"
    if value >= 1_000_000:
        return f"{value / 1_000_000:.2f} Mbit/s"
    return f"{value / 1000:.0f} kbit/s"


def size_text(value: object) -> str:
    if not isinstance(value, (int, float)):
        return "—"
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.2f} GB"
