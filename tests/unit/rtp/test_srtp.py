"""SrtpContext: each suite protects and unprotects RTP and RTCP, and what arrives tampered,
replayed, under another key or as no SRTP at all comes out as None, never as an exception."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip2rtmp.rtp.packet import RtpPacket
from sip2rtmp.rtp.rtcp import SenderReport, SourceDescription, compound
from sip2rtmp.rtp.srtp import SrtpContext, SrtpError
from sip2rtmp.sip.sdes import KEY_LENGTHS, SUITES, SrtpKeys
from tests.unit.rtp.mutations import mutated

SRTP_TAG = {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 4, "AEAD_AES_128_GCM": 16}
"""Bytes each suite appends to an RTP packet: the HMAC-SHA1 tag cut to 80 or 32 bits (RFC 3711
§4.2), the GCM tag (RFC 7714 §7)."""
SRTCP_TAG = {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 10, "AEAD_AES_128_GCM": 16}
"""SRTCP keeps the 80-bit tag even in the _32 suite (RFC 4568 §6.2.2); every SRTCP packet also
carries its 4-byte E flag and index (RFC 3711 §3.4)."""


def mirrored_keys(suite: str, seed: int = 0) -> tuple[SrtpKeys, SrtpKeys]:
    """Our keys and the peer's for one stream: each side's local key is the other's remote."""
    length = KEY_LENGTHS[suite]
    ours = bytes((seed + i) & 0xFF for i in range(length))
    theirs = bytes((seed + 0x80 + i) & 0xFF for i in range(length))
    return SrtpKeys(suite, ours, theirs), SrtpKeys(suite, theirs, ours)


def mirrored(suite: str, seed: int = 0) -> tuple[SrtpContext, SrtpContext]:
    ours, theirs = mirrored_keys(suite, seed)
    return SrtpContext(ours), SrtpContext(theirs)


def rtp(seq: int, payload: bytes = b"\xd5" * 160) -> bytes:
    return RtpPacket(0, seq, 160 * seq, 0x11223344, payload).serialize()


RTCP = compound(
    SenderReport(0x11223344, 1 << 40, 160, 1, 160), SourceDescription.cname(0x11223344, "a@b")
)


@pytest.mark.parametrize("suite", SUITES)
def test_each_suite_round_trips_rtp_and_rtcp_with_its_overhead(suite: str) -> None:
    sender, receiver = mirrored(suite)
    for seq in (7, 8, 9):
        clear = rtp(seq)
        protected = sender.protect_rtp(clear)
        assert len(protected) == len(clear) + SRTP_TAG[suite]
        assert protected[:12] == clear[:12], "the RTP header stays in clear (RFC 3711 §3.1)"
        assert protected[12:172] != clear[12:], "the payload is encrypted"
        assert receiver.unprotect_rtp(protected) == clear
    protected = sender.protect_rtcp(RTCP)
    assert len(protected) == len(RTCP) + 4 + SRTCP_TAG[suite]
    assert protected[:8] == RTCP[:8], "the first header and SSRC stay in clear (§3.4)"
    assert protected[8 : len(RTCP)] != RTCP[8:]
    assert receiver.unprotect_rtcp(protected) == RTCP


