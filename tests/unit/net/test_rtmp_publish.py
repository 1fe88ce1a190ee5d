"""The RTMP publisher core against scripted servers (Adobe RTMP specification 1.0)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip2rtmp.net.amf import amf_decode, amf_encode
from sip2rtmp.net.rtmp_publish import (
    COMMAND_AMF0,
    DATA_AMF0,
    HANDSHAKE_SIZE,
    MAX_IN_MESSAGE,
    OUT_CHUNK_SIZE,
    SET_CHUNK_SIZE,
    USER_CONTROL,
    WINDOW_ACK_SIZE,
    Dechunker,
    Message,
    PublishRefused,
    PublishState,
    PublishTarget,
    RtmpError,
    RtmpProtocolError,
    RtmpPublisher,
    chunk_message,
)

TARGET = PublishTarget.from_url("rtmp://ingest.example:1935/live/SECRET")
S1 = bytes(range(256)) * 6
S2 = bytes(HANDSHAKE_SIZE)


def server_command(name: str, transaction: int, *arguments: object, stream_id: int = 0) -> bytes:
    body = b"".join(amf_encode(value) for value in (name, transaction, *arguments))
    return chunk_message(3, COMMAND_AMF0, stream_id, 0, body, 128)


def sent(publisher: RtmpPublisher, reader: Dechunker) -> list[Message]:
    return reader.feed(publisher.data_to_send())


def commands(messages: list[Message]) -> list[tuple[str, list[object]]]:
    found = []
    for message in messages:
        if message.type_id == COMMAND_AMF0:
            values, position = [], 0
            while position < len(message.body):
                value, position = amf_decode(message.body, position)
                values.append(value)
            found.append((str(values[0]), values[1:]))
    return found


def handshaken() -> tuple[RtmpPublisher, Dechunker]:
    """A publisher past the handshake, and a reader of what it sends from there."""
    publisher = RtmpPublisher(TARGET, random_bytes=lambda size: b"\x07" * size)
    publisher.initiate()
    c0c1 = publisher.data_to_send()
    assert c0c1[0] == 3 and len(c0c1) == 1 + HANDSHAKE_SIZE and c0c1[1:9] == bytes(8)
    publisher.receive(b"\x03" + S1 + S2)
    c2 = publisher.data_to_send()
    assert c2[:HANDSHAKE_SIZE] == S1
    reader = Dechunker()
    messages = reader.feed(c2[HANDSHAKE_SIZE:])
    assert messages[0] == Message(SET_CHUNK_SIZE, 0, 0, struct.pack(">I", OUT_CHUNK_SIZE))
    reader.chunk_size = OUT_CHUNK_SIZE
    (name, (transaction, properties)), *_ = commands(messages)
    assert (name, transaction) == ("connect", 1)
    assert properties == {
        "app": "live",
        "type": "nonprivate",
        "flashVer": "FMLE/3.0 (compatible; sip2rtmp)",
        "tcUrl": "rtmp://ingest.example:1935/live",
    }
    return publisher, reader


def published() -> tuple[RtmpPublisher, Dechunker]:
    publisher, reader = handshaken()
    publisher.receive(server_command("_result", 1, {"fmsVer": "FMS/3,0"}, {"code": "ok"}))
    assert [name for name, _ in commands(sent(publisher, reader))] == [
        "releaseStream",
        "FCPublish",
        "createStream",
    ]
    publisher.receive(server_command("_result", 4, None, 1.0))
    (name, arguments), *_ = commands(messages := sent(publisher, reader))
    assert (name, arguments[2:], messages[0].stream_id) == ("publish", ["SECRET", "live"], 1)
    assert publisher.state is PublishState.PUBLISH_REQUESTED
    status = {"level": "status", "code": "NetStream.Publish.Start"}
    publisher.receive(server_command("onStatus", 0, None, status, stream_id=1))
    assert publisher.publishing
    return publisher, reader


def test_a_chunked_message_is_laid_out_as_the_specification_says() -> None:
    body = bytes(range(200))
    data = chunk_message(6, 9, 1, 0x123456, body, 128)
    header = bytes([0x06, 0x12, 0x34, 0x56, 0x00, 0x00, 0xC8, 0x09, 1, 0, 0, 0])
    assert data == header + body[:128] + b"\xc6" + body[128:]


def test_a_timestamp_past_24_bits_goes_in_the_extended_field_of_every_chunk() -> None:
    data = chunk_message(4, 8, 1, 0x01000000, bytes(130), 128)
    assert data[1:4] == b"\xff\xff\xff" and data[12:16] == b"\x01\x00\x00\x00"
    assert data[16 + 128 : 16 + 128 + 5] == b"\xc4\x01\x00\x00\x00"
    assert Dechunker().feed(data) == [Message(8, 1, 0x01000000, bytes(130))]


def test_the_conversation_ends_publishing_on_the_stream_the_server_created() -> None:
    published()


def test_urls_name_app_and_stream_as_encoders_do() -> None:
    youtube = PublishTarget.from_url("rtmp://a.rtmp.youtube.com/live2/abcd-efgh")
    assert youtube == PublishTarget("rtmp://a.rtmp.youtube.com/live2", "live2", "abcd-efgh")
    facebook = PublishTarget.from_url("rtmps://live-api-s.facebook.com:443/rtmp/FB-1?s_bl=1")
    assert facebook.tc_url == "rtmps://live-api-s.facebook.com:443/rtmp"
    assert facebook.stream == "FB-1?s_bl=1"
    assert PublishTarget.from_url("rtmp://[::1]/a/b/c").tc_url == "rtmp://[::1]/a"
    with pytest.raises(ValueError, match="stream name"):
        PublishTarget.from_url("rtmp://host/app")


def test_a_refused_connect_says_why() -> None:
    publisher, _ = handshaken()
    refusal = {"level": "error", "code": "NetConnection.Connect.Rejected", "description": "no"}
    with pytest.raises(PublishRefused, match=r"refused connect: .*Rejected \(no\)"):
        publisher.receive(server_command("_error", 1, None, refusal))


def test_a_refused_publish_says_why() -> None:
    publisher, _ = handshaken()
    publisher.receive(server_command("_result", 1, None, None))
    publisher.receive(server_command("_result", 4, None, 1.0))
    status = {"level": "error", "code": "NetStream.Publish.BadName", "description": "SECRET taken"}
    with pytest.raises(PublishRefused, match=r"refused to publish: .*BadName \(\*\*\* taken\)"):
        publisher.receive(server_command("onStatus", 0, None, status, stream_id=1))


def test_errors_to_the_optional_commands_are_ignored() -> None:
    publisher, _ = handshaken()
    publisher.receive(server_command("_result", 1, None, None))
    publisher.receive(server_command("_error", 2, None, {"level": "error"}))
    assert publisher.state is PublishState.CREATING_STREAM


def test_a_command_with_only_its_name_is_taken() -> None:
    """FFmpeg's RTMP server answers FCPublish with a bare `onFCPublish`."""
    publisher, _ = handshaken()
    publisher.receive(server_command("_result", 1, None, None))
    publisher.receive(chunk_message(3, COMMAND_AMF0, 0, 0, amf_encode("onFCPublish"), 128))
    publisher.receive(server_command("_result", 4, None, 1.0))
    assert publisher.state is PublishState.PUBLISH_REQUESTED


