from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from sip2rtmp.media import slate as slate_module
from sip2rtmp.media.audio import AacEncoder
from sip2rtmp.media.output import RtmpOutput
from sip2rtmp.media.packets import EncodedPacket, StreamTemplates
from sip2rtmp.media.slate import SlateVideo, load_picture, render_card
from sip2rtmp.rtp.h264 import (
    NAL_IDR,
    NAL_PPS,
    NAL_SEI,
    NAL_SPS,
    avc_decoder_configuration_record,
    nal_type,
    slice_numbering,
    split_annexb,
    to_avcc,
)


def test_card_draws_text_on_the_background() -> None:
    card = render_card("Alice", "call 12:00", 640, 360)
    assert card.shape == (360, 640, 3)
    assert (card == 235).all(axis=2).sum() > 500  # title pixels


def test_packets_come_once_each_with_a_keyframe_every_two_seconds() -> None:
    slate = SlateVideo.text("Bob", width=640, height=360, fps=10)
    assert slate.packets_until(-0.05) == []
    packets = slate.packets_until(3.0) + slate.packets_until(9.95)
    assert [p.pts for p in packets] == [i * 9000 for i in range(100)]
    assert [p.pts for p in packets if p.keyframe] == [i * 180_000 for i in range(5)]


def _record(path: Path, slate: SlateVideo, seconds: float) -> None:
    encoder = AacEncoder()
    output = RtmpOutput(str(path), StreamTemplates(slate.template, encoder.template))
    output.start()
    silence = np.zeros((1, 1024), dtype=np.float32)
    audio: list[EncodedPacket] = []
    for index in range(int(seconds * 48000 / 1024)):
        audio += encoder.encode(silence, index * 1024)
    output.submit(sorted(audio + slate.packets_until(seconds), key=lambda p: p.seconds))
    output.close()


def test_recorded_slate_decodes_with_keyframes_exactly_two_seconds_apart(tmp_path: Path) -> None:
    path = tmp_path / "slate.flv"
    _record(path, SlateVideo.text("Carol", "call time 00:00", width=640, height=360), 7.0)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keys = [float(p.pts * p.time_base) for p in container.demux(stream) if p.is_keyframe]
    assert keys == [0.0, 2.0, 4.0, 6.0]
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 71
    assert (frames[0].width, frames[0].height) == (640, 360)


