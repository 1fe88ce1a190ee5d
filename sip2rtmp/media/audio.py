"""Call audio: RTP payloads to 48 kHz PCM on the output timeline, and that timeline to AAC."""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, cast

import av
import numpy as np
import numpy.typing as npt

from sip2rtmp.media.comfort_noise import ComfortNoise, noise
from sip2rtmp.media.packets import AUDIO_RATE, EncodedPacket, Track

_WRAP = 1 << 32
_HALF_WRAP = 1 << 31

_AUDIO_TIME_BASE = Fraction(1, AUDIO_RATE)

NOISE_AHEAD_S = 0.8
"""How far past its packet a comfort-noise payload is played at once. The decoder runs only
when a packet comes, and the stream cannot wait for the next one: a sender that refreshes
its noise description at least this often (many send one every 100 ms to 1 s) gets
unbroken noise, its next packet, noise or speech, overwriting what is left; one that says
nothing for longer leaves silence after this much. Kept 0.2 s under the pipeline's
``MediaConfig.max_ahead_s`` (1 s), beyond which audio counts as stamped too far ahead."""

Samples = npt.NDArray[np.float32]
"""Planar float PCM, shape (channels, samples), at AUDIO_RATE."""


@dataclass(frozen=True, slots=True)
class RtpAudioCodec:
    """What an SDP encoding name means for FFmpeg.

    G.722 is the odd one: its RTP clock is 8000 although it carries 16 kHz audio (RFC 3551).
    """

    name: str
    ffmpeg_name: str
    sample_rate: int
    clock_rate: int
    decode_layout: str | None = "mono"
    """What the decoder is opened with; None: the output's own layout, for a decoder that
    mixes down or up itself (Opus: RFC 7587 §3.1 lets a receiver play stereo as mono)."""


_CODECS = {
    "PCMU": RtpAudioCodec("PCMU", "pcm_mulaw", 8000, 8000),
    "PCMA": RtpAudioCodec("PCMA", "pcm_alaw", 8000, 8000),
    "G722": RtpAudioCodec("G722", "g722", 16000, 8000),
    "OPUS": RtpAudioCodec("opus", "opus", 48000, 48000, None),
}
_ALIASES = {codec.ffmpeg_name.upper(): codec for codec in _CODECS.values()}


def rtp_audio_codec(name: str) -> RtpAudioCodec:
    """Look a codec up by SDP encoding name (``PCMU``, ``opus``) or FFmpeg name."""
    key = name.upper()
    codec = _CODECS.get(key) or _ALIASES.get(key) or (_CODECS["OPUS"] if key == "LIBOPUS" else None)
    if codec is None:
        raise ValueError(f"unsupported audio codec {name!r}")
    return codec


def audio_context(name: str, mode: Literal["r", "w"]) -> av.AudioCodecContext:
    context = av.CodecContext.create(name, mode)
    if not isinstance(context, av.AudioCodecContext):
        raise ValueError(f"{name} is not an audio codec")
    return context


def layout_for(channels: int) -> str:
    if channels not in (1, 2):
        raise ValueError("audio must be mono or stereo")
    return "mono" if channels == 1 else "stereo"


@dataclass(frozen=True, slots=True)
class PcmChunk:
    """Decoded audio and where its first sample sits, in AUDIO_RATE samples."""

    pts: int
    samples: Samples


