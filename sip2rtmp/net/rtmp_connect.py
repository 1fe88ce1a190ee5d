"""Rewrites the `tcUrl` of an RTMP client's `connect` command on its way to the server.

FFmpeg's RTMP client talks to a loopback hop (`sip2rtmp.net.tls_hop`), so the `tcUrl` it
puts in `connect` names the hop (`rtmp://127.0.0.1:PORT/app`), and FFmpeg has no option to
set it from the URL. Ingest servers that check it want their own `rtmps://host/app`. This
rewriter sits on the client→server byte stream only, which is enough to follow the protocol
(Adobe RTMP specification 1.0): the handshake's C0+C1 and C2 pass as they are, then chunks
are parsed (§5.3) until the `connect` command message (§7.2.1.1), whose `tcUrl` is replaced
and which is chunked again at the same chunk size on the same chunk stream. From there, bytes
pass untouched. Anything unexpected passes the rest through unchanged, with a log line.

Sans-I/O: `feed` takes the bytes the client sent and returns those to send upstream.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

HANDSHAKE_C0C1 = 1 + 1536
HANDSHAKE_C2 = 1536
RTMP_VERSION = 3
DEFAULT_CHUNK_SIZE = 128
"""Until a Set Chunk Size says otherwise (§5.4.1)."""
MAX_BUFFERED = 64 * 1024
MAX_MESSAGES_BEFORE_CONNECT = 8
"""The client sends `connect` first (at most preceded by a few control messages)."""

SET_CHUNK_SIZE = 1
COMMAND_AMF0 = 20
COMMAND_AMF3 = 17
_HEADER_SIZES = (11, 7, 3, 0)
"""Message header length by chunk type fmt 0..3 (§5.3.1.2)."""
_EXTENDED = 0xFFFFFF


class Unexpected(Exception):
    """The stream is not what this rewriter can follow."""


@dataclass(slots=True)
class _Stream:
    """What one chunk stream id's previous headers left for the next ones to reuse."""

    timestamp_field: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    extended_bytes: bytes = b""
    remaining: int = 0
    """Bytes of the current message still to come in later chunks."""
    body: bytearray = field(default_factory=bytearray)
    first_fmt: int = 0
    message: int = -1
    """The number of the message in progress, for the output segments it owns."""


@dataclass(slots=True)
class _Chunk:
    basic: bytes
    fmt: int
    csid: int
    header_end: int
    """Offset after basic header, message header and extended timestamp."""
    timestamp_field: int
    length: int
    type_id: int
    stream_id: int
    extended: bytes


def connect_tc_url(real_url: str, client_tc_url: str) -> str:
    """The client's `tcUrl` with its scheme and authority taken from ``real_url``: the app
    stays as the client derived it from the same path."""
    real = urlsplit(real_url)
    host = real.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    authority = f"{host}:{real.port}" if real.port else host
    try:
        client = urlsplit(client_tc_url)
    except ValueError:  # an unbalanced [ or ] in the authority
        raise Unexpected(f"a tcUrl that is not a URL: {client_tc_url!r}") from None
    if not client.scheme or not client.netloc:
        raise Unexpected(f"a tcUrl that is not a URL: {client_tc_url!r}")
    rest = client_tc_url[len(f"{client.scheme}://{client.netloc}") :]
    return f"{real.scheme}://{authority}{rest}"


