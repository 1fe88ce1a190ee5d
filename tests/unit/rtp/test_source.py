"""SourceFilter: who a stream takes media from (RFC 3550 §8.2/A.1, RFC 4961, RFC 5761)."""

from __future__ import annotations

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from sip2rtmp.rtp.jitterbuffer import JitterBuffer, Resync
from sip2rtmp.rtp.packet import RtpPacket
from sip2rtmp.rtp.rtcp import (
    Bye,
    FullIntraRequest,
    PictureLossIndication,
    ReceiverReport,
    RtcpPacket,
    SenderReport,
    SourceDescription,
)
from sip2rtmp.rtp.source import (
    ANSWER_RACE_S,
    MAX_CANDIDATES,
    PROBATION_PACKETS,
    SOURCE_SILENCE_S,
    SourceChange,
    SourceFilter,
    SourceStats,
)

CALLEE = ("198.51.100.7", 40000)
"""The address the SDP names."""
CALLEE_RTCP = ("198.51.100.7", 40001)
NAT = ("203.0.113.9", 61000)
"""Where a callee behind a NAT really sends from."""
INTRUDER = ("198.51.100.7", 40100)
"""A third party on the callee's host, another port: the integration test's setup."""
CALLEE_SSRC = 0x1111
INTRUDER_SSRC = 0x6666
PCMU, EVENT = 0, 101


class Stream:
    """A sender of 20 ms packets with consecutive sequence numbers."""

    def __init__(self, ssrc: int, address: tuple[str, int], seq: int = 1000) -> None:
        self.ssrc, self.address, self.seq = ssrc, address, seq

    def packet(self, payload_type: int = PCMU) -> RtpPacket:
        self.seq = (self.seq + 1) & 0xFFFF
        return RtpPacket(payload_type, self.seq, 160 * self.seq, self.ssrc, b"\xff" * 160)

    def send(self, source: SourceFilter, now: float, payload_type: int = PCMU) -> bool:
        return source.admit(self.packet(payload_type), self.address, now)


def negotiated(changes: list[SourceChange] | None = None) -> SourceFilter:
    source = SourceFilter(on_change=changes.append if changes is not None else None)
    source.configure(CALLEE, CALLEE_RTCP, payload_types={PCMU, EVENT})
    return source


def run(source: SourceFilter, stream: Stream, start: float, count: int) -> list[bool]:
    return [stream.send(source, start + 0.02 * i) for i in range(count)]


def test_nothing_is_accepted_before_the_sdp_names_the_far_end() -> None:
    source = SourceFilter()
    assert not Stream(CALLEE_SSRC, CALLEE).send(source, 0.0)
    assert source.early == 1 and source.rtp_destination is None


def test_what_arrived_before_the_sdp_named_the_far_end_is_early_even_drained_after() -> None:
    """Sockets are drained in batches (every 80 ms by default): a sender's packets from before
    the answer, read after it, are early and do not pass probation as a stream of their own."""
    source = SourceFilter()
    source.configure(CALLEE, CALLEE_RTCP, payload_types={PCMU}, now=1.0)
    intruder = Stream(INTRUDER_SSRC, INTRUDER)
    assert not any(run(source, intruder, 0.92, PROBATION_PACKETS))  # 0.92-0.98 s
    assert source.early == PROBATION_PACKETS and source.address is None
    assert Stream(CALLEE_SSRC, CALLEE).send(source, 1.01), "the callee still wins at once"
    assert (source.address, source.ssrc) == (CALLEE, CALLEE_SSRC)


def test_the_callees_own_packets_that_raced_its_answer_are_taken() -> None:
    """The callee's RTP comes straight while its 200 OK comes through proxies: what it sent
    from the SDP's address shortly before the SDP named it is its media, not a backlog."""
    source = SourceFilter()
    source.configure(CALLEE, CALLEE_RTCP, payload_types={PCMU}, now=1.0)
    callee = Stream(CALLEE_SSRC, CALLEE)
    assert not callee.send(source, 1.0 - ANSWER_RACE_S - 0.01), "a stale backlog is early"
    assert source.early == 1 and source.address is None
    assert callee.send(source, 1.0 - ANSWER_RACE_S + 0.01)
    assert (source.address, source.ssrc) == (CALLEE, CALLEE_SSRC)
    assert all(run(source, callee, 1.0 - ANSWER_RACE_S + 0.03, 10))