class AudioDecoder:
    """Decodes one RTP stream's payloads to 48 kHz float PCM with sample-accurate timestamps.

    Timestamps follow the RTP clock (unwrapped), starting at 0 for the first payload; the
    caller anchors them on its own timeline. Short holes (lost slots, missing packets) are
    concealed so the resampler output stays continuous; long ones are left for the caller.

    A ``ComfortNoise`` payload (RFC 3389) plays as noise at its level from its timestamp
    until the next speech payload: ``NOISE_AHEAD_S`` at once, every hole and lost slot up to
    that speech too, and what the speech does not overwrite of it falls silent.
    """

    def __init__(self, codec: str, *, channels: int = 1, max_conceal_s: float = 0.5) -> None:
        self.codec = rtp_audio_codec(codec)
        self.channels = channels
        self._ctx = audio_context(self.codec.ffmpeg_name, "r")
        self._ctx.sample_rate = self.codec.sample_rate
        self._ctx.layout = self.codec.decode_layout or layout_for(channels)
        self._resampler = av.AudioResampler(
            format="fltp", layout=layout_for(channels), rate=AUDIO_RATE
        )
        self._input_time_base = Fraction(1, self.codec.sample_rate)
        self._max_conceal = int(max_conceal_s * self.codec.clock_rate)
        self._origin: int | None = None
        self._last_ext = 0
        self._next: int | None = None
        self._slot = self.codec.clock_rate // 50
        self._fade_source: Samples | None = None
        self._direct: bool | None = None
        """Whether decoded frames are already float planar at AUDIO_RATE (Opus): then they
        skip the resampler, whose filter graph costs more per 20 ms frame than the decode."""
        self._noise_dbov: int | None = None
        """The level of the comfort noise that stands in for speech, None while speech."""
        self._noise_until = 0
        """Where the noise played ahead ends (RTP clock, unwrapped)."""
        self.decoded = 0
        self.concealed = 0
        self.discarded = 0
        self.comfort_noise = 0

    def decode(self, payload: bytes, rtp_ts: int) -> list[PcmChunk]:
        """Decode one payload; a hole since the previous one is concealed first."""
        ext = self._extend(rtp_ts)
        chunks: list[PcmChunk] = []
        if self._next is not None:
            behind = self._next - ext
            if behind > self._max_conceal:
                # Further back than any hole we would fill: the sender restarted its clock or a
                # new source took over. A new timeline, which the caller re-anchors, not late
                # duplicates to drop until the old timestamps are reached again.
                self._next = None
            elif behind > 0:
                self.discarded += 1
                return chunks
            else:
                chunks.extend(self._fill(self._next, ext))
        if isinstance(payload, ComfortNoise):
            return chunks + self._comfort_noise(payload, ext)
        try:
            frames = self._ctx.decode(av.Packet(payload))
        except av.error.FFmpegError:
            self.discarded += 1
            return chunks + self.conceal(rtp_ts)
        in_pts = (ext - self._origin_or(ext)) * self.codec.sample_rate // self.codec.clock_rate
        decoded_samples = 0
        for frame in frames:
            pts = in_pts + decoded_samples
            decoded_samples += frame.samples
            if self._direct is None:
                self._direct = frame.sample_rate == AUDIO_RATE and frame.format.name == "fltp"
            if self._direct:
                chunks.append(PcmChunk(pts, self._to_channels(cast(Samples, frame.to_ndarray()))))
                continue
            frame.pts = pts
            frame.time_base = self._input_time_base
            for out in self._resampler.resample(frame):
                samples = np.asarray(out.to_ndarray(), dtype=np.float32)
                chunks.append(PcmChunk(cast(int, out.pts), samples))
        if decoded_samples:
            self.decoded += 1
            self._slot = decoded_samples * self.codec.clock_rate // self.codec.sample_rate
            self._next = ext + self._slot
            self._fade_source = chunks[-1].samples if chunks else self._fade_source
            chunks.extend(self._end_noise())
        return chunks

    @functools.cached_property
    def _noise_source(self) -> np.random.Generator:
        """Made at the first comfort noise: loading numpy.random costs 13 ms of CPU, and
        most calls never hear a silence descriptor."""
        return np.random.default_rng()

    def _noise(self, level_dbov: int, count: int) -> Samples:
        return noise(level_dbov, self.channels, count, self._noise_source)

    def _comfort_noise(self, payload: ComfortNoise, ext: int) -> list[PcmChunk]:
        """Noise from ``ext`` on; the next payload is due one slot later, like speech's."""
        self.comfort_noise += 1
        self._noise_dbov = payload.level_dbov
        self._fade_source = None
        self._next = ext + self._slot
        self._noise_until = ext + int(NOISE_AHEAD_S * self.codec.clock_rate)
        pts = (ext - self._origin_or(ext)) * AUDIO_RATE // self.codec.clock_rate
        count = int(NOISE_AHEAD_S * AUDIO_RATE)
        return [PcmChunk(pts, self._noise(self._noise_dbov, count))]

    def _end_noise(self) -> list[PcmChunk]:
        """Speech is back: silence over the noise played ahead of it, where the speech that
        follows does not overwrite it (the sender stops, or loses a packet)."""
        if self._noise_dbov is None or self._next is None:
            return []
        self._noise_dbov = None
        if self._noise_until <= self._next:
            return []
        origin = self._origin_or(self._next)
        pts = (self._next - origin) * AUDIO_RATE // self.codec.clock_rate
        count = (self._noise_until - self._next) * AUDIO_RATE // self.codec.clock_rate
        return [PcmChunk(pts, np.zeros((self.channels, count), dtype=np.float32))]

    def _to_channels(self, planes: Samples) -> Samples:
        """Mono from stereo by averaging, stereo from mono by copying (a numpy op per frame)."""
        have = planes.shape[0]
        if have == self.channels:
            return planes
        if have > self.channels:
            return cast(Samples, planes.mean(axis=0, keepdims=True, dtype=np.float32))
        return np.repeat(planes, self.channels, axis=0)

    def pts_of(self, rtp_ts: int) -> int | None:
        """Where the payload stamped ``rtp_ts`` starts (AUDIO_RATE samples, the chunks' pts
        scale), or None before the first payload fixed the origin."""
        if self._origin is None:
            return None
        ext = self._last_ext + ((rtp_ts - self._last_ext + _HALF_WRAP) % _WRAP) - _HALF_WRAP
        return (ext - self._origin) * AUDIO_RATE // self.codec.clock_rate

    def conceal(self, rtp_ts: int | None = None, duration: int | None = None) -> list[PcmChunk]:
        """Stand in for a lost slot (RTP clock units; default: the next one, last frame's size).

        Opus PLC is not reachable through PyAV (FFmpeg treats an empty packet as a flush), so
        every codec gets the same: the last decoded frame faded out, then silence.
        """
        if self._next is None:
            return []
        start = self._next if rtp_ts is None else self._extend(rtp_ts)
        end = start + (duration or self._slot)
        if end <= self._next:
            return []
        chunks = self._fill(self._next, end)
        self._next = max(self._next, end)
        return chunks

    def _fill(self, start: int, end: int) -> list[PcmChunk]:
        """What stands in for ``start``-``end``: comfort noise while the sender said so, else
        the last frame faded out, then silence (a concealed loss)."""
        if end <= start or end - start > self._max_conceal:
            return []
        count = (end - start) * AUDIO_RATE // self.codec.clock_rate
        origin = self._origin_or(start)
        pts = (start - origin) * AUDIO_RATE // self.codec.clock_rate
        if self._noise_dbov is not None:
            return [PcmChunk(pts, self._noise(self._noise_dbov, count))]
        self.concealed += 1
        samples = np.zeros((self.channels, count), dtype=np.float32)
        if self._fade_source is not None:
            fade = min(self._fade_source.shape[1], count)
            ramp = np.linspace(1.0, 0.0, fade, dtype=np.float32)
            samples[:, :fade] = self._fade_source[:, -fade:] * ramp
            self._fade_source = None
        return [PcmChunk(pts, samples)]

    def _origin_or(self, ext: int) -> int:
        if self._origin is None:
            self._origin = ext
        return self._origin

    def _extend(self, rtp_ts: int) -> int:
        """Unwrap the 32-bit RTP timestamp around the last one seen."""
        if self._origin is None:
            self._last_ext = rtp_ts
            return rtp_ts
        delta = ((rtp_ts - self._last_ext + _HALF_WRAP) % _WRAP) - _HALF_WRAP
        self._last_ext += delta
        return self._last_ext


