"""The callee's H.264, carried into the outputs as it arrived: no decoding, no re-encoding.

Access units from the RTP depacketizer become AVCC samples (ISO/IEC 14496-15 §5.3.2) with
every NAL unit byte for byte, in-band SPS/PPS included. The outputs' AVC sequence header is
built from the callee's own SPS/PPS, so the FLV stream describes exactly what the callee
encoded; a keyframe whose in-band SPS/PPS differ (a new picture size, a restarted encoder)
carries the new record for the outputs to announce. Only the timestamps change: the 90 kHz
RTP clock (RFC 6184 §5.1) is mapped onto the pipeline's media clock, following each access
unit's playout time, or the capture time the sender reports give once they are known (lip
sync, RFC 3550 §6.4.1). That placement and the hand-over to the media thread
(``CalleeVideo``) serve the transcoder too.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av

from sip2rtmp.media.packets import EncodedPacket, Track
from sip2rtmp.rtp.h264 import (
    NAL_PPS,
    NAL_SPS,
    AccessUnit,
    H264ParseError,
    avc_decoder_configuration_record,
    nal_type,
    parse_sps,
    to_avcc,
)

VIDEO_CLOCK = 90_000
"""RTP clock of every video payload format (RFC 6184 §8.2.1, RFC 7741 §6.1)."""

_HALF = 1 << 31

CaptureClock = Callable[[int], float | None]
"""RTP timestamp to the media time (s) of the audio captured at the same instant."""


def h264_template(sps: bytes, pps: bytes) -> Any:
    """A PyAV stream whose codec parameters carry this SPS/PPS as avcC extradata.

    Outputs copy a template's codec parameters into each new connection. A stream that is
    only remuxed still needs a codec context, so one is borrowed from a raw H.264 input made
    of the two parameter sets, then given the avcC record (ISO/IEC 14496-15 §5.2.4.1) and
    finalised in a throwaway FLV container. avcC (not Annex B) extradata also tells the FLV
    and MP4 muxers that samples are already length-prefixed.
    """
    info = parse_sps(sps)
    annexb = b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps
    with av.open(io.BytesIO(annexb), format="h264") as source:
        container = av.open(io.BytesIO(), "w", format="flv")
        stream = container.add_stream_from_template(source.streams.video[0])
    context = stream.codec_context
    context.extradata = avc_decoder_configuration_record([sps], [pps])
    context.width = info.width
    context.height = info.height
    context.pix_fmt = "yuv420p"
    stream.time_base = Fraction(1, VIDEO_CLOCK)
    container.start_encoding()
    return stream


class VideoTimeline:
    """Places a callee's frames, by their 90 kHz RTP timestamps, on the pipeline's media clock.

    Shared by every source of the callee's video, passed through or transcoded. Timestamps are
    unwrapped (RFC 3550 §5.1) and follow a reference instant in media ticks: when the frame
    played out of the jitter buffer, or, once ``sync_to`` gets a capture clock that knows,
    when the audio captured with it plays (RFC 3550 §6.4.1). The first frame anchors the
    timeline on its reference, or on media time 0 if it played out before the pipeline
    started; later frames stack by RTP time and slew toward their reference by at most half a
    frame earlier or one frame later per frame, so DTS keep increasing, no jump exceeds a
    frame, and a start held back to media time 0 catches up within a few frames instead of
    leaving the video late for the whole call. A frame that lands off the reference by more
    than ``max_drift_s`` (a jump, a sender clock running away) re-anchors the timeline.
    """

    def __init__(self, max_drift_s: float = 0.5) -> None:
        self.resyncs = 0
        self.av_skew: float | None = None
        """How much later than the audio captured with it the latest frame arrived (s)."""
        self._max_drift = round(max_drift_s * VIDEO_CLOCK)
        self._origin: float | None = None
        self._capture_time: CaptureClock | None = None
        self._raw_ts = 0
        self._ext_ts = 0
        self._offset: int | None = None
        self._last_dts = -1

    def start(self, origin: float) -> None:
        """Media time 0 is ``origin`` on the clock that arrival times use."""
        self._origin = origin

    def restart(self) -> None:
        """The RTP timeline restarted (new SSRC, jump): the next frame re-anchors."""
        self._offset = None

    def sync_to(self, capture_time: CaptureClock) -> None:
        """Place frames by capture time instead of playout time once ``capture_time`` knows.

        ``capture_time`` maps an RTP timestamp to the media time of the audio captured at the
        same instant, or None while the sender reports are missing.
        """
        self._capture_time = capture_time

    def place(self, timestamp: int, arrival: float) -> int:
        """DTS (media ticks) of the frame with RTP ``timestamp`` that played out at ``arrival``."""
        if self._origin is None:
            raise RuntimeError("start() the source before pushing frames")
        arrival_ticks = round((arrival - self._origin) * VIDEO_CLOCK)
        target = self._capture_time(timestamp) if self._capture_time else None
        if target is None:
            return self._stamp(timestamp, arrival_ticks)
        reference = round(target * VIDEO_CLOCK)
        self.av_skew = (arrival_ticks - reference) / VIDEO_CLOCK
        return self._stamp(timestamp, reference)

    def _stamp(self, timestamp: int, reference: int) -> int:
        """DTS (media ticks) of the frame with RTP ``timestamp``, slewing toward ``reference``."""
        if self._offset is None:
            self._raw_ts = self._ext_ts = timestamp
            self._offset = max(reference, self._last_dts + 1) - timestamp
        else:
            delta = ((timestamp - self._raw_ts + _HALF) & 0xFFFFFFFF) - _HALF
            self._raw_ts = timestamp
            self._ext_ts += delta
            if delta > 0:
                error = reference - self._ext_ts - self._offset
                self._offset += max(-(delta // 2), min(error, delta))
        dts = self._ext_ts + self._offset
        if dts <= self._last_dts or abs(dts - reference) > self._max_drift:
            self._offset = max(reference, self._last_dts + 1) - self._ext_ts
            dts = self._ext_ts + self._offset
            self.resyncs += 1
        self._last_dts = dts
        return dts


class ReadyPackets:
    """Stamped video waiting for the media thread, handed over under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: deque[EncodedPacket] = deque()

    def put(self, packet: EncodedPacket) -> None:
        with self._lock:
            self._ready.append(packet)

    def until(self, seconds: float) -> list[EncodedPacket]:
        """Queued packets whose decode time is at or before ``seconds``."""
        limit = seconds * VIDEO_CLOCK
        packets: list[EncodedPacket] = []
        with self._lock:
            ready = self._ready
            while ready and ready[0].dts <= limit:
                packets.append(ready.popleft())
        return packets