def test_the_sdp_address_is_accepted_at_once_and_locked() -> None:
    changes: list[SourceChange] = []
    source = negotiated(changes)
    assert source.rtp_destination == CALLEE and source.rtcp_destination == CALLEE_RTCP
    assert all(run(source, Stream(CALLEE_SSRC, CALLEE), 0.0, 5))
    assert (source.address, source.ssrc) == (CALLEE, CALLEE_SSRC)
    assert changes == [SourceChange(CALLEE, CALLEE_SSRC, None, "the address the SDP names")]
    assert source.stats == SourceStats(0, 0, 0, 0, 0, 0, 0, 0)


def test_an_intruder_during_a_live_stream_is_dropped_and_counted() -> None:
    source = negotiated()
    callee, intruder = Stream(CALLEE_SSRC, CALLEE), Stream(INTRUDER_SSRC, INTRUDER)
    same_host_other_ssrc = Stream(INTRUDER_SSRC, CALLEE)
    for i in range(200):
        now = 0.02 * i
        assert callee.send(source, now)
        assert not intruder.send(source, now + 0.001)
        assert not same_host_other_ssrc.send(source, now + 0.002)
    assert source.rejected_source == 200 and source.rejected_ssrc == 200
    assert (source.address, source.ssrc, source.source_changes) == (CALLEE, CALLEE_SSRC, 0)
    assert source.rtp_destination == CALLEE


@pytest.mark.parametrize("intruder_packets", [1, PROBATION_PACKETS - 1])
def test_an_intruder_sending_first_is_not_latched_once_the_callee_sends(
    intruder_packets: int,
) -> None:
    """Fewer than a probation's packets before the callee's first: the callee wins at once."""
    source = negotiated()
    intruder = Stream(INTRUDER_SSRC, INTRUDER)
    assert not any(run(source, intruder, 0.0, intruder_packets))
    callee = Stream(CALLEE_SSRC, CALLEE)
    for i in range(50):
        now = 0.02 * (intruder_packets + i)
        assert callee.send(source, now)
        assert not intruder.send(source, now + 0.001)
    assert (source.address, source.ssrc) == (CALLEE, CALLEE_SSRC)
    assert source.rtp_destination == CALLEE and source.source_changes == 0


def test_a_latched_intruder_gives_way_to_the_sdp_address_without_silence() -> None:
    """An intruder that got latched before the callee's first packet keeps it no longer than
    a probation: the address the SDP names outranks a latched one."""
    source = negotiated()
    intruder, callee = Stream(INTRUDER_SSRC, INTRUDER), Stream(CALLEE_SSRC, CALLEE)
    accepted = run(source, intruder, 0.0, 10)
    assert accepted[PROBATION_PACKETS - 1] and not any(accepted[: PROBATION_PACKETS - 1])
    taken = []
    for i in range(10):
        now = 0.2 + 0.02 * i
        intruder.send(source, now)
        taken.append(callee.send(source, now + 0.001))
    assert taken.index(True) == PROBATION_PACKETS - 1 and all(taken[PROBATION_PACKETS - 1 :])
    assert (source.address, source.ssrc, source.source_changes) == (CALLEE, CALLEE_SSRC, 1)
    for i in range(100):
        now = 0.5 + 0.02 * i
        assert callee.send(source, now)
        assert not intruder.send(source, now + 0.001), "the intruder came back"


def test_a_nat_source_is_latched_once_consistent() -> None:
    changes: list[SourceChange] = []
    source = negotiated(changes)
    nat = Stream(CALLEE_SSRC, NAT)
    accepted = run(source, nat, 0.0, 6)
    first = PROBATION_PACKETS - 1
    assert accepted == [False] * first + [True] * (6 - first)
    assert source.rtp_destination == NAT and source.rtcp_destination == (NAT[0], NAT[1] + 1)
    assert source.rejected_source == first
    assert changes[0].reason == "consistent stream (symmetric RTP)"


