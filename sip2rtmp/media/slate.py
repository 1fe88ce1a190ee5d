"""The generated video track: one still picture, encoded once, replayed as a looping GOP.

A static picture needs no live encoder. One GOP (an IDR frame followed by P frames that
repeat it exactly) is built at start-up and re-stamped forever: the IDR and the first P frame
encoded, the other P frames that one renumbered. Every GOP opens with an IDR, which resets
frame numbering and picture order, so repeating the same bytes is a valid H.264 stream and
costs no encoding CPU while the call runs.

The GOP is kept in the form the outputs carry (AVCC samples with an avcC record, ISO/IEC
14496-15 §5.2.4.1 and §5.3.2), the same as the callee's H.264 passed through, so the slate and
the callee's video can follow each other on one connection. Its IDR carries the SPS/PPS in
band too: a self-contained access unit for RTP (RFC 6184 §8.4) and for muxers that do not
announce a new sequence header mid-stream.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from sip2rtmp.media.font import GLYPH_HEIGHT, fitting_chars, render_text, text_width
from sip2rtmp.media.packets import KEYFRAME_INTERVAL_S, EncodedPacket, Track
from sip2rtmp.media.passthrough import VIDEO_CLOCK, h264_template
from sip2rtmp.rtp.h264 import (
    NAL_PPS,
    NAL_SEI,
    NAL_SPS,
    H264ParseError,
    avc_decoder_configuration_record,
    nal_type,
    renumber_slice,
    slice_frame_num,
    slice_numbering,
    split_annexb,
    to_avcc,
)

DEFAULT_FPS = 10
"""Ten frames a second: a 2 s GOP is 20 frames, packet overhead stays tiny, and ingest servers
that frown on very low frame rates (1-5 fps) accept it. Cost does not depend on it much since
frames are replayed, not encoded."""

_BACKGROUND = (24, 28, 40)
_ACCENT = (220, 60, 60)
_FOREGROUND = (235, 235, 235)
_MUTED = (150, 160, 180)


class SlateVideo:
    """A looping H.264 track of one picture, with a keyframe every ``keyframe_interval_s``.

    The GOP is the whole number of frames that fits in the interval: exactly the interval when
    that is a whole number of frames, otherwise up to a frame shorter, never longer.

    Implements the video source the pipeline pulls from: ``template`` (codec parameters for
    the outputs) and ``packets_until(seconds)``. ``restart`` opens the loop again with its IDR
    at any media time, for a slate that takes over mid-call.
    """

    def __init__(
        self,
        picture: npt.NDArray[np.uint8],
        *,
        fps: int = DEFAULT_FPS,
        qp: int = 22,
        profile: str | None = None,
        keyframe_interval_s: float = KEYFRAME_INTERVAL_S,
    ) -> None:
        height, width, _ = picture.shape
        if width % 2 or height % 2:
            raise ValueError("the slate picture needs even dimensions for yuv420p")
        self.fps = fps
        self.width = width
        self.height = height
        self.frame_ticks = VIDEO_CLOCK // fps
        if self.frame_ticks * fps != VIDEO_CLOCK:
            raise ValueError(f"{fps} fps does not divide the 90 kHz video clock")
        gop_frames = max(math.floor(fps * keyframe_interval_s + 1e-9), 1)
        self._units = _encode_gop(picture, fps, gop_frames, qp, profile)
        self.sps, self.pps = self._units[0][:2]
        self.config = avc_decoder_configuration_record([self.sps], [self.pps])
        self.template: Any = h264_template(self.sps, self.pps)
        self._samples = [to_avcc(nals) for nals in self._units]
        self._start = 0
        self._next_frame = 0

    @classmethod
    def text(
        cls,
        title: str,
        subtitle: str = "",
        *,
        width: int = 1280,
        height: int = 720,
        fps: int = DEFAULT_FPS,
        profile: str | None = None,
        keyframe_interval_s: float = KEYFRAME_INTERVAL_S,
    ) -> SlateVideo:
        """A generated card: the callee's name large, a caption (e.g. the call time) below."""
        return cls(
            render_card(title, subtitle, width, height),
            fps=fps,
            profile=profile,
            keyframe_interval_s=keyframe_interval_s,
        )

    @classmethod
    def image(
        cls,
        path: str | Path,
        *,
        width: int = 1280,
        height: int = 720,
        fps: int = DEFAULT_FPS,
        profile: str | None = None,
        keyframe_interval_s: float = KEYFRAME_INTERVAL_S,
    ) -> SlateVideo:
        """The first picture of an image (or video) file, fitted inside width x height."""
        return cls(
            load_picture(path, width, height),
            fps=fps,
            profile=profile,
            keyframe_interval_s=keyframe_interval_s,
        )

    @property
    def gop_bytes(self) -> int:
        return sum(len(data) for data in self._samples)

    def access_unit(self, index: int) -> tuple[bytes, ...]:
        """The NAL units of frame ``index`` of the endless loop (SPS and PPS lead each IDR)."""
        return self._units[index % len(self._units)]

    def restart(self, dts: int) -> None:
        """Loop from the IDR again, that IDR at ``dts`` (90 kHz media ticks)."""
        self._start = dts
        self._next_frame = 0

    def packets_until(self, seconds: float) -> list[EncodedPacket]:
        """Frames whose presentation time is at or before ``seconds``, each exactly once."""
        last = (round(seconds * VIDEO_CLOCK) - self._start) // self.frame_ticks
        packets = []
        while self._next_frame <= last:
            index = self._next_frame % len(self._samples)
            ts = self._start + self._next_frame * self.frame_ticks
            config = self.config if index == 0 else None
            packets.append(
                EncodedPacket(Track.VIDEO, self._samples[index], ts, ts, index == 0, config)
            )
            self._next_frame += 1
        return packets


