"""What every media leg of the call shares, audio or video: the RTP endpoint, the stream it
was negotiated for, the jitter buffer and its playout schedule, the callee's RTCP, the first
packet, and closing.

A leg is pointed at its far end by ``retarget``, which can run again mid-call: a re-INVITE
may move the media to another address or port (RFC 3264 §8.3.1) or change the payload
types (§8.3.2) of a session whose sockets stay where they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Coroutine, Iterator

from sip2rtmp.net.rtp_endpoint import RtpEndpoint, resolve_address
from sip2rtmp.netaddr import Address
from sip2rtmp.relay.playout import PlayoutScheduler
from sip2rtmp.relay.sync import SenderReportTap
from sip2rtmp.rtp.jitterbuffer import JitterBuffer, Playout, Resync
from sip2rtmp.rtp.packet import RtpPacket
from sip2rtmp.sip.sdp import NegotiatedStream

__all__ = ["FirstPacketListener", "MediaLeg", "on_timeline"]

FirstPacketListener = Callable[[Address], None]
"""Called once, with the address the first accepted RTP packet came from."""


def on_timeline(items: list[Playout]) -> Iterator[tuple[Playout, bool]]:
    """Each item with whether it stands on the buffer's current timeline.

    Items before the last ``Resync`` of a batch belong to the timeline it ended: the buffer's
    ``deadline_of`` no longer speaks for them, so they go out at the hand-over time instead.
    """
    restart = max((i for i, item in enumerate(items) if isinstance(item, Resync)), default=-1)
    for index, item in enumerate(items):
        yield item, index > restart


class MediaLeg:
    """One RTP stream of the call. Subclasses say what is played out (``_play``) and what a
    received packet does (``_receive``); create them with their ``open``."""

    endpoint: RtpEndpoint

    def __init__(self, *, on_first_packet: FirstPacketListener | None = None) -> None:
        self.on_first_packet = on_first_packet
        self.grid_stride = 1
        """Grid steps between this leg's wake-ups (`sip2rtmp.net.grid`), set when bound."""
        self.stream: NegotiatedStream | None = None
        """What the latest offer/answer agreed; None until the leg is first pointed."""
        self.jitter: JitterBuffer | None = None
        self.first_packet_at: float | None = None
        """When the first accepted RTP packet arrived (loop time)."""
        self.last_packet_at: float | None = None
        """When the latest accepted RTP packet arrived (loop time): media that stops shows
        here."""
        self.rtcp = SenderReportTap()
        """Who else reads the callee's RTCP on this stream (its sender reports: A/V sync)."""
        self._playout: PlayoutScheduler | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _bind(self, local_ip: str, clock_rate: int, grid_stride: int) -> None:
        """Bind the RTP/RTCP ports (their number goes into the SDP offer); the leg's work runs
        every ``grid_stride`` steps of the loop's grid."""
        self.grid_stride = grid_stride
        self.endpoint = await RtpEndpoint.open(
            local_ip,
            on_rtp=self._on_rtp,
            on_rtcp=self.rtcp,
            clock_rate=clock_rate,
            grid_stride=grid_stride,
        )

    @property
    def port(self) -> int:
        return self.endpoint.rtp_port

    async def connect(self, stream: NegotiatedStream) -> None:
        """Point the leg at the negotiated remote: its first ``retarget``."""
        await self.retarget(stream)

    async def retarget(self, stream: NegotiatedStream) -> None:
        """Apply a new negotiation of this stream without closing the sockets.

        The endpoint sends to the new remote and takes media only from it (a new address
        starts source validation over; the same one keeps the accepted source) and only with
        the new payload types, encrypted with the new SRTP keys (the same keys keep the
        SRTP context and its replay state). The jitter buffer stays unless the clock rate
        changes (or the subclass needs a fresh one): a new source restarts its timeline by
        itself (new SSRC, sequence restart or timestamp jump: a ``Resync``).
        """
        rtp = await resolve_address(stream.rtp_address)
        rtcp = await resolve_address(stream.rtcp_address)
        previous, self.stream = self.stream, stream
        self.endpoint.clock_rate = stream.clock_rate
        self.endpoint.set_remote(
            rtp,
            rtcp,
            rtcp_mux=stream.rtcp_mux,
            accept_payload_types=_accepted(stream),
            srtp=stream.srtp,
        )
        if previous is None or self._needs_new_buffer(previous, stream):
            self._new_buffer(stream.clock_rate)
        self._retargeted(previous, stream)

    def suspend(self) -> None:
        """Stop taking media on this stream, and sending it, keeping the sockets: the session
        declined it or holds it without media (RFC 3264 §8.4) until a ``retarget`` brings it
        back. What the jitter buffer holds still plays out."""
        self._flush_buffer()
        self.stream = None

    def set_grid_stride(self, stride: int) -> None:
        """From now on, drain, play out and send every ``stride`` grid steps."""
        self.grid_stride = stride
        self.endpoint.grid_stride = stride
        if self._playout is not None:
            self._playout.stride = stride

    def _needs_new_buffer(self, previous: NegotiatedStream, stream: NegotiatedStream) -> bool:
        """A buffer's deadlines are in its clock rate's units: another rate needs another."""
        return previous.clock_rate != stream.clock_rate

    def _new_buffer(self, clock_rate: int) -> None:
        self._flush_buffer()
        if self._playout is not None:
            self._playout.close()
        self.jitter = JitterBuffer(clock_rate)
        self._playout = PlayoutScheduler(self.jitter, self._play, self.grid_stride)

    def _flush_buffer(self) -> None:
        """Play out at once what the buffer holds, each item stamped with its own deadline: a
        buffer given up mid-call (another codec, a suspended stream) loses no packet that
        came, and the timeline downstream goes on where those packets end."""
        if self.jitter is None or self._playout is None:
            return
        items = self.jitter.pop(math.inf)
        if items:
            self._play(items, asyncio.get_running_loop().time())

    def _retargeted(self, previous: NegotiatedStream | None, stream: NegotiatedStream) -> None:
        """What the subclass does once the leg points at ``stream``."""

    # ---- receiving ------------------------------------------------------------------------

    def _on_rtp(self, packet: RtpPacket, arrival: float) -> None:
        stream = self.stream
        if stream is None:
            return
        self.last_packet_at = arrival
        if self.first_packet_at is None:
            self.first_packet_at = arrival
            source = self.endpoint.source.address
            if self.on_first_packet is not None and source is not None:
                self.on_first_packet(source)
        self._receive(packet, arrival, stream)

    def _receive(self, packet: RtpPacket, arrival: float, stream: NegotiatedStream) -> None:
        """An accepted packet of ``stream``: by default, into the jitter buffer."""
        self._buffer(packet, arrival)

    def _buffer(self, packet: RtpPacket, arrival: float) -> None:
        if self.jitter is not None and self._playout is not None:
            self.jitter.push(packet, arrival)
            self._playout.packet_arrived()

    def _play(self, items: list[Playout], now: float) -> None:
        """Receives what the jitter buffer made due, at loop time ``now``."""
        raise NotImplementedError

    # ---- tasks and closing ----------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[object, object, None], name: str) -> asyncio.Task[None]:
        """Run ``coroutine`` for the leg's life: ``close`` cancels what is still running."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Stop playout and the leg's tasks, then send BYE and release the ports."""
        if self._playout is not None:
            self._playout.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.endpoint.close()


def _accepted(stream: NegotiatedStream) -> frozenset[int]:
    """The payload types the callee may send on ``stream``: the codec's, under its number or
    ours, and RFC 4733 telephone-events when negotiated."""
    events = {stream.telephone_event_pt, stream.local_telephone_event_pt}
    return stream.receive_payload_types | {pt for pt in events if pt is not None}
