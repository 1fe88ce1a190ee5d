"""The call's audio leg: RTP from the callee through the jitter buffer into the media pipeline,
and RTP toward the callee from the first moment (silence or an announcement, and DTMF).

Sending from the first moment is not optional: it opens NAT bindings, starts the far end's
RTP session (some bridges send nothing until they receive) and makes the far end accept
RFC 4733 DTMF, which many ignore on a stream that carries no audio.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import av

from sip2rtmp.media.comfort_noise import mark_comfort_noise
from sip2rtmp.media.outbound import OutboundAudio
from sip2rtmp.media.pipeline import LOST, Lost
from sip2rtmp.net.grid import Ticker
from sip2rtmp.relay.events import DtmfMethod
from sip2rtmp.relay.leg import FirstPacketListener, MediaLeg, on_timeline
from sip2rtmp.rtp.dtmf import DtmfParseError, DtmfReceiver, EventClock, dtmf_schedule
from sip2rtmp.rtp.jitterbuffer import JitterStats, Playout, Resync
from sip2rtmp.rtp.jitterbuffer import Lost as LostPacket
from sip2rtmp.rtp.packet import RtpPacket
from sip2rtmp.sip.sdp import NegotiatedStream

log = logging.getLogger(__name__)

PTIME = 0.02
"""20 ms packets: what every codec we offer uses by default (RFC 3551 §4.2)."""

DtmfListener = Callable[[str, DtmfMethod], None]
"""Called with (digit, method) for each key the callee sends."""


class AudioSink(Protocol):
    """Where played-out audio goes: the media pipeline."""

    def push_audio(self, payload: bytes | Lost, rtp_ts: int, due: float | None, /) -> None: ...

    def audio_handed_over(self) -> None: ...

    def switch_audio(self, codec: str, /) -> None: ...


@dataclass(frozen=True)
class _DtmfPacket:
    at: float
    payload: bytes
    marker: bool
    timestamp: int


class AudioLeg(MediaLeg):
    """One audio stream of the call, in both directions. Create with `await AudioLeg.open()`."""

    def __init__(
        self,
        *,
        announce: Path | None = None,
        announce_loop: bool = False,
        on_dtmf: DtmfListener | None = None,
        on_first_packet: FirstPacketListener | None = None,
    ) -> None:
        super().__init__(on_first_packet=on_first_packet)
        self._announce = announce
        self._announce_loop = announce_loop
        self._on_dtmf = on_dtmf
        self.pipeline: AudioSink | None = None
        self._sink_codec: str | None = None
        """The codec the pipeline decodes: the stream's when it was attached, then each one
        a retarget switched it to."""
        self._dtmf_receiver = DtmfReceiver()
        self._dtmf_queue: list[_DtmfPacket] = []
        self._dtmf_done: asyncio.Event = asyncio.Event()
        self._sending: asyncio.Task[None] | None = None
        self._sending_as: tuple[str, int | None, int | None] | None = None
        """What the send loop encodes: codec, ptime and maxptime."""
        self._injected: tuple[tuple[str, int | None, int | None], Iterator[bytes]] | None = None
        """A file played in place of the announcement or silence, then silence, as encoded
        for a send loop (its `_sent_as`): another codec's loop drops it."""
        self._seq = random.randrange(1 << 16)
        self._timestamp = random.randrange(1 << 32)
        self._event_clock = EventClock()

    @classmethod
    async def open(
        cls,
        local_ip: str,
        *,
        announce: Path | None = None,
        announce_loop: bool = False,
        on_dtmf: DtmfListener | None = None,
        on_first_packet: FirstPacketListener | None = None,
        grid_stride: int = 1,
    ) -> AudioLeg:
        """Bind the RTP/RTCP ports (their number goes into the SDP offer); received audio
        plays out, and audio goes toward the callee, every ``grid_stride`` grid steps."""
        leg = cls(
            announce=announce,
            announce_loop=announce_loop,
            on_dtmf=on_dtmf,
            on_first_packet=on_first_packet,
        )
        await leg._bind(local_ip, clock_rate=8000, grid_stride=grid_stride)
        return leg

    def _needs_new_buffer(self, previous: NegotiatedStream, stream: NegotiatedStream) -> bool:
        """Another codec starts another timeline, even at the same clock rate."""
        return previous.codec != stream.codec or super()._needs_new_buffer(previous, stream)

    def _retargeted(self, previous: NegotiatedStream | None, stream: NegotiatedStream) -> None:
        """Start sending toward the remote at once; another codec or packet time restarts the
        encoder, another codec the pipeline's decoder after what the old buffer held."""
        del previous
        if self._sending is None or self._sending_as != _sent_as(stream):
            if self._sending is not None:
                self._sending.cancel()
            self._sending_as = _sent_as(stream)
            self._sending = self._spawn(self._send_loop(stream), name="audio-send")
        if self.pipeline is not None and self._sink_codec != stream.codec:
            self.pipeline.switch_audio(stream.codec)
            self._sink_codec = stream.codec

    def attach(self, pipeline: AudioSink, codec: str | None = None) -> None:
        """From now on, played-out audio goes into the pipeline (the stream's outputs), which
        decodes ``codec`` (by default the one the leg receives now); when the leg receives
        another, the pipeline switches to it."""
        stream = self.stream
        self.pipeline = pipeline
        self._sink_codec = codec or (stream.codec if stream is not None else None)
        if stream is not None and stream.codec != self._sink_codec:
            pipeline.switch_audio(stream.codec)
            self._sink_codec = stream.codec

    @property
    def stats(self) -> JitterStats | None:
        return self.jitter.stats if self.jitter is not None else None

    # ---- receiving ------------------------------------------------------------------------

    def _receive(self, packet: RtpPacket, arrival: float, stream: NegotiatedStream) -> None:
        if packet.payload_type in (stream.telephone_event_pt, stream.local_telephone_event_pt):
            self._receive_dtmf(packet)
        else:
            self._buffer(mark_comfort_noise(packet, stream.comfort_noise_payload_types), arrival)

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
        pushed = False
        for item, current in on_timeline(items):
            if isinstance(item, Resync):
                continue
            due = jitter.deadline_of(item.timestamp) if current else None
            payload = LOST if isinstance(item, LostPacket) else item.payload
            pipeline.push_audio(payload, item.timestamp, due)
            pushed = True
        if pushed:
            pipeline.audio_handed_over()

    # ---- sending --------------------------------------------------------------------------

    async def _send_loop(self, stream: NegotiatedStream) -> None:
        """One packet per the answer's ptime on an absolute schedule, so the far end sees no
        drift; they leave on the loop's grid (``sip2rtmp.net.grid``)."""
        outbound = await asyncio.to_thread(
            OutboundAudio,
            stream.codec,
            ptime=stream.ptime,
            maxptime=stream.maxptime,
            announce_path=self._announce,
            loop=self._announce_loop,
        )
        source = iter(outbound)
        step = outbound.timestamp_step
        loop = asyncio.get_running_loop()

        def send(index: int) -> None:
            latest = self.stream  # a retarget may renumber the payload types
            if latest is not None and _sent_as(latest) != _sent_as(stream):
                return  # the new codec's or packet time's loop takes over
            if latest is None:
                pass  # suspended: the clock runs on (RFC 3550 §5.1), nothing is sent
            elif self._dtmf_queue:
                self._send_due_dtmf(latest, loop.time())
                self._next_payload(source, stream)
            else:
                payload = self._next_payload(source, stream)
                self._send(latest.payload_type, payload, self._timestamp, marker=index == 0)
            self._timestamp = (self._timestamp + step) & 0xFFFFFFFF

        ticker = Ticker(outbound.period, send, self.grid_stride)
        try:
            await asyncio.Future()
        finally:
            ticker.stop()

    def _next_payload(self, source: Iterator[bytes], stream: NegotiatedStream) -> bytes:
        """The next slot's audio: an injected file's, then silence, once one was injected;
        else the announcement's or silence."""
        payload = next(source)
        injected = self._injected
        if injected is None:
            return payload
        if injected[0] != _sent_as(stream):
            self._injected = None
            return payload
        return next(injected[1])

    async def inject(self, source: str) -> str | None:
        """Play `source` (a file or a URL PyAV reads) toward the callee in place of what is
        sent now, then silence. None once it plays, else why it cannot: no stream yet, or
        the source cannot be read or decoded as audio."""
        stream = self.stream
        if stream is None:
            return "the audio leg sends nowhere yet"
        try:
            outbound = await asyncio.to_thread(
                OutboundAudio,
                stream.codec,
                ptime=stream.ptime,
                maxptime=stream.maxptime,
                announce_path=source,
            )
        except (OSError, ValueError, IndexError, av.FFmpegError) as error:
            return f"cannot play the file: {error}"
        self._injected = (_sent_as(stream), iter(outbound))
        return None

    def _send(self, payload_type: int, payload: bytes, timestamp: int, *, marker: bool) -> None:
        self._seq = (self._seq + 1) & 0xFFFF
        self.endpoint.send_rtp(
            RtpPacket(
                payload_type, self._seq, timestamp, self.endpoint.ssrc, payload, marker=marker
            )
        )

    def _send_due_dtmf(self, stream: NegotiatedStream, now: float) -> None:
        event_pt = stream.telephone_event_pt
        while self._dtmf_queue and self._dtmf_queue[0].at <= now:
            packet = self._dtmf_queue.pop(0)
            if event_pt is not None:  # else a retarget dropped telephone-event
                self._send(event_pt, packet.payload, packet.timestamp, marker=packet.marker)
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
        rate = stream.telephone_event_clock_rate or stream.clock_rate
        base = self._event_clock.timestamp(self._timestamp, stream.clock_rate, rate)
        self._dtmf_queue = [
            _DtmfPacket(
                at=start + item.at,
                payload=item.payload,
                marker=item.marker,
                timestamp=(base + item.timestamp_offset) & 0xFFFFFFFF,
            )
            for item in dtmf_schedule(digits, clock_rate=rate)
        ]
        self._dtmf_done.clear()
        await self._dtmf_done.wait()


def _sent_as(stream: NegotiatedStream) -> tuple[str, int | None, int | None]:
    """What decides the packets sent on ``stream``: the codec and the packet times."""
    return stream.codec, stream.ptime, stream.maxptime