class AudioTimeline:
    """A ring of PCM ahead of the encoder: writes land by position, unwritten time is silence.

    Reading zeroes what it read, so a span nobody wrote (before the answer, a gap, a late
    stream) comes out as silence and the AAC track never has a hole.
    """

    def __init__(self, channels: int, capacity: int) -> None:
        self._ring = np.zeros((channels, capacity), dtype=np.float32)
        self.capacity = capacity
        self.playhead = 0
        self.written = 0
        """The end of the furthest write: where what arrived so far stops."""

    def write(self, position: int, samples: Samples) -> int:
        """Mix-free overwrite at ``position``; returns how many samples fitted in the window."""
        start = max(position, self.playhead)
        end = min(position + int(samples.shape[1]), self.playhead + self.capacity)
        if end <= start:
            return 0
        self._copy(start, samples[:, start - position : end - position])
        self.written = max(self.written, end)
        return end - start

    def read(self, count: int) -> Samples:
        """The next ``count`` samples at the playhead, leaving silence behind them."""
        first = self.playhead % self.capacity
        split = min(count, self.capacity - first)
        out = np.concatenate(
            (self._ring[:, first : first + split], self._ring[:, : count - split]), axis=1
        )
        self._ring[:, first : first + split] = 0.0
        self._ring[:, : count - split] = 0.0
        self.playhead += count
        return out

    def _copy(self, start: int, samples: Samples) -> None:
        first = start % self.capacity
        split = min(samples.shape[1], self.capacity - first)
        self._ring[:, first : first + split] = samples[:, :split]
        self._ring[:, : samples.shape[1] - split] = samples[:, split:]


