"""How deep the property tests reach: the share of each fuzz strategy's examples that a parser
takes past its first check.

A fuzz test that only ever feeds its parser input refused at the first check proves that
garbage is refused, not that the parser is sound: the seed-mutation strategies start from
valid input (captures, RFC examples, values built from their fields) so that most examples
reach the deep code. This measures that on a fixed draw of examples per strategy, and holds
each to a floor. `python -m tests.unit.test_fuzz_depth` prints the table in docs/testing.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sip2rtmp.nat.stun import StunError, parse_binding_response
from sip2rtmp.relay.dtmf import parse_info_dtmf
from sip2rtmp.rtp.dtmf import parse_event
from sip2rtmp.rtp.h264 import (
    H264Depacketizer,
    H264ParseError,
    parse_sprop_parameter_sets,
    parse_sps,
)
from sip2rtmp.rtp.jitterbuffer import Lost
from sip2rtmp.rtp.packet import RtpPacket, RtpParseError
from sip2rtmp.rtp.rtcp import RtcpParseError, compound, parse_compound
from sip2rtmp.rtp.vp8 import Vp8Depacketizer, Vp8ParseError, parse_descriptor
from sip2rtmp.sip.auth import parse_challenges
from sip2rtmp.sip.message import SipParseError, StreamFramer, parse_message
from sip2rtmp.sip.sdes import CryptoAttribute, NoUsableCrypto
from sip2rtmp.sip.sdp import SdpParseError, negotiate
from tests.unit.nat import test_stun
from tests.unit.relay.test_dtmf_info import MUTATED_BODIES, RELAY
from tests.unit.rtp import test_h264, test_vp8
from tests.unit.rtp.mutations import mutated
from tests.unit.rtp.test_dtmf import damaged_event_streams
from tests.unit.rtp.test_rtcp import COMPOUNDS
from tests.unit.rtp.test_rtp_packet import packets
from tests.unit.sdp.test_sdp_hostile import (
    OURS,
    SRTP_OFFERS,
    CryptoValue,
    SrtpCase,
    crypto_values,
    mutated_answers,
    srtp_answers,
)
from tests.unit.sip import test_auth, test_message_hostile
from tests.unit.sip.test_useragent_hostile import PHASE_CASES, mutated_in_phase

DEPTH_EXAMPLES = 300
"""Examples drawn per strategy: enough to tell 30 % from 60 %, quick enough for every run."""


@dataclass(frozen=True)
class Depth:
    """A fuzz strategy, what it means there to get past the first check, and the share of
    examples that must."""

    parser: str
    strategy: st.SearchStrategy[Any]
    deep: Callable[[Any], bool]
    floor: float


def _refused(parse: Callable[[], object], *errors: type[Exception]) -> bool:
    try:
        parse()
    except errors:
        return True
    return False


def _rtp(data: bytes) -> bool:
    return not _refused(lambda: RtpPacket.parse(data), RtpParseError)


def _rtcp(data: bytes) -> bool:
    return not _refused(lambda: parse_compound(data), RtcpParseError)


def _sdp_stream(text: str) -> bool:
    """A negotiation that ends with a stream: what the relay acts on."""
    try:
        session = negotiate(OURS, text)
    except SdpParseError:
        return False
    return session.audio is not None or session.video is not None


def _crypto(crypto: CryptoValue) -> bool:
    """A line whose suite and key SRTP can be keyed with."""
    try:
        return CryptoAttribute.parse(crypto.value).usable
    except NoUsableCrypto:
        return False


def _srtp_stream(case: SrtpCase) -> bool:
    """A negotiation that ends with an encrypted stream: what the endpoint gets keys from."""
    try:
        session = negotiate(SRTP_OFFERS[case.mode], case.text)
    except SdpParseError:
        return False
    return any(s is not None and s.srtp is not None for s in (session.audio, session.video))


def _sip(case: tuple[bytes, list[tuple[int, bytes, int, int]]]) -> bool:
    data = test_message_hostile._mutate(*case)
    return not _refused(lambda: parse_message(data), SipParseError)


def _framed(case: tuple[list[bytes], list[tuple[int, bytes, int, int]]]) -> bool:
    """At least one message cut from the stream before it is given up on."""
    stream = test_message_hostile._mutate(b"".join(case[0]), case[1])
    framer = StreamFramer()
    try:
        return any(framer.feed(stream[at : at + 1_400]) for at in range(0, len(stream), 1_400))
    except SipParseError:
        return False


def _challenge(case: tuple[tuple[str, str, str], list[tuple[int, str, int, int]]]) -> bool:
    value = test_auth._mutate(case[0][0], case[1])
    try:
        return bool(parse_challenges([value], proxy=False))
    except SipParseError:
        return False


def _dtmf_events(packets: list[tuple[int, bytes]]) -> bool:
    """A telephone-event payload decoded, so the receiver's state is exercised."""
    return any(not _refused(partial(parse_event, payload), ValueError) for _, payload in packets)


def _info_digit(body: bytes) -> bool:
    return parse_info_dtmf(RELAY, body) is not None