@pytest.mark.parametrize("suite", SUITES)
def test_tampered_replayed_and_foreign_packets_are_none(suite: str) -> None:
    sender, receiver = mirrored(suite)
    first, second = sender.protect_rtp(rtp(1)), sender.protect_rtp(rtp(2))
    for at in (2, 12, len(first) - 1):  # header, payload, tag
        tampered = bytearray(first)
        tampered[at] ^= 0x01
        assert receiver.unprotect_rtp(bytes(tampered)) is None
    assert receiver.unprotect_rtp(first) == rtp(1), "tampered copies change no state"
    assert receiver.unprotect_rtp(first) is None, "a replay (RFC 3711 §3.3.2)"
    assert receiver.unprotect_rtp(second) == rtp(2)
    stranger, _ = mirrored(suite, seed=1)
    assert receiver.unprotect_rtp(stranger.protect_rtp(rtp(3))) is None
    assert receiver.unprotect_rtp(rtp(4)) is None, "plain RTP on an SRTP stream"
    reverse = sender.unprotect_rtp(sender.protect_rtp(rtp(5)))
    assert reverse is None, "our own key does not open what we sent: one key per direction"
    report = sender.protect_rtcp(RTCP)
    assert receiver.unprotect_rtcp(report[:-1] + bytes((report[-1] ^ 1,))) is None
    assert receiver.unprotect_rtcp(report) == RTCP
    assert receiver.unprotect_rtcp(report) is None, "an SRTCP replay"
    assert receiver.unprotect_rtcp(RTCP) is None, "plain RTCP on an SRTP stream"


def test_a_sequence_number_is_never_protected_twice() -> None:
    """Same index, same keystream (RFC 3711 §9.1): the second packet is refused, not sent."""
    sender, _ = mirrored(SUITES[0])
    sender.protect_rtp(rtp(1, b"first"))
    with pytest.raises(SrtpError):
        sender.protect_rtp(rtp(1, b"other"))
    with pytest.raises(SrtpError):
        sender.protect_rtp(rtp(2, bytes(1500)))  # past libsrtp's buffer


def test_unknown_suites_and_wrong_key_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="NULL_CIPHER"):
        SrtpContext(SrtpKeys("NULL_CIPHER", bytes(30), bytes(30)))
    with pytest.raises(ValueError, match="30-byte"):
        SrtpContext(SrtpKeys("AES_CM_128_HMAC_SHA1_80", bytes(30), bytes(28)))
    with pytest.raises(ValueError, match="28-byte"):
        SrtpContext(SrtpKeys("AEAD_AES_128_GCM", bytes(30), bytes(30)))


@pytest.mark.fuzz
@given(st.binary(max_size=200))
def test_unprotect_of_arbitrary_bytes_is_none(data: bytes) -> None:
    _, receiver = mirrored(SUITES[0])
    assert receiver.unprotect_rtp(data) is None
    assert receiver.unprotect_rtcp(data) is None


def protected_packets(suite: str) -> st.SearchStrategy[tuple[bytes, bytes]]:
    """(clear, protected) RTP and RTCP datagrams of one suite, each from a fresh sender."""

    def build(seq: int, payload: bytes) -> tuple[bytes, bytes]:
        sender, _ = mirrored(suite)
        clear = rtp(seq, payload)
        return clear, sender.protect_rtp(clear)

    def build_rtcp(payload: bytes) -> tuple[bytes, bytes]:
        sender, _ = mirrored(suite)
        clear = compound(SenderReport(1, 2, 3, 4, 5), SourceDescription.cname(1, payload.hex()))
        return clear, sender.protect_rtcp(clear)

    return st.one_of(
        st.builds(build, st.integers(0, 0xFFFF), st.binary(max_size=64)),
        st.builds(build_rtcp, st.binary(max_size=32)),
    )


@pytest.mark.fuzz
@given(data=st.data())
def test_mutated_packets_are_never_accepted(data: st.DataObject) -> None:
    """One to three edits of a valid SRTP or SRTCP packet of any suite: whatever libsrtp
    makes of the header, the result is None, or the clear packet when the edit changed
    nothing."""
    suite = data.draw(st.sampled_from(SUITES))
    clear, protected = data.draw(protected_packets(suite))
    edited = data.draw(mutated(st.just(protected)))
    _, receiver = mirrored(suite)
    expected = None if edited != protected else clear
    is_rtcp = protected[1] >= 192
    result = receiver.unprotect_rtcp(edited) if is_rtcp else receiver.unprotect_rtp(edited)
    assert result == expected
    other = receiver.unprotect_rtp(edited) if is_rtcp else receiver.unprotect_rtcp(edited)
    assert other is None or other == expected
