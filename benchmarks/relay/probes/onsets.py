"""Audio delay by tone onsets: the same onset found in the RTP the callee sent and in the
decoded AAC of the published stream."""

from __future__ import annotations

from typing import Any

import av
import numpy as np
import numpy.typing as npt

from benchmarks.relay.probes.capture import RtmpMessage, RtpFrame
from sip2rtmp.media.audio import audio_context, rtp_audio_codec

ONSET_QUIET_S = 0.4
"""An onset is the first loud sample after at least this long without one."""
PAIRING_WINDOW_S = 2.0

Samples = npt.NDArray[np.float32]


def _mono(frame: Any) -> Samples:
    samples = frame.to_ndarray()
    if samples.dtype == np.int16:
        samples = samples.astype(np.float32) / 32768.0
    return np.asarray(samples[0], dtype=np.float32)


def decode_rtp(codec: str, packets: list[RtpFrame]) -> tuple[Samples, list[int]]:
    """Decoded samples of a call's RTP, and the packet index of every sample."""
    info = rtp_audio_codec(codec)
    decoder = audio_context(info.ffmpeg_name, "r")
    decoder.sample_rate = info.sample_rate
    decoder.layout = info.decode_layout or "mono"
    return _decode_each(decoder, [packet.payload for packet in packets])


def decode_flv_audio(messages: list[RtmpMessage]) -> tuple[Samples, list[int], list[float]]:
    """Decoded AAC of an RTMP stream, the message index of every sample, each message's time."""
    audio = [m for m in messages if m.type_id == 8 and len(m.payload) > 2]
    config = next((m.payload[2:] for m in audio if m.payload[1] == 0), None)
    frames = [m for m in audio if m.payload[1] == 1]
    if config is None or not frames:
        return np.zeros(0, np.float32), [], []
    decoder = audio_context("aac", "r")
    decoder.extradata = config
    samples, owner = _decode_each(decoder, [m.payload[2:] for m in frames])
    return samples, owner, [m.time for m in frames]


def _decode_each(decoder: Any, payloads: list[bytes]) -> tuple[Samples, list[int]]:
    parts: list[Samples] = []
    owner: list[int] = []
    for index, payload in enumerate(payloads):
        for frame in decoder.decode(av.Packet(payload)):
            samples = _mono(frame)
            parts.append(samples)
            owner.extend([index] * len(samples))
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), owner


def onsets(samples: Samples, rate: int) -> list[int]:
    """Sample indices where the tone comes back after at least ONSET_QUIET_S of quiet.

    Loud means at least half the stream's steady amplitude, so codec pre-echo and the
    rising edge of a resampled onset stay below it on both sides of the relay.
    """
    if not len(samples):
        return []
    magnitude = np.abs(samples)
    loud = np.flatnonzero(magnitude >= 0.5 * np.percentile(magnitude, 99))
    if not len(loud):
        return []
    quiet = int(ONSET_QUIET_S * rate)
    starts = [int(index) for index in loud[1:][np.diff(loud) >= quiet]]
    return ([int(loud[0])] if loud[0] >= quiet else []) + starts


def audio_delays(codec: str, rtp: list[RtpFrame], messages: list[RtmpMessage]) -> list[float]:
    """For each tone onset: from the RTP packet that carried it to the FLV packet that did."""
    samples, packet_of = decode_rtp(codec, rtp)
    flv, message_of, message_times = decode_flv_audio(messages)
    rate = rtp_audio_codec(codec).sample_rate
    arrivals = [rtp[packet_of[index]].time for index in onsets(samples, rate)]
    writes = [message_times[message_of[index]] for index in onsets(flv, 48_000)]
    delays = []
    for arrival in arrivals:
        later = [w - arrival for w in writes if 0 <= w - arrival < PAIRING_WINDOW_S]
        if later:
            delays.append(min(later))
    return delays