def test_probation_needs_consecutive_numbers_a_negotiated_type_and_time() -> None:
    source = negotiated()
    burst = Stream(CALLEE_SSRC, NAT)
    assert not any(burst.send(source, 0.0001 * i) for i in range(3 * PROBATION_PACKETS))
    gaps = Stream(0x2222, NAT)
    for i in range(20):
        gaps.seq += 1  # every other number: never consecutive
        assert not gaps.send(source, 1.0 + 0.02 * i)
    wrong_type = Stream(0x3333, NAT)
    assert not any(wrong_type.send(source, 2.0 + 0.02 * i, payload_type=8) for i in range(20))
    assert source.rejected_payload_type == 20
    assert source.address is None


def test_a_source_changes_only_after_silence_and_consistency() -> None:
    source = negotiated()
    callee = Stream(CALLEE_SSRC, CALLEE)
    assert all(run(source, callee, 0.0, 10))
    last = 0.18
    restarted = Stream(0x7777, CALLEE, seq=5)
    # While the callee sends, a new SSRC from its own address is refused however consistent.
    for i in range(50):
        now = last + 0.02 * (i + 1)
        assert callee.send(source, now)
        assert not restarted.send(source, now + 0.001)
    last += 1.0
    # After the silence the new stream passes probation, not at its first packet.
    start = last + SOURCE_SILENCE_S + 0.01
    accepted = run(source, restarted, start, 6)
    assert accepted == [False] * (PROBATION_PACKETS - 1) + [True] * (7 - PROBATION_PACKETS)
    assert (source.ssrc, source.source_changes) == (0x7777, 1)
    assert not callee.send(source, start + 0.2), "the old SSRC is now the stranger"


def test_the_locked_source_speaking_again_stops_a_takeover() -> None:
    source = negotiated()
    callee, other = Stream(CALLEE_SSRC, CALLEE), Stream(0x8888, NAT)
    run(source, callee, 0.0, 5)
    quiet = 0.08 + SOURCE_SILENCE_S + 0.01
    assert not other.send(source, quiet)
    assert not other.send(source, quiet + 0.02)
    assert callee.send(source, quiet + 0.03)
    assert not any(run(source, other, quiet + 0.04, 10))
    assert source.ssrc == CALLEE_SSRC


def test_comfort_noise_from_the_locked_source_counts_as_speaking() -> None:
    """A payload type we do not take (CN, RFC 3389) is dropped but proves the source alive."""
    source = negotiated()
    callee, other = Stream(CALLEE_SSRC, CALLEE), Stream(0x8888, NAT)
    run(source, callee, 0.0, 5)
    for i in range(100):
        now = 0.1 + 0.02 * i
        if i % 10 == 0:
            callee.send(source, now, payload_type=13)
        assert not other.send(source, now + 0.001)
    assert source.ssrc == CALLEE_SSRC and source.rejected_payload_type == 10


def test_same_sdp_address_keeps_the_lock_a_new_one_starts_over() -> None:
    source = negotiated()
    run(source, Stream(CALLEE_SSRC, NAT), 0.0, 6)
    source.configure(CALLEE, CALLEE_RTCP, payload_types={PCMU})  # the 200 OK after a 183
    assert source.address == NAT and source.rtp_destination == NAT
    moved = ("192.0.2.50", 50000)
    source.configure(moved, ("192.0.2.50", 50001), payload_types={PCMU})
    assert source.address is None and source.rtp_destination == moved
    assert Stream(0x9999, moved).send(source, 1.0)
    assert source.source_changes == 1


def test_candidates_on_probation_are_bounded() -> None:
    source = negotiated()
    for ssrc in range(10 * MAX_CANDIDATES):
        Stream(ssrc, NAT).send(source, 0.001 * ssrc)
    assert len(source._candidates) == MAX_CANDIDATES


# ---- RTCP -------------------------------------------------------------------------------


def sender_report(ssrc: int) -> SenderReport:
    return SenderReport(ssrc, 1 << 32, 0, 1, 160)


def locked() -> SourceFilter:
    source = negotiated()
    run(source, Stream(CALLEE_SSRC, CALLEE), 0.0, 3)
    return source


