"""RtpEndpoint on 127.0.0.1: delivery, source validation and symmetric-RTP latching, RTCP
reports, PLI, close, SRTP."""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from sip2rtmp.nat.policy import MappedPorts
from sip2rtmp.net import rtp_endpoint
from sip2rtmp.net.rtp_endpoint import _RECEIVE_BUFFER, PortAllocationError, RtpEndpoint
from sip2rtmp.rtp.packet import RtpPacket
from sip2rtmp.rtp.rtcp import (
    Bye,
    FullIntraRequest,
    PictureLossIndication,
    ReceiverReport,
    RtcpPacket,
    SenderReport,
    SourceDescription,
    compound,
    ntp_middle32,
)
from sip2rtmp.rtp.source import PROBATION_PACKETS
from sip2rtmp.rtp.srtp import SrtpContext
from sip2rtmp.sip.sdes import SUITES, SrtpKeys
from tests.unit.net.test_stun_client import ScriptedServer
from tests.unit.rtp.test_srtp import mirrored_keys

LOCALHOST = "127.0.0.1"


class Sink:
    def __init__(self) -> None:
        self.rtp: list[tuple[RtpPacket, float]] = []
        self.rtcp: list[RtcpPacket] = []
        self.event = asyncio.Event()

    def on_rtp(self, packet: RtpPacket, arrival: float) -> None:
        self.rtp.append((packet, arrival))
        self.event.set()

    def on_rtcp(self, packets: list[RtcpPacket], arrival: float) -> None:
        self.rtcp += packets
        self.event.set()

    async def wait(self, predicate: object, timeout: float = 2.0) -> None:
        async def loop() -> None:
            while not predicate():  # type: ignore[operator]
                self.event.clear()
                await self.event.wait()

        await asyncio.wait_for(loop(), timeout)


async def pair(interval: float = 5.0) -> tuple[RtpEndpoint, Sink, RtpEndpoint, Sink]:
    a_sink, b_sink = Sink(), Sink()
    a = await RtpEndpoint.open(
        LOCALHOST,
        on_rtp=a_sink.on_rtp,
        on_rtcp=a_sink.on_rtcp,
        clock_rate=8000,
        rtcp_interval=interval,
    )
    b = await RtpEndpoint.open(
        LOCALHOST,
        on_rtp=b_sink.on_rtp,
        on_rtcp=b_sink.on_rtcp,
        clock_rate=8000,
        rtcp_interval=interval,
    )
    return a, a_sink, b, b_sink


def test_ports_are_an_even_odd_pair() -> None:
    async def main() -> None:
        a, _, b, _ = await pair()
        for endpoint in (a, b):
            assert endpoint.rtp_port % 2 == 0
            assert endpoint.rtcp_port == endpoint.rtp_port + 1
        await a.close()
        await b.close()

    asyncio.run(main())


def test_exhausted_range_raises() -> None:
    async def main() -> None:
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        blocker.bind((LOCALHOST, 0))
        port = blocker.getsockname()[1]
        even = port - port % 2
        try:
            with pytest.raises(PortAllocationError):
                await RtpEndpoint.open(
                    LOCALHOST,
                    on_rtp=lambda p, t: None,
                    clock_rate=8000,
                    port_range=(even, even + 1),
                    attempts=3,
                )
        finally:
            blocker.close()

    asyncio.run(main())


async def stream(sender: RtpEndpoint, count: int, first: int = 0, pt: int = 0) -> None:
    """``count`` packets 20 ms apart with consecutive sequence numbers, like a live sender."""
    for seq in range(first, first + count):
        sender.send_rtp(RtpPacket(pt, seq, 160 * seq, sender.ssrc, b"\xff" * 160))
        await asyncio.sleep(0.02)


