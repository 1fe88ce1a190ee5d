"""The call's audio leg: RTP from the callee through the jitter buffer into the media pipeline,
and RTP toward the callee from the first moment (silence or an announcement, and DTMF).

Sending from the first moment is not optional: it opens NAT bindings, starts the far end's
RTP session (some bridges send nothing until they receive) and makes the far end accept
RFC 4733 DTMF, which many ignore on a stream that carries no audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sip2rtmp.media.outbound import OutboundAudio
from sip2rtmp.media.pipeline import LOST, MediaPipeline
from sip2rtmp.net.grid import Ticker
from sip2rtmp.net.rtp_endpoint import RtpEndpoint
from sip2rtmp.relay.playout import PlayoutScheduler
from sip2rtmp.relay.sync import SenderReportTap
from sip2rtmp.rtp.dtmf import DtmfParseError, DtmfReceiver, dtmf_schedule
from sip2rtmp.rtp.jitterbuffer import JitterBuffer, JitterStats, Lost, Playout, Resync
from sip2rtmp.rtp.packet import RtpPacket
from sip2rtmp.sip.sdp import NegotiatedStream

log = logging.getLogger(__name__)

PTIME = 0.02
"""20 ms packets: what every codec we offer uses by default (RFC 3551 §4.2)."""

DtmfListener = Callable[[str, str], None]
"""Called with (digit, method) for each key the callee sends."""


@dataclass(frozen=True)
class _DtmfPacket:
    at: float
    payload: bytes
    marker: bool
    timestamp: int


async def resolve_address(address: tuple[str, int]) -> tuple[str, int]:
    """SDP c= lines may name a host; the RTP socket needs an IP literal."""
    host, port = address
    try:
        ipaddress.ip_address(host)
        return address
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port)
        return str(infos[0][4][0]), port


class AudioLeg:
    """One audio stream of the call, in both directions. Create with `await AudioLeg.open()`."""

    endpoint: RtpEndpoint

    def __init__(
        self,
        *,
        announce: Path | None = None,
        announce_loop: bool = False,
        on_dtmf: DtmfListener | None = None,
    ) -> None:
        self._announce = announce
        self._announce_loop = announce_loop
        self._on_dtmf = on_dtmf
        self.stream: NegotiatedStream | None = None
        self.jitter: JitterBuffer | None = None
        self.pipeline: MediaPipeline | None = None
        self.first_packet_at: float | None = None
        self.first_packet = asyncio.Event()
        self._dtmf_receiver = DtmfReceiver()
        self._dtmf_queue: list[_DtmfPacket] = []
        self._dtmf_done: asyncio.Event = asyncio.Event()
        self._playout: PlayoutScheduler | None = None
        self.rtcp = SenderReportTap()
        """Who else reads the callee's audio RTCP (sender reports for A/V sync)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._seq = random.randrange(1 << 16)
        self._timestamp = random.randrange(1 << 32)

    @classmethod
    async def open(
        cls,
        local_ip: str,
        *,
        announce: Path | None = None,
        announce_loop: bool = False,
        on_dtmf: DtmfListener | None = None,
    ) -> AudioLeg:
        """Bind the RTP/RTCP ports (their number goes into the SDP offer)."""
        leg = cls(announce=announce, announce_loop=announce_loop, on_dtmf=on_dtmf)
        leg.endpoint = await RtpEndpoint.open(
            local_ip, on_rtp=leg._on_rtp, on_rtcp=leg.rtcp, clock_rate=8000
        )
        return leg

    @property
    def port(self) -> int:
        return self.endpoint.rtp_port

    async def connect(self, stream: NegotiatedStream) -> None:
        """Point the leg at the negotiated remote and start sending toward it at once."""
        rtp = await resolve_address(stream.rtp_address)
        rtcp = await resolve_address(stream.rtcp_address)
        accepted = set(stream.receive_payload_types)
        for pt in (stream.telephone_event_pt, stream.local_telephone_event_pt):
            if pt is not None:
                accepted.add(pt)
        codec_changed = self.stream is None or self.stream.codec != stream.codec
        self.stream = stream
        self.endpoint.clock_rate = stream.clock_rate
        self.endpoint.set_remote(rtp, rtcp, rtcp_mux=stream.rtcp_mux, accept_payload_types=accepted)
        if codec_changed:
            self.jitter = JitterBuffer(stream.clock_rate)
            if self._playout is not None:
                self._playout.close()
            self._playout = PlayoutScheduler(self.jitter, self._play)
            for task in self._tasks:
                task.cancel()
            self._tasks = [asyncio.create_task(self._send_loop(stream), name="audio-send")]

    def attach(self, pipeline: MediaPipeline) -> None:
        """From now on, played-out audio goes into the pipeline (the stream's outputs)."""
        self.pipeline = pipeline

    @property
    def stats(self) -> JitterStats | None:
        return self.jitter.stats if self.jitter is not None else None

    # ---- receiving ------------------------------------------------------------------------

    def _on_rtp(self, packet: RtpPacket, arrival: float) -> None:
        stream = self.stream
        if stream is None:
            return
        if self.first_packet_at is None:
            self.first_packet_at = arrival
            self.first_packet.set()
        if packet.payload_type in (stream.telephone_event_pt, stream.local_telephone_event_pt):
            self._receive_dtmf(packet)
            return
        if self.jitter is not None and self._playout is not None:
            self.jitter.push(packet, arrival)
            self._playout.packet_arrived()

    def _receive_dtmf(self, packet: RtpPacket) -> None:
        try:
            events = self._dtmf_receiver.feed(packet.timestamp, packet.payload)
        except DtmfParseError:
            return
        for event in events:
            if self._on_dtmf is not None and event.digit:
                self._on_dtmf(event.digit, "rfc4733")

    def _play(self, items: list[Playout], now: float) -> None:
        pipeline, jitter = self.pipeline, self.jitter
        if pipeline is None or jitter is None:
            return
        # Items before a Resync belong to the old timeline: for them, hand-over time counts.
        restart = max((i for i, item in enumerate(items) if isinstance(item, Resync)), default=-1)
        for index, item in enumerate(items):
            if isinstance(item, Resync):
                continue
            due = jitter.deadline_of(item.timestamp) if index > restart else None
            if isinstance(item, Lost):
                pipeline.push_audio(LOST, item.timestamp, due)
            else:
                pipeline.push_audio(item.payload, item.timestamp, due)

    # ---- sending --------------------------------------------------------------------------

    async def _send_loop(self, stream: NegotiatedStream) -> None:
        """One packet per 20 ms on an absolute schedule, so the far end sees no drift; they
        leave in pairs on the loop's grid (``sip2rtmp.net.grid``)."""
        outbound = await asyncio.to_thread(
            OutboundAudio, stream.codec, announce_path=self._announce, loop=self._announce_loop
        )
        source = iter(outbound)
        step = stream.clock_rate * 20 // 1000
        loop = asyncio.get_running_loop()

        def send(index: int) -> None:
            if self._dtmf_queue:
                self._send_due_dtmf(stream, loop.time())
                next(source)
            else:
                self._send(stream.payload_type, next(source), self._timestamp, marker=index == 0)
            self._timestamp = (self._timestamp + step) & 0xFFFFFFFF

        ticker = Ticker(PTIME, send)
        try:
            await asyncio.Future()
        finally:
            ticker.stop()

    def _send(self, payload_type: int, payload: bytes, timestamp: int, *, marker: bool) -> None:
        self._seq = (self._seq + 1) & 0xFFFF
        self.endpoint.send_rtp(
            RtpPacket(
                payload_type, self._seq, timestamp, self.endpoint.ssrc, payload, marker=marker
            )
        )

    def _send_due_dtmf(self, stream: NegotiatedStream, now: float) -> None:
        assert stream.telephone_event_pt is not None
        while self._dtmf_queue and self._dtmf_queue[0].at <= now:
            packet = self._dtmf_queue.pop(0)
            self._send(
                stream.telephone_event_pt, packet.payload, packet.timestamp, marker=packet.marker
            )
        if not self._dtmf_queue:
            self._dtmf_done.set()

    @property
    def rfc4733(self) -> bool:
        return self.stream is not None and self.stream.telephone_event_pt is not None

    async def send_dtmf(self, digits: str) -> None:
        """RFC 4733 events in the audio stream (RFC 4733 §2.5.1); returns once all are sent."""
        stream = self.stream
        if stream is None or stream.telephone_event_pt is None:
            raise RuntimeError("telephone-event was not negotiated")
        while self._dtmf_queue:
            await self._dtmf_done.wait()
        start = asyncio.get_running_loop().time()
        base = self._timestamp
        self._dtmf_queue = [
            _DtmfPacket(
                at=start + item.at,
                payload=item.payload,
                marker=item.marker,
                timestamp=(base + item.timestamp_offset) & 0xFFFFFFFF,
            )
            for item in dtmf_schedule(digits, clock_rate=stream.clock_rate)
        ]
        self._dtmf_done.clear()
        await self._dtmf_done.wait()

    async def close(self) -> None:
        if self._playout is not None:
            self._playout.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.endpoint.close()
