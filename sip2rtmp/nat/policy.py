"""Which address and ports the SDP offer advertises, and where that choice came from.

A far end that trusts our SDP sends its media to the `c=` address and `m=` ports, so behind
a NAT they must be the public side of the mapping, not the machine's own address. The
sources, most trusted first:

- ``configured``: `--public-address IP`, a static 1:1 NAT (a cloud VM's public IP); ports
  are kept by such a NAT, so the local ports stand.
- ``stun``: what a STUN server saw from each RTP and RTCP socket (RFC 5389), address and
  ports, right for a NAT that maps ports to other numbers.
- ``received``: the address the SIP server saw (`received`/`rport` of a Via, RFC 3581) with
  the local ports, right for a NAT that keeps ports when it can (most home routers).
- ``local``: the socket's own address, when nothing says otherwise or `--nat off`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sip2rtmp.netaddr import Address

NatMode = Literal["auto", "off"]
"""`auto` discovers and advertises the public address; `off` advertises the local one."""
AddressSource = Literal["configured", "stun", "received", "local"]


@dataclass(frozen=True)
class MappedPorts:
    """The public side of one media leg's RTP and RTCP sockets, as STUN saw them."""

    rtp: Address
    rtcp: Address


@dataclass(frozen=True)
class LegPorts:
    """A leg's ports as the offer writes them; `rtcp` is None when it is `rtp + 1`
    (RFC 3550 §11), else it goes into an `a=rtcp:` line (RFC 3605)."""

    rtp: int
    rtcp: int | None = None


@dataclass(frozen=True)
class OfferAddress:
    """What the SDP offer advertises: `c=`/`o=` host and each leg's ports."""

    host: str
    audio: LegPorts
    video: LegPorts | None
    source: AddressSource


def _leg(local_port: int, mapped: MappedPorts | None) -> LegPorts:
    if mapped is None:
        return LegPorts(local_port)
    rtcp = mapped.rtcp[1]
    return LegPorts(mapped.rtp[1], None if rtcp == mapped.rtp[1] + 1 else rtcp)


def choose_offer_address(
    mode: NatMode,
    local_ip: str,
    audio_port: int,
    video_port: int | None,
    *,
    configured: str | None = None,
    received: str | None = None,
    audio_stun: MappedPorts | None = None,
    video_stun: MappedPorts | None = None,
) -> OfferAddress:
    """The offer's addresses by the rules in the module docstring. STUN counts only when it
    answered for every leg from one public host: a half-mapped offer would send one leg's
    media astray."""
    if mode == "off":
        return OfferAddress(local_ip, LegPorts(audio_port), _local_video(video_port), "local")
    if configured is not None:
        return OfferAddress(
            configured, LegPorts(audio_port), _local_video(video_port), "configured"
        )
    legs = [audio_stun] + ([video_stun] if video_port is not None else [])
    hosts = {mapped.rtp[0] for mapped in legs if mapped is not None}
    if None not in legs and len(hosts) == 1:
        video = None if video_port is None else _leg(video_port, video_stun)
        return OfferAddress(hosts.pop(), _leg(audio_port, audio_stun), video, "stun")
    if received is not None and received != local_ip:
        return OfferAddress(received, LegPorts(audio_port), _local_video(video_port), "received")
    return OfferAddress(local_ip, LegPorts(audio_port), _local_video(video_port), "local")


def _local_video(video_port: int | None) -> LegPorts | None:
    return None if video_port is None else LegPorts(video_port)