def render_card(title: str, subtitle: str, width: int, height: int) -> npt.NDArray[np.uint8]:
    """An RGB picture with the title and subtitle centred, scaled to fit the width."""
    picture = np.empty((height, width, 3), dtype=np.uint8)
    picture[:] = _BACKGROUND
    bar = max(height // 60, 2)
    picture[height // 2 - bar // 2 : height // 2 + bar - bar // 2, width // 8 : -width // 8] = (
        _ACCENT
    )
    _draw_centered(picture, title, height // 2 - height // 12, height // 9, _FOREGROUND)
    _draw_centered(picture, subtitle, height // 2 + height // 8, height // 22, _MUTED)
    return picture


def _draw_centered(
    picture: npt.NDArray[np.uint8],
    text: str,
    center_y: int,
    max_glyph_height: int,
    color: tuple[int, int, int],
) -> None:
    if not text:
        return
    height, width, _ = picture.shape
    scale = max(max_glyph_height // GLYPH_HEIGHT, 1)
    while scale > 1 and text_width(text, scale) > width * 9 // 10:
        scale -= 1
    mask = render_text(text[: fitting_chars(width * 9 // 10, scale)], scale)
    top = max(center_y - mask.shape[0] // 2, 0)
    left = max((width - mask.shape[1]) // 2, 0)
    mask = mask[: height - top, : width - left]
    region = picture[top : top + mask.shape[0], left : left + mask.shape[1]]
    region[mask] = color


def load_picture(path: str | Path, width: int, height: int) -> npt.NDArray[np.uint8]:
    """Decode the first frame of ``path`` with PyAV and letterbox it into width x height."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    scale = min(width / frame.width, height / frame.height)
    fitted_w = max(int(frame.width * scale) // 2 * 2, 2)
    fitted_h = max(int(frame.height * scale) // 2 * 2, 2)
    fitted = frame.reformat(width=fitted_w, height=fitted_h, format="rgb24").to_ndarray()
    picture = np.zeros((height, width, 3), dtype=np.uint8)
    top = (height - fitted_h) // 2
    left = (width - fitted_w) // 2
    picture[top : top + fitted_h, left : left + fitted_w] = fitted
    return picture


def _encode_gop(
    picture: npt.NDArray[np.uint8], fps: int, gop_frames: int, qp: int, profile: str | None
) -> list[tuple[bytes, ...]]:
    """Encode one GOP of ``gop_frames``; return each frame's NAL units, SPS and PPS leading the
    IDR.

    `profile` ("baseline" for a callee that was offered constrained baseline, RFC 6184 §8.1)
    limits the tools the encoder uses; None leaves libx264's choice.

    Encoding happens once per call, at its start, where every CPU-ms counts. A still picture
    needs an IDR and P frames that repeat it, but libx264 spends on each P frame most of the
    analysis of a moving one (1.6 ms at 1280x720) even when it codes nothing. So only the IDR
    and the first P frame are encoded. Once a decoder shows that P frame reproducing the IDR
    exactly, the rest of the GOP is that frame renumbered (`renumber_slice`), which decodes
    to the same picture: 1280x720 in 10 ms instead of 40. A picture whose first P frame
    still refines it has every frame encoded.

    The quantizers are constant: the IDR at `qp`, P frames 20 coarser (``ipratio=10``), where
    no residual survives and every macroblock repeats the IDR. Under crf, P frames kept
    coding refinements, so each frame of the loop differed a little from the one before.
    Full-pel motion search without rate-distortion refinement (``subme=0``) saves more. No
    B-frames (zerolatency) keeps pts == dts, which the replay relies on. Without a global
    header libx264 puts SPS and PPS in band before the IDR; its SEI (the encoder's settings
    as text) is left out.
    """
    context = av.CodecContext.create("libx264", "w")
    context.width = picture.shape[1]
    context.height = picture.shape[0]
    context.pix_fmt = "yuv420p"
    context.time_base = Fraction(1, fps)
    context.framerate = Fraction(fps)
    context.thread_count = 1  # a pool of encoder threads costs more to start than it saves here
    context.options = {
        "preset": "veryfast",
        "tune": "zerolatency",
        "qp": str(qp + _P_FRAME_QP_STEP),
        "x264-params": (
            f"keyint={gop_frames}:min-keyint={gop_frames}:scenecut=0:bframes=0:subme=0:ipratio=10"
        ),
        **({"profile": profile} if profile else {}),
    }
    frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
    packets = []
    units: list[tuple[bytes, ...]] = []
    for index in range(gop_frames):
        if index == 2 and len(units) == 2 and _repeats_the_idr(units):
            numbering = slice_numbering(units[0][0])
            repeat = units[1][0]
            first = slice_frame_num(repeat, numbering)
            units.extend(
                (renumber_slice(repeat, numbering, first + step),)
                for step in range(1, gop_frames - 1)
            )
            break
        frame.pts = index
        for packet in context.encode(frame):
            packets.append(packet)
            units.append(_without_sei(bytes(packet)))
    for packet in context.encode(None):
        packets.append(packet)
        units.append(_without_sei(bytes(packet)))
    if (
        len(units) != gop_frames
        or not packets[0].is_keyframe
        or any(packet.is_keyframe for packet in packets[1:])
        or [nal_type(nal) for nal in units[0][:2]] != [NAL_SPS, NAL_PPS]
    ):
        raise RuntimeError("libx264 did not produce one closed GOP for the slate")
    return units


_P_FRAME_QP_STEP = 20
"""How much coarser than the IDR P frames are quantized: 6 * log2(ipratio=10)."""


_START_CODE = b"\x00\x00\x00\x01"


def _without_sei(data: bytes) -> tuple[bytes, ...]:
    return tuple(nal for nal in split_annexb(data) if nal_type(nal) != NAL_SEI)


def _repeats_the_idr(units: list[tuple[bytes, ...]]) -> bool:
    """Whether the P frame after the IDR decodes to exactly the IDR's picture, as one
    P slice that `renumber_slice` can renumber."""
    if len(units[1]) != 1:
        return False
    try:  # a slice renumber_slice refuses (another POC type, fields) is encoded instead
        numbering = slice_numbering(units[0][0])
        renumber_slice(units[1][0], numbering, slice_frame_num(units[1][0], numbering))
    except H264ParseError:
        return False
    decoder = av.CodecContext.create("h264", "r")
    decoder.thread_count = 1
    decoder.options = {"err_detect": "careful+bitstream+explode"}  # a concealed slice fails
    pictures = []
    try:
        for unit in units:
            pictures.extend(decoder.decode(av.Packet(b"".join(_START_CODE + nal for nal in unit))))
        pictures.extend(decoder.decode(None))
    except av.FFmpegError:
        return False
    return len(pictures) == 2 and np.array_equal(pictures[0].to_ndarray(), pictures[1].to_ndarray())
