"""Comfort noise (RFC 3389): the callee's silence descriptors, played as low-level noise.

A sender with voice activity detection stops sending speech between talk spurts and sends a
comfort-noise payload now and then instead: its first byte is the noise level in -dBov (RFC
3389 §3.1), any further bytes a spectral shape that a receiver may ignore (§3.2, reduced to
white noise here). The audio leg marks these payloads with ``ComfortNoise`` so that the
decoder, which receives payloads without their RTP header, can tell them from speech.
"""

from __future__ import annotations

from collections.abc import Container

import numpy as np
import numpy.typing as npt

from sip2rtmp.rtp.packet import RtpPacket

__all__ = ["QUIETEST_DBOV", "ComfortNoise", "mark_comfort_noise", "noise"]

QUIETEST_DBOV = 127
"""The lowest level the noise-level byte can say (its seven bits, RFC 3389 §3.1): what a
payload without that byte plays as."""


class ComfortNoise(bytes):
    """An RFC 3389 payload, told apart from speech by its type on the way to the decoder."""

    @property
    def level_dbov(self) -> int:
        """The noise level below overload (0-127 dB): the first byte's low seven bits; the
        quietest level when the payload has none."""
        return self[0] & 0x7F if self else QUIETEST_DBOV


def mark_comfort_noise(packet: RtpPacket, payload_types: Container[int]) -> RtpPacket:
    """``packet`` with its payload marked ``ComfortNoise`` if its type is a negotiated CN."""
    if packet.payload_type in payload_types:
        packet.payload = ComfortNoise(packet.payload)
    return packet


def noise(
    level_dbov: int, channels: int, count: int, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """``count`` samples of white noise per channel at ``level_dbov`` below overload.

    0 dBov is a full-scale square wave (RFC 3389 §3.1), whose RMS is full scale: 1.0 in float
    PCM, so the noise's RMS is ``10 ** (-level / 20)``; peaks beyond full scale are clipped.
    """
    rms = np.float32(10.0 ** (-level_dbov / 20.0))
    samples = rng.standard_normal((channels, count), dtype=np.float32) * rms
    return np.clip(samples, -1.0, 1.0, out=samples)
