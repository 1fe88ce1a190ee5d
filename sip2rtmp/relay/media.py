"""The call's media on the event loop: the legs toward the callee, the slates, the outputs.

The relay core decides when each step happens (`sip2rtmp.relay.core`); this is how it is
done: ports bound before the offer, the slates rendered in worker threads while the call
rings, the legs pointed at the answer, the outputs opened on the callee's video or on the
slate, and everything closed in order at the end.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from sip2rtmp.config import CallSettings
from sip2rtmp.media.passthrough import PassthroughVideo
from sip2rtmp.media.pipeline import MediaConfig, MediaPipeline, VideoSource
from sip2rtmp.media.slate import SlateVideo
from sip2rtmp.media.switch import VideoSwitch
from sip2rtmp.media.transcode import TranscodedVideo
from sip2rtmp.nat.policy import MappedPorts, OfferAddress, choose_offer_address
from sip2rtmp.nat.stun import STUN_PORT, StunError
from sip2rtmp.net.grid import GRID_S
from sip2rtmp.net.rtmps import client_context
from sip2rtmp.net.rtp_endpoint import RtpEndpoint
from sip2rtmp.netaddr import Address, format_address
from sip2rtmp.outcomes import OutputFailed
from sip2rtmp.relay.audio import AudioLeg
from sip2rtmp.relay.events import DtmfMethod, OutputChanged, Stats, VideoMode, VideoModeName
from sip2rtmp.relay.options import GRID_STRIDES, MediaOptions
from sip2rtmp.relay.stats import call_stats
from sip2rtmp.relay.sync import AvSync, SyncedPipeline
from sip2rtmp.relay.video import InfoSender, KeyframePolicy, VideoLeg
from sip2rtmp.sip.sdp import NegotiatedStream

log = logging.getLogger(__name__)

INFO_DTMF_GAP = 0.2
"""Pause between DTMF digits sent as SIP INFO: one request per key, as a keypad would."""
CALLEE_SLATE_SIZE = (640, 360)
"""The slate sent toward the callee: small, since it only has to keep the far end sending."""
CALLEE_SLATE_PROFILE = "baseline"
"""What the offer promises (profile-level-id 42e01f): constrained baseline."""
STUN_TIMEOUT = 3.0
"""How long the legs wait for the STUN server before the offer goes out without it: RFC 5389
§7.2.1's retransmissions at 0.5, 1 and 2 s fit, and the call is not held up longer."""


@dataclass(frozen=True)
class MediaListeners:
    """Where the legs' facts go (the relay core's inputs, through the shell)."""

    first_packet: Callable[[str, str], None]
    """(kind, remote host:port) of the first RTP packet of a kind."""
    keyframe: Callable[[], None]
    dtmf: Callable[[str, DtmfMethod], None]
    """(digit, method) of a key the callee sent on RTP."""