def test_rtcp_before_a_source_is_accepted_is_dropped_unless_from_the_sdp_address() -> None:
    source = negotiated()
    assert source.admit_rtcp([sender_report(CALLEE_SSRC)], ("192.0.2.1", 40001), 1.0) == []
    assert source.rejected_rtcp == 1
    assert source.admit_rtcp([sender_report(CALLEE_SSRC)], CALLEE_RTCP, 1.0) == [], "held"
    assert source.take_early_rtcp() is None, "nothing is handed over before a source"


def test_a_report_just_before_the_first_packet_is_handed_over_with_its_arrival() -> None:
    source = negotiated()
    first = sender_report(CALLEE_SSRC)
    latest = SenderReport(CALLEE_SSRC, 2 << 32, 8000, 2, 320)
    source.admit_rtcp([first], CALLEE_RTCP, 0.5)
    source.admit_rtcp([sender_report(INTRUDER_SSRC), latest], CALLEE_RTCP, 0.9)
    assert Stream(CALLEE_SSRC, CALLEE).send(source, 1.0)
    assert source.take_early_rtcp() == ([latest], 0.9)
    assert source.take_early_rtcp() is None, "once"
    assert source.rejected_rtcp == 2, "the older compound and the other SSRC's report"


def test_a_held_report_of_another_ssrc_is_never_handed_over() -> None:
    source = negotiated()
    source.admit_rtcp([sender_report(INTRUDER_SSRC)], CALLEE_RTCP, 0.5)
    assert Stream(CALLEE_SSRC, CALLEE).send(source, 1.0)
    assert source.take_early_rtcp() is None
    assert source.rejected_rtcp == 1


def test_a_forged_sender_report_never_passes() -> None:
    source = locked()
    forged_elsewhere: list[RtcpPacket] = [
        sender_report(INTRUDER_SSRC),
        SourceDescription.cname(INTRUDER_SSRC, "x"),
    ]
    for address in (INTRUDER, (INTRUDER[0], INTRUDER[1] + 1)):
        assert source.admit_rtcp(forged_elsewhere, address, 1.0) == []
    # From the callee's own RTCP port, but for another SSRC: dropped packet by packet.
    genuine = sender_report(CALLEE_SSRC)
    assert source.admit_rtcp([sender_report(INTRUDER_SSRC), genuine], CALLEE_RTCP, 1.0) == [genuine]
    assert source.rejected_rtcp == 5


def test_only_the_accepted_source_speaks_in_rtcp() -> None:
    source = locked()
    mine: list[RtcpPacket] = [
        ReceiverReport(CALLEE_SSRC),
        SourceDescription.cname(CALLEE_SSRC, "callee"),
        PictureLossIndication(CALLEE_SSRC, 42),
        FullIntraRequest(CALLEE_SSRC, ((42, 1),)),
        Bye((CALLEE_SSRC,)),
    ]
    theirs: list[RtcpPacket] = [
        PictureLossIndication(INTRUDER_SSRC, 42),
        FullIntraRequest(INTRUDER_SSRC, ((42, 1),)),
        Bye((INTRUDER_SSRC,)),
    ]
    assert source.admit_rtcp([*mine, *theirs], CALLEE_RTCP, 1.0) == mine
    assert source.rejected_rtcp == len(theirs)


def test_rtcp_from_a_nat_port_is_latched_once_for_the_locked_ssrc() -> None:
    source = negotiated()
    run(source, Stream(CALLEE_SSRC, NAT), 0.0, 6)
    mapped = (NAT[0], 61234)
    assert source.admit_rtcp([sender_report(INTRUDER_SSRC)], mapped, 1.0) == []
    report = sender_report(CALLEE_SSRC)
    assert source.admit_rtcp([report], mapped, 1.0) == [report]
    assert source.rtcp_destination == mapped
    assert source.admit_rtcp([report], (NAT[0], 61300), 1.0) == [], "only one latched RTCP port"
    assert source.admit_rtcp([report], ("192.0.2.1", 61234), 1.0) == [], "another host"


def test_rtcp_mux_takes_rtcp_from_the_rtp_address_only() -> None:
    source = SourceFilter()
    source.configure(CALLEE, CALLEE, rtcp_mux=True, payload_types={PCMU})
    assert source.rtcp_destination == CALLEE
    run(source, Stream(CALLEE_SSRC, CALLEE), 0.0, 2)
    report = sender_report(CALLEE_SSRC)
    assert source.admit_rtcp([report], CALLEE, 1.0) == [report]
    assert source.admit_rtcp([report], ("198.51.100.7", 40002), 1.0) == []