def test_a_far_end_behind_a_nat_is_latched_once_consistent() -> None:
    async def main() -> None:
        a, a_sink, b, b_sink = await pair()
        # B was told a wrong address for A (as behind a NAT); A's consistent stream corrects it
        a.set_remote((LOCALHOST, b.rtp_port), (LOCALHOST, b.rtcp_port))
        b.set_remote((LOCALHOST, 9), (LOCALHOST, 11), accept_payload_types={0, 101})
        assert b.remote_rtp == (LOCALHOST, 9)
        a.send_rtp(RtpPacket(96, 99, 0, a.ssrc, b"rejected payload type"))
        await stream(a, 6)
        await b_sink.wait(lambda: len(b_sink.rtp) == 6 - (PROBATION_PACKETS - 1))
        assert [p.sequence_number for p, _ in b_sink.rtp] == list(range(PROBATION_PACKETS - 1, 6))
        arrivals = [t for _, t in b_sink.rtp]
        assert arrivals == sorted(arrivals)
        assert b.remote_rtp == (LOCALHOST, a.rtp_port)
        assert b.remote_rtcp == (LOCALHOST, a.rtp_port + 1)
        assert b.receive_stats[a.ssrc].received == len(b_sink.rtp)
        stats = b.source.stats
        assert (stats.rejected_payload_type, stats.rejected_source) == (1, PROBATION_PACKETS - 1)
        b.send_rtp(RtpPacket(0, 7, 0, b.ssrc, b"back"))
        await a_sink.wait(lambda: len(a_sink.rtp) == 1)
        await a.close()
        await b.close()

    asyncio.run(main())


def test_an_intruder_gets_neither_in_nor_our_media() -> None:
    """A third party on another port sends first and keeps sending, with a forged SR: B
    takes only A's stream and SRs, and sends its RTP to A alone."""

    async def main() -> None:
        a, a_sink, b, b_sink = await pair()
        c, c_sink, _, _ = await pair()
        a.set_remote((LOCALHOST, b.rtp_port), (LOCALHOST, b.rtcp_port))
        c.set_remote((LOCALHOST, b.rtp_port), (LOCALHOST, b.rtcp_port))
        b.set_remote((LOCALHOST, a.rtp_port), (LOCALHOST, a.rtcp_port), accept_payload_types={0})
        forged = SenderReport(c.ssrc, 1 << 40, 0, 1, 1)
        await stream(c, 2, first=500)
        for seq in range(20):
            a.send_rtp(RtpPacket(0, seq, 160 * seq, a.ssrc, b"a"))
            c.send_rtp(RtpPacket(0, 502 + seq, 160 * seq, c.ssrc, b"c"))
            c.send_rtcp(forged)
            await asyncio.sleep(0.02)
            b.send_rtp(RtpPacket(0, seq, 160 * seq, b.ssrc, b"b"))
        a.send_rtcp()
        await b_sink.wait(lambda: any(isinstance(p, SenderReport) for p in b_sink.rtcp))
        assert {p.ssrc for p, _ in b_sink.rtp} == {a.ssrc} and len(b_sink.rtp) == 20
        reports = [p for p in b_sink.rtcp if isinstance(p, SenderReport)]
        assert [r.ssrc for r in reports] == [a.ssrc]
        assert set(b.receive_stats) == {a.ssrc}
        stats = b.source.stats
        assert stats.rejected_source == 22 and stats.source_changes == 0
        assert stats.rejected_rtcp >= 2 * 20  # each forged compound: the SR and the SDES
        await a_sink.wait(lambda: len(a_sink.rtp) == 20)
        assert not c_sink.rtp and not c_sink.rtcp, "B sent media to the intruder"
        for endpoint in (a, b, c):
            await endpoint.close()

    asyncio.run(main())


def test_a_report_sent_just_before_the_first_packet_still_reaches_the_sync() -> None:
    """Senders often report right before their first packet: the SR from the SDP's RTCP
    address is held until the source is accepted, then handed over with its arrival time."""

    async def main() -> None:
        a, _, b, b_sink = await pair()
        a.set_remote((LOCALHOST, b.rtp_port), (LOCALHOST, b.rtcp_port))
        b.set_remote((LOCALHOST, a.rtp_port), (LOCALHOST, a.rtcp_port), accept_payload_types={0})
        report = SenderReport(a.ssrc, 1 << 40, 0, 0, 0)
        a.send_rtcp(report)
        await asyncio.sleep(0.1)
        assert not b_sink.rtcp, "nothing before a source is accepted"
        await stream(a, 1)
        await b_sink.wait(lambda: len(b_sink.rtp) == 1)
        assert report in b_sink.rtcp
        block = b.receive_stats[a.ssrc].report_block(asyncio.get_running_loop().time())
        assert block.lsr == ntp_middle32(report.ntp_timestamp)
        assert block.dlsr >= 0.1 * 65536, "delay since the SR counts from its arrival"
        await a.close()
        await b.close()

    asyncio.run(main())


