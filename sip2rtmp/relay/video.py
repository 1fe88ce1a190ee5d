"""The call's video leg: the callee's H.264 or VP8 in, keyframe requests out.

RTP goes through a 90 kHz jitter buffer and the RFC 6184 (H.264) or RFC 7741 (VP8)
depacketizer; whole frames go to a ``PassthroughVideo`` (H.264) or a ``TranscodedVideo``
(VP8, or H.264 with ``--transcode``) once the pipeline runs. Until then the leg keeps the
frames since the latest keyframe, so the stream can open with the callee's first keyframe.

Toward the callee the leg sends the slate as H.264 (RFC 6184), since some endpoints send
video only while they receive some, and it hands the callee's RTCP (sender reports, for lip
sync) to whoever listens.

Keyframes are asked for, not waited for: many endpoints (baresip among them) send one IDR at
the start and then only on request, while live ingest wants one every 2 s. Requests go as
RTCP PLI (RFC 4585 §6.3.1) and/or FIR (RFC 5104 §4.3.1) when the answer negotiated them, else
as SIP INFO picture_fast_update (RFC 5168): at the start, after a lost access unit, shortly
before each keyframe interval (``--keyframe-interval``) runs out, and when the callee sends
again after a pause (the outputs switched to the slate meanwhile and come back only at a
keyframe). While nothing arrives, unanswered requests are repeated less and less often.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sip2rtmp.media.packets import KEYFRAME_INTERVAL_S
from sip2rtmp.media.passthrough import VIDEO_CLOCK, PassthroughVideo
from sip2rtmp.media.slate import SlateVideo
from sip2rtmp.media.transcode import TranscodedVideo
from sip2rtmp.net.grid import Ticker
from sip2rtmp.relay.leg import FirstPacketListener, MediaLeg, on_timeline
from sip2rtmp.rtp.h264 import (
    AccessUnit,
    H264Depacketizer,
    packetize_h264,
    parse_sprop_parameter_sets,
)
from sip2rtmp.rtp.jitterbuffer import JitterStats, Playout, Resync
from sip2rtmp.rtp.packet import RtpPacket
from sip2rtmp.rtp.vp8 import Vp8Depacketizer, Vp8Frame
from sip2rtmp.sip.sdp import NegotiatedStream

log = logging.getLogger(__name__)

KeyframeListener = Callable[[], None]
"""Called once, when the callee's first usable keyframe came (for H.264, with its SPS/PPS)."""

InfoSender = Callable[[str, bytes], Awaitable[int]]
"""``SipCall.send_info``: sends an INFO in the call's dialog and returns the final status."""

PICTURE_FAST_UPDATE = (
    b'<?xml version="1.0" encoding="utf-8" ?>\r\n'
    b"<media_control><vc_primitive><to_encoder><picture_fast_update/>"
    b"</to_encoder></vc_primitive></media_control>\r\n"
)
"""RFC 5168 §3: the XML body of a SIP INFO asking the far encoder for an intra picture."""

_MAX_PENDING = 250
"""Access units kept before the pipeline starts (10 s at 25 fps), oldest keyframe first."""


@dataclass(frozen=True, slots=True)
class KeyframePolicy:
    interval_s: float = KEYFRAME_INTERVAL_S
    """Longest allowed time between keyframes in the output (YouTube and Facebook: 2 s)."""
    lead_s: float = 0.8
    """How long before the interval runs out to ask: room for retries when a keyframe is
    lost on the way (at 5 % packet loss, about one multi-packet keyframe in five) or the
    sender lets a request pass."""
    retry_s: float = 0.3
    """Ask again if no keyframe came this long after a request (RFC 5104 §4.3.1.2): a round
    trip and a frame or two."""
    lost_retry_s: float = 0.1
    """Ask again this soon after a request when a frame was lost since: the lost one may be
    the keyframe that answered it, which then never comes. Waiting the full retry each time,
    three keyframes lost in a row (at 5 % loss, about one interval in a hundred) let the
    interval run out."""
    quiet_s: float = 1.0
    """Nothing received for this long means the callee stopped sending (hold, camera off):
    each unanswered request then doubles the wait before the next, and the first packet
    after the pause asks for a keyframe at once."""
    quiet_retry_max_s: float = 5.0
    """The longest wait between requests while nothing arrives."""

    @classmethod
    def for_interval(cls, interval_s: float) -> KeyframePolicy:
        """The policy for another keyframe interval. A shorter one keeps the lead's share of
        the default's (0.8 s of 2 s), so requests do not follow each keyframe at once; a
        longer one keeps the 0.8 s, which is what the retries need."""
        default = cls()
        return cls(interval_s=interval_s, lead_s=min(default.lead_s, 0.4 * interval_s))


