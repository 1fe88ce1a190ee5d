"""SIP callees that send audio and H.264 or VP8 video with marks at known capture instants.

Audio is a 440 Hz tone (PCMU, 20 ms packets) with a 100 ms 1 kHz beep every second from 1 s
on; video is a dark 25 fps picture with one white frame at each beep's start, a keyframe every
1 s. Video leaves ``video_delay`` after its capture instant (a slow encoder), while the sender
reports of both streams tell the truth on one NTP clock (RFC 3550 §6.4.1), so a receiver
that syncs by them puts flash and beep together and one that goes by arrival does not.

``FfmpegAvPeer`` has FFmpeg make, packetize and report the media (its RTP muxer sends the
sender reports), so nothing the relay is judged on comes from the relay's own code; the peer
only answers the call and forwards FFmpeg's datagrams, the video ones ``video_delay`` late.
``AvPeer`` builds its media itself, for what FFmpeg cannot do in one stream: video that
pauses and comes back from a new encoder at another size (``paused_video``).
"""

from __future__ import annotations

import heapq
import math
import random
import selectors
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from sip2rtmp.rtp.h264 import packetize_h264, split_annexb
from sip2rtmp.rtp.packet import RtpPacket, is_rtcp
from sip2rtmp.rtp.rtcp import SenderReport, compound, ntp_from_unix
from sip2rtmp.rtp.vp8 import packetize_vp8
from sip2rtmp.sip.sdp import NegotiatedStream, build_offer
from tests.support.sip_peer import (
    HOST,
    PTIME,
    SAMPLES_PER_PACKET,
    Address,
    SipPeer,
    _bound,
    mulaw_encode,
)

FPS = 25
VIDEO_CLOCK = 90_000
BEEP_PERIOD_S = 1.0
BEEP_FIRST_S = 1.0
BEEP_S = 0.1
BEEP_HZ = 1000.0
SR_INTERVAL_S = 0.5
SIZE = (320, 240)


def marked(capture_s: float, length: float) -> bool:
    """Whether a mark that lasts ``length`` from each beep's start covers this capture time."""
    if capture_s < BEEP_FIRST_S:
        return False
    return (capture_s - BEEP_FIRST_S) % BEEP_PERIOD_S < length - 1e-9


def audio_payload(index: int, tone_hz: float) -> bytes:
    """The ``index``-th 20 ms of the tone, the beep replacing it while one is on."""
    n = np.arange(index * SAMPLES_PER_PACKET, (index + 1) * SAMPLES_PER_PACKET)
    hz = np.where([marked(i / 8000, BEEP_S) for i in n], BEEP_HZ, tone_hz)
    samples = 0.3 * 32767 * np.sin(2 * math.pi * hz * n / 8000)
    return mulaw_encode(samples.astype(np.int16))


