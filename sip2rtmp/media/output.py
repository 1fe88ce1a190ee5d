"""One RTMP/RTMPS server or recording file, fed already-encoded packets from its own thread.

Each output has a bounded buffer measured in media time, so a slow or dead server costs
memory for at most ``max_buffer_s`` and never blocks the encoder or the other outputs. After a
connection drops, the same timeline resumes on a fresh connection that starts with the codec
headers and a keyframe. A keyframe whose decoder configuration differs from the one the
connection announced last (the slate taking over, the callee's video at a new size) goes out
after a new AVC sequence header: tagged in `sip2rtmp.media.flv` for a connection, as new
extradata through FFmpeg's muxer for a file.
"""

from __future__ import annotations

import contextlib
import errno
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
from av.packet import PacketSideData, packet_sidedata_type_from_literal

from sip2rtmp.media import flv
from sip2rtmp.media.packets import EncodedPacket, StreamTemplates, Track
from sip2rtmp.media.targets import NETWORK_SCHEMES, redact
from sip2rtmp.media.threads import name_native_thread
from sip2rtmp.net.rtmp_socket import RtmpConnection
from sip2rtmp.net.rtmps import CertificateRefused
from sip2rtmp.outcomes import OutputFailed

_BITRATE_WINDOW_S = 5.0
_TRANSIENT_ERRNOS = {errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EAGAIN}
_MP4_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
"""Fragmented MP4 keeps a recording playable even if the process dies before the trailer."""
_FLV_STREAM_OPTIONS = {"flvflags": "no_duration_filesize"}
"""A live stream has neither: the muxer would only warn that it cannot go back to write them.
The muxer writes only a connection's header; its packets are tagged in `sip2rtmp.media.flv`."""
_NEW_EXTRADATA = packet_sidedata_type_from_literal("new_extradata")


class OutputState(Enum):
    CONNECTING = "connecting"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class OutputPolicy:
    max_buffer_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    give_up_after_s: float = 60.0
    close_timeout_s: float = 5.0
    connect_timeout_s: float = 10.0
    """For the connect, handshake and publish together, and for any one send after."""


@dataclass(frozen=True, slots=True)
class OutputStats:
    target: str
    state: OutputState
    bytes_sent: int
    bitrate: float
    reconnects: int
    dropped_packets: int
    buffered_s: float
    session_start_s: float | None
    last_sent_s: float | None
    last_error: str | None


def _new_extradata(config: bytes) -> Any:
    """Side data that makes the FLV muxer write ``config`` as a new AVC sequence header.

    FFmpeg's flvenc does so for AV_PKT_DATA_NEW_EXTRADATA that differs from the stream's
    extradata (the MP4 muxer ignores it; in-band SPS/PPS carry the change there).
    """
    # PyAV's type stub leaves out the constructor, PacketSideData(type, size).
    side_data = PacketSideData(_NEW_EXTRADATA, len(config))  # type: ignore[call-arg]
    memoryview(side_data)[:] = config
    return side_data


