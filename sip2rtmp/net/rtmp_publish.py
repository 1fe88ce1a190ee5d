"""The publishing side of an RTMP client, sans-I/O: FLV in, RTMP chunks out.

FFmpeg's FLV muxer writes the stream; this core turns each FLV tag into one RTMP message
(Adobe RTMP specification 1.0), after a plain handshake (§5.2) and the commands a publisher
sends (§7.2): `connect`, `releaseStream`/`FCPublish`/`createStream` as encoders do, then
`publish`. It answers pings and acknowledges what it receives, so a server's keep-alive
checks pass. It exists so that the connection is made by Python's socket calls, which
release the GIL, with TCP_NODELAY: FFmpeg's own RTMP client holds the GIL (inside PyAV) for
every round trip of the connect, stalling the whole relay, and waits on delayed ACKs.

The server is not trusted: every length is bounded, and anything malformed is an
`RtmpProtocolError`. `receive` takes the server's bytes, `data_to_send` returns ours.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from sip2rtmp.net.amf import (
    AmfError,
    amf_decode,
    amf_encode,
    amf_string,
)

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536
OUT_CHUNK_SIZE = 4096
"""Announced with Set Chunk Size right after the handshake, as FFmpeg and OBS do: a
keyframe then takes a few chunks instead of hundreds of 128-byte ones."""
MAX_IN_MESSAGE = 64 * 1024
"""A server sends commands and control messages only; none comes near this."""
MAX_IN_CHUNK_STREAMS = 16
FLV_HEADER_SIZE = 9 + 4
"""The FLV file header and PreviousTagSize0."""
FLV_TAG_HEADER = 11
FLV_TAG_TRAILER = 4
"""PreviousTagSize after each tag's body."""

SET_CHUNK_SIZE = 1
ABORT = 2
ACKNOWLEDGEMENT = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF0 = 18
COMMAND_AMF3 = 17
COMMAND_AMF0 = 20
PING_REQUEST = 6
PING_RESPONSE = 7

CONTROL_CSID = 2
COMMAND_CSID = 3
STREAM_COMMAND_CSID = 8
"""`publish` goes on the chunk stream FFmpeg's client uses for it."""
_MEDIA_CSID = {AUDIO: 4, DATA_AMF0: 5, VIDEO: 6}
_EXTENDED = 0xFFFFFF
_HEADER_SIZES = (11, 7, 3, 0)
FLASH_VERSION = "FMLE/3.0 (compatible; sip2rtmp)"
"""Ingest servers tell a publishing encoder by this prefix."""


class RtmpError(OSError):
    """The RTMP conversation failed; the text says how, without the stream key. An I/O
    error like any other to whoever writes the stream."""


class RtmpProtocolError(RtmpError):
    """The server sent something this client cannot follow."""


class PublishRefused(RtmpError):
    """The server answered `connect` or `publish` with an error (a wrong stream key, an
    application that does not exist, a stream already being published)."""


@dataclass(frozen=True, slots=True)
class PublishTarget:
    """What `connect` and `publish` name, taken from an rtmp:// or rtmps:// URL the way
    FFmpeg and OBS take it: the first path segment is the application, the rest (with any
    query) the stream name."""

    tc_url: str
    app: str
    stream: str

    @classmethod
    def from_url(cls, url: str) -> PublishTarget:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        authority = f"{host}:{parts.port}" if parts.port else host
        app, _, stream = parts.path.lstrip("/").partition("/")
        if parts.query:
            stream += f"?{parts.query}"
        if not app or not stream:
            raise ValueError("an RTMP URL needs an application and a stream name")
        return cls(f"{parts.scheme}://{authority}/{app}", app, stream)


class PublishState(Enum):
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    CREATING_STREAM = "creating stream"
    PUBLISH_REQUESTED = "publish requested"
    PUBLISHING = "publishing"


@dataclass(slots=True)
class _InStream:
    """What one chunk stream's previous headers leave for the next chunk to reuse (§5.3.1)."""

    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    body: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True, slots=True)
class Message:
    type_id: int
    stream_id: int
    timestamp: int
    body: bytes


