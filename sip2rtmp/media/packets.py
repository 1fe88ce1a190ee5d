"""Encoded media as the outputs see it: plain bytes plus timestamps.

Packets are immutable and hold no PyAV objects, so one encode can be handed to every output
thread without sharing mutable FFmpeg state between threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from typing import Any

AUDIO_RATE = 48_000
"""Every decoded call is resampled to this rate: AAC's natural rate and Opus's native one."""

KEYFRAME_INTERVAL_S = 2.0
"""The default longest time between keyframes in the outputs: YouTube and Facebook want a
keyframe at least every 2 s."""


class Track(Enum):
    VIDEO = "video"
    AUDIO = "audio"


TIME_BASES: dict[Track, Fraction] = {
    Track.AUDIO: Fraction(1, AUDIO_RATE),
    Track.VIDEO: Fraction(1, 90_000),
}
"""Audio counts samples so AAC frames never drift; video uses the RTP video clock."""

_TICKS_PER_SECOND: dict[Track, float] = {
    track: float(1 / base) for track, base in TIME_BASES.items()
}


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    track: Track
    data: bytes
    pts: int
    dts: int
    keyframe: bool
    config: bytes | None = None
    """On a video keyframe: the AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.2.4.1) it
    decodes with. Sources change mid-call (the slate, the callee's video at a new size), so
    an output announces a new AVC sequence header whenever this differs from the last one."""

    @property
    def time_base(self) -> Fraction:
        return TIME_BASES[self.track]

    @property
    def seconds(self) -> float:
        """Decode time in seconds on the media timeline, the key outputs order and trim by.

        Float division, not Fraction arithmetic: this runs several times per packet.
        """
        return self.dts / _TICKS_PER_SECOND[self.track]


@dataclass(frozen=True, slots=True)
class StreamTemplates:
    """Codec parameters (including extradata) a fresh connection copies into its FLV header.

    Each is a PyAV stream whose codec parameters are final; every (re)connection builds its
    streams from them, so the server gets the AVC and AAC sequence headers every time.
    """

    video: Any
    audio: Any

    @property
    def video_config(self) -> bytes:
        """The avcC record a fresh connection announces in its first AVC sequence header."""
        return bytes(self.video.codec_context.extradata or b"")

    def add_to(self, container: Any) -> dict[Track, Any]:
        return {
            Track.VIDEO: container.add_stream_from_template(self.video),
            Track.AUDIO: container.add_stream_from_template(self.audio),
        }
