"""An RTMP publishing connection on a blocking socket, owned by one output thread.

It is the file object FFmpeg's FLV muxer writes to (through PyAV): each write's complete
tags go out as RTMP messages (`sip2rtmp.net.rtmp_publish`). Every wait is a Python socket
call, which releases the GIL, so connecting to a slow server stalls only its own output;
TCP_NODELAY keeps the handshake's small writes from waiting on delayed ACKs.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import time
from urllib.parse import urlsplit

from sip2rtmp.net.rtmp_publish import PublishTarget, RtmpPublisher

RTMP_PORT = 1935
RECEIVE_SIZE = 64 * 1024


class RtmpConnection:
    """Connected and publishing once ``open`` returns; ``write`` takes the FLV stream."""

    def __init__(self, sock: socket.socket, publisher: RtmpPublisher) -> None:
        self._sock = sock
        self._publisher = publisher
        self._readable = select.poll()
        self._readable.register(sock, select.POLLIN)

    @classmethod
    def open(
        cls, url: str, *, timeout: float, address: tuple[str, int] | None = None
    ) -> RtmpConnection:
        """Connect to ``address`` (by default the URL's own host and port), then handshake,
        connect and publish what ``url`` names, all within ``timeout`` seconds. Sends that
        block for ``timeout`` later mean the connection is dead (TimeoutError)."""
        publisher = RtmpPublisher(PublishTarget.from_url(url))
        if address is None:
            parts = urlsplit(url)
            address = (parts.hostname or "", parts.port or RTMP_PORT)
        deadline = time.monotonic() + timeout
        sock = socket.create_connection(address, timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            publisher.initiate()
            while not publisher.publishing:
                sock.sendall(publisher.data_to_send())
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                # Acknowledge the server's answers at once: one that writes them in pieces
                # (nginx-rtmp) waits for each ACK, and a delayed one costs 40 ms a round.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                publisher.receive(_received(sock))
            sock.sendall(publisher.data_to_send())
            sock.settimeout(timeout)
        except TimeoutError:
            sock.close()
            step = publisher.state.value
            raise TimeoutError(
                errno.ETIMEDOUT, f"not publishing within {timeout:g} s (stuck at {step})"
            ) from None
        except BaseException:
            sock.close()
            raise
        return cls(sock, publisher)

    def write(self, data: bytes) -> int:
        """What PyAV calls with the muxer's bytes; the server's own messages (pings,
        acknowledgement windows) are answered on the way."""
        while self._readable.poll(0):
            self._publisher.receive(_received(self._sock))
        self._publisher.send_flv(bytes(data))
        self._sock.sendall(self._publisher.data_to_send())
        return len(data)

    def close(self) -> None:
        """Unpublish and close; a connection that already failed just closes."""
        with contextlib.suppress(OSError):
            self._publisher.unpublish()
            self._sock.sendall(self._publisher.data_to_send())
        self._sock.close()


def _received(sock: socket.socket) -> bytes:
    data = sock.recv(RECEIVE_SIZE)
    if not data:
        raise ConnectionResetError(errno.ECONNRESET, "the server closed the connection")
    return data