def _sps(nal: bytes) -> bool:
    return not _refused(lambda: parse_sps(nal), H264ParseError)


def _sprop(value: bytes) -> bool:
    try:
        return bool(parse_sprop_parameter_sets(value.decode("latin-1")))
    except H264ParseError:
        return False


def _access_units(items: list[RtpPacket | Lost]) -> bool:
    depacketizer = H264Depacketizer(wait_for_keyframe=False)
    return any(depacketizer.push(item) for item in items)


def _vp8_descriptor(payload: bytes) -> bool:
    return not _refused(lambda: parse_descriptor(payload), Vp8ParseError)


def _vp8_frames(items: list[RtpPacket | Lost]) -> bool:
    depacketizer = Vp8Depacketizer(wait_for_keyframe=False)
    return any(depacketizer.push(item) for item in items)


def _stun(data: bytes) -> bool:
    """A mapped address taken from the answer to the transaction it names."""
    return not _refused(lambda: parse_binding_response(data, data[8:20]), StunError)


def _agent(case: tuple[str, tuple[str, int], int, bool, str]) -> bool:
    """The mutated message was taken in by the agent, not dropped as malformed."""
    return mutated_in_phase(*case).dropped == 0


DEPTHS = [
    Depth("RTP packet", mutated(packets().map(lambda case: case[1])), _rtp, 0.4),
    Depth("RTCP compound", mutated(COMPOUNDS.map(lambda p: compound(*p))), _rtcp, 0.25),
    Depth("SDP answer (a stream negotiated)", mutated_answers(), _sdp_stream, 0.45),
    Depth("SDES a=crypto value (usable)", crypto_values(), _crypto, 0.3),
    Depth("SDP answer with a=crypto (SRTP negotiated)", srtp_answers(), _srtp_stream, 0.08),
    Depth(
        "SIP message",
        st.tuples(test_message_hostile.messages(), test_message_hostile.MUTATIONS),
        _sip,
        0.55,
    ),
    Depth(
        "SIP over TCP (StreamFramer)",
        st.tuples(
            st.lists(st.binary(max_size=200) | test_message_hostile.FRAMED, max_size=6),
            test_message_hostile.MUTATIONS,
        ),
        _framed,
        0.55,
    ),
    Depth(
        "Digest challenges",
        st.tuples(test_auth.CHALLENGES, test_auth.MUTATIONS),
        _challenge,
        0.2,
    ),
    Depth("SIP user agent, each phase", PHASE_CASES, _agent, 0.45),
    Depth("INFO dtmf-relay body", MUTATED_BODIES, _info_digit, 0.5),
    Depth("RTP telephone-events", damaged_event_streams(), _dtmf_events, 0.55),
    Depth("H.264 SPS", test_h264.MUTATED_SPS, _sps, 0.3),
    Depth("H.264 sprop-parameter-sets", test_h264.SPROP_VALUES, _sprop, 0.5),
    Depth("H.264 depacketizer", test_h264.damaged_h264_streams(), _access_units, 0.6),
    Depth("VP8 payload descriptor", test_vp8.MUTATED_DESCRIPTORS, _vp8_descriptor, 0.75),
    Depth("VP8 depacketizer", test_vp8.damaged_vp8_streams(), _vp8_frames, 0.6),
    Depth("STUN Binding answer", test_stun.answers(), _stun, 0.25),
]


def share_deep(depth: Depth) -> float:
    """The share of `DEPTH_EXAMPLES` examples, drawn the same way every run, that get past the
    first check."""
    outcomes: list[bool] = []

    @settings(
        max_examples=DEPTH_EXAMPLES,
        database=None,
        deadline=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(depth.strategy)
    def draw(example: Any) -> None:
        outcomes.append(bool(depth.deep(example)))

    draw()
    assert len(outcomes) >= DEPTH_EXAMPLES // 2, f"only {len(outcomes)} examples drawn"
    return sum(outcomes) / len(outcomes)


@pytest.mark.parametrize("depth", DEPTHS, ids=[depth.parser for depth in DEPTHS])
def test_most_fuzz_examples_reach_past_the_first_check(depth: Depth) -> None:
    share = share_deep(depth)
    assert share >= depth.floor, f"{depth.parser}: {share:.0%} parsed, floor {depth.floor:.0%}"


def test_an_unseeded_strategy_would_fail_the_floor() -> None:
    """The measure can tell: random bytes almost never parse as SIP or RTCP."""
    sip = Depth("SIP, random bytes", st.tuples(st.binary(max_size=600), st.just([])), _sip, 0)
    rtcp = Depth("RTCP, random bytes", st.binary(max_size=120), _rtcp, 0)
    assert share_deep(sip) < 0.05
    assert share_deep(rtcp) < 0.05


if __name__ == "__main__":
    print("| parser | share parsed | floor |")
    print("|---|---|---|")
    for depth in DEPTHS:
        print(f"| {depth.parser} | {share_deep(depth):.0%} | {depth.floor:.0%} |")