class CallMedia:
    """The legs, the slates and, once started, the outputs of one call."""

    def __init__(
        self, settings: CallSettings, options: MediaOptions, audio: AudioLeg, video: VideoLeg | None
    ) -> None:
        self._settings = settings
        self._options = options
        self.audio = audio
        self.video = video
        self._slate = _render(render_slate, settings, options) if video is None else None
        """The stream's slate: an audio-only call's video from the start; a video call's is
        rendered once the callee has rung for a while (``prepare_slate``), or when the stream
        first needs it."""
        self._callee_slate = (
            _render(render_slate, settings, options, *CALLEE_SLATE_SIZE, CALLEE_SLATE_PROFILE)
            if video is not None
            else None
        )
        self._mapped: tuple[MappedPorts | None, MappedPorts | None] = (None, None)
        """What STUN saw of the audio and the video leg's sockets, when asked and answered."""
        self._pipeline: MediaPipeline | None = None
        self._sync: AvSync | None = None
        self._switch: VideoSwitch | None = None
        self._live: PassthroughVideo | TranscodedVideo | None = None
        self._stopped = False
        self._connected = False
        """Whether the legs were pointed at an answer: outputs that start before are early
        media's (a 180/183 with SDP), and the answer's video may join them later."""
        self._lip_sync = True
        """Whether the callee's video is placed by the sender reports' capture clock: not
        once a stream moved or changed codec, since the reports of the old one no longer
        speak for the new (RFC 3550 §6.4.1)."""
        self.send_info: InfoSender = _no_dialog
        """Sends an INFO in the call's dialog (keyframe requests, DTMF without RFC 4733)."""

    @classmethod
    async def open(
        cls, local_ip: str, settings: CallSettings, options: MediaOptions, on: MediaListeners
    ) -> CallMedia:
        """Bind the legs' ports (they go into the offer) and start rendering the slates, so an
        answered call's stream starts without waiting for them."""
        audio = await AudioLeg.open(
            local_ip,
            announce=options.announce,
            announce_loop=options.announce_loop,
            on_dtmf=on.dtmf,
            grid_stride=GRID_STRIDES[options.latency],
        )
        audio.on_first_packet = lambda remote: on.first_packet("audio", _text(remote))
        video = None
        if settings.video:
            policy = KeyframePolicy.for_interval(options.keyframe_interval)
            video = await VideoLeg.open(local_ip, policy, grid_stride=GRID_STRIDES[options.latency])
            video.on_first_packet = lambda remote: on.first_packet("video", _text(remote))
            video.on_keyframe = on.keyframe
        media = cls(settings, options, audio, video)
        stun = settings.stun_server
        if stun is not None and settings.nat == "auto":
            await media._discover((stun.host, stun.port or STUN_PORT))
        return media

    async def _discover(self, server: Address) -> None:
        """Ask the STUN server for each leg's public RTP and RTCP ports (RFC 5389), before
        the offer and from the sockets that then carry the media. A leg without an answer
        leaves the offer to the next source (`sip2rtmp.nat.policy`)."""
        legs = [self.audio] + ([self.video] if self.video is not None else [])
        found = await asyncio.gather(*(_mapping(leg.endpoint, server) for leg in legs))
        self._mapped = (found[0], found[1] if len(found) > 1 else None)

    def offer_address(self, local_ip: str, received: str | None) -> OfferAddress:
        """The address and ports the SDP offer advertises, and where they came from: by
        `--nat`, `--public-address`, what STUN saw and the `received` address the SIP server
        saw in our Via (RFC 3581)."""
        settings = self._settings
        audio_stun, video_stun = self._mapped
        return choose_offer_address(
            settings.nat,
            local_ip,
            self.audio.port,
            self.video.port if self.video is not None else None,
            configured=settings.public_address,
            received=received,
            audio_stun=audio_stun,
            video_stun=video_stun,
        )

    @property
    def ports(self) -> tuple[int, int | None]:
        return self.audio.port, self.video.port if self.video is not None else None

    async def connect(self, audio: NegotiatedStream | None, video: NegotiatedStream | None) -> None:
        """Point the legs at the answer; send the slate toward an H.264 callee."""
        self._connected = True
        if audio is not None:
            await self.audio.connect(audio)
        if self.video is not None and video is not None:
            await self._connect_video(self.video, video)

    async def _connect_video(self, leg: VideoLeg, stream: NegotiatedStream) -> None:
        await leg.connect(stream, self.send_info)
        if stream.codec == "H264" and self._callee_slate is not None:
            if not leg.sending_slate:
                leg.send_slate(await self._callee_slate)
        else:
            log.info(
                "sending no video to the callee: the slate is H.264, it chose %s", stream.codec
            )

    async def retarget(
        self, audio: NegotiatedStream | None, video: NegotiatedStream | None
    ) -> None:
        """Re-point the legs at a new offer/answer's streams (RFC 3264 §8), or from early
        media at the answer's, on the same sockets and into the same outputs: the audio
        decoder follows a new codec and the stream's timeline goes on. A None stream stops
        that leg until a later retarget brings it back."""
        self._connected = True
        previous = self.audio.stream
        if audio is None:
            self.audio.suspend()
        else:
            await self.audio.retarget(audio)
            if _moved(previous, audio):
                self._stop_lip_sync()
        if self.video is not None:
            await self._retarget_video(self.video, video)

    async def _retarget_video(self, leg: VideoLeg, stream: NegotiatedStream | None) -> None:
        """The video leg's part of ``retarget``: another codec needs another source for the
        outputs (the slate shows until its first keyframe; ``attach_live`` makes it)."""
        previous = leg.stream
        if stream is None:
            leg.suspend()
            return
        await self._connect_video(leg, stream)
        if not _moved(previous, stream):
            return
        self._stop_lip_sync()
        live = self._live
        if previous is not None and previous.codec != stream.codec and live is not None:
            leg.detach()
            self._live = None
            if isinstance(live, TranscodedVideo):
                await asyncio.to_thread(live.close)

    def _stop_lip_sync(self) -> None:
        """Place the callee's video by when it plays out from now on (see ``_lip_sync``)."""
        self._lip_sync = False
        if self._live is not None:
            self._live.sync_to(_no_capture_time)

    async def start_outputs(self, *, live: bool) -> VideoMode | None:
        """Open the outputs on the callee's video (`live`) or on the slate; the video mode
        they open with, for a call that negotiated video."""
        audio = self.audio.stream
        codec = audio.codec if audio is not None else "PCMU"
        sync = self._sync = AvSync(audio.clock_rate if audio is not None else 8000)
        tls = self._rtmps_tls()
        pipeline = self._pipeline = SyncedPipeline(
            [target.url for target in self._settings.rtmp_targets]
            + ([str(self._options.record)] if self._options.record else []),
            sync=sync,
            codec=codec,
            video=await self._video_source(live=live),
            config=media_config(self._options, tls),
        )
        if self._settings.audio:
            self.audio.attach(pipeline, codec)
        pipeline.start()
        if self._switch is None or self.video is None:
            return None
        self.audio.rtcp.attach(sync.audio_rtcp)
        self.video.rtcp.attach(sync.video_rtcp)
        if self._live is not None:
            self._start_live(self._live)
        return self.video_mode()

    def _rtmps_tls(self) -> ssl.SSLContext | None:
        """How the rtmps:// outputs verify their servers, with a warning per output when
        they do not; None without any."""
        settings = self._settings
        secure = [t for t in settings.rtmp_targets if urlsplit(t.url).scheme.lower() == "rtmps"]
        if not secure:
            return None
        for target in secure if settings.rtmps_insecure else ():
            host = urlsplit(target.url).hostname
            log.warning(
                "--rtmps-insecure: not verifying the certificate of %s (%s)", host, target.display
            )
        return client_context(settings.rtmps_ca, insecure=settings.rtmps_insecure)

    def prepare_slate(self) -> None:
        """Start rendering the stream's slate, if not yet: the call may need it soon."""
        self._stream_slate()

    def _stream_slate(self) -> asyncio.Future[SlateVideo]:
        """The stream's slate, rendered in a worker thread on first use."""
        if self._slate is None:
            self._slate = _render(render_slate, self._settings, self._options)
        return self._slate

    async def _video_source(self, *, live: bool) -> VideoSource:
        """The slate for a call without the callee's video, else a switch between the slate
        and the callee's video. One that opens on the callee's gets the slate once rendered,
        which, unless the callee rang long enough to have it rendered already, is only once
        that video goes quiet: a passthrough call's stream may never show it, and the
        0.03-0.05 CPU-s of rendering it are not spent."""
        if self.video is None or (self._connected and self.video.stream is None):
            return await self._stream_slate()
        interval = self._options.keyframe_interval
        if live:
            self._live = await self._live_source(self.video)
            loop = asyncio.get_running_loop()
            switch = VideoSwitch(
                live=self._live,
                keyframe_interval_s=interval,
                slate_wanted=lambda: loop.call_soon_threadsafe(self._slate_wanted),
            )
        else:
            switch = VideoSwitch(slate=await self._stream_slate(), keyframe_interval_s=interval)
        self._switch = switch
        if live and self._slate is not None:  # rendered while the callee rang
            self._slate_wanted()
        return switch

    def _slate_wanted(self) -> None:
        """Render the stream's slate, if not yet, for the switch to take once it is."""
        switch = self._switch
        if switch is not None and not self._stopped:
            self._stream_slate().add_done_callback(functools.partial(_hand_over_slate, switch))

    async def attach_live(self) -> None:
        """The callee's first keyframe came after the stream opened on the slate."""
        if self.video is None or self._switch is None or self._live is not None:
            return
        source = self._live = await self._live_source(self.video)
        self._start_live(source)
        self._switch.attach(source)

    async def _live_source(self, leg: VideoLeg) -> PassthroughVideo | TranscodedVideo:
        """H.264 passes through unless ``--transcode``; VP8 is always transcoded."""
        if leg.passes_through and not self._options.transcode:
            return leg.passthrough()
        return await asyncio.to_thread(leg.transcoder, self._options.keyframe_interval)

    def _start_live(self, source: PassthroughVideo | TranscodedVideo) -> None:
        """Stamp the callee's frames onto the pipeline's timeline from now on, by capture time
        once the sender reports give it."""
        assert self._pipeline is not None and self._sync is not None and self.video is not None
        source.start(self._pipeline.origin)
        if self._lip_sync:
            source.sync_to(self._sync.video_seconds)
        self.video.attach(source)

    async def send_dtmf(self, digits: str, method: DtmfMethod | None = None) -> DtmfMethod:
        """RFC 4733 events when negotiated and not `method` "info", else one SIP INFO per
        digit (also when a re-INVITE dropped the telephone-event asked for)."""
        if method != "info" and self.audio.rfc4733:
            await self.audio.send_dtmf(digits)
            return "rfc4733"
        for digit in digits:
            body = f"Signal={digit}\r\nDuration=160\r\n".encode()
            await self.send_info("application/dtmf-relay", body)
            await asyncio.sleep(INFO_DTMF_GAP)
        return "info"

    def video_mode(self) -> VideoMode | None:
        """What the stream's video carries now; None for a call without the callee's video."""
        switch, live = self._switch, self._live
        if switch is None:
            return None
        if switch.live and live is not None:
            kind: VideoModeName = (
                "passthrough" if isinstance(live, PassthroughVideo) else "transcode"
            )
            return VideoMode(kind, width=live.width, height=live.height)
        reason = "callee video stopped" if switch.slate_switches else "no keyframe from the callee"
        return VideoMode("slate", reason=reason)

    def outputs_opened(self) -> list[OutputChanged]:
        """Every output as it starts: connecting (an output connects in its own thread, and
        may be live before the loop gets to look)."""
        pipeline = self._pipeline
        outputs = pipeline.stats().outputs if pipeline is not None else ()
        return [OutputChanged(output.target, "connecting") for output in outputs]

    def observe(
        self,
    ) -> tuple[list[OutputChanged], VideoMode | None, OutputFailed | None, float | None]:
        """The outputs' states, the video mode, the first failure once all failed, and when
        the callee's latest audio packet arrived (`RelayCore.observed` takes them in order)."""
        pipeline = self._pipeline
        last_audio = self.audio.last_packet_at
        if pipeline is None:
            return [], None, None, last_audio
        failures = pipeline.failures() if pipeline.all_failed else []
        failure = failures[0] if failures else None
        return _output_states(pipeline), self.video_mode(), failure, last_audio

    def stats(self, duration: float) -> Stats | None:
        if self._pipeline is None:
            return None
        mode = self.video_mode()
        return call_stats(
            duration,
            self._pipeline.stats(),
            self.audio,
            self.video if self._switch is not None else None,
            self._switch,
            mode.mode if mode is not None else "slate",
        )

    async def stop(self, duration: float) -> tuple[list[OutputChanged], Stats | None]:
        """Close the transcoder and flush and close the outputs; their final states and the
        call's final numbers."""
        if isinstance(self._live, TranscodedVideo):
            await asyncio.to_thread(self._live.close)
        pipeline, self._stopped = self._pipeline, True
        if pipeline is None:
            return [], None
        await asyncio.to_thread(pipeline.stop)
        return _output_states(pipeline), self.stats(duration)

    async def close(self) -> None:
        """Close everything; outputs a failed run left running are stopped first."""
        if self._pipeline is not None and not self._stopped:
            await self.stop(0.0)
        await self.audio.close()
        if self.video is not None:
            await self.video.close()