class Dechunker:
    """The server's chunk stream (§5.3) in, whole messages out; bounded."""

    def __init__(self) -> None:
        self.chunk_size = 128
        self._buffer = bytearray()
        self._streams: dict[int, _InStream] = {}
        self.received = 0

    def feed(self, data: bytes) -> list[Message]:
        self.received += len(data)
        self._buffer += data
        messages: list[Message] = []
        while (message := self._next()) is not None:
            if message is not _INCOMPLETE:
                messages.append(message)
        return messages

    def abort(self, csid: int) -> None:
        stream = self._streams.get(csid)
        if stream is not None:
            stream.body.clear()

    def _next(self) -> Message | None:
        data = self._buffer
        if not data:
            return None
        fmt, low = data[0] >> 6, data[0] & 0x3F
        basic = {0: 2, 1: 3}.get(low, 1)
        end = basic + _HEADER_SIZES[fmt]
        if len(data) < end:
            return None
        csid = low if basic == 1 else 64 + data[1] + (data[2] << 8 if low == 1 else 0)
        stream = self._streams.get(csid)
        if stream is None:
            if fmt == 3 or len(self._streams) >= MAX_IN_CHUNK_STREAMS:
                raise RtmpProtocolError(f"chunk stream {csid} the server never started")
            stream = _InStream()
        header = bytes(data[basic:end])
        field_value = int.from_bytes(header[:3], "big") if fmt < 3 else -1
        extended = field_value == _EXTENDED or (fmt == 3 and stream.extended)
        if extended:
            end += 4
            if len(data) < end:
                return None
        length = int.from_bytes(header[3:6], "big") if fmt < 2 else stream.length
        if length > MAX_IN_MESSAGE:
            raise RtmpProtocolError(f"a {length}-byte message from the server")
        if fmt < 3 and stream.body:
            raise RtmpProtocolError(f"a new message on chunk stream {csid} before the last ended")
        size = min(self.chunk_size, length - len(stream.body))
        if len(data) < end + size:
            return None
        if fmt < 3:
            value = int.from_bytes(data[end - 4 : end], "big") if extended else field_value
            stream.extended = extended
            stream.delta = value if fmt else 0
            stream.timestamp = value if fmt == 0 else stream.timestamp + value
        elif not stream.body:
            stream.timestamp += stream.delta
        if fmt < 2:
            stream.length, stream.type_id = length, header[6]
        if fmt == 0:
            stream.stream_id = struct.unpack("<I", header[7:11])[0]
        self._streams[csid] = stream
        stream.body += data[end : end + size]
        del data[: end + size]
        if len(stream.body) < length:
            return _INCOMPLETE
        body = bytes(stream.body)
        stream.body.clear()
        if stream.type_id in (SET_CHUNK_SIZE, ABORT) and len(body) >= 4:
            # Both change how the very next chunk is read (§5.4.1, §5.4.2).
            value = struct.unpack(">I", body[:4])[0] & 0x7FFFFFFF
            if stream.type_id == ABORT:
                self.abort(value)
            elif value < 1:
                raise RtmpProtocolError("Set Chunk Size 0")
            else:
                self.chunk_size = value
        return Message(stream.type_id, stream.stream_id, stream.timestamp, body)


_INCOMPLETE = Message(-1, 0, 0, b"")
"""A chunk was taken, its message is not complete yet."""


def chunk_message(
    csid: int, type_id: int, stream_id: int, timestamp: int, body: bytes, chunk_size: int
) -> bytes:
    """One message as type-0 chunks and type-3 continuations (§5.3.1). Every message carries
    its absolute timestamp, so no chunk stream depends on the one before."""
    timestamp &= 0xFFFFFFFF
    extended = struct.pack(">I", timestamp) if timestamp >= _EXTENDED else b""
    header = (
        bytes([csid])
        + min(timestamp, _EXTENDED).to_bytes(3, "big")
        + len(body).to_bytes(3, "big")
        + bytes([type_id])
        + struct.pack("<I", stream_id)
        + extended
    )
    if len(body) <= chunk_size:
        return header + body
    continuation = bytes([0xC0 | csid]) + extended
    view = memoryview(body)
    pieces: list[bytes | memoryview] = [header, view[:chunk_size]]
    for start in range(chunk_size, len(body), chunk_size):
        pieces += (continuation, view[start : start + chunk_size])
    return b"".join(pieces)


def _command(name: str, transaction: int, *arguments: Any) -> bytes:
    return amf_encode(name) + amf_encode(transaction) + b"".join(map(amf_encode, arguments))


