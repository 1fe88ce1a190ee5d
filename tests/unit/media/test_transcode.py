from __future__ import annotations

import dataclasses
import itertools
from fractions import Fraction

import av
import numpy as np
import pytest
from video_signals import x264_encoder

from sip2rtmp.media.passthrough import VIDEO_CLOCK
from sip2rtmp.media.transcode import TranscodedVideo
from sip2rtmp.rtp.h264 import (
    NAL_PPS,
    NAL_SPS,
    AccessUnit,
    nal_type,
    parse_sps,
    split_annexb,
)
from sip2rtmp.rtp.vp8 import Vp8Frame, keyframe_size

FRAME = 3600  # 25 fps on the 90 kHz clock
START = 0xFFFFFFFF - 10 * FRAME  # the RTP clock wraps 10 frames in


def vp8_frames(
    count: int, width: int = 320, height: int = 240, keyframes: tuple[int, ...] = (0,)
) -> list[Vp8Frame]:
    """VP8 from libvpx as a callee would send it, one grey level per frame."""
    context = av.CodecContext.create("libvpx", "w")
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base = Fraction(1, 25)
    context.options = {"deadline": "realtime", "lag-in-frames": "0"}
    encoded: list[bytes] = []
    for index in range(count):
        picture = np.full((height, width, 3), (index * 5) % 256, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        kind = av.video.frame.PictureType
        frame.pict_type = kind.I if index in keyframes else kind.NONE
        encoded += [bytes(packet) for packet in context.encode(frame)]
    encoded += [bytes(packet) for packet in context.encode(None)]
    frames = []
    for index, data in enumerate(encoded):
        size = keyframe_size(data)
        width_, height_ = size if size else (None, None)
        frames.append(
            Vp8Frame((START + index * FRAME) & 0xFFFFFFFF, data, size is not None, width_, height_)
        )
    return frames


def h264_units(
    count: int, width: int = 352, height: int = 288
) -> tuple[bytes, bytes, list[AccessUnit]]:
    """H.264 as a callee that sends one IDR and then only P-slices would, one grey level per
    frame; its SPS/PPS only out of band, as from sprop-parameter-sets. Two reference frames
    tell its SPS from the transcoder's own libx264 one."""
    context = x264_encoder(width, height, "keyint=infinite:ref=2", profile="baseline")
    parameter_sets = split_annexb(bytes(context.extradata))
    sps = next(nal for nal in parameter_sets if nal_type(nal) == NAL_SPS)
    pps = next(nal for nal in parameter_sets if nal_type(nal) == NAL_PPS)
    packets = []
    for index in range(count):
        picture = np.full((height, width, 3), (index * 5) % 256, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        packets += context.encode(frame)
    packets += context.encode(None)
    units = [
        AccessUnit(
            (START + index * FRAME) & 0xFFFFFFFF,
            tuple(split_annexb(bytes(packet))),
            bool(packet.is_keyframe),
        )
        for index, packet in enumerate(packets)
    ]
    return sps, pps, units


def transcode(frames: list[Vp8Frame] | list[AccessUnit], source: TranscodedVideo) -> None:
    """Push frames at 25 fps of playout time, 1 s after media time 0, then drain."""
    source.start(100.0)
    for index, frame in enumerate(frames):
        source.push(frame, 101.0 + index * 0.04)
    source.close()


def decode_h264(source: TranscodedVideo, packets: list[bytes]) -> list[av.VideoFrame]:
    """Decode length-prefixed samples with the template's avcC, as a player would."""
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = bytes(source.template.codec_context.extradata)
    pictures: list[av.VideoFrame] = []
    for data in packets:
        pictures += decoder.decode(av.Packet(data))
    return pictures + decoder.decode(None)


@pytest.fixture(scope="module")
def stream() -> list[Vp8Frame]:
    """12 s of VP8 whose keyframes fall off the 2 s grid (the callee answers requests)."""
    frames = vp8_frames(300, keyframes=(0, 37, 140, 141, 230))
    assert [index for index, frame in enumerate(frames) if frame.keyframe] == [0, 37, 140, 141, 230]
    return frames


def test_template_is_h264_at_the_callees_size() -> None:
    source = TranscodedVideo(352, 288)
    context = source.template.codec_context
    assert context.codec.canonical_name == "h264"
    extradata = bytes(context.extradata)
    assert extradata[0] == 1, "avcC, as the outputs expect for length-prefixed samples"
    sps = extradata[8 : 8 + int.from_bytes(extradata[6:8])]
    info = parse_sps(sps)
    assert (info.width, info.height) == (source.width, source.height) == (352, 288)


def test_keyframes_every_two_seconds_on_the_media_clock(stream: list[Vp8Frame]) -> None:
    source = TranscodedVideo(320, 240, queue_size=len(stream))
    transcode(stream, source)
    packets = source.packets_until(100.0)
    assert [p.dts for p in packets] == [90_000 + i * FRAME for i in range(len(stream))]
    assert all(p.pts == p.dts for p in packets)
    assert [p.dts for p in packets if p.keyframe] == [90_000 + i * 180_000 for i in range(6)]
    assert (source.frames, source.keyframes, source.dropped, source.timeline.resyncs) == (
        300,
        6,
        0,
        0,
    )
    pictures = decode_h264(source, [p.data for p in packets])
    assert len(pictures) == len(stream)
    assert all((p.width, p.height) == (320, 240) for p in pictures)
    levels = [int(p.to_ndarray()[0].mean()) for p in pictures[:40:10]]  # luma of frames 0..30
    expected = [16 + round(i * 5 * 219 / 255) for i in range(0, 40, 10)]
    assert np.allclose(levels, expected, atol=4), "the callee's pictures, not something else"


def test_packets_come_out_once_when_due(stream: list[Vp8Frame]) -> None:
    source = TranscodedVideo(320, 240, queue_size=len(stream))
    transcode(stream[:50], source)
    assert source.packets_until(0.99) == []
    first = source.packets_until(1.5)
    assert [p.dts for p in first] == [90_000 + i * FRAME for i in range(13)]
    assert len(source.packets_until(10.0)) == 37
    assert source.packets_until(10.0) == []


def test_a_new_picture_size_is_scaled_to_the_first() -> None:
    source = TranscodedVideo(320, 240, queue_size=100)
    smaller = vp8_frames(10, width=160, height=120)
    transcode(vp8_frames(10) + smaller, source)
    packets = source.packets_until(100.0)
    pictures = decode_h264(source, [p.data for p in packets])
    assert len(pictures) == 20
    assert all((p.width, p.height) == (320, 240) for p in pictures)


def test_a_full_queue_drops_up_to_the_next_vp8_keyframe() -> None:
    frames = vp8_frames(100, keyframes=tuple(range(0, 100, 10)))
    source = TranscodedVideo(320, 240, queue_size=2)
    transcode(frames, source)  # pushes far faster than the worker decodes and encodes
    passed = {(p.dts - 90_000) // FRAME for p in source.packets_until(100.0)}
    assert source.dropped > 0
    assert len(passed) + source.dropped == len(frames)
    for index in sorted(passed):
        assert index == 0 or index - 1 in passed or frames[index].keyframe, index
    assert source.undecodable == 0


def test_undecodable_frames_are_counted_and_skipped() -> None:
    frames = vp8_frames(5)
    garbage = Vp8Frame(frames[2].timestamp, b"\x00" * 10, True, 320, 240)
    source = TranscodedVideo(320, 240)
    transcode([*frames[:2], garbage], source)
    assert source.undecodable == 1
    assert source.frames == 2


def test_frames_before_start_are_refused() -> None:
    with pytest.raises(RuntimeError):
        TranscodedVideo(320, 240).push(vp8_frames(1)[0], 0.0)


def test_the_first_frame_after_a_pause_opens_a_gop_with_its_parameter_sets() -> None:
    """The callee stops for a second (its RTP clock runs on): the outputs are on the slate by
    then and can come back only at a keyframe, so the encoder makes one at once."""
    frames = vp8_frames(20)
    resumed = [
        dataclasses.replace(frame, timestamp=(frame.timestamp + VIDEO_CLOCK) & 0xFFFFFFFF)
        for frame in frames[10:]
    ]
    source = TranscodedVideo(320, 240, queue_size=len(frames))
    source.start(100.0)
    for index, frame in enumerate(frames[:10] + resumed):
        source.push(frame, 101.0 + index * 0.04 + (1.0 if index >= 10 else 0.0))
    source.close()
    packets = source.packets_until(100.0)
    assert [index for index, p in enumerate(packets) if p.keyframe] == [0, 10]
    assert packets[10].dts - packets[9].dts == VIDEO_CLOCK + FRAME
    config = bytes(source.template.codec_context.extradata)
    assert [p.config for p in packets if p.keyframe] == [config, config]
    assert all(p.config is None for p in packets if not p.keyframe)
    for keyframe in (packets[0], packets[10]):
        sps_length = int.from_bytes(keyframe.data[:4], "big")
        assert keyframe.data[4] & 0x1F == NAL_SPS
        assert keyframe.data[8 + sps_length] & 0x1F == NAL_PPS
    assert len(decode_h264(source, [p.data for p in packets])) == 20


def test_h264_is_re_encoded_at_the_size_of_its_sps() -> None:
    """``--transcode``: the callee's H.264 (one IDR, parameter sets out of band) in, the
    encoder's own H.264 out, with keyframes every interval whatever the callee sends."""
    sps, pps, units = h264_units(75)
    assert [unit.keyframe for unit in units].count(True) == 1
    assert NAL_SPS not in {nal_type(nal) for unit in units for nal in unit.nals}
    source = TranscodedVideo(352, 288, parameter_sets=(sps, pps), queue_size=len(units))
    transcode(units, source)
    packets = source.packets_until(100.0)
    assert [p.dts for p in packets] == [90_000 + i * FRAME for i in range(len(units))]
    assert [p.dts for p in packets if p.keyframe] == [90_000, 270_000], "every 2 s"
    assert (source.frames, source.dropped, source.undecodable) == (75, 0, 0)
    extradata = bytes(source.template.codec_context.extradata)
    ours = extradata[8 : 8 + int.from_bytes(extradata[6:8])]
    assert ours != sps, "the encoder's own parameter sets, not the callee's"
    assert (parse_sps(ours).width, parse_sps(ours).height) == (352, 288)
    pictures = decode_h264(source, [p.data for p in packets])
    assert len(pictures) == len(units)
    assert all((p.width, p.height) == (352, 288) for p in pictures)
    levels = [int(p.to_ndarray()[0].mean()) for p in pictures[:40:10]]
    expected = [16 + round(i * 5 * 219 / 255) for i in range(0, 40, 10)]
    assert np.allclose(levels, expected, atol=4), "the callee's pictures, not something else"


@pytest.mark.parametrize("interval", [0.5, 1.0, 3.0])
def test_forced_keyframes_follow_the_keyframe_interval(
    stream: list[Vp8Frame], interval: float
) -> None:
    """The callee's own keyframes (frames 37, 140, 141, 230) do not move the slots."""
    source = TranscodedVideo(320, 240, keyframe_interval_s=interval, queue_size=len(stream))
    transcode(stream, source)
    keyframes = [p.dts for p in source.packets_until(100.0) if p.keyframe]
    gop = int(interval * 25) * FRAME  # 0.5 s is 12.5 frames: 12 keeps within the interval
    assert keyframes == list(range(90_000, 90_000 + len(stream) * FRAME, gop))


def test_frames_are_placed_by_capture_time_once_the_sender_reports_tell_it() -> None:
    """Lip sync (RFC 3550 §6.4.1) as for passed-through video: frames that arrive 300 ms
    after the audio captured with them slew back onto it, one bounded step at a time."""
    sps, pps, units = h264_units(40, 64, 64)
    source = TranscodedVideo(64, 64, parameter_sets=(sps, pps), queue_size=len(units))
    source.start(0.0)
    late = 0.3

    def capture_time(timestamp: int) -> float | None:
        """Media time of the audio captured with the frame: 1 s on for the first, once the
        reports came with the 10th frame."""
        ticks = (timestamp - START) % (1 << 32)  # the RTP clock wraps 10 frames in
        return None if ticks < 10 * FRAME else 1 + ticks / VIDEO_CLOCK

    source.sync_to(capture_time)
    assert source.av_skew is None
    for index, unit in enumerate(units):
        source.push(unit, 1 + index * FRAME / VIDEO_CLOCK + late)
    source.close()
    dts = [packet.dts for packet in source.packets_until(1e9)]
    steps = [b - a for a, b in itertools.pairwise(dts)]
    assert all(FRAME // 2 <= step <= 2 * FRAME for step in steps), steps
    assert dts[9] == VIDEO_CLOCK + 9 * FRAME + round(late * VIDEO_CLOCK), "by arrival until then"
    assert dts[-1] == VIDEO_CLOCK + 39 * FRAME, "by capture time once the reports came"
    assert source.av_skew == pytest.approx(late)
    assert source.timeline.resyncs == 0


def test_frames_of_the_other_codec_are_refused() -> None:
    sps, pps, units = h264_units(1, 64, 64)
    vp8 = TranscodedVideo(64, 64)
    vp8.start(0.0)
    with pytest.raises(TypeError):
        vp8.push(units[0], 0.0)
    h264 = TranscodedVideo(64, 64, parameter_sets=(sps, pps))
    h264.start(0.0)
    with pytest.raises(TypeError):
        h264.push(vp8_frames(1, 64, 64)[0], 0.0)
    vp8.close()
    h264.close()
