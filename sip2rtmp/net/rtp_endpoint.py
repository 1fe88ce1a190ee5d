"""The UDP side of one RTP stream: an RTP/RTCP port pair, symmetric RTP and periodic RTCP.

Thin on purpose: parsing, statistics and report contents live in ``sip2rtmp.rtp``; this
file only moves datagrams and keeps time.

The sockets are not watched by the event loop packet by packet: they are drained on the
loop's shared grid (``sip2rtmp.net.grid``), every 80 ms or every 40 ms with ``--latency low``,
which wakes anyway for playout and sending, so a call of 75 packets a second in costs 12.5 or
25 wake-ups instead of 125. The kernel stamps each
datagram on arrival (``SO_TIMESTAMPNS``), so jitter, playout deadlines and RTCP round trips
still use the true arrival time, not the drain time. Until the SDP names the far end the
sockets are not read at all (but for STUN answers): what the callee sends while its answer
is still on the way through the proxies waits in the kernel's buffer and is judged with the
answer in hand.

The ports are open to anyone: every datagram passes the stream's ``SourceFilter``
(``sip2rtmp.rtp.source``, where the rules are), which accepts the far end the SDP names or a
consistent latched source, locks its address and SSRC, and decides where our RTP and RTCP go.

Before the offer is sent, ``discover_mapping`` asks a STUN server (RFC 5389) what a NAT maps
both sockets to: the same sockets later carry the media, so that is the mapping the far end
must send to. The answers arrive through the same drain. A STUN datagram that answers no
pending query is counted as ``malformed``, like any other datagram that is neither RTP nor
RTCP: it changes nothing else, and an ICE-speaking far end's checks count as before.

When the stream is SRTP (RFC 3711, keys from SDES), every RTP and RTCP datagram we send is
protected, and every one that arrives is checked and decrypted before it is parsed or the
source filter sees it: what fails authentication or the replay check is dropped and counted
as ``rejected_srtp``, so a sender without the key can neither feed media nor move the source.
RTP and RTCP are told apart by the second byte, which SRTP and SRTCP leave in clear; STUN
(first byte 0 to 3, RFC 7983 §7) skips the SRTP check and takes the path above.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import random
import socket
import struct
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

from sip2rtmp.nat.policy import MappedPorts
from sip2rtmp.nat.stun import is_stun
from sip2rtmp.net.grid import GRID_S, Ticker, grid_sleep
from sip2rtmp.net.stun_client import BindingTransaction, resolve_server
from sip2rtmp.netaddr import Address
from sip2rtmp.rtp.packet import RtpPacket, RtpParseError, is_rtcp
from sip2rtmp.rtp.rtcp import (
    Bye,
    FullIntraRequest,
    PictureLossIndication,
    ReceiverReport,
    RtcpPacket,
    RtcpParseError,
    SenderReport,
    SourceDescription,
    compound,
    ntp_from_unix,
    parse_compound,
)
from sip2rtmp.rtp.source import SourceChange, SourceFilter
from sip2rtmp.rtp.stats import ReceiveStats
from sip2rtmp.sip.sdes import SrtpKeys

if TYPE_CHECKING:
    from sip2rtmp.rtp.srtp import SrtpContext

__all__ = ["PortAllocationError", "RtcpHandler", "RtpEndpoint", "RtpHandler", "resolve_address"]

log = logging.getLogger(__name__)

RtpHandler = Callable[[RtpPacket, float], None]
RtcpHandler = Callable[[list[RtcpPacket], float], None]

_MAX_SOURCES = 8  # remote SSRCs we keep statistics for
_MAX_REPORT_BLOCKS = 31  # RFC 3550 §6.4: five-bit count


def _log_source_change(change: SourceChange) -> None:
    host, port = change.address
    if change.previous is None:
        log.info("RTP source %s:%d, SSRC %08x: %s", host, port, change.ssrc, change.reason)
    else:
        (old_host, old_port), old_ssrc = change.previous
        log.info(
            "RTP source changed from %s:%d, SSRC %08x to %s:%d, SSRC %08x: %s",
            old_host, old_port, old_ssrc, host, port, change.ssrc, change.reason,
        )  # fmt: skip


async def resolve_address(address: Address) -> Address:
    """An SDP c= line may name a host (RFC 8866 §5.7); the sockets need an IP literal."""
    host, port = address
    try:
        ipaddress.ip_address(host)
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port)
        return str(infos[0][4][0]), port
    return address


class PortAllocationError(OSError):
    """No free even/odd RTP/RTCP port pair in the configured range."""


_SO_TIMESTAMPNS: int = getattr(socket, "SO_TIMESTAMPNS", 35)
"""Linux's value (asm-generic/socket.h), which Python's socket module does not export; the
control message it produces has the same number (SCM_TIMESTAMPNS)."""
_RECEIVE_SIZE = 65_535
_TIMESTAMP_SPACE = socket.CMSG_SPACE(struct.calcsize("qq"))
_MAX_PER_DRAIN = 256
"""Datagrams taken from one socket per drain: a flood cannot hold the loop for long, and the
rest waits in the kernel's buffer for the next drain (which drops what does not fit, as it
would for any slow reader)."""
_RECEIVE_BUFFER = 1 << 20
"""The sockets' receive buffer: a high-definition keyframe (a hundred packets or more, each
taking over 2 KiB of kernel memory) arrives within milliseconds and waits for the next
drain, and whatever the callee sends while its answer is on the way waits for the answer.
The kernel caps it at ``net.core.rmem_max`` (208 KiB on a stock Debian 12)."""


def _bind(ip: str, port: int) -> socket.socket:
    """A non-blocking UDP socket on ``ip:port`` whose datagrams carry their arrival time."""
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # without it, the drain time stands in
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        with contextlib.suppress(OSError):  # without it, the system's default size
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
        sock.bind((ip, port))
    except OSError:
        sock.close()
        raise
    return sock


def _drain(
    sock: socket.socket, handle: Callable[[bytes, Address, float], None], loop_now: float
) -> None:
    """Hand every queued datagram to ``handle`` with its arrival time on the loop clock."""
    wall_now = time.time()
    for _ in range(_MAX_PER_DRAIN):
        try:
            data, ancillary, _, addr = sock.recvmsg(_RECEIVE_SIZE, _TIMESTAMP_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:  # ICMP port unreachable from an earlier send, and the like
            log.debug("RTP socket error: %s", error)
            continue
        arrival = loop_now
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack("qq", value[:16])
                arrival = loop_now - max(wall_now - seconds - nanoseconds * 1e-9, 0.0)
        handle(data, (str(addr[0]), int(addr[1])), arrival)


class RtpEndpoint:
    """An RTP port (even) and RTCP port (RTP + 1) on one local address (RFC 3550 §11)."""

    def __init__(
        self,
        rtp: socket.socket,
        rtcp: socket.socket,
        *,
        local_ip: str,
        rtp_port: int,
        clock_rate: int,
        on_rtp: RtpHandler,
        on_rtcp: RtcpHandler | None,
        ssrc: int,
        cname: str,
        rtcp_interval: float,
        wall_clock: Callable[[], float],
        grid_stride: int = 1,
    ) -> None:
        self._rtp = rtp
        self._rtcp = rtcp
        self.local_ip = local_ip
        self.rtp_port = rtp_port
        self.rtcp_port = rtp_port + 1
        self.clock_rate = clock_rate
        self.ssrc = ssrc
        self.cname = cname
        self.rtcp_interval = rtcp_interval
        self.source = SourceFilter(on_change=_log_source_change)
        """Who media is taken from and sent to; its counters say what was dropped."""
        self.packets_sent = 0
        self.octets_sent = 0
        self._on_rtp = on_rtp
        self._on_rtcp = on_rtcp
        self._wall_clock = wall_clock
        self._loop = asyncio.get_running_loop()
        self._stats: dict[int, ReceiveStats] = {}
        self._last_rtp_ts = 0
        self._last_send = 0.0
        self._sent_since_report = False
        self._rtcp_task: asyncio.Task[None] | None = None
        self._fir_seq = 0
        self._closed = False
        self.send_errors = 0
        self._srtp: SrtpContext | None = None
        self._stun: list[BindingTransaction] = []
        self._drained_at = -math.inf
        self._ticker = Ticker(GRID_S, self._drain_sockets, grid_stride)

    @classmethod
    async def open(
        cls,
        local_ip: str,
        *,
        on_rtp: RtpHandler,
        on_rtcp: RtcpHandler | None = None,
        clock_rate: int,
        port_range: tuple[int, int] = (16384, 32767),
        attempts: int = 32,
        cname: str | None = None,
        rtcp_interval: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
        grid_stride: int = 1,
    ) -> RtpEndpoint:
        """Bind a free pair with an even RTP port in ``port_range`` (inclusive); its sockets
        are drained every ``grid_stride`` steps of the loop's grid (`sip2rtmp.net.grid`)."""
        rng = random.Random()
        first = port_range[0] + port_range[0] % 2
        last = port_range[1] - 1
        if first > last:
            raise ValueError(f"port range {port_range} holds no even/odd pair")
        for _ in range(attempts):
            port = rng.randrange(first, last + 1, 2)
            try:
                rtp = _bind(local_ip, port)
            except OSError:
                continue
            try:
                rtcp = _bind(local_ip, port + 1)
            except OSError:
                rtp.close()
                continue
            ssrc = rng.getrandbits(32)
            return cls(
                rtp,
                rtcp,
                local_ip=local_ip,
                rtp_port=port,
                clock_rate=clock_rate,
                on_rtp=on_rtp,
                on_rtcp=on_rtcp,
                ssrc=ssrc,
                cname=cname or f"sip2rtmp-{ssrc:08x}@{local_ip}",
                rtcp_interval=rtcp_interval,
                wall_clock=wall_clock,
                grid_stride=grid_stride,
            )
        raise PortAllocationError(f"no free RTP/RTCP port pair on {local_ip} in {port_range}")

    @property
    def receive_stats(self) -> Mapping[int, ReceiveStats]:
        """Statistics per remote SSRC."""
        return self._stats

    @property
    def remote_rtp(self) -> Address | None:
        """Where our RTP goes: the SDP's address until a source is accepted, then that source."""
        return self.source.rtp_destination

    @property
    def remote_rtcp(self) -> Address | None:
        return self.source.rtcp_destination

    def set_remote(
        self,
        rtp_address: Address,
        rtcp_address: Address,
        *,
        rtcp_mux: bool = False,
        accept_payload_types: Collection[int] | None = None,
        srtp: SrtpKeys | None = None,
    ) -> None:
        """The far end as the SDP names it; addresses must be IP literals (resolve first).

        Starts the periodic RTCP reports. From then on only the source that ``self.source``
        accepts is delivered; packets with a payload type outside ``accept_payload_types``
        (when given) are dropped before delivery or latching.

        ``srtp`` makes the stream SRTP with those keys from now on. Other keys (a re-INVITE
        that rekeys) start a new context; the same keys keep the current one and its replay
        windows and rollover counts (RFC 3711 §3.3.1); ``None`` returns to plain RTP.
        ``ValueError`` for keys libsrtp cannot use, before anything changes.
        """
        if srtp is None:
            self._srtp = None
        elif self._srtp is None or self._srtp.keys != srtp:
            from sip2rtmp.rtp.srtp import SrtpContext  # libsrtp loads only for an SRTP call

            self._srtp = SrtpContext(srtp)
        self.source.configure(
            rtp_address,
            rtcp_address,
            rtcp_mux=rtcp_mux,
            payload_types=accept_payload_types,
            now=self._loop.time(),
        )
        if self._rtcp_task is None and not self._closed:
            self._rtcp_task = self._loop.create_task(self._rtcp_loop())

    async def discover_mapping(self, server: Address, *, timeout: float = 3.0) -> MappedPorts:
        """The public side of the RTP and the RTCP socket as the STUN ``server`` sees them,
        both asked at once; `StunError` when either gets no usable answer in ``timeout`` s."""
        target = await resolve_server(server, self._rtp.family)
        rtp, rtcp = BindingTransaction(target), BindingTransaction(target)
        self._stun += (rtp, rtcp)
        runs = [
            asyncio.ensure_future(rtp.run(self._rtp.sendto, timeout)),
            asyncio.ensure_future(rtcp.run(self._rtcp.sendto, timeout)),
        ]
        try:
            mapped_rtp, mapped_rtcp = await asyncio.gather(*runs)
        finally:  # one failed (or we were cancelled): the other's answer is of no use
            for run in runs:
                run.cancel()
            self._stun = [t for t in self._stun if t is not rtp and t is not rtcp]
        return MappedPorts(mapped_rtp, mapped_rtcp)

    def _not_media(self, data: bytes, addr: Address) -> None:
        """A datagram that is neither RTP nor RTCP: a pending STUN answer, or malformed."""
        if self._stun and is_stun(data):
            for transaction in self._stun:
                if transaction.feed(data, addr):
                    return
        self.source.malformed += 1

    @property
    def grid_stride(self) -> int:
        """Grid steps between drains of the sockets (`sip2rtmp.net.grid`)."""
        return self._ticker.stride

    @grid_stride.setter
    def grid_stride(self, stride: int) -> None:
        self._ticker.stride = stride

    def _drain_sockets(self, _tick: int) -> None:
        if not (self.source.named or self._stun):
            return  # what the callee sends before its answer arrives waits in the kernel
        now = self._loop.time()
        if now - self._drained_at < GRID_S / 2:
            return  # a wake-up a stride apart runs each grid step's tick: one drain is enough
        self._drained_at = now
        _drain(self._rtp, self._rtp_datagram, now)
        _drain(self._rtcp, self._rtcp_datagram, now)

    def _rtp_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if is_rtcp(data):
            self._rtcp_datagram(data, addr, now)
            return
        if self._srtp is not None:
            clear = self._decrypted(data, self._srtp.unprotect_rtp)
            if clear is None:
                return
            data = clear
        try:
            packet = RtpPacket.parse(data)
        except RtpParseError:
            self._not_media(data, addr)
            return
        if not self.source.admit(packet, addr, now):
            return
        stats = self._stats.get(packet.ssrc)
        if stats is None:
            if len(self._stats) >= _MAX_SOURCES:
                del self._stats[next(iter(self._stats))]
            stats = self._stats[packet.ssrc] = ReceiveStats(packet.ssrc, self.clock_rate)
        if self.source.early_rtcp is not None:
            early = self.source.take_early_rtcp()
            if early is not None:
                self._deliver_rtcp(*early)
        stats.update(packet.sequence_number, packet.timestamp, now)
        self._on_rtp(packet, now)

    def _decrypted(self, data: bytes, unprotect: Callable[[bytes], bytes | None]) -> bytes | None:
        """An RTP-versioned datagram decrypted, or None (counted) when it fails; anything
        else (STUN, whose first byte is below 4) as it is, for the paths after."""
        if not data or data[0] >> 6 != 2:
            return data
        clear = unprotect(data)
        if clear is None:
            self.source.rejected_srtp += 1
        return clear

    def _rtcp_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if self._srtp is not None:
            clear = self._decrypted(data, self._srtp.unprotect_rtcp)
            if clear is None:
                return
            data = clear
        try:
            packets = parse_compound(data)
        except RtcpParseError:
            self._not_media(data, addr)
            return
        packets = self.source.admit_rtcp(packets, addr, now)
        if packets:
            self._deliver_rtcp(packets, now)

    def _deliver_rtcp(self, packets: list[RtcpPacket], now: float) -> None:
        for packet in packets:
            if isinstance(packet, SenderReport) and packet.ssrc in self._stats:
                self._stats[packet.ssrc].note_sender_report(packet.ntp_timestamp, now)
        if self._on_rtcp is not None:
            self._on_rtcp(packets, now)

    def send_rtp(self, packet: RtpPacket) -> None:
        """Send one packet to the SDP's or the accepted remote; dropped until it is known."""
        remote = self.source.rtp_destination
        if remote is None or self._closed:
            return
        data = packet.serialize()
        if self._srtp is not None:
            try:
                data = self._srtp.protect_rtp(data)
            except ValueError as error:  # SrtpError: libsrtp refused it
                self._refused(error)
                return
        self._send(self._rtp, data, remote)
        if packet.ssrc == self.ssrc:
            self.packets_sent += 1
            self.octets_sent += len(packet.payload)
            self._last_rtp_ts = packet.timestamp
            self._last_send = self._loop.time()
            self._sent_since_report = True

    def send_rtcp(self, *packets: RtcpPacket) -> None:
        """Send a compound RTCP packet (our SR/RR and SDES first, RFC 3550 §6.1)."""
        remote = self.source.rtcp_destination
        if remote is None or self._closed:
            return
        sock = self._rtp if self.source.rtcp_mux else self._rtcp
        data = compound(self._report(), self._sdes(), *packets)
        if self._srtp is not None:
            try:
                data = self._srtp.protect_rtcp(data)
            except ValueError as error:  # SrtpError: libsrtp refused it
                self._refused(error)
                return
        self._send(sock, data, remote)

    def _refused(self, error: ValueError) -> None:
        """A packet libsrtp would not protect is not sent in clear: dropped and counted."""
        self.send_errors += 1
        log.debug("%s", error)

    def _send(self, sock: socket.socket, data: bytes, address: Address) -> None:
        """UDP semantics: a datagram the kernel cannot take now (full buffer, ICMP error
        pending) is dropped and counted, never queued and never raised to the caller."""
        try:
            sock.sendto(data, address)
        except OSError as error:
            self.send_errors += 1
            log.debug("RTP send to %s:%d failed: %s", *address, error)

    def send_pli(self, media_ssrc: int) -> None:
        """Ask the sender of ``media_ssrc`` for a keyframe (RFC 4585 §6.3.1)."""
        self.send_rtcp(PictureLossIndication(self.ssrc, media_ssrc))

    def send_fir(self, media_ssrc: int) -> None:
        """Full intra request (RFC 5104 §4.3.1), for senders that ignore PLI."""
        self._fir_seq = (self._fir_seq + 1) & 0xFF
        self.send_rtcp(FullIntraRequest(self.ssrc, ((media_ssrc, self._fir_seq),)))

    def _sdes(self) -> SourceDescription:
        return SourceDescription.cname(self.ssrc, self.cname)

    def _report(self) -> SenderReport | ReceiverReport:
        """SR if we sent RTP since the last report, else RR (RFC 3550 §6.4)."""
        now = self._loop.time()
        blocks = tuple(
            stats.report_block(now)
            for stats in list(self._stats.values())[:_MAX_REPORT_BLOCKS]
            if stats.received
        )
        if not self._sent_since_report:
            return ReceiverReport(self.ssrc, blocks)
        self._sent_since_report = False
        rtp_ts = self._last_rtp_ts + round((now - self._last_send) * self.clock_rate)
        return SenderReport(
            self.ssrc,
            ntp_from_unix(self._wall_clock()),
            rtp_ts & 0xFFFFFFFF,
            self.packets_sent,
            self.octets_sent,
            blocks,
        )

    async def _rtcp_loop(self) -> None:
        """Report every ``rtcp_interval`` × [0.5, 1.5] (RFC 3550 §6.3.1, simplified)."""
        rng = random.Random()
        while True:
            await grid_sleep(self.rtcp_interval * rng.uniform(0.5, 1.5), self.grid_stride)
            self.send_rtcp()

    async def close(self) -> None:
        """Send BYE (RFC 3550 §6.6), stop reporting and release both ports."""
        if self._closed:
            return
        if self._rtcp_task is not None:
            self._rtcp_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rtcp_task
        self.send_rtcp(Bye((self.ssrc,)))
        self._closed = True
        self._ticker.stop()
        self._rtp.close()
        self._rtcp.close()
