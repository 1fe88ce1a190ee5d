"""The do-it-yourself baseline: sip2rtmp's SIP core places the call with an offer whose RTP
ports belong to ``ffmpeg``, which reads the call through an SDP file and publishes AAC plus
H.264 into the lab's nginx. Only the ffmpeg process is measured."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from benchmarks.relay.calls import MeasuredCall, Options, Run
from benchmarks.relay.probes.process import Watched, sleep_until
from sip2rtmp.lab import RELAY_ACCOUNT, RTMP_URL, SIP_DOMAIN, SIP_HOST, SIP_PORT
from sip2rtmp.media.outbound import OutboundAudio
from sip2rtmp.net.sip_session import SipSession
from sip2rtmp.rtp.packet import RtpPacket
from sip2rtmp.rtp.rtcp import PictureLossIndication
from sip2rtmp.sip.auth import Credentials
from sip2rtmp.sip.sdp import NegotiatedStream, SessionDescription, build_offer, negotiate
from sip2rtmp.sip.useragent import UserAgentConfig

SLATE_SIZE = "1280x720"
SLATE_FPS = 10
KEYFRAME_INTERVAL_S = 2
VIDEO_FPS = 25
"""The lab callees' frame rate; ffmpeg guesses 90000 from the RTP clock unless told."""


