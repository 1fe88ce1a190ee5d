from __future__ import annotations

from fractions import Fraction
from itertools import islice
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from media_signals import dominant_frequency, sine

from sip2rtmp.media.outbound import OutboundAudio, packet_time


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
    pcm = _decoded(source, payloads[:25])
    assert abs(dominant_frequency(pcm, source.codec.sample_rate) - 700) < 10


def test_looped_announcement_repeats(tmp_path: Path) -> None:
    wav = tmp_path / "hello.wav"
    _wav(wav, 0.1)
    source = OutboundAudio("PCMA", announce_path=wav, loop=True)
    payloads = list(islice(source, 15))
    assert payloads[:5] == payloads[5:10] == payloads[10:15]


@pytest.mark.parametrize(
    ("codec", "ptime", "maxptime", "chosen"),
    [
        ("PCMU", None, None, 20),
        ("PCMU", 30, None, 30),
        ("PCMU", 5, None, 10),
        ("PCMU", 90, None, 60),
        ("PCMU", 40, 30, 30),
        ("PCMU", None, 10, 10),
        ("PCMA", 5, 5, 5),
        ("G722", 60, 60, 60),
        ("G722", 120, 100, 60),
        ("opus", 30, None, 20),
        ("opus", 60, 50, 40),
        ("opus", 10, None, 10),
        ("opus", 20, 8, 5),
        ("opus", None, 1, 5),
    ],
)
def test_packet_time_follows_ptime_within_bounds_and_never_exceeds_maxptime(
    codec: str, ptime: int | None, maxptime: int | None, chosen: int
) -> None:
    """RFC 4566 §6: ptime is taken within 10-60 ms (20 without one), maxptime is a limit;
    Opus packets are one frame of 5, 10, 20, 40 or 60 ms (RFC 6716 §2.1.4), the longest that
    fits (Opus has no frame under 5 whole milliseconds)."""
    assert packet_time(codec, ptime, maxptime) == chosen


def _decoder(source: OutboundAudio) -> Any:
    """A fresh decoder for what ``source`` sends."""
    name = "opus" if source.codec.name == "opus" else source.codec.ffmpeg_name
    decoder = av.CodecContext.create(name, "r")
    decoder.sample_rate, decoder.layout = source.codec.sample_rate, "mono"
    return decoder


def _decoded(source: OutboundAudio, payloads: list[bytes]) -> np.ndarray[Any, Any]:
    """The payloads decoded in a row, as float samples."""
    decoder = _decoder(source)
    return np.concatenate(
        [f.to_ndarray().reshape(-1) for p in payloads for f in decoder.decode(av.Packet(p))]
    ).astype(np.float32)


@pytest.mark.parametrize(
    ("codec", "ptime", "maxptime", "step", "samples", "size"),
    [
        ("PCMU", 30, None, 240, 240, 240),
        ("PCMU", 10, None, 80, 80, 80),
        ("PCMA", 60, None, 480, 480, 480),
        ("PCMA", 40, 30, 240, 240, 240),
        ("G722", 30, None, 240, 480, 240),
        ("G722", 10, None, 80, 160, 80),
        ("G722", 60, 40, 320, 640, 320),
        ("opus", 40, None, 1920, 1920, None),
        ("opus", 60, None, 2880, 2880, None),
        ("opus", 30, None, 960, 960, None),
        ("opus", 20, 10, 480, 480, None),
    ],
)
def test_payloads_carry_what_the_answer_asks(
    tmp_path: Path,
    codec: str,
    ptime: int,
    maxptime: int | None,
    step: int,
    samples: int,
    size: int | None,
) -> None:
    """What we send for an answer's a=ptime/a=maxptime: the RTP timestamp step (G.722's
    clock is 8 kHz for 16 kHz audio, RFC 3551 §4.5.2), the audio each payload decodes to,
    the octets of the fixed-rate codecs; silence and the announcement alike, the tone kept
    across packet boundaries."""
    wav = tmp_path / "hello.wav"
    _wav(wav, 0.6)
    source = OutboundAudio(codec, ptime=ptime, maxptime=maxptime, announce_path=wav)
    assert source.timestamp_step == step
    assert source.period == pytest.approx(step / source.codec.clock_rate)
    payloads = [source.silence, *source.announcement]
    assert {_decoded(source, [payload]).size for payload in payloads} == {samples}
    if size is not None:
        assert {len(payload) for payload in payloads} == {size}
    assert len(source.announcement) == -(-int(0.6 * source.codec.sample_rate) // samples)
    pcm = _decoded(source, source.announcement)
    assert abs(dominant_frequency(pcm, source.codec.sample_rate) - 700) < 10