@dataclass(frozen=True, slots=True)
class VideoStats:
    dropped: int
    keyframe_requests: int
    frames_sent: int
    jitter: JitterStats | None


class VideoLeg(MediaLeg):
    """One video stream of the call. Create with ``await VideoLeg.open()``."""

    def __init__(
        self,
        policy: KeyframePolicy | None = None,
        *,
        on_first_packet: FirstPacketListener | None = None,
        on_keyframe: KeyframeListener | None = None,
    ) -> None:
        super().__init__(on_first_packet=on_first_packet)
        self.policy = policy or KeyframePolicy()
        self.on_keyframe = on_keyframe
        self.depacketizer: H264Depacketizer | Vp8Depacketizer = H264Depacketizer()
        self.source: PassthroughVideo | TranscodedVideo | None = None
        self.has_keyframe = False
        """Whether a usable keyframe came (reported once to `on_keyframe`)."""
        self.keyframe_requests = 0
        self.frames_sent = 0
        self._send_info: InfoSender | None = None
        self._pending: list[tuple[AccessUnit | Vp8Frame, float]] = []
        self._remote_ssrc: int | None = None
        self._last_keyframe_at: float | None = None
        self._last_request_at: float | None = None
        self._last_packet_at: float | None = None
        self._damaged_at: float | None = None
        """When the depacketizer last dropped a damaged frame."""
        self._quiet_requests = 0
        self._request_wake = asyncio.Event()
        self._keyframes: asyncio.Task[None] | None = None
        self._info_task: asyncio.Task[None] | None = None
        self._sender: Ticker | None = None
        """Sends the slate toward the callee, one frame per tick, once started."""
        self._settled_stride = 1
        """The grid stride once the first keyframe came (`open`)."""

    @classmethod
    async def open(
        cls,
        local_ip: str,
        policy: KeyframePolicy | None = None,
        *,
        on_first_packet: FirstPacketListener | None = None,
        on_keyframe: KeyframeListener | None = None,
        grid_stride: int = 1,
    ) -> VideoLeg:
        """Bind the RTP/RTCP ports (their number goes into the SDP offer's m=video line); the
        leg's work runs every grid step until the callee's first keyframe, whose playout
        starts the outputs, then every ``grid_stride`` steps."""
        leg = cls(policy, on_first_packet=on_first_packet, on_keyframe=on_keyframe)
        await leg._bind(local_ip, clock_rate=VIDEO_CLOCK, grid_stride=1)
        leg._settled_stride = grid_stride
        return leg

    async def connect(self, stream: NegotiatedStream, send_info: InfoSender | None = None) -> None:
        """Start receiving from the negotiated remote and ask for a keyframe at once;
        ``send_info`` carries the requests when the answer has no RTCP feedback."""
        self._send_info = send_info
        await self.retarget(stream)
        if self._keyframes is None:
            self._keyframes = self._spawn(self._keyframe_loop(), name="video-keyframes")

    def _retargeted(self, previous: NegotiatedStream | None, stream: NegotiatedStream) -> None:
        """Another codec or other parameter sets need another depacketizer, and its first
        keyframe: ask for one at once."""
        if previous is not None and (previous.codec, previous.fmtp) == (stream.codec, stream.fmtp):
            return
        self.depacketizer = _depacketizer(stream)
        self._last_keyframe_at = None
        self._request_wake.set()

    @property
    def passes_through(self) -> bool:
        """Whether the callee's video can reach the outputs as it is: H.264 can, VP8 cannot."""
        return isinstance(self.depacketizer, H264Depacketizer)

    def passthrough(self) -> PassthroughVideo:
        """A source for the pipeline built from the parameter sets of the first keyframe."""
        return PassthroughVideo(*self._parameter_sets())

    def transcoder(self, keyframe_interval_s: float = KEYFRAME_INTERVAL_S) -> TranscodedVideo:
        """A source for the pipeline that re-encodes the callee's VP8 or H.264, at the size of
        its latest keyframe (RFC 6386 §9.1; for H.264, the SPS)."""
        depacketizer = self.depacketizer
        size = depacketizer.resolution
        if size is None:
            raise RuntimeError("no keyframe from the callee yet")
        return TranscodedVideo(
            *size,
            parameter_sets=self._parameter_sets() if self.passes_through else None,
            keyframe_interval_s=keyframe_interval_s,
        )

    def _parameter_sets(self) -> tuple[bytes, bytes]:
        """The SPS and PPS of the callee's H.264, in band or from sprop-parameter-sets."""
        depacketizer = self.depacketizer
        if not isinstance(depacketizer, H264Depacketizer):
            raise RuntimeError("VP8 has no parameter sets")
        sps, pps = depacketizer.sps, depacketizer.pps
        if sps is None or pps is None:
            raise RuntimeError("no SPS/PPS from the callee yet")
        return sps, pps

    def attach(self, source: PassthroughVideo | TranscodedVideo) -> None:
        """From now on frames go into ``source``, starting with those kept so far."""
        for unit, arrival in self._pending:
            _push(source, unit, arrival)
        self._pending = []
        self.source = source

    def detach(self) -> None:
        """Keep frames here again, and tell ``on_keyframe`` of the next usable keyframe: the
        callee's video changed codec mid-call and the source it went into cannot take it."""
        self.source = None
        self._pending = []
        self.has_keyframe = False

    @property
    def stats(self) -> VideoStats:
        return VideoStats(
            dropped=self.depacketizer.dropped,
            keyframe_requests=self.keyframe_requests,
            frames_sent=self.frames_sent,
            jitter=self.jitter.stats if self.jitter is not None else None,
        )

    # ---- receiving ------------------------------------------------------------------------

    def _receive(self, packet: RtpPacket, arrival: float, stream: NegotiatedStream) -> None:
        last, self._last_packet_at = self._last_packet_at, arrival
        if last is None or arrival - last > self.policy.quiet_s:
            if last is not None:
                # Sending again after a pause: as at the start, only a keyframe brings the
                # callee's video back to the outputs.
                self._last_keyframe_at = None
            self._quiet_requests = 0
            self._request_wake.set()
        self._remote_ssrc = packet.ssrc
        self._buffer(packet, arrival)

    def _play(self, items: list[Playout], now: float) -> None:
        """Depacketize what came due; each frame is delivered with the time it was due, as
        the audio is, so both tracks stand on the jitter buffers' schedules and not on when
        the loop's grid got round to them. Frames before a Resync use the hand-over time."""
        depacketizer, jitter = self.depacketizer, self.jitter
        assert jitter is not None, "playout runs only once the stream is open"
        needed, damaged = depacketizer.keyframe_needed, depacketizer.damaged
        for item, current in on_timeline(items):
            if isinstance(item, Resync) and self.source is not None:
                self.source.resync()
            for unit in depacketizer.push(item):
                self._deliver(unit, jitter.deadline_of(unit.timestamp) if current else now)
        if depacketizer.damaged != damaged:
            self._damaged_at = now
        if depacketizer.keyframe_needed and (not needed or depacketizer.damaged != damaged):
            self._request_wake.set()

    def _deliver(self, unit: AccessUnit | Vp8Frame, due: float) -> None:
        if unit.keyframe:
            self._last_keyframe_at = due
            depacketizer = self.depacketizer
            usable = (
                not isinstance(depacketizer, H264Depacketizer)
                or depacketizer.decoder_config() is not None
            )
            if usable and not self.has_keyframe:
                self.has_keyframe = True
                self.set_grid_stride(self._settled_stride)
                if self.on_keyframe is not None:
                    self.on_keyframe()
        source = self.source
        if source is not None:
            _push(source, unit, due)
        elif unit.keyframe:
            self._pending = [(unit, due)]
        elif self._pending and len(self._pending) < _MAX_PENDING:
            self._pending.append((unit, due))

    # ---- sending --------------------------------------------------------------------------

    def send_slate(self, slate: SlateVideo) -> None:
        """Send ``slate`` toward the callee, H.264 on the negotiated payload type, from now on.

        Some endpoints send video only while they receive some, and a sendrecv stream
        (RFC 3264 §6.1) promises media both ways. The slate's replayed GOP costs no encoding;
        each IDR goes out with the SPS/PPS in band, since the offer carried no
        sprop-parameter-sets (RFC 6184 §8.4). In packetization-mode 0 every NAL unit is a
        packet of its own (RFC 6184 §6.2), however large; in mode 1 small ones share a
        STAP-A and large ones are split into FU-A.
        """
        endpoint = self.endpoint
        sequence = random.randrange(1 << 16)
        base = random.randrange(1 << 32)

        def send_frame(index: int) -> None:
            """Frame ``index`` of the slate, 90 kHz timestamps (RFC 6184 §5.1), on the stream
            as the latest retarget left it: none while suspended or not H.264."""
            nonlocal sequence
            stream = self.stream
            if stream is None or stream.codec != "H264":
                return
            single_nal = stream.fmtp.get("packetization-mode", "0") == "0"
            nals = slate.access_unit(index)
            payloads = nals if single_nal else packetize_h264(nals)
            timestamp = (base + index * slate.frame_ticks) & 0xFFFFFFFF
            for number, payload in enumerate(payloads, 1):
                sequence = (sequence + 1) & 0xFFFF
                endpoint.send_rtp(
                    RtpPacket(
                        stream.payload_type,
                        sequence,
                        timestamp,
                        endpoint.ssrc,
                        payload,
                        marker=number == len(payloads),
                    )
                )
            self.frames_sent += 1

        if self._sender is None:
            self._sender = Ticker(1 / slate.fps, send_frame, self.grid_stride)

    def set_grid_stride(self, stride: int) -> None:
        super().set_grid_stride(stride)
        if self._sender is not None:
            self._sender.stride = stride

    @property
    def sending_slate(self) -> bool:
        return self._sender is not None

    # ---- keyframe requests ----------------------------------------------------------------

    async def _keyframe_loop(self) -> None:
        """Ask when a keyframe is missing or the interval is about to run out, then retry."""
        loop = asyncio.get_running_loop()
        policy = self.policy
        while True:
            now = loop.time()
            due = now
            if not self.depacketizer.keyframe_needed and self._last_keyframe_at is not None:
                due = self._last_keyframe_at + policy.interval_s - policy.lead_s
            requested = self._last_request_at
            if requested is not None and requested >= (self._last_keyframe_at or 0.0):
                due = max(due, requested + self._retry_delay(now, requested))
            ready = self._remote_ssrc is not None or not self._rtcp_feedback
            if due <= now and ready:
                self._request_keyframe()
                self._last_request_at = now
                if self._quiet(now):
                    self._quiet_requests += 1
                continue
            self._request_wake.clear()
            timeout = max(due - now, 0.01) if ready else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._request_wake.wait(), timeout)

    def _quiet(self, now: float) -> bool:
        """Whether nothing at all came from the callee lately (or ever)."""
        last = self._last_packet_at
        return last is None or now - last > self.policy.quiet_s

    def _retry_delay(self, now: float, requested: float) -> float:
        """The retry interval after a request at ``requested``: shorter when a frame was lost
        since, doubled for each request that went unanswered in the quiet."""
        policy = self.policy
        damaged = self._damaged_at
        if damaged is not None and damaged > requested:
            return policy.lost_retry_s
        if not self._quiet(now) or not self._quiet_requests:
            return policy.retry_s
        return min(policy.retry_s * 2.0 ** (self._quiet_requests - 1), policy.quiet_retry_max_s)

    @property
    def _rtcp_feedback(self) -> bool:
        """Whether the answer negotiated PLI or FIR; RTCP requests need the sender's SSRC."""
        feedback = self.stream.rtcp_fb if self.stream is not None else frozenset()
        return "nack pli" in feedback or "ccm fir" in feedback

    def _request_keyframe(self) -> None:
        stream, ssrc = self.stream, self._remote_ssrc
        if stream is None:
            return
        self.keyframe_requests += 1
        if ssrc is not None and "nack pli" in stream.rtcp_fb:
            self.endpoint.send_pli(ssrc)
        if ssrc is not None and "ccm fir" in stream.rtcp_fb:
            self.endpoint.send_fir(ssrc)
        if self._rtcp_feedback or self._send_info is None:
            return
        if self._info_task is None or self._info_task.done():
            self._info_task = self._spawn(
                self._send_picture_fast_update(self._send_info), name="video-info"
            )

    async def _send_picture_fast_update(self, send_info: InfoSender) -> None:
        status = await send_info("application/media_control+xml", PICTURE_FAST_UPDATE)
        if status >= 300:
            log.info("picture_fast_update INFO answered %d", status)

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.stop()
        await super().close()


def _depacketizer(stream: NegotiatedStream) -> H264Depacketizer | Vp8Depacketizer:
    """VP8's (RFC 7741), or H.264's (RFC 6184) primed with the SDP's parameter sets."""
    if stream.codec == "VP8":
        return Vp8Depacketizer()
    sprop = stream.fmtp.get("sprop-parameter-sets", "")
    try:
        parameter_sets = parse_sprop_parameter_sets(sprop)
    except ValueError:
        log.info("ignoring unreadable sprop-parameter-sets %r", sprop)
        parameter_sets = []
    return H264Depacketizer(parameter_sets)


def _push(
    source: PassthroughVideo | TranscodedVideo, unit: AccessUnit | Vp8Frame, arrival: float
) -> None:
    """Hand a frame to the source made for its codec; the leg never mixes the two."""
    if isinstance(source, TranscodedVideo):
        source.push(unit, arrival)  # either codec; refuses the one it was not made for
    elif isinstance(unit, AccessUnit):
        source.push(unit, arrival)
    else:
        raise TypeError(f"{type(unit).__name__} cannot go into {type(source).__name__}")