class RtmpOutput:
    """Muxes packets to one target (rtmp://, rtmps://, or a .flv/.mp4 path) in a worker thread.

    ``submit`` never blocks. The first connect fails for good on anything but a timeout-like
    error (refused, bad URL, rejected key); once live, any failure is retried with exponential
    backoff until ``give_up_after_s`` without a working connection. Files are never reopened,
    since reopening would truncate the recording. An rtmps:// target is verified with ``tls``
    (by default the system's CAs); a certificate that does not verify fails the output at
    once, since another attempt would meet the same certificate.
    """

    def __init__(
        self,
        target: str,
        templates: StreamTemplates,
        policy: OutputPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.target = target
        self._tls = tls
        self.display = redact(target)
        self._templates = templates
        self._video_config = templates.video_config
        self._policy = policy or OutputPolicy()
        self._clock = clock
        self._is_file = urlsplit(target).scheme not in NETWORK_SCHEMES
        self._format = "mp4" if Path(target).suffix.lower() == ".mp4" else "flv"
        self._queue: deque[EncodedPacket] = deque()
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"output {self.display}", daemon=True
        )
        self._state = OutputState.CONNECTING
        self._ever_live = False
        self._resync = False
        self._bytes_sent = 0
        self._sent_window: deque[tuple[float, int]] = deque()
        self._reconnects = 0
        self._dropped = 0
        self._session_start_s: float | None = None
        self._last_sent_s: float | None = None
        self._last_error: str | None = None
        self._last_errno: int | None = None
        self._down_since = 0.0
        self._backoff = self._policy.backoff_initial_s

    @property
    def state(self) -> OutputState:
        return self._state

    @property
    def failure(self) -> OutputFailed | None:
        """Why the output gave up for good, with the target in its display form."""
        if self._state is not OutputState.FAILED:
            return None
        return OutputFailed(self.display, self._last_error or "")

    def start(self) -> None:
        self._down_since = self._clock()
        self._thread.start()

    def submit(self, packets: list[EncodedPacket]) -> None:
        """Queue packets in decode order; beyond ``max_buffer_s`` of media the oldest are dropped.

        One call per batch wakes the output thread once, not once per packet.
        """
        if not packets:
            return
        with self._cond:
            if self._state is OutputState.FAILED or self._closing.is_set():
                return
            self._queue.extend(packets)
            horizon = packets[-1].seconds - self._policy.max_buffer_s
            while self._queue[0].seconds < horizon:
                self._queue.popleft()
                self._dropped += 1
                self._resync = True
            self._cond.notify()

    def close(self) -> None:
        """Send what is queued (if connected), write the trailer, and stop the thread.

        Blocks up to ``close_timeout_s``; call it from a worker thread, not the event loop.
        """
        with self._cond:
            self._closing.set()
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(self._policy.close_timeout_s)

    def stats(self) -> OutputStats:
        with self._cond:
            now = self._clock()
            while self._sent_window and self._sent_window[0][0] < now - _BITRATE_WINDOW_S:
                self._sent_window.popleft()
            recent = sum(size for _, size in self._sent_window)
            buffered = self._queue[-1].seconds - self._queue[0].seconds if self._queue else 0.0
            return OutputStats(
                target=self.display,
                state=self._state,
                bytes_sent=self._bytes_sent,
                bitrate=recent * 8 / _BITRATE_WINDOW_S,
                reconnects=self._reconnects,
                dropped_packets=self._dropped,
                buffered_s=buffered,
                session_start_s=self._session_start_s,
                last_sent_s=self._last_sent_s,
                last_error=self._last_error,
            )

    def _run(self) -> None:
        name_native_thread("s2r-output")
        while True:
            container: Any = None
            connection: RtmpConnection | None = None
            try:
                if self._is_file:
                    options = _MP4_OPTIONS if self._format == "mp4" else {}
                    container = av.open(
                        self.target, "w", format=self._format, container_options=options
                    )
                else:
                    connection = RtmpConnection.open(
                        self.target, timeout=self._policy.connect_timeout_s, tls=self._tls
                    )
                    container = av.open(
                        connection, "w", format="flv", container_options=_FLV_STREAM_OPTIONS
                    )
                streams = self._templates.add_to(container)
                container.start_encoding()
                self._pump(container, streams, connection)
                if connection is not None:
                    connection.close()
                container.close()
                self._set_state(OutputState.CLOSED)
                return
            except CertificateRefused as refused:
                self._abandon(container, connection)
                self._refuse(str(refused))
                return
            except (av.error.FFmpegError, OSError, ValueError) as error:
                self._abandon(container, connection)
                self._record_failure(error)
            if self._closing.is_set():
                self._set_state(OutputState.CLOSED if self._ever_live else OutputState.FAILED)
                return
            if not self._retryable() or self._clock() - self._down_since >= (
                self._policy.give_up_after_s
            ):
                self._set_state(OutputState.FAILED)
                return
            if self._closing.wait(self._backoff):
                self._set_state(OutputState.CLOSED)
                return
            self._backoff = min(self._backoff * 2, self._policy.backoff_max_s)

    def _pump(
        self, container: Any, streams: dict[Track, Any], connection: RtmpConnection | None
    ) -> None:
        """Send queued packets until closed and drained: tagged here for a connection
        (`sip2rtmp.media.flv`), through FFmpeg's muxer for a file. Raises when the
        connection fails, with the batch it was sending queued again.

        A connection gets all that is queued in one send: the pipeline hands packets over
        in batches, and a send per packet (each a system call and a trip through the TCP
        stack) cost more than tagging them."""
        need_keyframe = True
        announced = self._video_config
        while True:
            with self._cond:
                while not self._queue and not self._closing.is_set():
                    self._cond.wait()
                if not self._queue:
                    return
                batch = list(self._queue)
                self._queue.clear()
                if self._resync:
                    need_keyframe, self._resync = True, False
            sent: list[EncodedPacket] = []
            tagged: list[flv.Tag] = []
            try:
                for packet in batch:
                    if need_keyframe:
                        if packet.track is not Track.VIDEO or not packet.keyframe:
                            continue
                        need_keyframe = False
                    config = packet.config
                    new_config = config if config is not None and config != announced else None
                    if connection is not None:
                        tagged.extend(flv.tags(packet, new_config))
                    else:
                        container.mux(_muxer_packet(packet, streams[packet.track], new_config))
                    if new_config is not None:
                        announced = new_config
                    sent.append(packet)
                if tagged and connection is not None:
                    connection.send_tags(tagged)
            except BaseException:
                with self._cond:
                    self._queue.extendleft(reversed(batch))
                raise
            if sent:
                self._count_sent(sent)

    def _count_sent(self, sent: list[EncodedPacket]) -> None:
        size = sum(len(packet.data) for packet in sent)
        with self._cond:
            self._bytes_sent += size
            self._sent_window.append((self._clock(), size))
            self._last_sent_s = sent[-1].seconds
            if self._state is not OutputState.LIVE:
                self._session_start_s = sent[0].seconds
                self._went_live()

    def _went_live(self) -> None:
        if self._ever_live:
            self._reconnects += 1
        self._ever_live = True
        self._state = OutputState.LIVE
        self._backoff = self._policy.backoff_initial_s

    def _record_failure(self, error: BaseException) -> None:
        with self._cond:
            if self._state is OutputState.LIVE:
                self._state = OutputState.RECONNECTING
                self._down_since = self._clock()
            text = str(getattr(error, "strerror", None) or str(error))
            timed_out = isinstance(error, TimeoutError)
            number = errno.ETIMEDOUT if timed_out else getattr(error, "errno", None)
            self._last_error = text.replace(self.target, self.display)
            self._last_errno = number

    def _refuse(self, reason: str) -> None:
        """Fail for good, naming the server whose certificate did not verify."""
        parts = urlsplit(self.target)
        server = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        with self._cond:
            self._last_error = f"certificate of {server} refused by sip2rtmp: {reason}"
            self._last_errno = None
        self._set_state(OutputState.FAILED)

    def _set_state(self, state: OutputState) -> None:
        with self._cond:
            self._state = state
            if state is OutputState.FAILED:
                self._queue.clear()

    def _retryable(self) -> bool:
        if self._is_file:
            return False
        if self._ever_live:
            return True
        return self._last_errno in _TRANSIENT_ERRNOS

    @staticmethod
    def _abandon(container: Any, connection: RtmpConnection | None) -> None:
        """Close a broken connection; errors here say nothing new."""
        if connection is not None:
            connection.close()
        if container is not None:
            with contextlib.suppress(av.error.FFmpegError, OSError):
                container.close()


def _muxer_packet(packet: EncodedPacket, stream: Any, new_config: bytes | None) -> Any:
    """``packet`` for FFmpeg's muxer, carrying ``new_config`` as new extradata."""
    av_packet = av.Packet(packet.data)
    av_packet.pts = packet.pts
    av_packet.dts = packet.dts
    av_packet.time_base = packet.time_base
    av_packet.stream = stream
    av_packet.is_keyframe = packet.keyframe
    if new_config is not None:
        _new_extradata(new_config).to_packet(av_packet)
    return av_packet