class RtmpPublisher:
    """One publishing connection's protocol state. Call ``initiate`` once, then feed the
    server's bytes to ``receive`` and send ``data_to_send``; once ``publishing``, feed the
    FLV stream to ``send_flv``."""

    CONNECT_ID = 1
    CREATE_STREAM_ID = 4
    PUBLISH_ID = 5

    def __init__(
        self, target: PublishTarget, *, random_bytes: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.target = target
        self.state = PublishState.HANDSHAKE
        self._random = random_bytes
        self._outgoing: list[bytes] = []
        self._handshake = bytearray()
        self._dechunker = Dechunker()
        self._window = 2_500_000
        self._acknowledged = 0
        self._stream_id = 0
        self._flv = bytearray()
        self._flv_header_left = FLV_HEADER_SIZE

    @property
    def publishing(self) -> bool:
        return self.state is PublishState.PUBLISHING

    def initiate(self) -> None:
        """C0 and C1 (§5.2.2, §5.2.3): version 3, time 0, zeros, random bytes."""
        self._outgoing.append(bytes([RTMP_VERSION]) + bytes(8) + self._random(HANDSHAKE_SIZE - 8))

    def data_to_send(self) -> bytes:
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        return data

    def receive(self, data: bytes) -> None:
        if self.state is PublishState.HANDSHAKE:
            data = self._take_handshake(data)
            if self.state is PublishState.HANDSHAKE:
                return
        try:
            messages = self._dechunker.feed(data)
        except AmfError as error:
            raise RtmpProtocolError(str(error)) from None
        for message in messages:
            self._handle(message)
        received = self._dechunker.received
        if received - self._acknowledged >= self._window:
            self._acknowledged = received
            self._control(ACKNOWLEDGEMENT, struct.pack(">I", received & 0xFFFFFFFF))

    def send_flv(self, data: bytes) -> None:
        """Queue the FLV stream's complete tags as messages; a partial tag waits for the rest."""
        if not self.publishing:
            raise RtmpError(f"media before the stream was published ({self.state.value})")
        flv = self._flv
        flv += data
        if self._flv_header_left:
            if self._flv_header_left == FLV_HEADER_SIZE and not flv.startswith(b"FLV"):
                raise RtmpError("the muxer's output is not FLV")
            taken = min(self._flv_header_left, len(flv))
            self._flv_header_left -= taken
            del flv[:taken]
        position = 0
        while len(flv) - position >= FLV_TAG_HEADER:
            type_id = flv[position] & 0x1F
            size = int.from_bytes(flv[position + 1 : position + 4], "big")
            end = position + FLV_TAG_HEADER + size + FLV_TAG_TRAILER
            if len(flv) < end:
                break
            timestamp = int.from_bytes(flv[position + 4 : position + 7], "big")
            timestamp |= flv[position + 7] << 24
            body = bytes(flv[position + FLV_TAG_HEADER : end - FLV_TAG_TRAILER])
            self.send_tag(type_id, timestamp, body)
            position = end
        del flv[:position]

    def unpublish(self) -> None:
        """`FCUnpublish` and `deleteStream`, sent before a clean close, as encoders do."""
        if self.publishing:
            self._invoke(_command("FCUnpublish", 0, None, self.target.stream))
            self._invoke(_command("deleteStream", 0, None, self._stream_id))

    def send_tag(self, type_id: int, timestamp: int, body: bytes) -> None:
        """One FLV tag's body as an RTMP message of its type (audio, video or data)."""
        if not self.publishing:
            raise RtmpError(f"media before the stream was published ({self.state.value})")
        csid = _MEDIA_CSID.get(type_id)
        if csid is None:
            return
        if type_id == DATA_AMF0:
            body = amf_string("@setDataFrame") + body
        self._outgoing.append(
            chunk_message(csid, type_id, self._stream_id, timestamp, body, OUT_CHUNK_SIZE)
        )

    def _take_handshake(self, data: bytes) -> bytes:
        """S0, S1 and S2 (§5.2); C2 echoes S1. The rest of ``data`` is chunk stream."""
        needed = 1 + 2 * HANDSHAKE_SIZE - len(self._handshake)
        self._handshake += data[:needed]
        if self._handshake and self._handshake[0] != RTMP_VERSION:
            raise RtmpProtocolError(f"the server speaks RTMP version {self._handshake[0]}")
        if len(self._handshake) < 1 + 2 * HANDSHAKE_SIZE:
            return b""
        self._outgoing.append(bytes(self._handshake[1 : 1 + HANDSHAKE_SIZE]))
        self._handshake.clear()
        self._control(SET_CHUNK_SIZE, struct.pack(">I", OUT_CHUNK_SIZE))
        connect = {
            "app": self.target.app,
            "type": "nonprivate",
            "flashVer": FLASH_VERSION,
            "tcUrl": self.target.tc_url,
        }
        self._invoke(_command("connect", self.CONNECT_ID, connect))
        self.state = PublishState.CONNECTING
        return data[needed:]

    def _handle(self, message: Message) -> None:
        body = message.body
        if message.type_id == WINDOW_ACK_SIZE and len(body) >= 4:
            self._window = max(struct.unpack(">I", body[:4])[0], 1)
        elif message.type_id == SET_PEER_BANDWIDTH and len(body) >= 4:
            self._control(WINDOW_ACK_SIZE, body[:4])
        elif message.type_id == USER_CONTROL and len(body) >= 6:
            if struct.unpack(">H", body[:2])[0] == PING_REQUEST:
                self._control(USER_CONTROL, struct.pack(">H", PING_RESPONSE) + body[2:6])
        elif message.type_id in (COMMAND_AMF0, COMMAND_AMF3):
            if message.type_id == COMMAND_AMF3:
                body = body[1:]  # AMF3 commands start with an AMF0 switch marker, 0
            try:
                self._on_command(body)
            except (AmfError, IndexError):
                raise RtmpProtocolError("a command from the server that is not AMF0") from None

    def _on_command(self, body: bytes) -> None:
        # Only the name is certain: FFmpeg's RTMP server sends `onFCPublish` with nothing
        # after it, not even a transaction id.
        name, position = amf_decode(body, 0)
        values: list[Any] = []
        while position < len(body) and len(values) < 5:
            value, position = amf_decode(body, position)
            values.append(value)
        transaction, arguments = (values[0], values[1:]) if values else (None, [])
        information = next((a for a in reversed(arguments) if isinstance(a, dict)), {})
        if name == "_result":
            self._on_result(transaction, arguments)
        elif name == "_error" and transaction in (self.CONNECT_ID, self.CREATE_STREAM_ID):
            step = "connect" if transaction == self.CONNECT_ID else "createStream"
            raise PublishRefused(f"the server refused {step}: {self._describe(information)}")
        elif name == "onStatus":
            self._on_status(information)

    def _on_result(self, transaction: Any, arguments: list[Any]) -> None:
        if transaction == self.CONNECT_ID and self.state is PublishState.CONNECTING:
            stream = self.target.stream
            self._invoke(_command("releaseStream", 2, None, stream))
            self._invoke(_command("FCPublish", 3, None, stream))
            self._invoke(_command("createStream", self.CREATE_STREAM_ID, None))
            self.state = PublishState.CREATING_STREAM
        elif transaction == self.CREATE_STREAM_ID and self.state is PublishState.CREATING_STREAM:
            stream_id = arguments[-1] if arguments else None
            if not isinstance(stream_id, float) or not 0 < stream_id < 2**32:
                raise RtmpProtocolError(f"createStream answered with stream {stream_id!r}")
            self._stream_id = int(stream_id)
            publish = _command("publish", self.PUBLISH_ID, None, self.target.stream, "live")
            self._invoke(publish, self._stream_id)
            self.state = PublishState.PUBLISH_REQUESTED

    def _on_status(self, information: dict[str, Any]) -> None:
        if information.get("level") == "error":
            raise PublishRefused(f"the server refused to publish: {self._describe(information)}")
        code = information.get("code")
        if code == "NetStream.Publish.Start" and self.state is PublishState.PUBLISH_REQUESTED:
            self.state = PublishState.PUBLISHING

    def _control(self, type_id: int, body: bytes) -> None:
        self._outgoing.append(chunk_message(CONTROL_CSID, type_id, 0, 0, body, OUT_CHUNK_SIZE))

    def _invoke(self, body: bytes, stream_id: int = 0) -> None:
        csid = STREAM_COMMAND_CSID if stream_id else COMMAND_CSID
        self._outgoing.append(chunk_message(csid, COMMAND_AMF0, stream_id, 0, body, OUT_CHUNK_SIZE))

    def _describe(self, information: dict[str, Any]) -> str:
        """The status a server answered with, never echoing the stream key back."""
        code = str(information.get("code", "")) or "an error"
        description = str(information.get("description", "")).strip()
        text = f"{code} ({description})" if description else code
        return text.replace(self.target.stream, "***")