# ---- with the jitter buffer -------------------------------------------------------------


def played_ssrcs(buffer: JitterBuffer, until: float) -> tuple[list[int], int]:
    items = buffer.pop(until)
    ssrcs = [item.ssrc for item in items if isinstance(item, RtpPacket)]
    return ssrcs, sum(isinstance(item, Resync) for item in items)


def test_the_jitter_buffer_never_sees_the_intruder_and_still_follows_a_real_change() -> None:
    """Fed through the filter, the buffer keeps the callee's SSRC through an intrusion (the
    finding: it retired it for good) and resyncs once on a change after silence."""
    source, buffer = negotiated(), JitterBuffer(8000)
    callee, intruder = Stream(CALLEE_SSRC, CALLEE), Stream(INTRUDER_SSRC, INTRUDER)
    for i in range(100):
        now = 0.02 * i
        for stream, at in ((callee, now), (intruder, now + 0.005)):
            packet = stream.packet()
            if source.admit(packet, stream.address, at):
                buffer.push(packet, at)
    ssrcs, resyncs = played_ssrcs(buffer, 3.0)
    assert set(ssrcs) == {CALLEE_SSRC} and len(ssrcs) == 100 and resyncs == 0
    restarted = Stream(0x7777, CALLEE, seq=9)
    start = 2.0 + SOURCE_SILENCE_S
    for i in range(50):
        packet = restarted.packet()
        if source.admit(packet, restarted.address, start + 0.02 * i):
            buffer.push(packet, start + 0.02 * i)
    ssrcs, resyncs = played_ssrcs(buffer, start + 2.0)
    assert set(ssrcs) == {0x7777} and len(ssrcs) == 50 - (PROBATION_PACKETS - 1)
    assert resyncs == 1 and buffer.stats.late == 0


# ---- property: an off-path sender never gets in -------------------------------------------

hostile_bursts = st.lists(
    st.tuples(
        st.sampled_from([INTRUDER, NAT, (CALLEE[0], CALLEE[1] + 1), CALLEE]),
        st.one_of(st.sampled_from([CALLEE_SSRC, INTRUDER_SSRC]), st.integers(0, 0xFFFFFFFF)),
        st.integers(0, 0xFFFF),
        st.sampled_from([PCMU, EVENT, 8, 13, 96]),
        st.integers(1, 2 * PROBATION_PACKETS),
    ),
    max_size=30,
)
"""Runs of packets with consecutive sequence numbers from one address and SSRC: what a
candidate needs for probation, cut short or not."""


@pytest.mark.fuzz
@given(hostile_bursts, st.integers(0, 0xFFFF))
def test_an_off_path_sender_never_takes_over_a_live_stream(
    hostile: list[tuple[tuple[str, int], int, int, int, int]], callee_seq: int
) -> None:
    """Whatever a third party sends, from any address, with any SSRC (even the callee's, by
    a lucky guess), sequence and payload type, in runs long enough for probation or not,
    while the callee sends every 20 ms: only the callee's packets are accepted."""
    source = negotiated()
    callee = Stream(CALLEE_SSRC, CALLEE, seq=callee_seq)
    assert callee.send(source, 0.0)
    sent = longest = 0
    for address, ssrc, first, payload_type, length in hostile:
        if address == CALLEE and ssrc == CALLEE_SSRC:
            continue  # a forged copy of the callee's own address and SSRC is the callee
        if payload_type in (PCMU, EVENT):
            longest = max(longest, length)
        for seq in range(first, first + length):
            sent += 1
            now = 0.02 * sent
            assert callee.send(source, now)
            packet = RtpPacket(payload_type, seq & 0xFFFF, 0, ssrc, b"")
            assert not source.admit(packet, address, now + 0.01)
    event("a probation-length run" if longest >= PROBATION_PACKETS else "only short runs")
    assert (source.address, source.ssrc, source.source_changes) == (CALLEE, CALLEE_SSRC, 0)
    dropped = source.rejected_source + source.rejected_ssrc + source.rejected_payload_type
    assert dropped == sent
