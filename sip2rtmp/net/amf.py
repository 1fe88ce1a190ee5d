"""AMF0, the encoding of RTMP's commands and metadata (AMF0 specification, Adobe 2007).

Values come from the server, so every read is bounded by its message and nested at most
``MAX_AMF_DEPTH`` deep; anything malformed is an `AmfError`.
"""

from __future__ import annotations

import struct
from typing import Any

MAX_AMF_DEPTH = 8
"""Command answers nest an object or two; a deeper value is refused, not followed."""


class AmfError(ValueError):
    """The bytes are not the AMF0 value they should be."""


AMF_NUMBER = 0x00
AMF_BOOLEAN = 0x01
AMF_STRING = 0x02
AMF_OBJECT = 0x03
AMF_NULL = 0x05
AMF_UNDEFINED = 0x06
AMF_REFERENCE = 0x07
AMF_ECMA_ARRAY = 0x08
AMF_STRICT_ARRAY = 0x0A
AMF_DATE = 0x0B
AMF_LONG_STRING = 0x0C
AMF_UNSUPPORTED = 0x0D
AMF_XML = 0x0F
AMF_TYPED_OBJECT = 0x10
_FIXED = {
    AMF_NUMBER: 8,
    AMF_BOOLEAN: 1,
    AMF_NULL: 0,
    AMF_UNDEFINED: 0,
    AMF_REFERENCE: 2,
    AMF_DATE: 10,
    AMF_UNSUPPORTED: 0,
}
"""AMF0 markers whose value has a fixed size (AMF0 specification §2)."""


def amf_string(text: str) -> bytes:
    data = text.encode()
    if len(data) > 0xFFFF:
        return bytes([AMF_LONG_STRING]) + struct.pack(">I", len(data)) + data
    return bytes([AMF_STRING]) + struct.pack(">H", len(data)) + data


def read_string(body: bytes, position: int) -> tuple[str, int]:
    """An AMF0 string or long string at ``position``, and the position after it."""
    marker = _byte(body, position)
    if marker == AMF_STRING:
        start, length = position + 3, _u16(body, position + 1)
    elif marker == AMF_LONG_STRING:
        start, length = position + 5, _u32(body, position + 1)
    else:
        raise AmfError(f"AMF0 marker {marker:#x} where a string was expected")
    end = start + length
    if end > len(body):
        raise AmfError("an AMF0 string runs past its message")
    try:
        return body[start:end].decode(), end
    except UnicodeDecodeError:
        raise AmfError("an AMF0 string that is not UTF-8") from None


def skip_value(body: bytes, position: int, depth: int = 0) -> int:
    """The position after the AMF0 value at ``position``."""
    if depth > MAX_AMF_DEPTH:
        raise AmfError("AMF0 values nested too deep")
    marker = _byte(body, position)
    position += 1
    if marker in _FIXED:
        end = position + _FIXED[marker]
    elif marker in (AMF_STRING, AMF_LONG_STRING):
        return read_string(body, position - 1)[1]
    elif marker == AMF_XML:
        end = position + 4 + _u32(body, position)
    elif marker in (AMF_OBJECT, AMF_ECMA_ARRAY, AMF_TYPED_OBJECT):
        if marker == AMF_ECMA_ARRAY:
            position += 4
        elif marker == AMF_TYPED_OBJECT:
            position += 2 + _u16(body, position)
        end = _skip_properties(body, position, depth)
    elif marker == AMF_STRICT_ARRAY:
        end = position + 4
        for _ in range(_u32(body, position)):
            end = skip_value(body, end, depth + 1)
    else:
        raise AmfError(f"AMF0 marker {marker:#x}")
    if end > len(body):
        raise AmfError("an AMF0 value runs past its message")
    return end


def _skip_properties(body: bytes, position: int, depth: int) -> int:
    while True:
        if body[position : position + 3] == b"\x00\x00\x09":
            return position + 3
        position += 2 + _u16(body, position)
        position = skip_value(body, position, depth + 1)


def _byte(body: bytes, position: int) -> int:
    if position >= len(body):
        raise AmfError("an AMF0 value runs past its message")
    return body[position]


def _u16(body: bytes, position: int) -> int:
    if position + 2 > len(body):
        raise AmfError("an AMF0 value runs past its message")
    return int.from_bytes(body[position : position + 2], "big")


def _u32(body: bytes, position: int) -> int:
    if position + 4 > len(body):
        raise AmfError("an AMF0 value runs past its message")
    return int.from_bytes(body[position : position + 4], "big")


def amf_encode(value: Any) -> bytes:
    """AMF0 (AMF0 specification §2) for the values a publisher's commands use."""
    if value is None:
        return bytes([AMF_NULL])
    if isinstance(value, bool):
        return bytes([AMF_BOOLEAN, value])
    if isinstance(value, int | float):
        return bytes([AMF_NUMBER]) + struct.pack(">d", value)
    if isinstance(value, str):
        return amf_string(value)
    if isinstance(value, dict):
        properties = b"".join(
            len(key.encode()).to_bytes(2, "big") + key.encode() + amf_encode(item)
            for key, item in value.items()
        )
        return bytes([AMF_OBJECT]) + properties + b"\x00\x00\x09"
    raise TypeError(f"no AMF0 encoding for {type(value).__name__}")


def amf_decode(body: bytes, position: int, depth: int = 0) -> tuple[Any, int]:
    """One AMF0 value and the position after it; kinds a command's answer does not use are
    skipped and read as None."""
    if depth > MAX_AMF_DEPTH:
        raise AmfError("AMF0 values nested too deep")
    if position >= len(body):
        raise AmfError("an AMF0 value runs past its message")
    marker = body[position]
    if marker == AMF_NUMBER:
        if position + 9 > len(body):
            raise AmfError("an AMF0 number runs past its message")
        return struct.unpack(">d", body[position + 1 : position + 9])[0], position + 9
    if marker == AMF_BOOLEAN:
        if position + 2 > len(body):
            raise AmfError("an AMF0 boolean runs past its message")
        return bool(body[position + 1]), position + 2
    if marker in (AMF_STRING, AMF_LONG_STRING):
        return read_string(body, position)
    if marker in (AMF_OBJECT, AMF_ECMA_ARRAY):
        position += 5 if marker == AMF_ECMA_ARRAY else 1
        properties: dict[str, Any] = {}
        while body[position : position + 3] != b"\x00\x00\x09":
            if position + 2 > len(body):
                raise AmfError("an AMF0 object runs past its message")
            key_end = position + 2 + int.from_bytes(body[position : position + 2], "big")
            key = body[position + 2 : key_end].decode(errors="replace")
            properties[key], position = amf_decode(body, key_end, depth + 1)
        return properties, position + 3
    if marker == AMF_STRICT_ARRAY and depth >= MAX_AMF_DEPTH:
        raise AmfError("AMF0 values nested too deep")
    return None, skip_value(body, position, depth)