def test_pings_are_answered_and_received_bytes_acknowledged() -> None:
    publisher, reader = handshaken()
    window = chunk_message(2, WINDOW_ACK_SIZE, 0, 0, struct.pack(">I", 20), 128)
    ping = chunk_message(2, USER_CONTROL, 0, 0, b"\x00\x06\x00\x00\x12\x34", 128)
    publisher.receive(window + ping)
    replies = {(m.type_id, m.body) for m in sent(publisher, reader)}
    assert replies == {(USER_CONTROL, b"\x00\x07\x00\x00\x12\x34"), (3, struct.pack(">I", 34))}


def test_a_chunk_size_change_applies_to_the_next_chunk_in_the_same_read() -> None:
    publisher, _ = handshaken()
    size = chunk_message(2, SET_CHUNK_SIZE, 0, 0, struct.pack(">I", 4096), 128)
    result = amf_encode("_result") + amf_encode(1) + amf_encode({"padding": "x" * 300})
    publisher.receive(size + chunk_message(3, COMMAND_AMF0, 0, 0, result, 4096))
    assert publisher.state is PublishState.CREATING_STREAM


def flv_tag(type_id: int, timestamp: int, body: bytes) -> bytes:
    header = (
        bytes([type_id]) + len(body).to_bytes(3, "big") + (timestamp & 0xFFFFFF).to_bytes(3, "big")
    )
    header += bytes([timestamp >> 24]) + bytes(3)
    return header + body + struct.pack(">I", 11 + len(body))


