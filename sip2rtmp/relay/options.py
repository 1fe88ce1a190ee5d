"""What goes toward the callee and into the outputs besides the call itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sip2rtmp.media.packets import KEYFRAME_INTERVAL_S

Latency = Literal["normal", "low"]
LATENCIES: tuple[Latency, ...] = ("normal", "low")

GRID_STRIDES: dict[Latency, int] = {"normal": 2, "low": 1}
"""Grid steps between a call's event-loop wake-ups (`sip2rtmp.net.grid`): every 80 ms by
default, half the wake-ups of `--latency low`'s 40 ms, which hands audio to the media thread
as soon as it can. The pipeline gives the coarser grid's later hand-overs room
(`MediaConfig.silence_grace_s`), so the stream's delay does not grow with it."""


@dataclass(frozen=True)
class MediaOptions:
    announce: Path | None = None
    announce_loop: bool = False
    slate: Path | None = None
    record: Path | None = None
    dtmf_script: str | None = None
    audio_channels: int = 1
    audio_bit_rate: int = 128_000
    transcode: bool = False
    """Re-encode the callee's H.264 too, rather than pass it through (VP8 always is)."""
    keyframe_interval: float = KEYFRAME_INTERVAL_S
    """Longest time between keyframes in the outputs (s): the transcoder's forced keyframes,
    the slate's GOP, and when the callee is asked for one."""
    latency: Latency = "normal"
    """`low` encodes the callee's audio the moment it arrives, for more CPU
    (`MediaConfig.audio_on_arrival`)."""
    stats_interval: float = 5.0
    """Seconds between `stats` events: a live view wants them more often than a log."""
