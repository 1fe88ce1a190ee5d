"""What a player reads from an FLV file besides the samples: its AVC sequence headers.

Demuxers hide where a sequence header sits in the stream, so the tags are walked directly
(Adobe FLV specification 10.1: §E.3 FLV body, §E.4.1 FLVTAG, §E.4.3.1 VIDEODATA and
AVCVIDEOPACKET).
"""

from __future__ import annotations

import struct
from pathlib import Path

_VIDEO_TAG = 9
_AVC = 7
_SEQUENCE_HEADER = 0


def avc_sequence_headers(path: Path) -> list[tuple[float, bytes]]:
    """(time in seconds, AVCDecoderConfigurationRecord) of each AVC sequence header, in order."""
    data = path.read_bytes()
    if data[:3] != b"FLV":
        raise ValueError(f"{path} is not an FLV file")
    offset = struct.unpack_from(">I", data, 5)[0] + 4  # header, then PreviousTagSize0
    headers = []
    while offset + 11 <= len(data):
        kind = data[offset] & 0x1F
        size = int.from_bytes(data[offset + 1 : offset + 4], "big")
        millis = int.from_bytes(data[offset + 4 : offset + 7], "big") | data[offset + 7] << 24
        body = data[offset + 11 : offset + 11 + size]
        if (
            kind == _VIDEO_TAG
            and len(body) > 5
            and body[0] & 0x0F == _AVC
            and body[1] == _SEQUENCE_HEADER
        ):
            headers.append((millis / 1000, bytes(body[5:])))
        offset += 11 + size + 4
    return headers
