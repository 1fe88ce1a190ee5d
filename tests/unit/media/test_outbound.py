from __future__ import annotations

from fractions import Fraction
from itertools import islice
from pathlib import Path

import av
import numpy as np
import pytest
from media_signals import dominant_frequency, sine

from sip2rtmp.media.outbound import OutboundAudio


@pytest.mark.parametrize(
    ("codec", "step", "size"), [("PCMU", 160, 160), ("PCMA", 160, 160), ("G722", 160, 160)]
)
def test_silence_payloads_have_the_codec_size_and_step(codec: str, step: int, size: int) -> None:
    source = OutboundAudio(codec)
    payloads = list(islice(source, 5))
    assert source.timestamp_step == step
    assert {len(p) for p in payloads} == {size}
    assert len(set(payloads)) == 1


def test_opus_silence_is_a_small_20ms_packet() -> None:
    source = OutboundAudio("opus")
    assert source.timestamp_step == 960
    payload = next(iter(source))
    assert 0 < len(payload) < 80
    decoder = av.CodecContext.create("opus", "r")
    decoder.sample_rate, decoder.layout = 48000, "mono"
    (frame,) = decoder.decode(av.Packet(payload))
    assert frame.samples == 960
    assert np.abs(frame.to_ndarray()).max() < 1e-3


def _wav(path: Path, seconds: float) -> None:
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=44100, layout="mono")
        frame = av.AudioFrame.from_ndarray(sine(700, 44100, seconds)[None], "s16", "mono")
        frame.sample_rate = 44100
        frame.pts, frame.time_base = 0, Fraction(1, 44100)
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


@pytest.mark.parametrize("codec", ["PCMU", "G722", "opus"])
def test_announcement_is_resampled_then_silence(tmp_path: Path, codec: str) -> None:
    wav = tmp_path / "hello.wav"
    _wav(wav, 0.5)
    source = OutboundAudio(codec, announce_path=wav)
    assert len(source.announcement) == 25
    payloads = list(islice(source, 30))
    assert payloads[25:] == [source.silence] * 5
    decoder = av.CodecContext.create("opus" if codec == "opus" else source.codec.ffmpeg_name, "r")
    decoder.sample_rate, decoder.layout = source.codec.sample_rate, "mono"
    pcm = np.concatenate(
        [f.to_ndarray().reshape(-1) for p in payloads[:25] for f in decoder.decode(av.Packet(p))]
    ).astype(np.float32)
    assert abs(dominant_frequency(pcm, source.codec.sample_rate) - 700) < 10


def test_looped_announcement_repeats(tmp_path: Path) -> None:
    wav = tmp_path / "hello.wav"
    _wav(wav, 0.1)
    source = OutboundAudio("PCMA", announce_path=wav, loop=True)
    payloads = list(islice(source, 15))
    assert payloads[:5] == payloads[5:10] == payloads[10:15]