def test_reports_pli_and_bye() -> None:
    async def main() -> None:
        a, a_sink, b, b_sink = await pair(interval=0.05)
        a.set_remote((LOCALHOST, b.rtp_port), (LOCALHOST, b.rtcp_port))
        b.set_remote((LOCALHOST, a.rtp_port), (LOCALHOST, a.rtcp_port))
        for seq in range(5):
            a.send_rtp(RtpPacket(0, seq, 160 * seq, a.ssrc, b"x" * 160))
        b.send_rtp(RtpPacket(0, 0, 0, b.ssrc, b"y"))  # RTCP is taken from a sending source
        await b_sink.wait(lambda: any(isinstance(p, SenderReport) for p in b_sink.rtcp))
        sr = next(p for p in b_sink.rtcp if isinstance(p, SenderReport))
        assert sr.ssrc == a.ssrc and sr.packet_count == 5 and sr.octet_count == 800
        assert any(isinstance(p, SourceDescription) for p in b_sink.rtcp)

        def report_about_a() -> bool:
            return any(
                isinstance(p, SenderReport | ReceiverReport)
                and p.reports
                and p.reports[0].ssrc == a.ssrc
                for p in a_sink.rtcp
            )

        await a_sink.wait(report_about_a)
        report = next(
            p for p in a_sink.rtcp if isinstance(p, SenderReport | ReceiverReport) and p.reports
        )
        assert report.reports[0].highest_sequence == 4
        assert report.reports[0].cumulative_lost == 0

        b.send_pli(a.ssrc)
        await a_sink.wait(lambda: any(isinstance(p, PictureLossIndication) for p in a_sink.rtcp))
        pli = next(p for p in a_sink.rtcp if isinstance(p, PictureLossIndication))
        assert pli == PictureLossIndication(b.ssrc, a.ssrc)
        await b.close()
        await a_sink.wait(lambda: any(isinstance(p, Bye) for p in a_sink.rtcp))
        await a.close()

    asyncio.run(main())


def test_rtcp_mux_shares_the_rtp_port() -> None:
    async def main() -> None:
        a, _a_sink, b, b_sink = await pair()
        a.set_remote((LOCALHOST, b.rtp_port), (LOCALHOST, b.rtp_port), rtcp_mux=True)
        b.set_remote((LOCALHOST, a.rtp_port), (LOCALHOST, a.rtp_port), rtcp_mux=True)
        a.send_rtp(RtpPacket(0, 1, 0, a.ssrc, b"x"))
        await b_sink.wait(lambda: b_sink.rtp)
        a.send_fir(b.ssrc)
        await b_sink.wait(lambda: any(isinstance(p, FullIntraRequest) for p in b_sink.rtcp))
        fir = next(p for p in b_sink.rtcp if isinstance(p, FullIntraRequest))
        assert fir == FullIntraRequest(a.ssrc, ((b.ssrc, 1),))
        await a.close()
        await b.close()

    asyncio.run(main())


def rtcp_walk(datagram: bytes) -> list[tuple[int, int, bytes]]:
    """(packet type, count or FMT, body) of each packet in a compound datagram, read from the
    common header (RFC 3550 §6.4.1, RFC 4585 §6.1): version 2, no padding, and lengths that
    add up to the datagram exactly."""
    packets = []
    offset = 0
    while offset < len(datagram):
        first, packet_type, words = struct.unpack_from("!BBH", datagram, offset)
        assert first >> 6 == 2 and not first & 0x20, f"bad header byte {first:#x}"
        end = offset + 4 * (words + 1)
        assert end <= len(datagram), "length runs past the datagram"
        packets.append((packet_type, first & 0x1F, datagram[offset + 4 : end]))
        offset = end
    return packets


