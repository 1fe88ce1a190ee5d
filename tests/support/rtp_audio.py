"""RTP audio as it crossed the wire, decoded packet by packet as each codec the relay speaks:
whether a capture carries recognisable audio (a tone, silence) or only noise, as SRTP's
ciphertext must (RFC 3711 §3.1: the payload is encrypted, the RTP header stays in clear).

The header names the payload type even when encrypted, so packets can be grouped by direction
and stream without a key; the payload is then decoded as G.711 µ-law and A-law, G.722 and Opus
regardless of what was negotiated, since ciphertext must not pass as audio for any of them.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import av
import numpy as np
import numpy.typing as npt
from av.audio.codeccontext import AudioCodecContext

from tests.support.pcap import UdpDatagram

DECODERS: dict[str, tuple[str, int]] = {
    "PCMU": ("pcm_mulaw", 8000),
    "PCMA": ("pcm_alaw", 8000),
    "G722": ("g722", 16000),
    "opus": ("opus", 48000),
}
"""FFmpeg decoder and audio sample rate of each codec."""
STATIC_PAYLOAD_TYPES = {0: "PCMU", 8: "PCMA", 9: "G722"}
"""RFC 3551 §6; the lab's only dynamic audio codec is Opus."""
SILENCE_RMS = 10 ** (-80 / 20)
"""A packet quieter than -80 dBFS counts as silence: what G.711 and Opus make of digital
silence decodes far below it, while ciphertext decoded as Opus rarely gets down to it."""
TONE_RMS = 10 ** (-40 / 20)
TONE_PURITY = 0.9
TONE_BAND = 100.0
"""Hz either side of the tone: a 20 ms packet's Hann-windowed spectrum has 50 Hz bins and a
main lobe of two bins either side, which holds almost all of a pure tone's energy."""
_RTCP_TYPES = range(200, 208)
"""RFC 5761 §4: RTCP packet types, which an RTP payload type byte (with marker) never takes."""


@dataclass(frozen=True)
class RtpPacket:
    source_port: int
    destination_port: int
    payload_type: int
    sequence: int
    ssrc: int
    payload: bytes
    """Everything after the header: for SRTP the ciphertext and the authentication tag."""


def rtp_packets(datagrams: Iterable[UdpDatagram]) -> list[RtpPacket]:
    """The RTP (or SRTP) packets among `datagrams`, header parsed (RFC 3550 §5.1); RTCP and
    anything that is not RTP version 2 are left out."""
    packets = []
    for datagram in datagrams:
        data = datagram.payload
        if len(data) < 12 or data[0] >> 6 != 2 or data[1] in _RTCP_TYPES:
            continue
        offset = 12 + 4 * (data[0] & 0x0F)
        if data[0] & 0x10 and len(data) >= offset + 4:
            offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
        sequence, _, ssrc = struct.unpack_from("!HII", data, 2)
        packets.append(
            RtpPacket(
                datagram.source_port,
                datagram.destination_port,
                data[1] & 0x7F,
                sequence,
                ssrc,
                data[offset:],
            )
        )
    return packets


def audio_stream(packets: Iterable[RtpPacket]) -> list[RtpPacket]:
    """The packets of the most frequent (SSRC, payload type): the audio, not the DTMF events
    (RFC 4733) that share its SSRC under another payload type."""
    chosen = list(packets)
    if not chosen:
        return []
    (ssrc, payload_type), _ = Counter((p.ssrc, p.payload_type) for p in chosen).most_common(1)[0]
    return [p for p in chosen if p.ssrc == ssrc and p.payload_type == payload_type]


def decode(packets: Iterable[RtpPacket], codec: str) -> list[npt.NDArray[np.float32] | None]:
    """Each packet's payload decoded as `codec` (mono float at its rate), in order; None where
    the decoder rejects the payload."""
    name, rate = DECODERS[codec]
    context = cast(AudioCodecContext, av.CodecContext.create(name, "r"))
    context.sample_rate = rate
    context.layout = "mono"
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    decoded: list[npt.NDArray[np.float32] | None] = []
    for packet in packets:
        try:
            frames = context.decode(av.Packet(packet.payload))
            chunks = [
                out.to_ndarray().reshape(-1).astype(np.float32)
                for frame in frames
                for out in resampler.resample(frame)
            ]
        except av.error.FFmpegError:
            decoded.append(None)
            continue
        decoded.append(np.concatenate(chunks) if chunks else None)
    return decoded


def tonal_share(packets: list[RtpPacket], hz: float) -> dict[str, float]:
    """Per codec: the share of packets whose payload, decoded as that codec, holds the tone:
    loud (at least TONE_RMS) with at least TONE_PURITY of its energy within TONE_BAND of `hz`.
    Audio carrying the tone scores near 1 for its own codec; ciphertext near 0 for every one
    (noise spreads its energy over the whole band)."""
    shares = {}
    for codec, (_, rate) in DECODERS.items():
        tonal = [
            chunk is not None
            and chunk.size > 0
            and _rms(chunk) >= TONE_RMS
            and _purity(chunk, rate, hz) >= TONE_PURITY
            for chunk in decode(packets, codec)
        ]
        shares[codec] = sum(tonal) / len(tonal) if tonal else 0.0
    return shares


def silent_share(packets: list[RtpPacket]) -> float:
    """The share of packets that decode, as the codec their payload type names, to silence
    (below SILENCE_RMS); a payload the decoder rejects is no silence."""
    if not packets:
        return 0.0
    codec = STATIC_PAYLOAD_TYPES.get(packets[0].payload_type, "opus")
    silent = [
        chunk is not None and chunk.size > 0 and _rms(chunk) < SILENCE_RMS
        for chunk in decode(packets, codec)
    ]
    return sum(silent) / len(silent)


def _rms(samples: npt.NDArray[np.float32]) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def _purity(samples: npt.NDArray[np.float32], rate: int, hz: float) -> float:
    """The share of the packet's energy within TONE_BAND of `hz` (Hann-windowed spectrum)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size))) ** 2
    frequencies = np.fft.rfftfreq(samples.size, 1 / rate)
    total = float(spectrum.sum())
    return float(spectrum[np.abs(frequencies - hz) <= TONE_BAND].sum()) / total if total else 0.0
