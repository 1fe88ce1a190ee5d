"""FLV tags for the packets an RTMP output publishes (Adobe Flash Video File Format
Specification 10.1, E.4.2.1 and E.4.3.1).

FFmpeg's FLV muxer still writes each connection's header, metadata and first sequence
headers; media packets are tagged here instead, so each leaves the moment it is handed over.
The muxer's interleaving would hold the newest packet of every batch back until the next
batch, and the pipeline already hands packets over in time order.
"""

from __future__ import annotations

from sip2rtmp.media.packets import EncodedPacket, Track

AUDIO_TAG = 8
VIDEO_TAG = 9
_AAC_RAW = b"\xaf\x01"
"""SoundFormat 10 (AAC) with the rate, size and channel flags FLV fixes for AAC, then
AACPacketType 1: a raw frame."""
_AVC_KEYFRAME, _AVC_INTER = 0x17, 0x27
"""FrameType (1 key, 2 inter) and CodecID 7 (AVC)."""
_AVC_SEQUENCE_HEADER, _AVC_NALU = 0, 1

Tag = tuple[int, int, bytes]
"""(tag type, timestamp in milliseconds, body)."""


def milliseconds(ticks: int, rate: int) -> int:
    """A timestamp in FLV's milliseconds, rounded to the nearest as FFmpeg rescales it."""
    return (ticks * 1000 + rate // 2) // rate


def tags(packet: EncodedPacket, new_config: bytes | None = None) -> list[Tag]:
    """The tags that carry ``packet``: an AVC sequence header first when ``new_config`` (an
    avcC record) is to be announced with it."""
    rate = int(1 / packet.time_base)
    at = milliseconds(packet.dts, rate)
    if packet.track is Track.AUDIO:
        return [(AUDIO_TAG, at, _AAC_RAW + packet.data)]
    found: list[Tag] = []
    if new_config is not None:
        header = bytes([_AVC_KEYFRAME, _AVC_SEQUENCE_HEADER, 0, 0, 0])
        found.append((VIDEO_TAG, at, header + new_config))
    offset = milliseconds(packet.pts, rate) - at
    frame = _AVC_KEYFRAME if packet.keyframe else _AVC_INTER
    header = bytes([frame, _AVC_NALU]) + offset.to_bytes(3, "big", signed=True)
    found.append((VIDEO_TAG, at, header + packet.data))
    return found
