"""The publishing connection's socket handling against servers that misbehave on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import pytest

from sip2rtmp.net import rtmp_socket
from sip2rtmp.net.rtmp_publish import USER_CONTROL, chunk_message
from sip2rtmp.net.rtmp_socket import RtmpConnection
from tests.unit.net.test_rtmp_publish import published

Behaviour = Callable[[socket.socket], None]


@contextmanager
def server(behaviour: Behaviour) -> Iterator[str]:
    """A one-connection TCP server on loopback; yields the rtmp:// URL that reaches it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            behaviour(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"rtmp://127.0.0.1:{port}/live/SECRET"
    finally:
        listener.close()
        thread.join(2)


def silent(connection: socket.socket) -> None:
    connection.recv(4096)
    connection.settimeout(2)
    with suppress(OSError):
        connection.recv(4096)


def hangs_up(connection: socket.socket) -> None:
    connection.recv(4096)


def test_a_server_that_never_answers_times_out_naming_the_step() -> None:
    with server(silent) as url, pytest.raises(TimeoutError, match=r"within 0.3 s.*handshake"):
        RtmpConnection.open(url, timeout=0.3)


def test_a_server_that_hangs_up_is_a_reset_connection() -> None:
    with server(hangs_up) as url, pytest.raises(ConnectionResetError, match="closed"):
        RtmpConnection.open(url, timeout=2)


def test_a_flooding_server_cannot_hold_the_stream_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that always has more to say (here: a socket that stays readable, and a ping
    in every read) gets a bounded number of reads per write; the media still goes out."""
    publisher, reader = published()
    ping = chunk_message(2, USER_CONTROL, 0, 0, b"\x00\x06\x00\x00\x00\x01", 128)
    reads: list[int] = []

    def endless(sock: socket.socket) -> bytes:
        reads.append(1)
        return ping

    monkeypatch.setattr(rtmp_socket, "_received", endless)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.send(b"x")  # never read: ours stays readable
        connection = RtmpConnection(ours, publisher)
        connection.write(b"FLV\x01\x05\x00\x00\x00\x09" + bytes(4))
        pongs = reader.feed(theirs.recv(65536))
    assert len(reads) == rtmp_socket.MAX_READS_PER_WRITE
    assert [m.body[:2] for m in pongs] == [b"\x00\x07"] * len(reads)