class CalleeVideo:
    """What every source of the callee's video shares: its timeline, and the stamped packets
    waiting for the media thread.

    ``push`` runs on the event loop, ``packets_until`` on the media thread; a lock guards the
    hand-over queue.
    """

    def __init__(self, max_drift_s: float = 0.5) -> None:
        self.timeline = VideoTimeline(max_drift_s)
        self._ready = ReadyPackets()

    @property
    def av_skew(self) -> float | None:
        """How much later than the audio captured with it the latest frame arrived (s)."""
        return self.timeline.av_skew

    def start(self, origin: float) -> None:
        """Media time 0 is ``origin`` on the clock that ``push`` arrival times use."""
        self.timeline.start(origin)

    def resync(self) -> None:
        """The RTP timeline restarted (new SSRC, jump): the next frame re-anchors."""
        self.timeline.restart()

    def sync_to(self, capture_time: CaptureClock) -> None:
        """Place frames by capture time once ``capture_time`` knows (lip sync)."""
        self.timeline.sync_to(capture_time)

    def packets_until(self, seconds: float) -> list[EncodedPacket]:
        """Packets whose decode time is at or before ``seconds``."""
        return self._ready.until(seconds)


class PassthroughVideo(CalleeVideo):
    """A video source for the pipeline that replays the callee's access units on its clock.

    DTS equals PTS: the offer asks for constrained baseline (profile-level-id 42e01f), which
    has no B-frames, so decode order is presentation order.
    """

    def __init__(self, sps: bytes, pps: bytes, *, max_drift_s: float = 0.5) -> None:
        super().__init__(max_drift_s)
        info = parse_sps(sps)
        self.width = info.width
        self.height = info.height
        self.sps = sps
        self.pps = pps
        self.config = avc_decoder_configuration_record([sps], [pps])
        self.template = h264_template(sps, pps)
        self.sps_changes = 0

    def push(self, unit: AccessUnit, arrival: float) -> None:
        """Stamp one access unit (played out at ``arrival``) and queue it for the outputs."""
        dts = self.timeline.place(unit.timestamp, arrival)
        config = None
        if unit.keyframe:
            self._take_parameter_sets(unit.nals)
            config = self.config
        self._ready.put(
            EncodedPacket(Track.VIDEO, to_avcc(unit.nals), dts, dts, unit.keyframe, config)
        )

    def _take_parameter_sets(self, nals: tuple[bytes, ...]) -> None:
        """Make the SPS/PPS a keyframe carries in band the current ones, if they differ.

        An unreadable SPS keeps the current configuration: the decoder still finds the
        parameter sets in band.
        """
        sps = next((nal for nal in nals if nal_type(nal) == NAL_SPS), self.sps)
        pps = next((nal for nal in nals if nal_type(nal) == NAL_PPS), self.pps)
        if sps == self.sps and pps == self.pps:
            return
        try:
            info = parse_sps(sps)
            self.config = avc_decoder_configuration_record([sps], [pps])
        except H264ParseError:
            return
        self.sps, self.pps = sps, pps
        self.width, self.height = info.width, info.height
        self.sps_changes += 1
