from __future__ import annotations

import itertools
from pathlib import Path

import av
import numpy as np
import pytest
from media_signals import dominant_frequency, encode_payloads, sine

from sip2rtmp.media.audio import AacEncoder, AudioDecoder, AudioTimeline, rtp_audio_codec
from sip2rtmp.media.packets import AUDIO_RATE


@pytest.mark.parametrize("codec", ["PCMU", "PCMA", "G722", "opus"])
def test_decoded_tone_keeps_its_frequency_and_timeline(codec: str) -> None:
    info = rtp_audio_codec(codec)
    payloads = encode_payloads(codec, sine(1000, info.sample_rate, 1.0))
    decoder = AudioDecoder(codec)
    step = info.clock_rate // 50
    chunks = [c for i, p in enumerate(payloads) for c in decoder.decode(p, 7_000 + i * step)]

    pcm = np.concatenate([c.samples for c in chunks], axis=1)[0]
    assert abs(dominant_frequency(pcm[4800:], AUDIO_RATE) - 1000) < 5
    for before, after in itertools.pairwise(chunks):
        assert after.pts == before.pts + before.samples.shape[1]
    assert pcm.size == pytest.approx(AUDIO_RATE, abs=2 * 960)


def test_rtp_timestamp_wraps_without_a_jump() -> None:
    payloads = encode_payloads("PCMU", sine(440, 8000, 0.2))
    decoder = AudioDecoder("PCMU")
    start = 2**32 - 320
    chunks = [
        c for i, p in enumerate(payloads) for c in decoder.decode(p, (start + i * 160) % 2**32)
    ]
    assert chunks[-1].pts + chunks[-1].samples.shape[1] == pytest.approx(0.2 * AUDIO_RATE, abs=200)


def test_lost_slots_fade_then_fall_silent_without_holes() -> None:
    payloads = encode_payloads("PCMA", sine(440, 8000, 1.0))
    decoder = AudioDecoder("PCMA")
    chunks = []
    for index, payload in enumerate(payloads):
        ts = index * 160
        chunks += decoder.conceal(ts) if 10 <= index < 14 else decoder.decode(payload, ts)
    concealed = [c for c in chunks if c.pts % 960 == 0 and 10 * 960 <= c.pts < 14 * 960]
    assert [c.samples.shape[1] for c in concealed] == [960] * 4
    assert np.abs(concealed[0].samples[0, :10]).max() > 0.05
    assert np.abs(concealed[0].samples[0, -10:]).max() < 0.01
    assert not concealed[1].samples.any()
    assert decoder.concealed == 4


def test_missing_packets_without_markers_are_concealed() -> None:
    payloads = encode_payloads("PCMU", sine(440, 8000, 0.5))
    decoder = AudioDecoder("PCMU")
    chunks = [c for i, p in enumerate(payloads) if i != 7 for c in decoder.decode(p, i * 160)]
    assert any(c.pts == 7 * 960 and c.samples.shape[1] == 960 for c in chunks)


def test_aac_timeline_has_no_gap_when_lost_slots_interleave() -> None:
    payloads = encode_payloads("PCMU", sine(440, 8000, 2.0))
    decoder = AudioDecoder("PCMU")
    timeline = AudioTimeline(1, AUDIO_RATE * 2)
    encoder = AacEncoder()
    packets = []
    for index, payload in enumerate(payloads):
        chunks = (
            decoder.conceal(index * 160) if index % 7 == 3 else decoder.decode(payload, index * 160)
        )
        for chunk in chunks:
            timeline.write(chunk.pts, chunk.samples)
        while timeline.playhead + 1024 <= (index - 5) * 960:
            position = timeline.playhead
            packets += encoder.encode(timeline.read(1024), position)
    packets += encoder.flush()
    steps = {b.pts - a.pts for a, b in itertools.pairwise(packets)}
    assert steps == {1024}
    assert packets[0].pts == 0


def test_timeline_reads_silence_where_nothing_was_written() -> None:
    timeline = AudioTimeline(2, 100)
    assert timeline.write(150, np.ones((2, 10), dtype=np.float32)) == 0  # beyond the window
    assert not timeline.read(50).any()
    assert timeline.write(90, np.ones((2, 20), dtype=np.float32)) == 20  # wraps in the ring
    assert timeline.write(40, np.ones((2, 20), dtype=np.float32)) == 10  # half already played
    out = timeline.read(70)
    assert out[:, :10].all() and out[:, 40:60].all()
    assert not out[:, 10:40].any() and not out[:, 60:].any()
    assert not timeline.read(100).any()


