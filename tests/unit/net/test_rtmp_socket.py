"""The publishing connection's socket handling against servers that misbehave on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import pytest

from sip2rtmp.net.rtmp_socket import RtmpConnection

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