def far_end() -> socket.socket:
    """A plain UDP socket standing in for the far end: it sees the bytes as sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCALHOST, 0))
    sock.settimeout(2.0)
    return sock


def assert_compound_from(endpoint: RtpEndpoint, packets: list[tuple[int, int, bytes]]) -> None:
    """A compound starts with our SR or RR and carries our CNAME (RFC 3550 §6.1)."""
    (first_type, _, first_body), (sdes_type, chunks, sdes_body) = packets[:2]
    assert first_type in (200, 201)
    assert struct.unpack_from("!I", first_body)[0] == endpoint.ssrc
    assert (sdes_type, chunks) == (202, 1)
    cname = endpoint.cname.encode()
    assert sdes_body[:6] == struct.pack("!IBB", endpoint.ssrc, 1, len(cname))
    assert sdes_body[6 : 6 + len(cname)] == cname


def test_pli_on_the_wire_names_the_sender_and_the_media_source() -> None:
    """RFC 4585 §6.3.1: PT=PSFB (206), FMT=1, no FCI; the sender's SSRC, then the SSRC of the
    media source asked for a picture. Sent from the RTCP port to the far end's RTCP port."""

    async def main() -> None:
        rtp, rtcp = far_end(), far_end()
        a = await RtpEndpoint.open(LOCALHOST, on_rtp=lambda p, t: None, clock_rate=90_000)
        try:
            a.set_remote(rtp.getsockname(), rtcp.getsockname())
            a.send_pli(0x8BADF00D)
            datagram, source = rtcp.recvfrom(2048)
        finally:
            await a.close()
            rtp.close()
            rtcp.close()
        assert source == (LOCALHOST, a.rtcp_port)
        packets = rtcp_walk(datagram)
        assert_compound_from(a, packets)
        assert packets[-1] == (206, 1, struct.pack("!II", a.ssrc, 0x8BADF00D))

    asyncio.run(main())


def test_fir_on_the_wire_with_rtcp_mux() -> None:
    """RFC 5104 §4.3.1: PT=PSFB (206), FMT=4, media source SSRC 0, one FCI entry of the target
    SSRC and a command sequence number that grows by one per new request (§4.3.1.1). With
    rtcp-mux (RFC 5761) it leaves from the RTP port to the far end's RTP port."""

    async def main() -> None:
        rtp, rtcp = far_end(), far_end()
        a = await RtpEndpoint.open(LOCALHOST, on_rtp=lambda p, t: None, clock_rate=90_000)
        received = []
        try:
            a.set_remote(rtp.getsockname(), rtp.getsockname(), rtcp_mux=True)
            for _ in range(3):
                a.send_fir(0x0C0FFEE0)
                received.append(rtp.recvfrom(2048))
            rtcp.settimeout(0.1)
            with pytest.raises(TimeoutError):
                rtcp.recvfrom(2048)
        finally:
            await a.close()
            rtp.close()
            rtcp.close()
        for sequence, (datagram, source) in enumerate(received, start=1):
            assert source == (LOCALHOST, a.rtp_port)
            packets = rtcp_walk(datagram)
            assert_compound_from(a, packets)
            fci = struct.pack("!IB3x", 0x0C0FFEE0, sequence)
            assert packets[-1] == (206, 4, struct.pack("!II", a.ssrc, 0) + fci)

    asyncio.run(main())


def test_arrival_is_the_kernel_receive_time_not_the_drain_time() -> None:
    """Sockets are drained on the 20 ms grid, but jitter needs when each datagram came."""

    async def main() -> tuple[list[float], list[float]]:
        loop = asyncio.get_running_loop()
        received: list[tuple[float, float]] = []
        a = await RtpEndpoint.open(LOCALHOST, on_rtp=lambda p, t: None, clock_rate=8000)
        b = await RtpEndpoint.open(
            LOCALHOST,
            on_rtp=lambda packet, arrival: received.append((arrival, loop.time())),
            clock_rate=8000,
        )
        a.set_remote((LOCALHOST, b.rtp_port), (LOCALHOST, b.rtcp_port))
        b.set_remote((LOCALHOST, a.rtp_port), (LOCALHOST, a.rtcp_port))
        sent: list[float] = []
        for seq in range(12):
            sent.append(loop.time())
            a.send_rtp(RtpPacket(0, seq, 160 * seq, a.ssrc, b"\xff" * 160))
            await asyncio.sleep(0.007)
        await asyncio.sleep(0.05)
        await a.close()
        await b.close()
        arrivals = [arrival for arrival, _ in received]
        delivered = [at for _, at in received]
        assert len(arrivals) == len(sent)
        # the first datagram may come before the kernel turned stamping on
        errors = [arrival - at for arrival, at in zip(arrivals[1:], sent[1:], strict=True)]
        waits = [done - arrival for done, arrival in zip(delivered, arrivals, strict=True)]
        return errors, waits

    errors, waits = asyncio.run(main())
    assert all(-0.001 <= error < 0.003 for error in errors), errors
    assert max(waits) > 0.004, "datagrams were not batched on the grid"