def free_rtp_ports(count: int) -> int:
    """An even UDP port with the `count` - 1 ports after it free too (RTP/RTCP pairs)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((SIP_HOST, 0))
            port = int(probe.getsockname()[1]) & ~1
        try:
            with contextlib.ExitStack() as stack:
                for offset in range(count):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    sock.bind((SIP_HOST, port + offset))
            return port
        except OSError:
            continue
    raise RuntimeError("no free RTP ports")


def _x264(gop: int) -> list[str]:
    """libx264 as sip2rtmp runs it: live settings and a keyframe every `gop` frames exactly."""
    return [
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-sc_threshold",
        "0",
    ]


def ffmpeg_command(sdp: Path, target: str, video_codec: str | None) -> list[str]:
    """What a user would run: the call's RTP in, AAC plus H.264 out.

    The H.264 is the callee's own, copied; VP8 transcoded; or, for an audio-only call, a
    live-encoded black slate.
    """
    if video_codec is None:
        video = [
            "-re",
            "-f",
            "lavfi",
            "-i",
            f"color=c=black:s={SLATE_SIZE}:r={SLATE_FPS}",
            "-map",
            "1:v",
            "-map",
            "0:a",
            *_x264(SLATE_FPS * KEYFRAME_INTERVAL_S),
        ]
    else:
        encode = (
            ["-c:v", "copy"]
            if video_codec == "H264/0"
            else [
                *_x264(VIDEO_FPS * KEYFRAME_INTERVAL_S),
                "-r",
                str(VIDEO_FPS),
            ]
        )
        video = ["-map", "0:v", "-map", "0:a", *encode]
    return [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-protocol_whitelist",
        "file,udp,rtp",
        "-i",
        str(sdp),
        *video,
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-ar",
        "48000",
        "-ac",
        "1",
        "-f",
        "flv",
        target,
    ]


def baseline_offer(port: int, codec: str, video_codec: str | None) -> tuple[str, str]:
    """The SIP leg's offer, with ffmpeg's ports, and ffmpeg's SDP for what the callee sends.

    ffmpeg opens one stream per media section and reads its first payload type, so its SDP
    keeps only the codec of each section (telephone-events dropped).
    """
    offer = build_offer(
        SIP_HOST,
        port,
        port + 2 if video_codec else None,
        session_id=int(time.time()),
        audio_codecs=(codec,),
        video_codecs=(video_codec,) if video_codec else (),
        rtcp_mux=False,
    )
    sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=baseline\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    for media in SessionDescription.parse(offer).media:
        payload_type = media.payload_types[0]
        sdp += f"m={media.kind} {media.port} RTP/AVP {payload_type}\r\n"
        rtpmap = next(v for v in media.values("rtpmap") if v.startswith(f"{payload_type} "))
        sdp += f"a=rtpmap:{rtpmap}\r\n"
        fmtp = media.fmtp_text(payload_type)
        sdp += f"a=fmtp:{payload_type} {fmtp}\r\n" if fmtp else ""
    return offer, sdp


class SipLeg:
    """sip2rtmp's SIP core in a thread: calls the callee with RTP pointed at ffmpeg's ports.

    It also sends 20 ms of encoded silence every 20 ms toward the callee, as sip2rtmp does:
    the lab's baresip hangs up after 30 s without RTP from the caller (``rtp_timeout``), even
    when none ever arrived. With video it asks for keyframes too (``_send_to_callee``).
    """

    def __init__(self, callee: str, offer: str) -> None:
        self.answered = threading.Event()
        self.answered_at = 0.0
        self.sip_port = 0
        self.error: BaseException | None = None
        self._hangup = threading.Event()
        self._args = (callee, offer)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def hang_up(self) -> None:
        self._hangup.set()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._call(*self._args))
        except BaseException as error:
            self.error = error
            self.answered.set()

    async def _call(self, callee: str, offer: str) -> None:
        config = UserAgentConfig(
            user=RELAY_ACCOUNT.user,
            domain=SIP_DOMAIN,
            credentials=Credentials(RELAY_ACCOUNT.user, RELAY_ACCOUNT.password),
            transport="udp",
            outbound_proxy=SIP_HOST,
            port=SIP_PORT,
        )
        async with SipSession(config) as sip:
            self.sip_port = sip.local_address[1]
            call = await sip.invite(f"sip:{callee}@{SIP_DOMAIN}", offer.encode(), ring_timeout=20)
            self.answered_at = time.monotonic()
            session = negotiate(offer, call.answer_sdp.decode("utf-8", "replace"))
            offered = SessionDescription.parse(offer).media
            if session.audio is None or (len(offered) > 1 and session.video is None):
                raise RuntimeError("the callee did not accept the offered media")
            self.answered.set()
            sender = asyncio.create_task(
                _send_to_callee(session.audio, session.video, _video_ssrc(call.answer_sdp))
            )
            await asyncio.to_thread(self._hangup.wait)
            sender.cancel()
            await call.hangup()


def _video_ssrc(answer: bytes) -> int:
    """The SSRC the callee declares for its video (baresip does), else 0."""
    media = SessionDescription.parse(answer.decode("utf-8", "replace")).media
    ssrc = next((m.first("ssrc") for m in media if m.kind == "video"), None)
    return int(ssrc.split()[0]) if ssrc else 0


async def _send_to_callee(
    stream: NegotiatedStream, video: NegotiatedStream | None, video_ssrc: int
) -> None:
    """Silence every 20 ms, and a PLI every KEYFRAME_INTERVAL_S when there is video.

    baresip sends a keyframe when the call starts and then only when asked, and ffmpeg
    cannot start a video stream without one; sip2rtmp asks on a schedule of its own, so both
    published streams can be joined within a few seconds.
    """
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(SIP_HOST, 0)
    )
    source = OutboundAudio(stream.codec)
    start = loop.time()
    try:
        for slot in itertools.count():
            packet = RtpPacket(
                stream.payload_type,
                slot & 0xFFFF,
                slot * source.timestamp_step & 0xFFFFFFFF,
                0x5EED,
                source.silence,
                marker=slot == 0,
            )
            transport.sendto(packet.serialize(), stream.rtp_address)
            if video is not None and slot % (KEYFRAME_INTERVAL_S * 50) == 0:
                pli = PictureLossIndication(0x5EED, video_ssrc)
                transport.sendto(pli.serialize(), video.rtcp_address)
            await asyncio.sleep(max(start + (slot + 1) * 0.02 - loop.time(), 0.0))
    finally:
        transport.close()


def run_baseline(options: Options, codec: str) -> Run:
    """One call relayed by ffmpeg, offering `codec` (and the case's video codec, if any)."""
    port = free_rtp_ports(4 if options.video_codec else 2)
    offer, sdp_text = baseline_offer(port, codec, options.video_codec)
    sdp = options.work_dir / "call.sdp"
    sdp.write_text(sdp_text)
    call = MeasuredCall(options, "ffmpeg", label="ffmpeg baseline")
    command = ffmpeg_command(sdp, f"{RTMP_URL}/{call.stream_key}", options.video_codec)
    with (options.work_dir / "ffmpeg.stderr").open("wb") as stderr:
        process = subprocess.Popen(command, stderr=stderr)
    watched = Watched(process)
    leg = SipLeg(options.callee, offer)
    leg.answered.wait(30)
    if leg.error is not None or not leg.answered.is_set():
        call.abandon(watched, signal.SIGINT)
        raise RuntimeError(f"baseline call failed: {leg.error or 'no answer'}")
    note = call.steady_window(watched, leg.answered_at)
    sleep_until(leg.answered_at + options.duration)
    process.send_signal(signal.SIGINT)
    leg.hang_up()
    usage = watched.reap(timeout=15)
    return call.finish(
        watched, usage, codec=codec, note=note, sip_ports={leg.sip_port}, rtp_ports={port}
    )
