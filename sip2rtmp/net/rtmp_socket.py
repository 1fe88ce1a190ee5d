"""An RTMP or RTMPS publishing connection on a blocking socket, owned by one output thread.

It is the file object FFmpeg's FLV muxer writes to (through PyAV): each write's complete
tags go out as RTMP messages (`sip2rtmp.net.rtmp_publish`). Every wait is a Python socket
call, which releases the GIL, so connecting to a slow server stalls only its own output;
TCP_NODELAY keeps the handshake's small writes from waiting on delayed ACKs. An rtmps://
target is the same conversation inside TLS, whose certificate is checked before the first
RTMP byte (`sip2rtmp.net.rtmps`).
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import ssl
import time
from urllib.parse import urlsplit

from sip2rtmp.net.rtmp_publish import PublishTarget, RtmpPublisher
from sip2rtmp.net.rtmps import RTMPS_PORT, CertificateRefused, client_context, refusal_reason

RTMP_PORT = 1935
RECEIVE_SIZE = 64 * 1024
MAX_READS_PER_WRITE = 4
"""A server sends little once publishing; one that floods is read this many times per write,
not until it stops, so the stream keeps going out."""


class RtmpConnection:
    """Connected and publishing once ``open`` returns; ``write`` takes the FLV stream."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket, publisher: RtmpPublisher) -> None:
        self._sock = sock
        self._publisher = publisher
        self._readable = select.poll()
        self._readable.register(sock, select.POLLIN)
        self._closed = False

    @classmethod
    def open(
        cls,
        url: str,
        *,
        timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> RtmpConnection:
        """Connect to the server ``url`` names, then handshake, connect and publish its
        stream, all within ``timeout`` seconds. An rtmps:// URL goes through TLS with ``tls``
        (by default the system's CAs), and a certificate that does not verify raises
        `CertificateRefused`. Sends that block for ``timeout`` later mean the connection is
        dead (TimeoutError)."""
        publisher = RtmpPublisher(PublishTarget.from_url(url))
        parts = urlsplit(url)
        secure = parts.scheme == "rtmps"
        host = parts.hostname or ""
        address = (host, parts.port or (RTMPS_PORT if secure else RTMP_PORT))
        deadline = time.monotonic() + timeout
        sock: socket.socket | ssl.SSLSocket = socket.create_connection(address, timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if secure:
                sock = _secured(sock, host, tls or client_context())
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
        """What PyAV calls with the muxer's bytes (the FLV header, metadata and sequence
        headers). After ``close``, the muxer's trailer is dropped: a live stream has none."""
        if not self._closed:
            self._answer_server()
            self._publisher.send_flv(bytes(data))
            self._sock.sendall(self._publisher.data_to_send())
        return len(data)

    def send_tags(self, tags: list[tuple[int, int, bytes]]) -> None:
        """Publish FLV tags (type, milliseconds, body) in one send."""
        self._answer_server()
        for type_id, timestamp, body in tags:
            self._publisher.send_tag(type_id, timestamp, body)
        self._sock.sendall(self._publisher.data_to_send())

    def _answer_server(self) -> None:
        """Read what the server sent (pings, acknowledgement windows), a bounded amount."""
        for _ in range(MAX_READS_PER_WRITE):
            if not self._waiting():
                break
            self._publisher.receive(_received(self._sock))

    def _waiting(self) -> bool:
        """Whether the server sent something: decrypted bytes TLS holds, or the socket's."""
        sock = self._sock
        return bool(isinstance(sock, ssl.SSLSocket) and sock.pending()) or bool(
            self._readable.poll(0)
        )

    def close(self) -> None:
        """Unpublish and close; a connection that already failed just closes."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._publisher.unpublish()
            self._sock.sendall(self._publisher.data_to_send())
        self._sock.close()


def _secured(sock: socket.socket, host: str, context: ssl.SSLContext) -> ssl.SSLSocket:
    """TLS over ``sock``, with SNI and the certificate checked for ``host``; the handshake
    waits in `ssl`, with the GIL released like any socket call."""
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as error:
        raise CertificateRefused(refusal_reason(error)) from None


def _received(sock: socket.socket | ssl.SSLSocket) -> bytes:
    data = sock.recv(RECEIVE_SIZE)
    if not data:
        raise ConnectionResetError(errno.ECONNRESET, "the server closed the connection")
    return data
