"""The callee's VP8, re-encoded as H.264 so RTMP can carry it.

FLV (and so RTMP ingest) has no VP8, so VP8 frames (RFC 7741) are decoded and fed to
libx264 in a worker thread: decoding and encoding never run on the event loop, which only
stamps frames and hands them over through a bounded queue. The encoder runs at the size of
the callee's first keyframe (RFC 6386 §9.1) for the whole call, opened once; later pictures
of another size are scaled to it.

Keyframes are the encoder's own, forced every 2 s of media time whatever the callee's
keyframe rhythm, so the stream meets ingest rules without the callee's help, and on the first
frame after a pause, so the outputs can come back from the slate at once. Each carries the
SPS/PPS in band as well as the avcC record, like the slate's and most callees' keyframes.
Timestamps map the 90 kHz RTP clock (RFC 7741 §6.1) onto the pipeline's media clock the way
``PassthroughVideo`` does, anchored at the first frame's playout time.
"""

from __future__ import annotations

import queue
import threading
from fractions import Fraction
from typing import Any

import av

from sip2rtmp.media.packets import EncodedPacket, Track
from sip2rtmp.media.passthrough import VIDEO_CLOCK, ReadyPackets, VideoTimeline, h264_template
from sip2rtmp.media.slate import KEYFRAME_INTERVAL_S
from sip2rtmp.rtp.h264 import (
    NAL_PPS,
    NAL_SPS,
    avc_decoder_configuration_record,
    nal_type,
    split_annexb,
    to_avcc,
)
from sip2rtmp.rtp.vp8 import Vp8Frame

NOMINAL_FPS = 25
"""What libx264's rate control assumes: zerolatency turns off variable-frame-rate input, so
it budgets bits per frame at this rate whatever the callee really sends."""

_KEYFRAME_TICKS = KEYFRAME_INTERVAL_S * VIDEO_CLOCK
_KEYFRAME_SLACK = VIDEO_CLOCK // 100
"""A frame up to 10 ms early for the next keyframe slot takes it, so timestamp jitter never
pushes a keyframe a whole frame late."""
_PAUSE_TICKS = VIDEO_CLOCK // 2
"""A frame this long after the previous one opens a GOP: the outputs may have gone to the
slate meanwhile, and they come back only at a keyframe."""

_HALF = 1 << 31
_STOP = None


def h264_encoder(width: int, height: int) -> Any:
    """An opened libx264 encoder for live video: fastest preset, no lookahead, no B-frames.

    Keyframes come only when forced (``keyint=infinite``, ``scenecut=0``) and are IDRs
    (``forced-idr``), so each one opens a closed GOP. The global header puts SPS/PPS in the
    extradata before any frame is encoded, which the outputs' sequence header needs.
    """
    context = av.CodecContext.create("libx264", "w")
    context.width = width
    context.height = height
    context.pix_fmt = "yuv420p"
    context.time_base = Fraction(1, VIDEO_CLOCK)
    context.framerate = Fraction(NOMINAL_FPS)
    context.flags |= av.codec.context.Flags.global_header
    context.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "forced-idr": "1",
        "x264-params": "keyint=infinite:scenecut=0:bframes=0",
    }
    context.open()
    return context


