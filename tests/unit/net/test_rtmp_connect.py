"""The connect rewriter: FFmpeg's connect names the real server, every other byte is the same.

`CAPTURED` is what FFmpeg (PyAV 18.1) sent after the handshake when publishing to
rtmp://127.0.0.1:19350/live/streamkey: the connect command on chunk stream 3, 140 bytes in two
chunks of the default 128-byte chunk size.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sip2rtmp.net.rtmp_connect import (
    HANDSHAKE_C0C1,
    HANDSHAKE_C2,
    ConnectRewriter,
    amf_string,
    read_string,
    skip_value,
)

CAPTURED = bytes.fromhex(
    "0300000000008c1400000000020007636f6e6e656374003ff00000000000000300036170700200046c6976"
    "6500047479706502000a6e6f6e707269766174650008666c617368566572020024464d4c452f332e302028"
    "636f6d70617469626c653b204c61766636322e31322e313032290005746355726c02001b72746d703a2f2f"
    "3132372e302e302e313a31c3393335302f6c697665000009"
)
HANDSHAKE = b"\x03" + bytes(range(256)) * 6 + bytes(HANDSHAKE_C0C1 - 1 - 1536) + b"\x07" * 1536
REAL = "rtmps://live.example.com/live/streamkey"


def messages(stream: bytes) -> list[tuple[int, int, bytes]]:
    """(chunk stream id, type, body) of each message after the handshake: RTMP §5.3, for
    one-byte basic headers and no extended timestamps, as these tests send."""
    data = stream[HANDSHAKE_C0C1 + HANDSHAKE_C2 :]
    chunk_size, found = 128, []
    last: dict[int, tuple[int, int]] = {}
    partial: dict[int, bytearray] = {}
    position = 0
    while position < len(data):
        fmt, csid = data[position] >> 6, data[position] & 0x3F
        position += 1
        length, type_id = last.get(csid, (0, 0))
        if fmt < 2:
            length = int.from_bytes(data[position + 3 : position + 6], "big")
            type_id = data[position + 6]
        position += (11, 7, 3, 0)[fmt]
        last[csid] = (length, type_id)
        body = partial.setdefault(csid, bytearray())
        size = min(chunk_size, length - len(body))
        body += data[position : position + size]
        position += size
        if len(body) == length:
            found.append((csid, type_id, bytes(body)))
            if type_id == 1:
                chunk_size = struct.unpack(">I", body[:4])[0]
            del partial[csid]
    return found


def tc_url(body: bytes) -> str:
    marker = body.index(b"\x00\x05tcUrl") + 7
    return read_string(body, marker)[0]


def command(name: str, *values: bytes) -> bytes:
    return amf_string(name) + b"\x00" + struct.pack(">d", 1.0) + b"".join(values)


def chunked(csid: int, fmt: int, type_id: int, body: bytes, chunk_size: int = 128) -> bytes:
    """One message as chunks: ``fmt`` 0 or 1 carry the length, 2 and 3 reuse it."""
    header = bytes([fmt << 6 | csid])
    if fmt == 0:
        header += bytes(3) + len(body).to_bytes(3, "big") + bytes([type_id]) + bytes(4)
    elif fmt == 1:
        header += bytes(3) + len(body).to_bytes(3, "big") + bytes([type_id])
    elif fmt == 2:
        header += bytes(3)
    pieces = [header + body[:chunk_size]]
    for start in range(chunk_size, len(body), chunk_size):
        pieces.append(bytes([0xC0 | csid]) + body[start : start + chunk_size])
    return b"".join(pieces)


def rewrite(stream: bytes, step: int | None = None) -> bytes:
    rewriter = ConnectRewriter(REAL)
    if step is None:
        return rewriter.feed(stream)
    return b"".join(rewriter.feed(stream[i : i + step]) for i in range(0, len(stream), step))


def test_ffmpegs_connect_names_the_real_server_and_is_chunked_again() -> None:
    stream = HANDSHAKE + CAPTURED
    out = rewrite(stream)
    assert out[: len(HANDSHAKE)] == HANDSHAKE, "the handshake passes as it is"
    [(csid, type_id, body)] = messages(out)
    [(_, _, original)] = messages(stream)
    assert (csid, type_id) == (3, 20)
    assert tc_url(original) == "rtmp://127.0.0.1:19350/live"
    assert tc_url(body) == "rtmps://live.example.com/live"
    assert body == original.replace(amf_string(tc_url(original)), amf_string(tc_url(body)))
    assert out[len(HANDSHAKE)] == 0x03, "fmt 0 on chunk stream 3, as FFmpeg sent it"
    assert out[len(HANDSHAKE) + 4 : len(HANDSHAKE) + 7] == len(body).to_bytes(3, "big")


@pytest.mark.parametrize("step", [1, 2, 3, 7, 128, 1537])
def test_any_split_of_the_input_gives_the_same_output(step: int) -> None:
    stream = HANDSHAKE + CAPTURED + chunked(3, 1, 20, command("releaseStream"))
    assert rewrite(stream, step) == rewrite(stream)


def test_bytes_after_the_connect_pass_unchanged() -> None:
    after = chunked(3, 1, 20, command("createStream")) + chunked(4, 0, 9, bytes(range(200)))
    out = rewrite(HANDSHAKE + CAPTURED + after)
    assert out.endswith(after)
    assert [m[2][:15] for m in messages(out)][1:] == [
        command("createStream")[:15],
        bytes(range(15)),
    ]


@pytest.mark.parametrize("fmt", [2, 3])
def test_a_header_that_reuses_the_length_after_connect_says_its_own(fmt: int) -> None:
    """The next message on the connect's chunk stream, as long as the original connect: a
    server now takes the new length for fmt 2/3, so it becomes fmt 1 with the length."""
    connect = messages(HANDSHAKE + CAPTURED)[0][2]
    same_length = command("FCPublish").ljust(len(connect), b"\x05")
    stream = HANDSHAKE + CAPTURED + chunked(3, fmt, 20, same_length)
    out = rewrite(stream)
    assert [body for _, _, body in messages(out)][1] == same_length
    assert [body for _, _, body in messages(stream)][1] == same_length


def test_a_larger_chunk_size_set_before_connect_is_kept() -> None:
    set_size = chunked(2, 0, 1, struct.pack(">I", 4096))
    connect = messages(HANDSHAKE + CAPTURED)[0][2]
    stream = HANDSHAKE + set_size + chunked(3, 0, 20, connect, 4096)
    out = rewrite(stream)
    assert out.startswith(HANDSHAKE + set_size)
    body = messages(out)[1][2]
    assert tc_url(body) == "rtmps://live.example.com/live"
    assert b"\xc3" not in out[len(HANDSHAKE + set_size) :], "one chunk at 4096 bytes"


def test_amf3_connect_keeps_its_leading_zero() -> None:
    connect = messages(HANDSHAKE + CAPTURED)[0][2]
    out = rewrite(HANDSHAKE + chunked(3, 0, 17, b"\x00" + connect))
    [(_, type_id, body)] = messages(out)
    assert type_id == 17 and body[0] == 0 and tc_url(body) == "rtmps://live.example.com/live"


def test_the_port_of_the_real_url_goes_into_tc_url() -> None:
    rewriter = ConnectRewriter("rtmps://[2001:db8::1]:1936/live")
    out = rewriter.feed(HANDSHAKE + CAPTURED)
    assert tc_url(messages(out)[0][2]) == "rtmps://[2001:db8::1]:1936/live"


def test_no_connect_among_the_first_messages_passes_everything() -> None:
    others = b"".join(chunked(4, 0, 8, bytes([n]) * 10) for n in range(10))
    rewriter = ConnectRewriter(REAL)
    stream = HANDSHAKE + others + CAPTURED
    assert rewriter.feed(stream) == stream
    assert rewriter.passing and rewriter.rewritten is None


def test_a_connect_it_cannot_read_passes_as_it_is() -> None:
    broken = amf_string("connect") + b"\x00" + bytes(8) + b"\x03\x00\x02ab\x42"
    stream = HANDSHAKE + chunked(3, 0, 20, broken) + b"more"
    assert rewrite(stream) == stream


def test_rtmpe_is_not_touched() -> None:
    stream = b"\x06" + HANDSHAKE[1:] + CAPTURED
    assert rewrite(stream) == stream


def test_a_stream_that_never_completes_a_message_is_bounded() -> None:
    rewriter = ConnectRewriter(REAL)
    head = HANDSHAKE + bytes([0x03]) + bytes(3) + (0xFFFFF).to_bytes(3, "big") + b"\x14" + bytes(4)
    out = rewriter.feed(head)
    for _ in range(80):
        out += rewriter.feed(bytes(1024))
    assert rewriter.passing and out == head + bytes(80 * 1024)


def test_amf0_values_are_skipped_whole() -> None:
    nested = b"\x03" + b"\x00\x01a" + b"\x0a\x00\x00\x00\x02\x05\x01\x01" + b"\x00\x00\x09"
    assert skip_value(nested + b"tail", 0) == len(nested)


@pytest.mark.fuzz
@given(st.binary(max_size=4000), st.integers(min_value=1, max_value=300))
def test_arbitrary_bytes_never_raise_and_pass_unchanged(data: bytes, step: int) -> None:
    """Without a connect, what went out is the input so far, less a message not yet whole;
    all of it once the rewriter gave up."""
    stream = HANDSHAKE + data
    rewriter = ConnectRewriter(REAL)
    out = b"".join(rewriter.feed(stream[i : i + step]) for i in range(0, len(stream), step))
    if b"connect" not in data:
        assert stream.startswith(out)
        if rewriter.passing:
            assert out == stream


@pytest.mark.fuzz
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=len(CAPTURED)))
@example(noise=b"[", cut=141)  # an unbalanced bracket in the tcUrl's authority
def test_bytes_around_a_real_connect_never_raise(noise: bytes, cut: int) -> None:
    stream = HANDSHAKE + CAPTURED[:cut] + noise + CAPTURED[cut:]
    out = rewrite(stream, 5)
    assert out[: len(HANDSHAKE)] == HANDSHAKE