def test_what_the_callee_sends_before_its_answer_arrives_is_kept_for_the_answer() -> None:
    """A callee starts sending as it answers, and its 200 OK comes through proxies: its first
    packets (often a whole keyframe) arrive before the SDP names it. They wait unread and are
    taken once it does, with their arrival times; what another sender sent meanwhile is early."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, _, b, b_sink = await pair()
        c, _, _, _ = await pair()
        for sender in (a, c):
            sender.set_remote((LOCALHOST, b.rtp_port), (LOCALHOST, b.rtcp_port))
        sent = loop.time()
        for seq in range(PROBATION_PACKETS + 1):
            a.send_rtp(RtpPacket(96, seq, 3000 * seq, a.ssrc, b"a" * 1000))
            c.send_rtp(RtpPacket(96, 500 + seq, 3000 * seq, c.ssrc, b"c"))
        await asyncio.sleep(0.1)  # grid ticks pass before the answer
        assert not b_sink.rtp and b.source.early == 0, "read before the answer"
        b.set_remote((LOCALHOST, a.rtp_port), (LOCALHOST, a.rtcp_port))
        await b_sink.wait(lambda: len(b_sink.rtp) == PROBATION_PACKETS + 1)
        await asyncio.sleep(0.05)
        assert [packet.sequence_number for packet, _ in b_sink.rtp] == list(range(5))
        assert all(sent <= arrival < sent + 0.01 for _, arrival in b_sink.rtp)
        assert b.source.early == PROBATION_PACKETS + 1 and b.source.address is not None
        for endpoint in (a, b, c):
            await endpoint.close()

    asyncio.run(main())


def test_a_burst_of_large_datagrams_waits_whole_for_the_next_drain() -> None:
    """A high-definition keyframe comes as a hundred-odd datagrams within a millisecond and
    waits for the next drain: the receive buffer keeps all of it."""
    burst = 160
    allowed = int(Path("/proc/sys/net/core/rmem_max").read_text())
    if allowed < _RECEIVE_BUFFER:
        pytest.skip(f"net.core.rmem_max ({allowed}) caps the receive buffer below 1 MiB")

    async def main() -> int:
        a, _, b, b_sink = await pair()
        a.set_remote((LOCALHOST, b.rtp_port), (LOCALHOST, b.rtcp_port))
        b.set_remote((LOCALHOST, a.rtp_port), (LOCALHOST, a.rtcp_port))
        for seq in range(burst):  # no await in between: all of it before any drain
            a.send_rtp(RtpPacket(96, seq, 0, a.ssrc, bytes(1200), marker=seq == burst - 1))
        await asyncio.sleep(0.2)
        await a.close()
        await b.close()
        return len(b_sink.rtp)

    assert asyncio.run(main()) == burst


def test_on_a_coarser_stride_each_wake_up_drains_each_socket_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every 80 ms the drain's 40 ms tick runs twice in one wake-up; one drain is enough."""
    drained: list[float] = []
    real_drain = rtp_endpoint._drain

    def counting(sock: socket.socket, handle: Any, loop_now: float) -> None:
        drained.append(loop_now)
        real_drain(sock, handle, loop_now)

    monkeypatch.setattr(rtp_endpoint, "_drain", counting)

    async def main() -> None:
        endpoint = await RtpEndpoint.open(
            LOCALHOST, on_rtp=lambda p, t: None, clock_rate=8000, grid_stride=2
        )
        endpoint.set_remote((LOCALHOST, 9), (LOCALHOST, 9))  # the sockets are read from now
        await asyncio.sleep(0.5)
        await endpoint.close()

    asyncio.run(main())
    wake_ups = sorted(set(drained))
    assert len(drained) == 2 * len(wake_ups), "RTP and RTCP, once each per wake-up"
    assert 5 <= len(wake_ups) <= 8, wake_ups  # 0.5 s at 80 ms
    assert min(b - a for a, b in itertools.pairwise(wake_ups)) > 0.06, wake_ups


# ---- SRTP ----------------------------------------------------------------------------------

TONE = bytes(range(160))
"""A payload that cannot hide in noise: a run of every byte value."""


