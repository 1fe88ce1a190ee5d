"""Which far end a stream takes media from: source validation for one RTP session.

An RTP port is open to anyone who can reach it, and UDP has no notion of a peer, so the
relay decides per packet whether it comes from the far end of the call. Without that, a
third party who sends a stream to the port takes over the broadcast, and a forged RTCP
sender report moves the A/V sync. The rules, for one stream:

1. Until the SDP names the far end, nothing is accepted (``early``), nor afterwards what
   arrived before it (a sender's backlog from before the answer must not count toward rule
   3's probation), except packets from the address the SDP then names that arrived at most
   ``ANSWER_RACE_S`` before it: a callee starts sending as it answers, and its RTP comes
   straight while its 200 OK comes through proxies, so its first packets (often a whole
   first keyframe) can arrive before the answer does.
2. Before a source is accepted, a packet from the address the SDP names, with a negotiated
   payload type, is accepted at once: the signalling told us who sends.
3. A packet from any other address is a *candidate*. It is accepted (latched: symmetric RTP
   through a NAT, RFC 4961) only once the same address and SSRC sent ``PROBATION_PACKETS``
   packets with consecutive sequence numbers (RFC 3550 A.1 probation), a negotiated payload
   type, over at least ``PROBATION_S``; a packet from the SDP address meanwhile wins at once.
4. The accepted source's address and SSRC are then locked (RFC 3550 §8.2 binds an SSRC to
   the transport address it came from): packets from other addresses (``rejected_source``)
   or with other SSRCs (``rejected_ssrc``) are dropped. A source change (a callee
   restarting its stream, a NAT rebinding, media re-anchored without signalling) passes
   rule 3 while the locked source has been silent for ``SOURCE_SILENCE_S``. A stream from
   the SDP address also passes rule 3 without that silence when the locked source was only
   latched: the SDP address outranks a guess. An off-path sender, who cannot see the
   stream, therefore cannot take it over while it is live.
5. RTCP is accepted only from the locked source's host at its RTP port (rtcp-mux,
   RFC 5761 §4), RTP port + 1 (RFC 3550 §11), the SDP's RTCP address (RFC 3605) when the
   source is the SDP's, or one RTCP port latched on the same host from a compound that
   speaks for the locked SSRC (a NAT maps RTCP ports their own way). Within an accepted
   compound only packets of the locked SSRC are kept (reports, SDES, BYE, feedback), so a
   sender report for another SSRC never reaches the A/V sync (``rejected_rtcp``). RTCP
   from the SDP's RTCP address before any RTP (a sender often reports just before its
   first packet) is held back, the latest compound only, and handed over once a source
   with that SSRC is accepted; otherwise it is dropped.
6. Our RTP goes to the SDP address until a source is accepted, then to that source
   (symmetric RTP, RFC 4961); our RTCP likewise, to where the accepted RTCP comes from.

Datagrams that are not RTP (STUN, DTLS and the like: RFC 7983 gives each its own range of
first bytes) fail to parse and count as ``malformed``. The accepted path costs a few
comparisons; everything else runs only for packets that are dropped or change the source.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Container
from dataclasses import dataclass

from sip2rtmp.netaddr import Address
from sip2rtmp.rtp.packet import RtpPacket
from sip2rtmp.rtp.rtcp import (
    Bye,
    FullIntraRequest,
    GenericNack,
    PictureLossIndication,
    ReceiverReport,
    RtcpPacket,
    SenderReport,
    SourceDescription,
)

__all__ = [
    "ANSWER_RACE_S",
    "PROBATION_PACKETS",
    "PROBATION_S",
    "SOURCE_SILENCE_S",
    "SourceChange",
    "SourceFilter",
    "SourceStats",
]

PROBATION_PACKETS = 4
"""Consecutive packets a candidate sends before it is accepted: RFC 3550 A.1 asks for two
(MIN_SEQUENTIAL); four make a stray or spoofed pair useless and still latch a NAT'ed
callee within 60 ms of 20 ms audio."""
PROBATION_S = 0.05
"""The least time a candidate's probation spans, so a burst cannot latch in one go and the
SDP-named source has that long to appear first."""
SOURCE_SILENCE_S = 1.0
"""How long the locked source must have sent nothing before another may replace it. A live
sender is never that quiet (audio every 20 ms, video at several frames a second; the video
leg takes the same second as "stopped sending"), so a live stream cannot be taken over; a
legitimate change without signalling costs at most about this much media."""
ANSWER_RACE_S = 0.5
"""How long before the SDP named the far end a packet from the named address may have
arrived and still be taken (rule 1): the answer's lead over its media through a proxy or two,
with room to spare; anything older is a stale backlog, not the start of the call."""
MAX_CANDIDATES = 8
"""Candidates (address, SSRC) on probation at once; the least recently seen goes first. A
sender spraying SSRCs can delay a NAT latch this way, never take over a stream."""


@dataclass(frozen=True, slots=True)
class SourceStats:
    """Packets dropped by source validation, and how often the accepted source changed."""

    early: int
    """RTP that came before the SDP named the far end (but for rule 1's race)."""
    malformed: int
    """Datagrams that were neither valid RTP nor valid RTCP."""
    rejected_source: int
    """RTP from an address other than the accepted source's (including candidates)."""
    rejected_ssrc: int
    """RTP from the accepted address with another SSRC."""
    rejected_payload_type: int
    """RTP with a payload type the SDP did not negotiate."""
    rejected_rtcp: int
    """RTCP packets from elsewhere, or for another SSRC than the accepted one."""
    rejected_srtp: int
    """SRTP and SRTCP that failed authentication or the replay check (RFC 3711 §3.3): sent
    without the call's key, altered, or repeated."""
    source_changes: int
    """Times another source replaced the accepted one."""


@dataclass(frozen=True, slots=True)
class SourceChange:
    """A source was accepted: for the log line that says who and why."""

    address: Address
    ssrc: int
    previous: tuple[Address, int] | None
    reason: str


class _AnyPayloadType:
    """Stands in for the negotiated payload types when none were given."""

    def __contains__(self, payload_type: object) -> bool:
        return True


_ANY = _AnyPayloadType()


class _Candidate:
    __slots__ = ("count", "next_seq", "since")

    def __init__(self, seq: int, since: float) -> None:
        self.next_seq = (seq + 1) & 0xFFFF
        self.count = 1
        self.since = since


def _ip_literal(address: Address) -> Address:
    """The address with its host in the form the socket reports senders in."""
    return str(ipaddress.ip_address(address[0])), address[1]


def _speaks_for(packet: RtcpPacket, ssrc: int) -> bool:
    """Whether an RTCP packet was sent by (or, for BYE, about) the source ``ssrc``."""
    if isinstance(packet, SenderReport | ReceiverReport):
        return packet.ssrc == ssrc
    if isinstance(packet, SourceDescription):
        return any(chunk.ssrc == ssrc for chunk in packet.chunks)
    if isinstance(packet, Bye):
        return ssrc in packet.ssrcs
    if isinstance(packet, GenericNack | PictureLossIndication | FullIntraRequest):
        return packet.sender_ssrc == ssrc
    return False


class SourceFilter:
    """Source validation for one stream; sans-I/O: the caller passes arrival times."""

    __slots__ = (
        "_candidates",
        "_ever_locked",
        "_from_sdp",
        "_last_at",
        "_named_at",
        "_on_change",
        "_payload_types",
        "_rtcp_latched",
        "_rtcp_sources",
        "_sdp_rtcp",
        "_sdp_rtp",
        "address",
        "early",
        "early_rtcp",
        "malformed",
        "rejected_payload_type",
        "rejected_rtcp",
        "rejected_source",
        "rejected_srtp",
        "rejected_ssrc",
        "rtcp_destination",
        "rtcp_mux",
        "rtp_destination",
        "source_changes",
        "ssrc",
    )

    def __init__(self, on_change: Callable[[SourceChange], None] | None = None) -> None:
        self.address: Address | None = None
        """The accepted source's address, None until one is accepted."""
        self.ssrc: int | None = None
        """The accepted source's SSRC."""
        self.rtp_destination: Address | None = None
        """Where our RTP goes: the SDP address, then the accepted source."""
        self.rtcp_destination: Address | None = None
        self.rtcp_mux = False
        self._named_at = 0.0
        """When the SDP first named the far end: what arrived before is early."""
        self.early = 0
        self.malformed = 0
        self.rejected_source = 0
        self.rejected_ssrc = 0
        self.rejected_payload_type = 0
        self.rejected_rtcp = 0
        self.rejected_srtp = 0
        self.source_changes = 0
        self._on_change = on_change
        self._sdp_rtp: Address | None = None
        self._sdp_rtcp: Address | None = None
        self._payload_types: Container[int] = _ANY
        self._last_at = 0.0
        self._from_sdp = False
        self._ever_locked = False
        self._candidates: dict[tuple[Address, int], _Candidate] = {}
        self._rtcp_sources: frozenset[Address] = frozenset()
        self._rtcp_latched = False
        self.early_rtcp: tuple[list[RtcpPacket], float] | None = None
        """RTCP from the SDP's RTCP address before any source was accepted (rule 5)."""

    @property
    def named(self) -> bool:
        """Whether the SDP has named the far end: until then every packet is early."""
        return self._sdp_rtp is not None

    @property
    def stats(self) -> SourceStats:
        return SourceStats(
            early=self.early,
            malformed=self.malformed,
            rejected_source=self.rejected_source,
            rejected_ssrc=self.rejected_ssrc,
            rejected_payload_type=self.rejected_payload_type,
            rejected_rtcp=self.rejected_rtcp,
            rejected_srtp=self.rejected_srtp,
            source_changes=self.source_changes,
        )

    def configure(
        self,
        rtp_address: Address,
        rtcp_address: Address,
        *,
        rtcp_mux: bool = False,
        payload_types: Collection[int] | None = None,
        now: float = 0.0,
    ) -> None:
        """What the SDP says, at ``now``: the far end's addresses (IP literals) and its
        payload types.

        The same RTP address again (the 200 OK after a 183, a refresh) keeps the accepted
        source; a new one (media moved by signalling) starts over under rule 2.
        """
        rtp = _ip_literal(rtp_address)
        if self._sdp_rtp is None:
            self._named_at = now
        self._sdp_rtcp = rtp if rtcp_mux else _ip_literal(rtcp_address)
        self.rtcp_mux = rtcp_mux
        self._payload_types = frozenset(payload_types) if payload_types else _ANY
        if rtp != self._sdp_rtp:
            self._sdp_rtp = rtp
            self.address = self.ssrc = None
            self._candidates.clear()
        if self.address is None:
            self.rtp_destination = rtp
            self.rtcp_destination = self._sdp_rtcp
        else:
            self._from_sdp = self.address == rtp
            self._set_rtcp_sources(self.address)

    def admit(self, packet: RtpPacket, address: Address, now: float) -> bool:
        """Whether to take this packet, which arrived from ``address`` at ``now``."""
        if (
            packet.ssrc == self.ssrc
            and address == self.address
            and packet.payload_type in self._payload_types
        ):
            self._last_at = now
            return True
        return self._admit_other(packet, address, now)

    def _admit_other(self, packet: RtpPacket, address: Address, now: float) -> bool:
        sdp = self._sdp_rtp
        if sdp is None or (
            now < self._named_at and (address != sdp or now < self._named_at - ANSWER_RACE_S)
        ):
            self.early += 1
            return False
        locked = self.address
        same_address = address == locked
        if packet.payload_type not in self._payload_types:
            if same_address and packet.ssrc == self.ssrc:
                self._last_at = now  # e.g. comfort noise: the source is alive
            self.rejected_payload_type += 1
            return False
        if locked is None:
            if address == sdp:
                self._lock(packet, address, now, "the address the SDP names")
                return True
            if self._probe(packet, address, now, "consistent stream (symmetric RTP)"):
                return True
        else:
            silence = now - self._last_at
            if silence >= SOURCE_SILENCE_S:
                why = f"consistent stream after {silence:.1f} s of silence"
                if self._probe(packet, address, now, why):
                    return True
            elif address == sdp and not self._from_sdp:
                why = "consistent stream from the address the SDP names"
                if self._probe(packet, address, now, why):
                    return True
        if same_address:
            self.rejected_ssrc += 1
        else:
            self.rejected_source += 1
        return False

    def _probe(self, packet: RtpPacket, address: Address, now: float, why: str) -> bool:
        """Advance a candidate's probation; True once it is accepted (rule 3)."""
        key = (address, packet.ssrc)
        seq = packet.sequence_number
        candidate = self._candidates.pop(key, None)
        if candidate is None or seq != candidate.next_seq:
            candidate = _Candidate(seq, now)
        else:
            candidate.count += 1
            candidate.next_seq = (seq + 1) & 0xFFFF
        if candidate.count >= PROBATION_PACKETS and now - candidate.since >= PROBATION_S:
            self._lock(packet, address, now, why)
            return True
        if len(self._candidates) >= MAX_CANDIDATES:
            del self._candidates[next(iter(self._candidates))]
        self._candidates[key] = candidate
        return False

    def _lock(self, packet: RtpPacket, address: Address, now: float, why: str) -> None:
        previous = None
        if self.address is not None and self.ssrc is not None:
            previous = (self.address, self.ssrc)
        if self._ever_locked:
            self.source_changes += 1
        self._ever_locked = True
        self.address, self.ssrc = address, packet.ssrc
        self._last_at = now
        self._from_sdp = address == self._sdp_rtp
        self._candidates.clear()
        self.rtp_destination = address
        self._set_rtcp_sources(address)
        if self._on_change is not None:
            self._on_change(SourceChange(address, packet.ssrc, previous, why))

    def _set_rtcp_sources(self, address: Address) -> None:
        """Where RTCP of the source at ``address`` may come from, and where ours goes."""
        host, port = address
        sources = {address}
        if self.rtcp_mux:
            self.rtcp_destination = address
        else:
            sources.add((host, port + 1))
            self.rtcp_destination = (host, port + 1)
            if self._from_sdp and self._sdp_rtcp is not None:
                sources.add(self._sdp_rtcp)
                self.rtcp_destination = self._sdp_rtcp
        self._rtcp_sources = frozenset(sources)
        self._rtcp_latched = False

    def admit_rtcp(
        self, packets: list[RtcpPacket], address: Address, now: float
    ) -> list[RtcpPacket]:
        """The packets of a compound that come from the accepted source (rule 5)."""
        ssrc = self.ssrc
        if ssrc is None and address == self._sdp_rtcp:
            if self.early_rtcp is not None:
                self.rejected_rtcp += len(self.early_rtcp[0])
            self.early_rtcp = (packets, now)
            return []
        if ssrc is None or not self._rtcp_from(address, packets, ssrc):
            self.rejected_rtcp += len(packets)
            return []
        kept = [packet for packet in packets if _speaks_for(packet, ssrc)]
        self.rejected_rtcp += len(packets) - len(kept)
        if kept and not self.rtcp_mux and address != self.address:
            self.rtcp_destination = address
        return kept

    def take_early_rtcp(self) -> tuple[list[RtcpPacket], float] | None:
        """RTCP held back from before the source was accepted: the packets of the accepted
        SSRC and their arrival time, once, right after the source is accepted."""
        early, self.early_rtcp = self.early_rtcp, None
        if early is None:
            return None
        packets, arrival = early
        ssrc = self.ssrc
        kept = [packet for packet in packets if ssrc is not None and _speaks_for(packet, ssrc)]
        self.rejected_rtcp += len(packets) - len(kept)
        return (kept, arrival) if kept else None

    def _rtcp_from(self, address: Address, packets: list[RtcpPacket], ssrc: int) -> bool:
        if address in self._rtcp_sources:
            return True
        locked = self.address
        if (
            self._rtcp_latched
            or self.rtcp_mux
            or locked is None
            or address[0] != locked[0]
            or not packets
            or not _speaks_for(packets[0], ssrc)
        ):
            return False
        self._rtcp_latched = True
        self._rtcp_sources |= {address}
        return True