def test_flv_tags_become_messages_however_the_writes_split_them() -> None:
    publisher, reader = published()
    stream = b"FLV\x01\x05\x00\x00\x00\x09" + bytes(4)
    stream += flv_tag(DATA_AMF0, 0, amf_encode("onMetaData") + amf_encode({"width": 2.0}))
    stream += flv_tag(9, 40, b"\x17" + bytes(9000)) + flv_tag(8, 0x01000021, b"\xaf\x01ab")
    messages = []
    for start in range(0, len(stream), 1000):
        publisher.send_flv(stream[start : start + 1000])
        messages += sent(publisher, reader)
    script, video, audio = messages
    assert amf_decode(script.body, 0)[0] == "@setDataFrame"
    assert (video.type_id, video.timestamp, len(video.body), video.stream_id) == (9, 40, 9001, 1)
    assert (audio.type_id, audio.timestamp, audio.body) == (8, 0x01000021, b"\xaf\x01ab")


def test_media_before_publishing_is_an_error() -> None:
    publisher, _ = handshaken()
    with pytest.raises(RtmpError, match="before the stream was published"):
        publisher.send_flv(b"FLV")


def test_unpublishing_names_the_stream() -> None:
    publisher, reader = published()
    publisher.unpublish()
    assert commands(sent(publisher, reader)) == [
        ("FCUnpublish", [0.0, None, "SECRET"]),
        ("deleteStream", [0.0, None, 1.0]),
    ]


def test_another_rtmp_version_is_refused() -> None:
    publisher = RtmpPublisher(TARGET)
    publisher.initiate()
    with pytest.raises(RtmpProtocolError, match="version 6"):
        publisher.receive(b"\x06" + S1)


def test_the_server_cannot_make_the_client_hold_a_huge_message() -> None:
    publisher, _ = handshaken()
    header = bytes([3]) + bytes(3) + (MAX_IN_MESSAGE + 1).to_bytes(3, "big") + b"\x14" + bytes(4)
    with pytest.raises(RtmpProtocolError, match="byte message"):
        publisher.receive(header)


def test_a_continuation_of_a_chunk_stream_never_started_is_refused() -> None:
    publisher, _ = handshaken()
    with pytest.raises(RtmpProtocolError, match="never started"):
        publisher.receive(b"\xc9")


def server_replies() -> bytes:
    """What a server answers a publisher with, in one stream."""
    status = {"level": "status", "code": "NetStream.Publish.Start"}
    return (
        chunk_message(2, WINDOW_ACK_SIZE, 0, 0, struct.pack(">I", 5000000), 128)
        + chunk_message(2, SET_CHUNK_SIZE, 0, 0, struct.pack(">I", 4096), 128)
        + server_command("_result", 1, {"fmsVer": "FMS/3,0"}, {"code": "ok"})
        + server_command("_result", 4, None, 1.0)
        + chunk_message(2, USER_CONTROL, 0, 0, b"\x00\x06\x00\x00\x00\x01", 4096)
        + chunk_message(3, COMMAND_AMF0, 1, 0, amf_encode("onStatus") + bytes(9), 4096)
        + server_command("onStatus", 0, None, status, stream_id=1)
    )


@pytest.mark.fuzz
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=2000), st.binary(min_size=1, max_size=8)),
        max_size=4,
    ),
    st.integers(min_value=1, max_value=700),
)
def test_mutated_server_streams_give_an_rtmp_error_or_nothing(
    mutations: list[tuple[int, bytes]], step: int
) -> None:
    data = bytearray(server_replies())
    for position, replacement in mutations:
        data[position : position + len(replacement)] = replacement
    publisher, _ = handshaken()
    try:
        for start in range(0, len(data), step):
            publisher.receive(bytes(data[start : start + step]))
    except RtmpError:
        pass