@pytest.mark.parametrize("rtcp_mux", [False, True])
def test_srtp_endpoints_exchange_rtp_and_rtcp(rtcp_mux: bool) -> None:
    """Two endpoints with mirrored keys: RTP both ways, sender reports, PLI and BYE arrive
    decrypted, with or without rtcp-mux (SRTCP on the RTP port told apart by its header)."""

    async def main() -> None:
        a, a_sink, b, b_sink = await pair()
        a_keys, b_keys = mirrored_keys(SUITES[0])
        a_rtcp = a.rtp_port if rtcp_mux else a.rtcp_port
        b_rtcp = b.rtp_port if rtcp_mux else b.rtcp_port
        a.set_remote((LOCALHOST, b.rtp_port), (LOCALHOST, b_rtcp), rtcp_mux=rtcp_mux, srtp=a_keys)
        b.set_remote((LOCALHOST, a.rtp_port), (LOCALHOST, a_rtcp), rtcp_mux=rtcp_mux, srtp=b_keys)
        await stream(a, 5)
        a.send_rtcp()
        b.send_rtp(RtpPacket(0, 0, 0, b.ssrc, b"y"))
        await b_sink.wait(lambda: any(isinstance(p, SenderReport) for p in b_sink.rtcp))
        assert [(p.sequence_number, p.payload) for p, _ in b_sink.rtp] == [
            (seq, b"\xff" * 160) for seq in range(5)
        ]
        sr = next(p for p in b_sink.rtcp if isinstance(p, SenderReport))
        assert (sr.ssrc, sr.packet_count, sr.octet_count) == (a.ssrc, 5, 800)
        await a_sink.wait(lambda: len(a_sink.rtp) == 1)
        b.send_pli(a.ssrc)
        await a_sink.wait(lambda: PictureLossIndication(b.ssrc, a.ssrc) in a_sink.rtcp)
        await b.close()
        await a_sink.wait(lambda: Bye((b.ssrc,)) in a_sink.rtcp)
        assert (a.source.rejected_srtp, b.source.rejected_srtp) == (0, 0)
        assert a.source.stats.malformed == b.source.stats.malformed == 0
        await a.close()

    asyncio.run(main())


def test_srtp_on_the_wire_is_not_the_plain_packet() -> None:
    """What leaves the sockets is SRTP and SRTCP: no payload or CNAME in clear, and the far
    end's key opens each datagram to the packet we sent, up to the BYE at close."""

    async def main() -> None:
        rtp, rtcp = far_end(), far_end()
        ours, theirs = mirrored_keys(SUITES[2])
        peer = SrtpContext(theirs)
        a = await RtpEndpoint.open(LOCALHOST, on_rtp=lambda p, t: None, clock_rate=8000)
        try:
            a.set_remote(rtp.getsockname(), rtcp.getsockname(), srtp=ours)
            packet = RtpPacket(0, 1, 160, a.ssrc, TONE)
            a.send_rtp(packet)
            media, _ = rtp.recvfrom(2048)
            a.send_pli(0x8BADF00D)
            pli, _ = rtcp.recvfrom(2048)
            await a.close()
            bye, _ = rtcp.recvfrom(2048)
        finally:
            await a.close()
            rtp.close()
            rtcp.close()
        assert TONE[:8] not in media and peer.unprotect_rtp(media) == packet.serialize()
        cname = a.cname.encode()
        assert cname not in pli and cname not in bye
        opened = [peer.unprotect_rtcp(datagram) for datagram in (pli, bye)]
        assert None not in opened
        walked = [rtcp_walk(datagram) for datagram in opened if datagram is not None]
        assert walked[0][-1] == (206, 1, struct.pack("!II", a.ssrc, 0x8BADF00D))
        assert walked[1][-1] == (203, 1, struct.pack("!I", a.ssrc))

    asyncio.run(main())


class KeyedPeer:
    """The far end as a plain socket pair whose RTP and RTCP we protect with a chosen key."""

    def __init__(self) -> None:
        self.rtp, self.rtcp = far_end(), far_end()
        self.ssrc = 0x5EC0DE00

    def addresses(self) -> tuple[tuple[str, int], tuple[str, int]]:
        return self.rtp.getsockname(), self.rtcp.getsockname()

    def send(self, to: RtpEndpoint, seq: int, keys: SrtpKeys | None) -> bytes:
        data = RtpPacket(0, seq, 160 * seq, self.ssrc, TONE).serialize()
        if keys is not None:
            data = SrtpContext(keys).protect_rtp(data)
        self.rtp.sendto(data, (LOCALHOST, to.rtp_port))
        return data

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