def test_decoded_aac_plays_each_sound_at_its_own_time(tmp_path: Path) -> None:
    """The encoder's 1024-sample lag is not added to the timestamps (it was 21 ms of A/V skew)."""
    onset_s = 0.1
    signal = np.zeros((1, AUDIO_RATE), dtype=np.float32)
    start = int(onset_s * AUDIO_RATE)
    signal[0, start:] = 0.5 * np.sin(
        2 * np.pi * 1000.0 * np.arange(AUDIO_RATE - start) / AUDIO_RATE
    )
    encoder = AacEncoder()
    packets = [
        packet
        for position in range(0, AUDIO_RATE - encoder.frame_size + 1, encoder.frame_size)
        for packet in encoder.encode(signal[:, position : position + encoder.frame_size], position)
    ]
    packets += encoder.flush()
    assert packets[0].pts == 0, "the priming packet (pts -1024) is dropped"
    path = tmp_path / "onset.flv"
    with av.open(str(path), "w", format="flv") as container:
        stream = container.add_stream_from_template(encoder.template)
        for packet in packets:
            muxed = av.Packet(packet.data)
            muxed.pts, muxed.dts, muxed.time_base = packet.pts, packet.dts, packet.time_base
            muxed.stream = stream
            container.mux(muxed)
    with av.open(str(path)) as container:
        frames = list(container.decode(audio=0))
    decoded = np.concatenate([frame.to_ndarray() for frame in frames], axis=1)[0]
    first = float(frames[0].pts * frames[0].time_base)
    heard_s = first + int(np.argmax(np.abs(decoded) > 0.25)) / AUDIO_RATE
    assert heard_s == pytest.approx(onset_s, abs=0.002)


def _aac_round_trip(signal: np.ndarray, bit_rate: int) -> tuple[list[int], np.ndarray]:
    """Sizes of the AAC packets `signal` (mono, AUDIO_RATE) encodes to, and their decoding."""
    encoder = AacEncoder(bit_rate=bit_rate)
    decoder = av.CodecContext.create("aac", "r")
    decoder.extradata = encoder.template.codec_context.extradata
    frame = encoder.frame_size
    sizes, decoded = [], []
    for position in range(0, signal.shape[1] - frame + 1, frame):
        for packet in encoder.encode(signal[:, position : position + frame], position):
            sizes.append(len(packet.data))
            decoded += [f.to_ndarray()[0] for f in decoder.decode(av.Packet(packet.data))]
    return sizes, np.concatenate(decoded)


def test_aac_bit_rate_is_a_ceiling_for_audio_that_wants_more() -> None:
    """Broadband noise could use any bit rate: no frame may take more than its share of it,
    so an ingest never sees the stream run over what it announced."""
    noise = np.random.default_rng(7).uniform(-0.5, 0.5, (1, AUDIO_RATE * 2)).astype(np.float32)
    sizes, _ = _aac_round_trip(noise, 64_000)
    budget_bytes = -(-(64_000 * AacEncoder.frame_size // AUDIO_RATE) // 8)
    assert max(sizes) <= budget_bytes
    assert sum(sizes) * 8 / 2.0 > 0.8 * 64_000, "the rate is used, not starved"


def test_narrowband_audio_is_coded_at_full_quality_below_the_bit_rate() -> None:
    """Telephone-band audio cannot use 128 kb/s: it comes out at the encoder's full quality
    (what it decodes to matches what went in), spending only what it needs."""
    decoder = AudioDecoder("PCMU")
    two_tones = sine(440, 8000, 2.0, 8000) + sine(1700, 8000, 2.0, 4000)
    signal = np.concatenate(
        [
            chunk.samples
            for index, payload in enumerate(encode_payloads("PCMU", two_tones))
            for chunk in decoder.decode(payload, index * 160)
        ],
        axis=1,
    )
    sizes, decoded = _aac_round_trip(signal, 128_000)
    assert sum(sizes) * 8 / 2.0 < 0.75 * 128_000
    source = signal[0, AUDIO_RATE // 2 : AUDIO_RATE]
    error = decoded[AUDIO_RATE // 2 : AUDIO_RATE] - source
    snr_db = 10 * np.log10(np.sum(source**2) / np.sum(error**2))
    assert snr_db > 40
