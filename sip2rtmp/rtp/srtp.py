"""SRTP and SRTCP (RFC 3711) for one RTP session, keyed by SDES (RFC 4568).

Two libsrtp sessions: one protects what we send with our key, the other checks and decrypts
what the peer sends with its key (RFC 4568 §6.1: each side's ``a=crypto`` key protects its
own direction). Either session serves any SSRC, so a peer that changes its SSRC mid-call
needs no new keys, and each SSRC keeps its own replay window (RFC 3711 §3.3.2).

The per-packet path is one libsrtp call. What arrives comes from anyone who can reach the
port: a packet that fails authentication or the replay check, or is no SRTP at all, is
``None``, never an exception.
"""

from __future__ import annotations

from pylibsrtp import Error, Policy, Session

from sip2rtmp.sip.sdes import KEY_LENGTHS, SrtpKeys

__all__ = ["PROFILES", "SrtpContext", "SrtpError"]

PROFILES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
}
"""libsrtp's profile for each SDES suite name (RFC 4568 §6.2, RFC 7714 §12)."""


class SrtpError(ValueError):
    """libsrtp refused to protect one of our packets (too long for its buffer, a sequence
    number sent twice: RFC 3711 §3.3.1 forbids reusing a keystream)."""


def _session(keys: SrtpKeys, key: bytes, direction: int) -> Session:
    try:
        profile = PROFILES[keys.suite]
    except KeyError:
        raise ValueError(f"no SRTP profile for crypto suite {keys.suite!r}") from None
    if len(key) != KEY_LENGTHS[keys.suite]:
        raise ValueError(f"{keys.suite} takes a {KEY_LENGTHS[keys.suite]}-byte key and salt")
    return Session(Policy(key=key, ssrc_type=direction, srtp_profile=profile))


class SrtpContext:
    """The SRTP state of one RTP session: our sending keys and the peer's."""

    __slots__ = ("_inbound", "_outbound", "keys")

    def __init__(self, keys: SrtpKeys) -> None:
        """``ValueError`` for a suite we do not know or a key of the wrong length."""
        self.keys = keys
        self._outbound = _session(keys, keys.local_key, Policy.SSRC_ANY_OUTBOUND)
        self._inbound = _session(keys, keys.remote_key, Policy.SSRC_ANY_INBOUND)

    def protect_rtp(self, packet: bytes) -> bytes:
        """Our RTP packet encrypted and authenticated; `SrtpError` when libsrtp refuses it."""
        try:
            return self._outbound.protect(packet)
        except (Error, ValueError) as error:
            raise SrtpError(f"SRTP protect failed: {error}") from None

    def protect_rtcp(self, packet: bytes) -> bytes:
        """Our compound RTCP packet as SRTCP (RFC 3711 §3.4: encrypted, with its index);
        `SrtpError` when libsrtp refuses it."""
        try:
            return self._outbound.protect_rtcp(packet)
        except (Error, ValueError) as error:
            raise SrtpError(f"SRTCP protect failed: {error}") from None

    def unprotect_rtp(self, packet: bytes) -> bytes | None:
        """The peer's RTP in clear; ``None`` when it fails authentication or the replay
        check, or is no SRTP packet at all."""
        try:
            return self._inbound.unprotect(packet)
        except (Error, ValueError):
            return None

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        """The peer's compound RTCP in clear; ``None`` as for `unprotect_rtp`."""
        try:
            return self._inbound.unprotect_rtcp(packet)
        except (Error, ValueError):
            return None