class TranscodedVideo:
    """A video source for the pipeline: VP8 frames in, H.264 packets out on the media clock.

    ``push`` runs on the event loop and never blocks; a full queue drops the frame and every
    frame after it up to the next VP8 keyframe, since later frames reference the lost one.
    ``packets_until`` runs on the media thread; a lock guards the hand-over queue.
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        queue_size: int = 25,
        max_drift_s: float = 0.5,
    ) -> None:
        self.width = width & ~1  # yuv420p needs even dimensions
        self.height = height & ~1
        self._encoder = h264_encoder(self.width, self.height)
        nals = split_annexb(bytes(self._encoder.extradata))
        sps = next(nal for nal in nals if nal_type(nal) == NAL_SPS)
        pps = next(nal for nal in nals if nal_type(nal) == NAL_PPS)
        self._parameter_sets = (sps, pps)
        self.config = avc_decoder_configuration_record([sps], [pps])
        self.template = h264_template(sps, pps)
        self._decoder = av.CodecContext.create("vp8", "r")
        self.frames = 0
        self.keyframes = 0
        self.dropped = 0
        self.undecodable = 0
        self.timeline = VideoTimeline(max_drift_s)
        self._inbound: queue.Queue[tuple[Vp8Frame, int] | None] = queue.Queue(queue_size)
        self._ready = ReadyPackets()
        self._thread = threading.Thread(target=self._run, name="vp8-transcode", daemon=True)
        self._origin: float | None = None
        self._skipping = False
        self._next_keyframe = 0
        self._last_dts: int | None = None

    def start(self, origin: float) -> None:
        """Media time 0 is ``origin`` on the clock that ``push`` arrival times use."""
        self._origin = origin
        self._thread.start()

    def close(self) -> None:
        """Stop the worker once it has drained the queue; blocks, so not on the event loop."""
        if self._thread.is_alive():
            self._inbound.put(_STOP)
            self._thread.join()

    def resync(self) -> None:
        """The RTP timeline restarted (new SSRC, jump): the next frame re-anchors."""
        self.timeline.restart()

    def push(self, frame: Vp8Frame, arrival: float) -> None:
        """Stamp one VP8 frame (played out at ``arrival``) and queue it for the worker."""
        if self._origin is None:
            raise RuntimeError("start() the source before pushing frames")
        if self._skipping and not frame.keyframe:
            self.dropped += 1
            return
        dts = self.timeline.stamp(frame.timestamp, round((arrival - self._origin) * VIDEO_CLOCK))
        try:
            self._inbound.put_nowait((frame, dts))
        except queue.Full:
            self.dropped += 1
            self._skipping = True
            return
        self._skipping = False

    def packets_until(self, seconds: float) -> list[EncodedPacket]:
        """Encoded packets whose decode time is at or before ``seconds``."""
        return self._ready.until(seconds)

    def _run(self) -> None:
        while (item := self._inbound.get()) is not _STOP:
            frame, dts = item
            try:
                pictures = self._decoder.decode(av.Packet(frame.data))
            except av.error.FFmpegError:
                self.undecodable += 1
                continue
            for picture in pictures:
                self._encode(picture, dts)
        self._encode(None, 0)

    def _encode(self, picture: Any, dts: int) -> None:
        """Encode one decoded picture (None flushes), forcing an IDR on each 2 s slot and
        after a pause."""
        if picture is not None:
            if (picture.width, picture.height, picture.format.name) != (
                self.width,
                self.height,
                "yuv420p",
            ):
                picture = picture.reformat(self.width, self.height, "yuv420p")
            picture.pts = dts
            picture.time_base = self._encoder.time_base
            previous, self._last_dts = self._last_dts, dts
            paused = previous is None or dts - previous >= _PAUSE_TICKS
            if paused or dts >= self._next_keyframe - _KEYFRAME_SLACK:
                picture.pict_type = av.video.frame.PictureType.I
                self._next_keyframe = dts + _KEYFRAME_TICKS
            else:
                picture.pict_type = av.video.frame.PictureType.NONE
        for packet in self._encoder.encode(picture):
            pts = int(packet.pts)
            keyframe = bool(packet.is_keyframe)
            nals = split_annexb(bytes(packet))
            encoded = EncodedPacket(
                Track.VIDEO,
                to_avcc([*self._parameter_sets, *nals] if keyframe else nals),
                pts,
                pts,
                keyframe,
                self.config if keyframe else None,
            )
            self.frames += 1
            self.keyframes += encoded.keyframe
            self._ready.put(encoded)
