"""Test video: flat-grey H.264 clips from libx264, as AVCC samples on the 90 kHz clock."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from sip2rtmp.media.packets import EncodedPacket, Track
from sip2rtmp.rtp.h264 import (
    NAL_PPS,
    NAL_SPS,
    avc_decoder_configuration_record,
    nal_type,
    split_annexb,
    to_avcc,
)

FRAME = 3600
"""25 fps on the 90 kHz clock."""


@dataclass(frozen=True)
class Clip:
    sps: bytes
    pps: bytes
    samples: list[bytes]
    keyframes: list[bool]

    @property
    def config(self) -> bytes:
        return avc_decoder_configuration_record([self.sps], [self.pps])

    def packets(self, first_frame: int) -> list[EncodedPacket]:
        """The clip at 25 fps from frame slot ``first_frame``, each keyframe with its config."""
        packets = []
        for index, (data, key) in enumerate(zip(self.samples, self.keyframes, strict=True)):
            dts = (first_frame + index) * FRAME
            packets.append(
                EncodedPacket(Track.VIDEO, data, dts, dts, key, self.config if key else None)
            )
        return packets


def x264_encoder(width: int, height: int, x264_params: str, **options: str) -> Any:
    """An opened live libx264 encoder at 25 fps: no B-frames, no scene cuts, and the
    parameter sets in the extradata (a global header), not in band."""
    context = av.CodecContext.create("libx264", "w")
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base = Fraction(1, 25)
    context.flags |= av.codec.context.Flags.global_header
    context.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "x264-params": f"{x264_params}:scenecut=0:bframes=0",
        **options,
    }
    context.open()
    return context


def h264_clip(width: int, height: int, frames: int, *, keyint: int, grey: int) -> Clip:
    """``frames`` of one grey level, an IDR every ``keyint``.

    The parameter sets stay out of band (a global header), so a decoder of these samples
    depends on the sequence header it was given.
    """
    context = x264_encoder(width, height, f"keyint={keyint}:min-keyint={keyint}")
    parameter_sets = split_annexb(bytes(context.extradata))
    picture = np.full((height, width, 3), grey, dtype=np.uint8)
    packets = []
    for index in range(frames):
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        packets += context.encode(frame)
    packets += context.encode(None)
    return Clip(
        sps=next(nal for nal in parameter_sets if nal_type(nal) == NAL_SPS),
        pps=next(nal for nal in parameter_sets if nal_type(nal) == NAL_PPS),
        samples=[to_avcc(split_annexb(bytes(packet))) for packet in packets],
        keyframes=[bool(packet.is_keyframe) for packet in packets],
    )


def decoded_pictures(path: Path) -> list[tuple[int, int, int]]:
    """Width, height and mean luma of every picture the file's video decodes to."""
    with av.open(str(path)) as container:
        return [
            (frame.width, frame.height, round(float(frame.to_ndarray()[: frame.height].mean())))
            for frame in container.decode(video=0)
        ]