class ConnectRewriter:
    """Client→server RTMP bytes in, the same bytes with `connect`'s tcUrl replaced out."""

    def __init__(self, real_url: str) -> None:
        self._real_url = real_url
        self._handshake_left = HANDSHAKE_C0C1 + HANDSHAKE_C2
        self._version_seen = False
        self._buffer = bytearray()
        self._segments: list[tuple[int, bytes]] = []
        """Parsed chunks not yet released, in arrival order, with their message number."""
        self._open: set[int] = set()
        """Messages whose chunks are held until the whole message is known."""
        self._streams: dict[int, _Stream] = {}
        self._chunk_size = DEFAULT_CHUNK_SIZE
        self._messages = 0
        self._connect_csid: int | None = None
        self._connect_length = 0
        self._passing = False
        self.rewritten: str | None = None
        """The tcUrl sent upstream, once replaced."""

    @property
    def passing(self) -> bool:
        """Whether every further byte passes untouched."""
        return self._passing

    def feed(self, data: bytes) -> bytes:
        """The bytes to send upstream for ``data`` from the client (possibly fewer now, the
        rest later: a message is held until it is complete)."""
        if self._passing:
            return data
        out = bytearray()
        if self._handshake_left:
            taken = data[: self._handshake_left]
            if not self._version_seen and taken:
                self._version_seen = True
                if taken[0] != RTMP_VERSION:
                    return self._give_up(f"handshake version {taken[0]}, not plain RTMP", data)
            self._handshake_left -= len(taken)
            out += taken
            data = data[len(taken) :]
        self._buffer += data
        try:
            self._parse()
        except Unexpected as error:
            return bytes(out) + self._give_up(str(error), b"")
        if len(self._buffer) + sum(len(chunk) for _, chunk in self._segments) > MAX_BUFFERED:
            return bytes(out) + self._give_up("over 64 KiB without a complete connect", b"")
        return bytes(out) + self._release()

    def _give_up(self, reason: str, tail: bytes) -> bytes:
        """Pass everything held and everything after unchanged from now on."""
        if self.rewritten is None:
            log.info("RTMP connect left unchanged (%s): the server sees the hop's tcUrl", reason)
        self._passing = True
        held = b"".join(chunk for _, chunk in self._segments) + bytes(self._buffer) + tail
        self._segments.clear()
        self._buffer.clear()
        return held

    def _release(self) -> bytes:
        released = bytearray()
        while self._segments and self._segments[0][0] not in self._open:
            released += self._segments.pop(0)[1]
        if self._passing:
            released += self._give_up("", b"")
        return bytes(released)

    def _parse(self) -> None:
        while not self._passing:
            chunk = self._header()
            if chunk is None:
                return
            stream = self._streams.setdefault(chunk.csid, _Stream())
            starts = stream.remaining == 0
            if self._connect_csid == chunk.csid and starts:
                self._after_connect(chunk, stream)
                return
            if not starts and chunk.fmt != 3:
                raise Unexpected(f"a new header on chunk stream {chunk.csid} mid-message")
            if not self._take(chunk, stream, starts):
                return

    def _take(self, chunk: _Chunk, stream: _Stream, starts: bool) -> bool:
        """Consume one whole chunk; False when its body has not all arrived."""
        length = chunk.length if chunk.fmt < 2 else stream.length
        size = min(self._chunk_size, length if starts else stream.remaining)
        end = chunk.header_end + size
        if len(self._buffer) < end:
            return False
        raw = bytes(self._buffer[:end])
        body = raw[chunk.header_end :]
        del self._buffer[:end]
        self._remember(chunk, stream)
        if starts:
            self._messages += 1
            stream.message = self._messages
            stream.remaining = length
            stream.first_fmt = chunk.fmt
            stream.body = bytearray()
            if stream.type_id in (COMMAND_AMF0, COMMAND_AMF3):
                self._open.add(stream.message)
        stream.body += body
        stream.remaining -= size
        self._segments.append((stream.message, raw))
        if stream.remaining == 0:
            self._complete(chunk.csid, stream)
        return True

    def _remember(self, chunk: _Chunk, stream: _Stream) -> None:
        if chunk.fmt < 3:
            stream.timestamp_field = chunk.timestamp_field
            stream.extended = chunk.timestamp_field == _EXTENDED
            stream.extended_bytes = chunk.extended
        if chunk.fmt < 2:
            stream.length = chunk.length
            stream.type_id = chunk.type_id
        if chunk.fmt == 0:
            stream.stream_id = chunk.stream_id

    def _complete(self, csid: int, stream: _Stream) -> None:
        message = stream.message
        self._open.discard(message)
        if stream.type_id == SET_CHUNK_SIZE and len(stream.body) >= 4:
            size = struct.unpack(">I", stream.body[:4])[0] & 0x7FFFFFFF
            if size < 1:
                raise Unexpected(f"Set Chunk Size {size}")
            self._chunk_size = size
        elif stream.type_id in (COMMAND_AMF0, COMMAND_AMF3):
            body = self._rewritten_connect(stream)
            if body is not None:
                self._replace(csid, stream, body)
                return
        if self._messages >= MAX_MESSAGES_BEFORE_CONNECT:
            if self._connect_csid is None:
                raise Unexpected(f"no connect among the first {self._messages} messages")
            # The connect's chunk stream is not used again soon: nothing left to correct.
            self._passing = True

    def _rewritten_connect(self, stream: _Stream) -> bytes | None:
        body = bytes(stream.body)
        prefix = b""
        if stream.type_id == COMMAND_AMF3:
            if not body.startswith(b"\x00"):
                raise Unexpected("an AMF3 command")
            prefix, body = b"\x00", body[1:]
        name, position = read_string(body, 0)
        if name != "connect":
            return None
        return prefix + self._with_tc_url(body, position)

    def _with_tc_url(self, body: bytes, position: int) -> bytes:
        """The connect body with the command object's tcUrl replaced (§7.2.1.1)."""
        position = skip_value(body, position)  # transaction id
        if position >= len(body) or body[position] != AMF_OBJECT:
            raise Unexpected("connect without a command object")
        position += 1
        while True:
            if body[position : position + 3] == b"\x00\x00\x09":
                raise Unexpected("connect without a tcUrl")
            key_length = _u16(body, position)
            key = body[position + 2 : position + 2 + key_length]
            value_at = position + 2 + key_length
            after = skip_value(body, value_at)
            if key == b"tcUrl" and body[value_at] in (AMF_STRING, AMF_LONG_STRING):
                old, _ = read_string(body, value_at)
                new = connect_tc_url(self._real_url, old)
                self.rewritten = new
                return body[:value_at] + amf_string(new) + body[after:]
            position = after

    def _replace(self, csid: int, stream: _Stream, body: bytes) -> None:
        """The held chunks of the connect message give way to the new body, chunked again."""
        message = stream.message
        first = next(i for i, (owner, _) in enumerate(self._segments) if owner == message)
        basic = _basic_header(self._segments[first][1])
        fresh = self._chunks(basic, stream, body)
        self._segments = [item for item in self._segments if item[0] != message]
        self._segments.insert(first, (message, fresh))
        self._connect_csid = csid
        self._connect_length = stream.length
        stream.length = len(body)

    def _chunks(self, basic: tuple[int, bytes], stream: _Stream, body: bytes) -> bytes:
        csid_bytes, ext = basic[1], stream.extended_bytes
        fmt = 0 if stream.first_fmt == 0 else 1
        header = bytearray([fmt << 6 | basic[0]]) + csid_bytes
        header += _u24(stream.timestamp_field) + _u24(len(body)) + bytes([stream.type_id])
        if fmt == 0:
            header += struct.pack("<I", stream.stream_id)
        header += ext
        pieces = [bytes(header) + body[: self._chunk_size]]
        continuation = bytes([3 << 6 | basic[0]]) + csid_bytes + ext
        for start in range(self._chunk_size, len(body), self._chunk_size):
            pieces.append(continuation + body[start : start + self._chunk_size])
        return b"".join(pieces)

    def _after_connect(self, chunk: _Chunk, stream: _Stream) -> None:
        """The first header after connect on its chunk stream: one that reuses the length
        (fmt 2 or 3) would take the new one, so it says the client's own (fmt 1)."""
        raw = bytes(self._buffer[: chunk.header_end])
        if chunk.fmt >= 2:
            delta = chunk.timestamp_field if chunk.fmt == 2 else stream.timestamp_field
            raw = (
                bytes([1 << 6 | chunk.basic[0] & 0x3F])
                + chunk.basic[1:]
                + _u24(delta)
                + _u24(self._connect_length)
                + bytes([stream.type_id])
                + chunk.extended
            )
        del self._buffer[: chunk.header_end]
        self._segments.append((0, raw))
        self._passing = True

    def _header(self) -> _Chunk | None:
        """The next chunk's headers from the buffer, or None until they have all arrived."""
        data = self._buffer
        if not data:
            return None
        fmt, low = data[0] >> 6, data[0] & 0x3F
        basic_length = {0: 2, 1: 3}.get(low, 1)
        if len(data) < basic_length:
            return None
        csid = low if basic_length == 1 else 64 + data[1] + (data[2] << 8 if low == 1 else 0)
        start = basic_length
        end = start + _HEADER_SIZES[fmt]
        if len(data) < end:
            return None
        fields = bytes(data[start:end])
        timestamp = int.from_bytes(fields[:3], "big") if fmt < 3 else -1
        length = int.from_bytes(fields[3:6], "big") if fmt < 2 else 0
        type_id = fields[6] if fmt < 2 else 0
        stream_id = struct.unpack("<I", fields[7:11])[0] if fmt == 0 else 0
        previous = self._streams.get(csid)
        if fmt == 3 and previous is None:
            raise Unexpected(f"chunk stream {csid} continued before it started")
        extended_present = timestamp == _EXTENDED or (
            fmt == 3 and previous is not None and previous.extended
        )
        extended = b""
        if extended_present:
            if len(data) < end + 4:
                return None
            extended = bytes(data[end : end + 4])
            end += 4
        return _Chunk(
            bytes(data[:basic_length]),
            fmt,
            csid,
            end,
            timestamp,
            length,
            type_id,
            stream_id,
            extended,
        )


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
_MAX_DEPTH = 32


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
        raise Unexpected(f"AMF0 marker {marker:#x} where a string was expected")
    end = start + length
    if end > len(body):
        raise Unexpected("an AMF0 string runs past its message")
    try:
        return body[start:end].decode(), end
    except UnicodeDecodeError:
        raise Unexpected("an AMF0 string that is not UTF-8") from None