_AAC_OPTIONS = {"aac_coder": "fast", "bt": "0"}
"""FFmpeg's AAC encoder with its constant-quantizer coder, the bit rate a ceiling.

``aac_coder=fast``: half the CPU of the default two-loop search, and at 128 kb/s for a call's
audio, which is at most 48 kHz Opus, no audible loss (a test tone round-trips with a higher SNR
than with the default).

``bt=0`` (no bit-rate tolerance): each frame is coded at the encoder's default quality and coded
again only if it exceeds its share of the bit rate. With the default tolerance the encoder aims
at the bit rate and codes a frame up to five times over whenever it falls below two thirds of it,
which is every frame of audio that cannot use the rate: a G.711 call has nothing above 4 kHz,
and its frames cost four to five times as much (measured on a lab PCMU call's audio at
128 kb/s: 518 µs a frame against 122, with the same 96 kb/s and 74 dB SNR). Full-band audio
costs the same either way and comes out a little under the rate, never over it."""


class AacEncoder:
    """AAC-LC at 48 kHz fed 1024-sample frames; packets keep the encoder's own timestamps.

    The encoder's output lags its input by 1024 samples (MDCT overlap, stamped by FFmpeg as
    priming at pts -1024): a decoder turns the packet stamped t into the input that started
    at t. FLV carries no priming information and no negative times, so the priming packet,
    which decodes to nothing of the input, is dropped; stamping packets by the frame that
    produced them instead would play all audio 21 ms late against the video.
    """

    frame_size = 1024

    def __init__(self, *, channels: int = 1, bit_rate: int = 128_000) -> None:
        self.layout = layout_for(channels)
        self._ctx = audio_context("aac", "w")
        self._ctx.sample_rate = AUDIO_RATE
        self._ctx.layout = self.layout
        self._ctx.format = "fltp"
        self._ctx.bit_rate = bit_rate
        self._ctx.flags |= av.codec.context.Flags.global_header
        self._ctx.options = dict(_AAC_OPTIONS)
        self._ctx.open()
        self.template = _aac_template(channels, bit_rate)
        if (self.template.codec_context.extradata or b"") != (self._ctx.extradata or b""):
            raise RuntimeError("AAC template and encoder disagree on the AudioSpecificConfig")

    def encode(self, samples: Samples, pts: int) -> list[EncodedPacket]:
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples), format="fltp", layout=self.layout
        )
        frame.sample_rate = AUDIO_RATE
        frame.pts = pts
        frame.time_base = _AUDIO_TIME_BASE
        return self._wrap(self._ctx.encode(frame))

    def flush(self) -> list[EncodedPacket]:
        return self._wrap(self._ctx.encode(None))

    @staticmethod
    def _wrap(packets: list[Any]) -> list[EncodedPacket]:
        return [
            EncodedPacket(Track.AUDIO, bytes(p), p.pts, p.dts, True) for p in packets if p.pts >= 0
        ]


def _aac_template(channels: int, bit_rate: int) -> Any:
    """An AAC stream whose codec parameters outputs copy; never muxed to."""
    container = av.open(io.BytesIO(), "w", format="flv")
    stream = container.add_stream("aac", rate=AUDIO_RATE, layout=layout_for(channels))
    stream.bit_rate = bit_rate
    container.start_encoding()
    return stream
