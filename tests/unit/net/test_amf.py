"""AMF0 values (AMF0 specification §2), and a connect command as FFmpeg's RTMP client sent it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip2rtmp.net.amf import AmfError, amf_decode, amf_encode, amf_string, skip_value
from sip2rtmp.net.rtmp_publish import COMMAND_AMF0, Dechunker

FFMPEG_CONNECT = bytes.fromhex(
    "0300000000008c1400000000020007636f6e6e656374003ff00000000000000300036170700200046c6976"
    "6500047479706502000a6e6f6e707269766174650008666c617368566572020024464d4c452f332e302028"
    "636f6d70617469626c653b204c61766636322e31322e313032290005746355726c02001b72746d703a2f2f"
    "3132372e302e302e313a31c3393335302f6c697665000009"
)
"""FFmpeg 6's `connect` on chunk stream 3, split after 128 bytes (the 0xc3 continuation)."""


def test_ffmpegs_connect_reads_as_its_command_object() -> None:
    (message,) = Dechunker().feed(FFMPEG_CONNECT)
    assert message.type_id == COMMAND_AMF0
    name, position = amf_decode(message.body, 0)
    transaction, position = amf_decode(message.body, position)
    command, position = amf_decode(message.body, position)
    assert (name, transaction, position) == ("connect", 1.0, len(message.body))
    assert command == {
        "app": "live",
        "type": "nonprivate",
        "flashVer": "FMLE/3.0 (compatible; Lavf62.12.102)",
        "tcUrl": "rtmp://127.0.0.1:19350/live",
    }


def test_values_come_back_as_they_were_encoded() -> None:
    values = ["x" * 70_000, 2.5, True, None, {"level": "error", "nested": {"n": 1.0}}]
    encoded = b"".join(amf_encode(value) for value in values)
    position, decoded = 0, []
    while position < len(encoded):
        value, position = amf_decode(encoded, position)
        decoded.append(value)
    assert decoded == values
    assert amf_string("x" * 70_000)[0] == 0x0C  # a long string past 65,535 bytes


def test_kinds_a_command_does_not_use_are_skipped_whole() -> None:
    nested = b"\x03" + b"\x00\x01a" + b"\x0a\x00\x00\x00\x02\x05\x01\x01" + b"\x00\x00\x09"
    assert skip_value(nested + b"tail", 0) == len(nested)
    assert amf_decode(b"\x0b" + bytes(10), 0) == (None, 11)  # a date


def test_nesting_and_truncation_are_refused() -> None:
    deep = amf_encode({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {}}}}}}}}}})
    with pytest.raises(AmfError, match="too deep"):
        amf_decode(deep, 0)
    with pytest.raises(AmfError, match="past its message"):
        amf_decode(amf_encode("truncated")[:-2], 0)


@pytest.mark.fuzz
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_value_or_an_amf_error(data: bytes) -> None:
    try:
        _, position = amf_decode(data, 0)
    except AmfError:
        return
    assert 0 < position <= len(data)