def skip_value(body: bytes, position: int, depth: int = 0) -> int:
    """The position after the AMF0 value at ``position``."""
    if depth > _MAX_DEPTH:
        raise Unexpected("AMF0 values nested too deep")
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
        raise Unexpected(f"AMF0 marker {marker:#x}")
    if end > len(body):
        raise Unexpected("an AMF0 value runs past its message")
    return end


def _skip_properties(body: bytes, position: int, depth: int) -> int:
    while True:
        if body[position : position + 3] == b"\x00\x00\x09":
            return position + 3
        position += 2 + _u16(body, position)
        position = skip_value(body, position, depth + 1)


def _basic_header(chunk: bytes) -> tuple[int, bytes]:
    """(the low 6 bits of the first byte, the csid bytes after it) of a chunk's basic header."""
    low = chunk[0] & 0x3F
    return low, chunk[1 : 1 + {0: 1, 1: 2}.get(low, 0)]


def _byte(body: bytes, position: int) -> int:
    if position >= len(body):
        raise Unexpected("an AMF0 value runs past its message")
    return body[position]


def _u16(body: bytes, position: int) -> int:
    if position + 2 > len(body):
        raise Unexpected("an AMF0 value runs past its message")
    return int.from_bytes(body[position : position + 2], "big")


def _u32(body: bytes, position: int) -> int:
    if position + 4 > len(body):
        raise Unexpected("an AMF0 value runs past its message")
    return int.from_bytes(body[position : position + 4], "big")


def _u24(value: int) -> bytes:
    return value.to_bytes(3, "big")