def encode_video(
    seconds: float, size: tuple[int, int] = SIZE, start_s: float = 0.0, codec: str = "H264"
) -> list[list[bytes]]:
    """Each frame captured from ``start_s`` on, as what its RTP packets carry: the NAL units
    of libx264 baseline (SPS/PPS in band, IDR every second), or for ``codec`` "VP8" the one
    compressed frame of libvpx (keyframe every second)."""
    vp8 = codec == "VP8"
    context = av.CodecContext.create("libvpx" if vp8 else "libx264", "w")
    context.width, context.height = size
    context.pix_fmt = "yuv420p"
    context.time_base = Fraction(1, FPS)
    context.framerate = Fraction(FPS)
    context.options = (
        {"deadline": "realtime", "lag-in-frames": "0"}
        if vp8
        else {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "profile": "baseline",
            "x264-params": f"keyint={FPS}:min-keyint={FPS}:scenecut=0:bframes=0",
        }
    )

    def units(packets: list[av.Packet[av.VideoStream]]) -> list[list[bytes]]:
        return [[bytes(packet)] if vp8 else split_annexb(bytes(packet)) for packet in packets]

    frames: list[list[bytes]] = []
    for index in range(round(seconds * FPS)):
        luma = 235 if marked(start_s + index / FPS, 1 / FPS) else 30
        picture: npt.NDArray[np.uint8] = np.full((size[1], size[0], 3), luma, np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        kind = av.video.frame.PictureType
        frame.pict_type = kind.I if vp8 and index % FPS == 0 else kind.NONE
        frames.extend(units(context.encode(frame)))
    frames.extend(units(context.encode(None)))
    return frames


def paused_video(
    before_s: float, pause_s: float, after_s: float, sizes: tuple[tuple[int, int], ...]
) -> list[list[bytes]]:
    """Video at ``sizes[0]`` that stops for ``pause_s`` (no video RTP at all, the audio goes
    on), then comes from a new encoder at ``sizes[1]``: an IDR with new SPS/PPS in band."""
    resume_s = before_s + pause_s
    return [
        *encode_video(before_s, sizes[0]),
        *([] for _ in range(round(pause_s * FPS))),
        *encode_video(after_s, sizes[1], resume_s),
    ]


class VideoPeer(SipPeer):
    """Answers audio PCMU + video H.264 (packetization-mode 1) or VP8; counts the RTP the
    relay sends toward it on the video stream."""

    def __init__(self, *, codec: str = "H264", video_delay: float = 0.3) -> None:
        super().__init__()
        self.codec = codec
        self.video_delay = video_delay
        self.video_received = 0
        self._video = _bound()

    def stop(self) -> None:
        super().stop()
        self._video.close()

    def _capabilities(self, media_port: int) -> str:
        return build_offer(
            HOST,
            media_port,
            int(self._video.getsockname()[1]),
            session_id=random.randrange(1, 1 << 31),
            username=self.user,
            audio_codecs=("PCMU",),
            video_codecs=(self.codec,),
        )

    def _drain_video(self) -> None:
        """Count what sip2rtmp sends on the video stream (RTP only)."""
        while True:
            try:
                data = self._video.recv(65535)
            except BlockingIOError:
                return
            if not is_rtcp(data):
                self.video_received += 1


class AvPeer(VideoPeer):
    """Streams the marks it encodes and packetizes itself.

    ``frames`` (one list of NAL units per 25 fps capture slot, empty for none) replaces the
    default ``seconds`` of marked H.264 video.
    """

    def __init__(
        self,
        *,
        seconds: float = 12.0,
        video_delay: float = 0.3,
        sender_reports: bool = True,
        frames: list[list[bytes]] | None = None,
        codec: str = "H264",
    ) -> None:
        super().__init__(codec=codec, video_delay=video_delay)
        self.sender_reports = sender_reports
        self._frames = encode_video(seconds, codec=codec) if frames is None else frames
        self._clock = threading.Event()
        self._start = (0.0, 0.0)
        """(monotonic, wall) instant of the first capture, shared by both streams."""
        self._threads.append(threading.Thread(target=self._send_video, daemon=True))

    def _send_tone(self) -> None:
        """Audio leaves at its capture instant; an SR every ``SR_INTERVAL_S``."""
        self._answered.wait()
        stream = self.session.audio if self.session else None
        if stream is None or self._media_stop.is_set():
            return
        self._start = (time.monotonic(), time.time())
        self._clock.set()
        ssrc, seq, base = (random.randrange(1 << n) for n in (32, 16, 32))
        index = 0
        while not self._media_stop.is_set():
            timestamp = (base + index * SAMPLES_PER_PACKET) & 0xFFFFFFFF
            payload = audio_payload(index, self.tone_hz)
            sequence = (seq + index) & 0xFFFF
            packet = RtpPacket(stream.payload_type, sequence, timestamp, ssrc, payload)
            self._rtp.sendto(packet.serialize(), stream.rtp_address)
            if index % round(SR_INTERVAL_S / PTIME) == 0:
                self._report(self._rtp, stream, ssrc, index * PTIME, timestamp, index)
            self.seen.rtp_sent += 1
            index += 1
            self._media_stop.wait(max(self._start[0] + index * PTIME - time.monotonic(), 0.0))

    def _send_video(self) -> None:
        """Each frame leaves ``video_delay`` after its capture instant, SRs stay truthful."""
        self._clock.wait()
        stream = self.session.video if self.session else None
        if stream is None:
            return
        ssrc, seq, base = (random.randrange(1 << n) for n in (32, 16, 32))
        step = VIDEO_CLOCK // FPS
        next_report = 0.0
        for index, nals in enumerate(self._frames):
            capture = index / FPS
            self._media_stop.wait(
                max(self._start[0] + capture + self.video_delay - time.monotonic(), 0.0)
            )
            if self._media_stop.is_set():
                return
            now = time.monotonic() - self._start[0]
            if now >= next_report:
                ts = base + round(now * VIDEO_CLOCK)
                self._report(self._video, stream, ssrc, now, ts, index)
                next_report += SR_INTERVAL_S
            payloads = (
                [payload for data in nals for payload in packetize_vp8(data, picture_id=index)]
                if self.codec == "VP8"
                else packetize_h264(nals)
            )
            for number, payload in enumerate(payloads, 1):
                seq = (seq + 1) & 0xFFFF
                timestamp = (base + index * step) & 0xFFFFFFFF
                marker = number == len(payloads)
                packet = RtpPacket(
                    stream.payload_type, seq, timestamp, ssrc, payload, marker=marker
                )
                self._video.sendto(packet.serialize(), stream.rtp_address)
            self._drain_video()

    def _report(
        self,
        sock: socket.socket,
        stream: NegotiatedStream,
        ssrc: int,
        capture_s: float,
        rtp_ts: int,
        sent: int,
    ) -> None:
        """An SR pairing ``rtp_ts`` with its capture instant on the wall clock (§6.4.1)."""
        if not self.sender_reports:
            return
        ntp = ntp_from_unix(self._start[1] + capture_s)
        report = SenderReport(ssrc, ntp, rtp_ts & 0xFFFFFFFF, sent, 0)
        destination = stream.rtp_address if stream.rtcp_mux else stream.rtcp_address
        sock.sendto(compound(report), destination)


def _mark_expression(length: float, clock: str) -> str:
    """An FFmpeg expression true while a mark of ``length`` from each beep's start is on."""
    return f"gte({clock},{BEEP_FIRST_S})*lt(mod({clock}-{BEEP_FIRST_S},{BEEP_PERIOD_S}),{length})"


def encode_marked_video(path: Path, codec: str, seconds: float) -> Path:
    """The marked picture (lavfi) encoded by FFmpeg ahead of the call, so streaming it costs
    no encoder time: libx264 baseline in MPEG-TS (SPS/PPS in band) or libvpx in IVF, a
    keyframe every second. Returns ``path`` with the container's suffix."""
    picture = (
        f"color=c=0x1e1e1e:s={SIZE[0]}x{SIZE[1]}:r={FPS},"
        f"drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:"
        f"enable='{_mark_expression(1 / FPS - 1e-6, 't')}',format=yuv420p"
    )
    encoder = (
        ["-c:v", "libvpx", "-deadline", "good", "-lag-in-frames", "0", "-b:v", "400k"]
        if codec == "VP8"
        else [
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
            "-profile:v", "baseline", "-bf", "0", "-sc_threshold", "0",
        ]
    )  # fmt: skip
    target = path.with_suffix(".ivf" if codec == "VP8" else ".ts")
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "lavfi", "-i", picture, "-t", str(seconds),
            *encoder, "-g", str(FPS), "-keyint_min", str(FPS), str(target),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    return target


def ffmpeg_media_argv(
    audio: tuple[int, int],
    video: tuple[int, int],
    video_file: Path,
    sender_reports: bool,
    start_wall_us: int,
    seconds: float,
) -> tuple[list[str], list[str]]:
    """Two FFmpeg processes, one per stream, each sending RTP to ``(port, payload type)`` on
    loopback, RTCP on the same port (RFC 5761), in real time (``-re``): the marked tone
    (lavfi) as G.711 mu-law, and ``video_file`` as it was encoded.

    One process per stream, because one FFmpeg paces its inputs from a single thread and the
    video then holds the audio back. ``start_time_realtime`` puts media time 0 of both on one
    wall-clock instant, so the sender reports of the two tell the same truth.
    """
    tone = f"if({_mark_expression(BEEP_S, 't')},{BEEP_HZ},440)"
    rtcp = [] if sender_reports else ["-rtpflags", "skip_rtcp"]

    def argv(
        source: list[str], options: list[str], port: int, payload_type: int, size: int
    ) -> list[str]:
        return [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
            "-re", *source, "-t", str(seconds), *options,
            "-payload_type", str(payload_type), "-start_time_realtime", str(start_wall_us),
            *rtcp, "-f", "rtp", f"rtp://{HOST}:{port}?rtcpport={port}&pkt_size={size}",
        ]  # fmt: skip

    tone_source = f"aevalsrc=exprs='0.3*sin(2*PI*t*{tone})':s=8000:c=mono:n={SAMPLES_PER_PACKET}"
    return (
        argv(
            ["-f", "lavfi", "-i", tone_source],
            ["-c:a", "pcm_mulaw", "-ar", "8000", "-ac", "1"],
            *audio,
            12 + SAMPLES_PER_PACKET,
        ),
        argv(["-i", str(video_file)], ["-c:v", "copy"], *video, 1200),
    )


@dataclass
class _Route:
    """Where one FFmpeg stream goes: out of ``out`` to ``stream``'s addresses, each RTP packet
    ``delay`` after its capture instant, which its RTP timestamp gives."""

    out: socket.socket
    stream: NegotiatedStream
    clock: int
    delay: float
    first_ts: int | None = None
    last_slot: float = 0.0

    def slot(self, data: bytes) -> float:
        """Seconds after the media origin this datagram is due: an RTP packet at its capture
        instant (RFC 3550 §5.1 timestamp) plus the delay, RTCP with the RTP packet before it
        (FFmpeg sends a report just before the packet it goes with)."""
        if 192 <= data[1] <= 223:  # RTCP, RFC 5761 §4
            return max(self.last_slot, self.delay)
        timestamp = int.from_bytes(data[4:8], "big")
        if self.first_ts is None:
            self.first_ts = timestamp
        self.last_slot = ((timestamp - self.first_ts) & 0xFFFFFFFF) / self.clock + self.delay
        return self.last_slot

    def target(self, data: bytes) -> Address:
        rtcp = 192 <= data[1] <= 223
        return self.stream.rtcp_address if rtcp else self.stream.rtp_address


class FfmpegAvPeer(VideoPeer):
    """Answers once FFmpeg sends, then relays its datagrams from the ports its SDP answer
    names, video ``video_delay`` after the audio captured with it.

    FFmpeg starts and stalls at its own pace, so each RTP packet leaves at its capture
    instant, known from its timestamp, plus a fixed delay from one media origin: arrival at
    the relay is then what the test says it is. The origin is set once both FFmpeg processes
    sent their first packet, ``MARGIN_S`` later, and the call is answered then.
    """

    MARGIN_S = 0.3
    """Longer than FFmpeg stalls once it runs, so no packet is late for its slot."""
    START_TIMEOUT_S = 10.0

    def __init__(
        self,
        *,
        codec: str = "H264",
        sender_reports: bool = True,
        video_delay: float = 0.3,
        seconds: float = 15.0,
        directory: Path,
    ) -> None:
        super().__init__(codec=codec, video_delay=video_delay)
        self.sender_reports = sender_reports
        self.seconds = seconds
        self.log = directory / "ffmpeg.log"
        self._video_file = encode_marked_video(directory / "marked", codec, seconds)
        self.late: dict[str, float] = {}
        """Per stream, the most any RTP packet reached the peer after its slot (it is then
        sent at once, so pacing failed)."""
        self.ffmpeg: list[subprocess.Popen[bytes]] = []
        self._audio_in = _bound()
        self._video_in = _bound()
        self._origin: float | None = None
        self._started = threading.Event()
        self._forwarder = threading.Thread(target=self._forward, name="ffmpeg-forward")

    def stop(self) -> None:
        super().stop()
        if self._forwarder.is_alive():
            self._forwarder.join(timeout=2.0)
        for process in self.ffmpeg:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._audio_in.close()
        self._video_in.close()

    def _send_tone(self) -> None:
        """The media is FFmpeg's (see ``_before_answer``)."""

    def _before_answer(self) -> None:
        """Start FFmpeg and wait for its first packets before the 200 OK goes out."""
        session = self.session
        if session is None or session.audio is None or session.video is None:
            return
        commands = ffmpeg_media_argv(
            (self._audio_in.getsockname()[1], session.audio.payload_type),
            (self._video_in.getsockname()[1], session.video.payload_type),
            self._video_file,
            self.sender_reports,
            round(time.time() * 1e6),
            self.seconds,
        )
        output = self.log.open("wb")
        self.ffmpeg = [
            subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )
            for argv in commands
        ]
        self._forwarder.start()
        self._started.wait(self.START_TIMEOUT_S)

    def _forward(self) -> None:
        """Receive FFmpeg's datagrams and send each in its slot until BYE or stop."""
        session = self.session
        assert session is not None and session.audio is not None and session.video is not None
        routes = {
            self._audio_in.fileno(): (
                self._audio_in,
                _Route(self._rtp, session.audio, session.audio.clock_rate, 0.0),
            ),
            self._video_in.fileno(): (
                self._video_in,
                _Route(self._video, session.video, VIDEO_CLOCK, self.video_delay),
            ),
        }
        selector = selectors.DefaultSelector()
        for sock, _ in routes.values():
            selector.register(sock, selectors.EVENT_READ)
        queue: list[tuple[float, int, bytes, _Route]] = []
        count = 0
        try:
            while not self._media_stop.is_set():
                now = time.monotonic()
                origin = self._origin
                wait = 0.02 if origin is None or not queue else queue[0][0] + origin - now
                for key, _ in selector.select(min(max(wait, 0.0), 0.02)):
                    sock, route = routes[key.fd]
                    data = sock.recv(65535)
                    slot = route.slot(data)
                    if origin is not None and time.monotonic() > origin + slot:
                        kind = route.stream.kind
                        late = time.monotonic() - origin - slot
                        self.late[kind] = max(self.late.get(kind, 0.0), late)
                    count += 1
                    heapq.heappush(queue, (slot, count, data, route))
                if origin is None and all(r.first_ts is not None for _, r in routes.values()):
                    self._origin = time.monotonic() + self.MARGIN_S
                    self._started.set()
                while origin is not None and queue and queue[0][0] + origin <= time.monotonic():
                    _, _, data, route = heapq.heappop(queue)
                    route.out.sendto(data, route.target(data))
                    if route.out is self._rtp:
                        self.seen.rtp_sent += 1
                self._drain_video()
        finally:
            selector.close()
