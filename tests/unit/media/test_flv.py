"""The outputs' own FLV tags for media packets against FFmpeg's FLV muxer, tag for tag."""

from __future__ import annotations

import io

import numpy as np

from sip2rtmp.media import flv
from sip2rtmp.media.audio import AacEncoder
from sip2rtmp.media.packets import EncodedPacket, StreamTemplates, Track
from sip2rtmp.media.passthrough import h264_template
from tests.unit.media.video_signals import h264_clip


def ffmpeg_tags(templates: StreamTemplates, packets: list[EncodedPacket]) -> list[flv.Tag]:
    """What FFmpeg's FLV muxer writes for ``packets`` after its header, as (type, ms, body),
    announcing each keyframe's configuration as new extradata."""
    import av
    from av.packet import PacketSideData, packet_sidedata_type_from_literal

    out = io.BytesIO()
    container = av.open(
        out, "w", format="flv", container_options={"flvflags": "no_duration_filesize"}
    )
    streams = templates.add_to(container)
    container.start_encoding()
    header_end = out.tell()
    announced = templates.video_config
    for packet in packets:
        av_packet = av.Packet(packet.data)
        av_packet.pts, av_packet.dts = packet.pts, packet.dts
        av_packet.time_base = packet.time_base
        av_packet.stream = streams[packet.track]
        av_packet.is_keyframe = packet.keyframe
        if packet.config is not None and packet.config != announced:
            kind = packet_sidedata_type_from_literal("new_extradata")
            side = PacketSideData(kind, len(packet.config))  # type: ignore[call-arg]
            memoryview(side)[:] = packet.config
            side.to_packet(av_packet)
            announced = packet.config
        container.mux(av_packet)
    container.close()
    data = out.getvalue()
    tags, offset = [], header_end
    while offset + 11 <= len(data):
        kind = data[offset] & 0x1F
        size = int.from_bytes(data[offset + 1 : offset + 4], "big")
        millis = int.from_bytes(data[offset + 4 : offset + 7], "big") | data[offset + 7] << 24
        body = data[offset + 11 : offset + 11 + size]
        offset += 11 + size + 4
        end_of_sequence = kind == flv.VIDEO_TAG and body[1:2] == b"\x02"
        if kind in (flv.AUDIO_TAG, flv.VIDEO_TAG) and not end_of_sequence:
            tags.append((kind, millis, bytes(body)))
    return tags


def ours(templates: StreamTemplates, packets: list[EncodedPacket]) -> list[flv.Tag]:
    tags, announced = [], templates.video_config
    for packet in packets:
        config = packet.config
        new = config if config is not None and config != announced else None
        tags += flv.tags(packet, new)
        announced = new or announced
    return tags


def test_tags_match_ffmpegs_muxer_for_aac_and_h264_with_a_new_configuration() -> None:
    small = h264_clip(320, 240, 10, keyint=5, grey=60)
    large = h264_clip(640, 480, 10, keyint=5, grey=200)
    aac = AacEncoder()
    audio: list[EncodedPacket] = []
    for index in range(40):
        samples = (0.2 * np.sin(np.arange(1024) * (index + 1) / 50)).astype(np.float32)
        audio += aac.encode(samples[None, :], index * 1024)
    templates = StreamTemplates(h264_template(small.sps, small.pps), aac.template)
    video = small.packets(0) + large.packets(10)
    packets = sorted(video + audio, key=lambda packet: (packet.seconds, packet.track.value))
    by_track = {
        kind: [tag for tag in ffmpeg_tags(templates, packets) if tag[0] == kind]
        for kind in (flv.AUDIO_TAG, flv.VIDEO_TAG)
    }
    mine = ours(templates, packets)
    assert [t for t in mine if t[0] == flv.VIDEO_TAG] == by_track[flv.VIDEO_TAG]
    assert [t for t in mine if t[0] == flv.AUDIO_TAG] == by_track[flv.AUDIO_TAG]
    headers = [t for t in mine if t[2][:2] == b"\x17\x00"]
    assert [(millis, body[5:]) for _, millis, body in headers] == [(400, large.config)]


def test_milliseconds_round_to_the_nearest() -> None:
    assert [flv.milliseconds(ticks, 48_000) for ticks in (0, 1024, 2048, 3072)] == [0, 21, 43, 64]
    assert flv.milliseconds(3600, 90_000) == 40
    assert flv.tags(EncodedPacket(Track.AUDIO, b"x", 48, 48, True)) == [(8, 1, b"\xaf\x01x")]