def media_config(options: MediaOptions, tls: ssl.SSLContext | None) -> MediaConfig:
    """The pipeline's settings from the call's media options; ``tls`` for rtmps:// outputs."""
    return MediaConfig(
        audio_channels=options.audio_channels,
        audio_bit_rate=options.audio_bit_rate,
        audio_on_arrival=options.latency == "low",
        silence_grace_s=(GRID_STRIDES[options.latency] - 1) * GRID_S,
        rtmps_tls=tls,
    )


def render_slate(
    settings: CallSettings,
    options: MediaOptions,
    width: int = 1280,
    height: int = 720,
    profile: str | None = None,
) -> SlateVideo:
    """The slate: `--slate`'s picture, else a card naming the callee and when the call
    started; keyframes at `--keyframe-interval`."""
    interval = options.keyframe_interval
    if options.slate is not None:
        slate = SlateVideo.image(
            options.slate, width=width, height=height, profile=profile, keyframe_interval_s=interval
        )
    else:
        started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        callee = settings.callee_uri.split(":", 1)[-1].split(";", 1)[0]
        slate = SlateVideo.text(
            callee,
            f"call started {started}",
            width=width,
            height=height,
            profile=profile,
            keyframe_interval_s=interval,
        )
    log.debug("slate rendered: %dx%d", width, height)
    return slate


