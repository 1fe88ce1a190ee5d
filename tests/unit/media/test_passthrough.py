from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from sip2rtmp.media.audio import AacEncoder
from sip2rtmp.media.output import RtmpOutput
from sip2rtmp.media.packets import EncodedPacket, StreamTemplates
from sip2rtmp.media.passthrough import VIDEO_CLOCK, PassthroughVideo
from sip2rtmp.rtp.h264 import (
    AccessUnit,
    avc_decoder_configuration_record,
    nal_type,
    split_annexb,
    to_avcc,
)
from tests.support.flv import avc_sequence_headers

FRAME = 3600  # 25 fps on the 90 kHz clock


def access_units(width: int, height: int, count: int, first_timestamp: int) -> list[AccessUnit]:
    """Constrained-baseline H.264 from libx264 as a callee sends it: SPS/PPS in band."""
    context = av.CodecContext.create("libx264", "w")
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base = Fraction(1, 25)
    context.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline"}
    encoded: list[bytes] = []
    for index in range(count):
        picture = np.full((height, width, 3), index * 20, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        encoded += [bytes(packet) for packet in context.encode(frame)]
    encoded += [bytes(packet) for packet in context.encode(None)]
    return [
        AccessUnit(
            (first_timestamp + index * FRAME) & 0xFFFFFFFF,
            tuple(split_annexb(data)),
            any(nal_type(nal) == 5 for nal in split_annexb(data)),
        )
        for index, data in enumerate(encoded)
    ]


@pytest.fixture(scope="module")
def units() -> list[AccessUnit]:
    """Ten access units of 320x240, the RTP clock wrapping around 2^32 mid-stream."""
    return access_units(320, 240, 10, 0xFFFFFFFF - 4 * FRAME)


def _parameter_sets(units: list[AccessUnit]) -> tuple[bytes, bytes]:
    nals = units[0].nals
    return next(n for n in nals if nal_type(n) == 7), next(n for n in nals if nal_type(n) == 8)


def test_template_carries_the_callees_sps_pps_as_avcc(units: list[AccessUnit]) -> None:
    sps, pps = _parameter_sets(units)
    source = PassthroughVideo(sps, pps)
    assert (source.width, source.height) == (320, 240)
    context = source.template.codec_context
    assert context.codec.canonical_name == "h264"
    assert bytes(context.extradata) == avc_decoder_configuration_record([sps], [pps])


def test_rtp_time_maps_onto_media_time_across_the_wrap(units: list[AccessUnit]) -> None:
    source = PassthroughVideo(*_parameter_sets(units))
    source.start(100.0)
    for index, unit in enumerate(units):
        source.push(unit, 100.5 + index * 0.04)
    packets = source.packets_until(10.0)
    assert [p.dts for p in packets] == [45_000 + i * FRAME for i in range(len(units))]
    assert all(p.pts == p.dts for p in packets)
    assert [p.data for p in packets] == [to_avcc(u.nals) for u in units]
    assert packets[0].keyframe and source.timeline.resyncs == 0


def test_packets_come_out_once_when_due(units: list[AccessUnit]) -> None:
    source = PassthroughVideo(*_parameter_sets(units))
    source.start(0.0)
    for index, unit in enumerate(units[:5]):
        source.push(unit, index * 0.04)
    assert [p.dts for p in source.packets_until(0.085)] == [0, FRAME, 2 * FRAME]
    assert source.packets_until(0.085) == []
    assert [p.dts for p in source.packets_until(1.0)] == [3 * FRAME, 4 * FRAME]


def test_video_played_out_before_the_origin_starts_at_zero_and_catches_up(
    units: list[AccessUnit],
) -> None:
    """The first frame was due 30 ms before media time 0: it goes at 0, and the next ones
    step back onto their schedule by at most half a frame each, so the video is not left
    30 ms behind the audio for the rest of the call."""
    source = PassthroughVideo(*_parameter_sets(units))
    source.start(10.0)
    for index, unit in enumerate(units[:5]):
        source.push(unit, 9.97 + index * 0.04)
    schedule = [round((index * 0.04 - 0.03) * VIDEO_CLOCK) for index in range(5)]
    assert [p.dts for p in source.packets_until(1.0)] == [0, FRAME // 2, *schedule[2:]]


def test_placement_follows_a_schedule_that_moves_later_a_frame_at_a_time(
    units: list[AccessUnit],
) -> None:
    """The jitter buffer deepened by 100 ms after the fourth frame: the video follows it at
    most one frame's duration per frame, DTS increasing, without a re-anchor."""
    source = PassthroughVideo(*_parameter_sets(units))
    source.start(0.0)
    due = [index * 0.04 + (0.1 if index >= 4 else 0.0) for index in range(10)]
    for unit, at in zip(units[:10], due, strict=True):
        source.push(unit, at)
    dts = [p.dts for p in source.packets_until(10.0)]
    assert dts == [
        0,
        FRAME,
        2 * FRAME,
        3 * FRAME,
        5 * FRAME,
        7 * FRAME,
        *(round(at * VIDEO_CLOCK) for at in due[6:]),
    ]
    assert source.timeline.resyncs == 0


def test_backwards_or_drifting_timestamps_reanchor_and_dts_still_increases(
    units: list[AccessUnit],
) -> None:
    source = PassthroughVideo(*_parameter_sets(units), max_drift_s=0.5)
    source.start(0.0)
    source.push(units[3], 0.0)
    source.push(units[1], 0.04)  # RTP time went back 80 ms
    source.push(units[2], 2.0)  # arrived 2 s late for its timestamp
    source.push(units[4], 2.04)
    dts = [p.dts for p in source.packets_until(10.0)]
    assert dts == [0, 3600, 180_000, 180_000 + FRAME]  # two frames of RTP time, one played out
    assert source.timeline.resyncs == 2
    source.resync()
    source.push(units[0], 3.0)  # a new RTP timeline starts at its arrival
    assert [p.dts for p in source.packets_until(10.0)] == [270_000]


def test_recorded_stream_is_byte_identical_and_decodes(
    units: list[AccessUnit], tmp_path: Path
) -> None:
    source = PassthroughVideo(*_parameter_sets(units))
    source.start(0.0)
    for index, unit in enumerate(units):
        source.push(unit, index * 0.04)
    encoder = AacEncoder()
    silence = np.zeros((1, 1024), dtype=np.float32)
    audio: list[EncodedPacket] = []
    for index in range(10):
        audio += encoder.encode(silence, index * 1024)
    video = source.packets_until(1.0)
    for suffix in ("flv", "mp4"):
        path = tmp_path / f"out.{suffix}"
        output = RtmpOutput(str(path), StreamTemplates(source.template, encoder.template))
        output.start()
        output.submit(sorted(audio + video, key=lambda p: p.seconds))
        output.close()
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.width, stream.codec_context.height) == (320, 240)
            data = [bytes(p) for p in container.demux(stream) if p.size]
        assert data == [to_avcc(unit.nals) for unit in units]
        with av.open(str(path)) as container:
            assert len(list(container.decode(video=0))) == len(units)


def test_new_parameter_sets_in_band_are_announced_at_their_keyframe(
    units: list[AccessUnit], tmp_path: Path
) -> None:
    """The callee restarts its encoder at 640x480: that IDR carries the new avcC record, the
    outputs announce it, and the recording decodes at each size."""
    larger = access_units(640, 480, 10, units[-1].timestamp + FRAME)
    source = PassthroughVideo(*_parameter_sets(units))
    source.start(0.0)
    for index, unit in enumerate(units + larger):
        source.push(unit, index * 0.04)
    packets = source.packets_until(1.0)
    sps, pps = _parameter_sets(larger)
    old = bytes(source.template.codec_context.extradata)
    new = avc_decoder_configuration_record([sps], [pps])
    assert [p.config for p in packets if p.keyframe] == [old, new]
    assert all(p.config is None for p in packets if not p.keyframe)
    assert (source.width, source.height, source.sps_changes) == (640, 480, 1)

    path = tmp_path / "resized.flv"
    encoder = AacEncoder()
    output = RtmpOutput(str(path), StreamTemplates(source.template, encoder.template))
    output.start()
    output.submit(packets)
    output.close()
    assert avc_sequence_headers(path) == [(0.0, old), (0.4, new)]
    with av.open(str(path)) as container:
        sizes = [(frame.width, frame.height) for frame in container.decode(video=0)]
    assert sizes == [(320, 240)] * 10 + [(640, 480)] * 10