def test_user_image_is_letterboxed(tmp_path: Path) -> None:
    picture = tmp_path / "logo.png"
    with av.open(str(picture), "w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 200, 200, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.full((200, 200, 3), 255, np.uint8), "rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    loaded = load_picture(picture, 640, 360)
    assert loaded[180, 320].tolist() == [255, 255, 255] and loaded[180, 10].tolist() == [0, 0, 0]
    assert SlateVideo.image(picture, width=640, height=360).gop_bytes > 0


def test_odd_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        SlateVideo(np.zeros((361, 640, 3), np.uint8))


def test_slate_is_avcc_with_its_parameter_sets_in_band_and_in_the_template() -> None:
    slate = SlateVideo.text("Dave", width=320, height=180)
    assert bytes(slate.template.codec_context.extradata) == slate.config
    assert slate.config == avc_decoder_configuration_record([slate.sps], [slate.pps])
    packets = slate.packets_until(1.95)
    assert [p.config for p in packets] == [slate.config] + [None] * 19
    first = [nal_type(nal) for nal in slate.access_unit(0)]
    assert first[:2] == [NAL_SPS, NAL_PPS] and NAL_IDR in first and NAL_SEI not in first
    assert [p.data for p in packets] == [to_avcc(slate.access_unit(i)) for i in range(20)]
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = slate.config
    pictures = [picture for p in packets for picture in decoder.decode(av.Packet(p.data))]
    pictures += decoder.decode(None)
    assert len(pictures) == 20
    assert {(picture.width, picture.height) for picture in pictures} == {(320, 180)}
    rgb = pictures[-1].to_ndarray(format="rgb24")
    assert np.abs(rgb[5, 5].astype(int) - (24, 28, 40)).max() <= 6, "the card's background"


def test_restart_opens_the_loop_with_its_idr_at_any_time() -> None:
    slate = SlateVideo.text("Erin", width=320, height=180)
    assert len(slate.packets_until(0.35)) == 4
    slate.restart(100_001)
    assert slate.packets_until(1.1) == []
    packets = slate.packets_until(100_001 / 90_000 + 4.0)
    assert [p.dts for p in packets] == [100_001 + i * 9000 for i in range(41)]
    assert [p.dts for p in packets if p.keyframe] == [100_001 + i * 180_000 for i in range(3)]
    assert all(p.pts == p.dts for p in packets)


def _pictures(units: list[tuple[bytes, ...]]) -> list[bytes]:
    decoder = av.CodecContext.create("h264", "r")
    decoded = []
    for unit in units:
        decoded += decoder.decode(av.Packet(b"".join(b"\x00\x00\x00\x01" + nal for nal in unit)))
    decoded += decoder.decode(None)
    return [picture.to_ndarray().tobytes() for picture in decoded]


@pytest.mark.parametrize(
    ("width", "height", "profile"), [(1280, 720, None), (640, 360, "baseline"), (320, 180, None)]
)
def test_the_renumbered_gop_decodes_to_libx264s_own_pictures_with_two_frames_encoded(
    monkeypatch: pytest.MonkeyPatch, width: int, height: int, profile: str | None
) -> None:
    picture = render_card("bridge@conference.example", "call started 12:00", width, height)
    encoded_frames: list[int] = []
    real_create = av.CodecContext.create

    def counting_encoder(name: str, mode: str) -> av.CodecContext:
        context = real_create(name, mode)
        if name != "libx264":
            return context
        real_encode = context.encode

        class Counting:
            def __getattr__(self, attribute: str) -> object:
                return getattr(context, attribute)

            def __setattr__(self, attribute: str, value: object) -> None:
                setattr(context, attribute, value)

            def encode(self, frame: av.VideoFrame | None = None) -> list[av.Packet]:
                encoded_frames.append(frame is not None)
                return real_encode(frame)

        return Counting()  # type: ignore[return-value]

    monkeypatch.setattr(av.CodecContext, "create", counting_encoder)
    renumbered = slate_module._encode_gop(picture, 10, 20, 22, profile)
    assert encoded_frames.count(True) == 2, "the IDR and one P frame"
    monkeypatch.setattr(slate_module, "_repeats_the_idr", lambda units: False)
    encoded = slate_module._encode_gop(picture, 10, 20, 22, profile)
    assert encoded_frames.count(True) == 22, "every frame encoded"
    assert [len(unit) for unit in renumbered] == [len(unit) for unit in encoded]
    assert renumbered[:2] == encoded[:2]
    assert _pictures(renumbered) == _pictures(encoded)
    assert len(set(_pictures(renumbered))) == 1, "one still picture"


def _idr_then_p(first: np.ndarray, second: np.ndarray) -> list[tuple[bytes, ...]]:
    """An IDR of ``first`` and a P frame that turns it into ``second``."""
    context = av.CodecContext.create("libx264", "w")
    context.width, context.height = first.shape[1], first.shape[0]
    context.pix_fmt = "yuv420p"
    context.time_base = Fraction(1, 10)
    context.thread_count = 1
    context.options = {"preset": "veryfast", "tune": "zerolatency", "x264-params": "bframes=0"}
    packets = []
    for index, picture in enumerate((first, second)):
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts = index
        packets += context.encode(frame)
    packets += context.encode(None)
    return [tuple(n for n in split_annexb(bytes(p)) if nal_type(n) != NAL_SEI) for p in packets]


def test_a_p_frame_that_changes_the_picture_is_not_replayed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    card = render_card("Frank", "call started 12:00", 320, 180)
    units = slate_module._encode_gop(card, 10, 4, 22, None)
    assert slate_module._repeats_the_idr(units[:2])
    assert not slate_module._repeats_the_idr([units[0], units[0][2:]]), "an IDR is no P slice"
    changed = _idr_then_p(card, render_card("Grace", "call started 12:01", 320, 180))
    assert len(changed) == 2 and len(changed[1]) == 1
    assert not slate_module._repeats_the_idr(changed), "a P frame that draws another card"
    assert slice_numbering(units[0][0]).poc_type == 2, "x264 without B-frames: by frame_num"
    monkeypatch.setattr(
        slate_module,
        "slice_numbering",
        lambda sps: dataclasses.replace(slice_numbering(sps), poc_type=0),
    )
    assert not slate_module._repeats_the_idr(units[:2]), "a slice that carries its own order"
    monkeypatch.undo()
    broken = changed[1][0][:8] + bytes(len(changed[1][0]) - 8)
    assert not slate_module._repeats_the_idr([changed[0], (broken,)]), "a slice that fails"
