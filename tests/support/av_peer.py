"""A SIP callee that sends audio and H.264 or VP8 video with marks at known capture instants.

Audio is a 440 Hz tone (PCMU, 20 ms packets) with a 100 ms 1 kHz beep every 2 s; video is
a dark 25 fps picture with one white frame at each beep's start, a keyframe every 1 s. The
video may instead pause and come back at another size (``paused_video``).
Video leaves ``video_delay`` after its capture instant (a slow encoder), while the sender
reports of both streams tell the truth on one NTP clock (RFC 3550 §6.4.1), so a receiver
that syncs by them puts flash and beep together and one that goes by arrival does not.
"""

from __future__ import annotations

import math
import random
import socket
import threading
import time
from fractions import Fraction

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
    SipPeer,
    _bound,
    mulaw_encode,
)

FPS = 25
VIDEO_CLOCK = 90_000
BEEP_PERIOD_S = 2.0
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

    def units(packets: list[av.Packet]) -> list[list[bytes]]:
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


class AvPeer(SipPeer):
    """Answers audio PCMU + video H.264 (packetization-mode 1) or VP8, and streams the marks.

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
        super().__init__()
        self.video_delay = video_delay
        self.sender_reports = sender_reports
        self.codec = codec
        self.video_received = 0
        self._video = _bound()
        self._frames = encode_video(seconds, codec=codec) if frames is None else frames
        self._clock = threading.Event()
        self._start = (0.0, 0.0)
        """(monotonic, wall) instant of the first capture, shared by both streams."""
        self._threads.append(threading.Thread(target=self._send_video, daemon=True))

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

    def _drain_video(self) -> None:
        """Count what sip2rtmp sends on the video stream (RTP only)."""
        while True:
            try:
                data = self._video.recv(65535)
            except BlockingIOError:
                return
            if not is_rtcp(data):
                self.video_received += 1

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