async def _no_dialog(content_type: str, body: bytes) -> int:
    """What INFO gets before the shell has a dialog to send it in: 481, no dialog."""
    del content_type, body
    return 481


def _output_states(pipeline: MediaPipeline) -> list[OutputChanged]:
    return [
        OutputChanged(
            output.target,
            output.state.value,
            output.last_error if output.state.value in ("reconnecting", "failed") else None,
        )
        for output in pipeline.stats().outputs
    ]


async def _mapping(endpoint: RtpEndpoint, server: Address) -> MappedPorts | None:
    """One leg's public ports as STUN saw them; None, with a warning, when it could not say."""
    try:
        return await endpoint.discover_mapping(server, timeout=STUN_TIMEOUT)
    except (StunError, OSError) as error:
        log.warning("STUN from RTP port %d failed: %s", endpoint.rtp_port, error)
        return None


def _moved(previous: NegotiatedStream | None, stream: NegotiatedStream) -> bool:
    """Whether ``stream`` comes from another sender or in another codec than ``previous``:
    another RTP timeline (RFC 3550 §5.1)."""
    if previous is None:
        return False
    return (previous.rtp_address, previous.codec) != (stream.rtp_address, stream.codec)


def _no_capture_time(rtp_ts: int) -> float | None:
    """A capture clock that never knows: frames are placed by when they play out."""
    del rtp_ts
    return None


def _text(remote: Address | None) -> str:
    return format_address(remote)


def _render(
    render: Callable[..., SlateVideo], *args: object, **kwargs: object
) -> asyncio.Future[SlateVideo]:
    """Render in a worker thread; a call that fails never awaits it, so its result is marked
    seen here and an unused failure is not reported at exit."""
    future = asyncio.ensure_future(asyncio.to_thread(render, *args, **kwargs))
    future.add_done_callback(lambda done: done.cancelled() or done.exception())
    return future


def _hand_over_slate(switch: VideoSwitch, rendered: asyncio.Future[SlateVideo]) -> None:
    """Give the switch the slate once rendered; without one a stall leaves a hole."""
    if rendered.cancelled():
        return
    error = rendered.exception()
    if error is not None:
        log.warning("no slate to show while the callee's video stops: %s", error)
        return
    switch.take_slate(rendered.result())