def test_a_sender_without_the_key_is_dropped_and_counted_before_source_validation() -> None:
    """From the SDP's own address, a wrong key, plain RTP and plain or foreign RTCP deliver
    nothing, latch nothing and count as rejected_srtp, not as a source-validation drop."""

    async def main() -> None:
        peer = KeyedPeer()
        sink = Sink()
        b = await RtpEndpoint.open(
            LOCALHOST, on_rtp=sink.on_rtp, on_rtcp=sink.on_rtcp, clock_rate=8000
        )
        ours, theirs = mirrored_keys(SUITES[1])
        _, stranger = mirrored_keys(SUITES[1], seed=7)
        b.set_remote(*peer.addresses(), accept_payload_types={0}, srtp=ours)
        for seq in range(3):
            peer.send(b, seq, stranger)
            peer.send(b, 10 + seq, None)
        report = compound(SenderReport(peer.ssrc, 1 << 40, 0, 1, 1))
        peer.rtcp.sendto(report, (LOCALHOST, b.rtcp_port))
        peer.rtcp.sendto(SrtpContext(stranger).protect_rtcp(report), (LOCALHOST, b.rtcp_port))
        peer.send(b, 20, theirs)
        await sink.wait(lambda: sink.rtp)
        await asyncio.sleep(0.1)  # the RTCP socket is drained after the RTP one
        assert [(p.sequence_number, p.payload) for p, _ in sink.rtp] == [(20, TONE)]
        assert not sink.rtcp
        assert b.source.rejected_srtp == 8
        stats = b.source.stats
        assert (stats.malformed, stats.rejected_source, stats.rejected_rtcp) == (0, 0, 0)
        assert set(b.receive_stats) == {peer.ssrc}
        await b.close()
        peer.close()

    asyncio.run(main())


def test_a_rekey_replaces_the_context_and_the_same_keys_keep_it() -> None:
    """A re-INVITE's answer: the same keys keep the replay window (a replayed packet is
    still refused), new keys take over at once, and no keys means plain RTP again."""

    async def main() -> None:
        peer = KeyedPeer()
        sink = Sink()
        b = await RtpEndpoint.open(LOCALHOST, on_rtp=sink.on_rtp, clock_rate=8000)
        old_ours, old_theirs = mirrored_keys(SUITES[0])
        new_ours, new_theirs = mirrored_keys(SUITES[2], seed=3)

        async def delivered(count: int) -> list[int]:
            await sink.wait(lambda: len(sink.rtp) >= count)
            return [p.sequence_number for p, _ in sink.rtp]

        b.set_remote(*peer.addresses(), srtp=old_ours)
        replay = peer.send(b, 1, old_theirs)
        assert await delivered(1) == [1]
        b.set_remote(
            *peer.addresses(), srtp=SrtpKeys(SUITES[0], old_ours.local_key, old_ours.remote_key)
        )
        peer.rtp.sendto(replay, (LOCALHOST, b.rtp_port))
        peer.send(b, 2, old_theirs)
        assert await delivered(2) == [1, 2]
        assert b.source.rejected_srtp == 1, "the replay, refused by the kept context"
        b.set_remote(*peer.addresses(), srtp=new_ours)
        peer.send(b, 3, old_theirs)
        peer.send(b, 4, new_theirs)
        assert await delivered(3) == [1, 2, 4]
        assert b.source.rejected_srtp == 2
        b.set_remote(*peer.addresses())
        peer.send(b, 5, None)
        assert await delivered(4) == [1, 2, 4, 5]
        assert {p.payload for p, _ in sink.rtp} == {TONE}
        assert b.source.rejected_srtp == 2
        await b.close()
        peer.close()

    asyncio.run(main())


def test_stun_is_still_answered_with_srtp_on() -> None:
    """STUN (first byte 0 to 3) takes its own path past the SRTP check on both sockets."""

    async def main() -> None:
        server = await ScriptedServer.start()
        ours, _ = mirrored_keys(SUITES[0])
        endpoint = await RtpEndpoint.open(LOCALHOST, on_rtp=lambda p, t: None, clock_rate=8000)
        endpoint.set_remote((LOCALHOST, 9), (LOCALHOST, 11), srtp=ours)
        mapped = await endpoint.discover_mapping(server.address)
        port = endpoint.rtp_port
        assert mapped == MappedPorts((LOCALHOST, port), (LOCALHOST, port + 1))
        assert endpoint.source.rejected_srtp == 0 and endpoint.source.stats.malformed == 0
        await endpoint.close()
        server.close()

    asyncio.run(main())
