"""The callee's VP8, or with ``--transcode`` its H.264, re-encoded as H.264 for the outputs.

FLV (and so RTMP ingest) has no VP8, and some callees' H.264 does not suit an ingest (keyframes
only on request, or a stream it rejects), so those frames are decoded and fed to libx264 in a
worker thread: decoding and encoding never run on the event loop, which only stamps frames and
hands them over through a bounded queue. The encoder runs at the size of the callee's first
keyframe (RFC 6386 §9.1 for VP8, the SPS for H.264) for the whole call, opened once; later
pictures of another size are scaled to it.

Keyframes are the encoder's own, forced at most a keyframe interval of media time apart
whatever the callee's keyframe rhythm, so the stream meets ingest rules without the callee's
help, and on the first frame after a pause, so the outputs can come back from the slate at
once. Each carries the SPS/PPS in band as well as the avcC record, like the slate's and most
callees' keyframes. Frames are placed on the media clock as ``PassthroughVideo`` places them:
by their 90 kHz RTP timestamps (RFC 7741 §6.1, RFC 6184 §5.1) from the first frame's playout
time, and by capture time once the sender reports give it (RFC 3550 §6.4.1).
"""

from __future__ import annotations

import queue
import threading
from fractions import Fraction
from typing import Any

import av

from sip2rtmp.media.packets import KEYFRAME_INTERVAL_S, EncodedPacket, Track
from sip2rtmp.media.passthrough import VIDEO_CLOCK, CalleeVideo, h264_template
from sip2rtmp.media.threads import name_native_thread
from sip2rtmp.rtp.h264 import (
    NAL_PPS,
    NAL_SPS,
    AccessUnit,
    avc_decoder_configuration_record,
    nal_type,
    split_annexb,
    to_avcc,
)
from sip2rtmp.rtp.vp8 import Vp8Frame

NOMINAL_FPS = 25
"""What libx264's rate control assumes: zerolatency turns off variable-frame-rate input, so
it budgets bits per frame at this rate whatever the callee really sends."""

_KEYFRAME_SLACK = VIDEO_CLOCK // 100
"""A next frame expected up to 10 ms past the keyframe slot still counts as on time, so
timestamp jitter does not make every keyframe a frame early."""
_PAUSE_TICKS = VIDEO_CLOCK // 2
"""A frame this long after the previous one opens a GOP: the outputs may have gone to the
slate meanwhile, and they come back only at a keyframe."""

_START_CODE = b"\x00\x00\x00\x01"
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


class TranscodedVideo(CalleeVideo):
    """A video source for the pipeline: VP8 frames, or H.264 access units when
    ``parameter_sets`` (the callee's SPS and PPS) are given, in; H.264 packets out.

    ``push`` runs on the event loop and never blocks; a full queue drops the frame and every
    frame after it up to the callee's next keyframe, since later frames reference the lost one.
    ``packets_until`` runs on the media thread.
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        parameter_sets: tuple[bytes, bytes] | None = None,
        keyframe_interval_s: float = KEYFRAME_INTERVAL_S,
        queue_size: int = 25,
        max_drift_s: float = 0.5,
    ) -> None:
        super().__init__(max_drift_s)
        self.width = width & ~1  # yuv420p needs even dimensions
        self.height = height & ~1
        self._encoder = h264_encoder(self.width, self.height)
        nals = split_annexb(bytes(self._encoder.extradata))
        sps = next(nal for nal in nals if nal_type(nal) == NAL_SPS)
        pps = next(nal for nal in nals if nal_type(nal) == NAL_PPS)
        self._parameter_sets = (sps, pps)
        self.config = avc_decoder_configuration_record([sps], [pps])
        self.template = h264_template(sps, pps)
        self._input: type[Vp8Frame | AccessUnit] = Vp8Frame
        if parameter_sets is None:
            self._decoder = av.CodecContext.create("vp8", "r")
        else:
            # Annex B extradata: the decoder knows the parameter sets before the first access
            # unit, whether or not the callee repeats them in band (RFC 6184 §8.4).
            self._input = AccessUnit
            self._decoder = av.CodecContext.create("h264", "r")
            self._decoder.extradata = _annexb(parameter_sets)
        self.frames = 0
        self.keyframes = 0
        self.dropped = 0
        self.undecodable = 0
        self._keyframe_ticks = round(keyframe_interval_s * VIDEO_CLOCK)
        self._inbound: queue.Queue[tuple[Vp8Frame | AccessUnit, int] | None] = queue.Queue(
            queue_size
        )
        self._thread = threading.Thread(target=self._run, name="video-transcode", daemon=True)
        self._skipping = False
        self._next_keyframe = 0
        self._last_dts: int | None = None

    def start(self, origin: float) -> None:
        """Media time 0 is ``origin`` on the clock that ``push`` arrival times use."""
        super().start(origin)
        self._thread.start()

    def close(self) -> None:
        """Stop the worker once it has drained the queue; blocks, so not on the event loop."""
        if self._thread.is_alive():
            self._inbound.put(_STOP)
            self._thread.join()

    def push(self, frame: Vp8Frame | AccessUnit, arrival: float) -> None:
        """Stamp one frame (played out at ``arrival``) and queue it for the worker."""
        if not isinstance(frame, self._input):
            raise TypeError(f"a {type(frame).__name__} cannot go into this transcoder")
        if self._skipping and not frame.keyframe:
            self.dropped += 1
            return
        dts = self.timeline.place(frame.timestamp, arrival)
        try:
            self._inbound.put_nowait((frame, dts))
        except queue.Full:
            self.dropped += 1
            self._skipping = True
            return
        self._skipping = False

    def _run(self) -> None:
        name_native_thread("s2r-transcode")
        while (item := self._inbound.get()) is not _STOP:
            frame, dts = item
            packet = av.Packet(frame.data if isinstance(frame, Vp8Frame) else _annexb(frame.nals))
            packet.pts = dts
            self._decode(packet)
        self._decode(None)
        self._encode(None)

    def _decode(self, packet: Any) -> None:
        """Decode one frame (None flushes) and encode the pictures that come out, each stamped
        with the DTS of its own frame: a decoder may hand a picture out later than its packet."""
        try:
            pictures = self._decoder.decode(packet)
        except av.error.FFmpegError:
            self.undecodable += 1
            return
        for picture in pictures:
            self._encode(picture)

    def _encode(self, picture: Any) -> None:
        """Encode one decoded picture (None flushes), forcing an IDR before each keyframe
        interval runs out and after a pause."""
        if picture is not None:
            dts = int(picture.pts)
            if (picture.width, picture.height, picture.format.name) != (
                self.width,
                self.height,
                "yuv420p",
            ):
                picture = picture.reformat(self.width, self.height, "yuv420p")
                picture.pts = dts
            picture.time_base = self._encoder.time_base
            previous, self._last_dts = self._last_dts, dts
            step = 0 if previous is None else dts - previous
            paused = previous is None or step >= _PAUSE_TICKS
            # The keyframe goes on the last frame before the slot: the next one, a step like
            # the latest later, would come too late for the interval.
            if paused or dts + step > self._next_keyframe + _KEYFRAME_SLACK:
                picture.pict_type = av.video.frame.PictureType.I
                self._next_keyframe = dts + self._keyframe_ticks
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


def _annexb(nals: tuple[bytes, ...]) -> bytes:
    """NAL units as an Annex B byte stream (ITU-T H.264 Annex B), what the decoder reads."""
    return b"".join(_START_CODE + nal for nal in nals)
