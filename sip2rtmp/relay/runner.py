"""One relay run: register, call, relay the answered call into the outputs, end cleanly.

Ends on the callee's BYE, Ctrl-C/SIGTERM, `--max-duration`, a hangup request, or a failure
(no media, every output failed for good); each end is reported as an event and, for failures,
raised as the typed outcome that decides the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from sip2rtmp.config import CallSettings
from sip2rtmp.errors import (
    BusyOrDeclined,
    CallFailed,
    ExitCode,
    Interrupted,
    MediaTimeout,
    Sip2RtmpError,
)
from sip2rtmp.media.passthrough import PassthroughVideo
from sip2rtmp.media.pipeline import MediaConfig, MediaPipeline, VideoSource
from sip2rtmp.media.slate import KEYFRAME_INTERVAL_S, SlateVideo
from sip2rtmp.media.switch import VideoSwitch
from sip2rtmp.media.transcode import TranscodedVideo
from sip2rtmp.net.grid import grid_sleep
from sip2rtmp.net.sip_session import SipCall, SipSession
from sip2rtmp.relay.audio import AudioLeg
from sip2rtmp.relay.dtmf import DtmfScript, parse_info_dtmf
from sip2rtmp.relay.sync import AvSync, SyncedPipeline
from sip2rtmp.relay.video import OFFERED_CODECS, KeyframePolicy, VideoLeg
from sip2rtmp.sip.auth import Credentials
from sip2rtmp.sip.events import CallProgress
from sip2rtmp.sip.sdp import NegotiatedSession, SdpParseError, build_offer, negotiate
from sip2rtmp.sip.useragent import UserAgentConfig
from sip2rtmp.status import CallStatus, EventSink, RelayControl, RelayEvent, status_for_provisional

log = logging.getLogger(__name__)
wire_log = logging.getLogger("sip2rtmp.sip.wire")

T = TypeVar("T")
WATCH_INTERVAL = 0.5
KEYFRAME_WAIT = 1.0
"""How long after the answer the outputs wait for the callee's first keyframe, so a stream
that has the callee's video from the start opens with it (its first AVC sequence header is the
callee's). Without one by then the stream opens on the slate and moves to the callee's video
at its first keyframe."""
CALLEE_SLATE_SIZE = (640, 360)
"""The slate sent toward the callee: small, since it only has to keep the far end sending."""
CALLEE_SLATE_PROFILE = "baseline"
"""What the offer promises (profile-level-id 42e01f): constrained baseline."""


@dataclass(frozen=True)
class MediaOptions:
    """What goes toward the callee and into the outputs besides the call itself."""

    announce: Path | None = None
    announce_loop: bool = False
    slate: Path | None = None
    record: Path | None = None
    dtmf_script: str | None = None
    audio_channels: int = 1
    audio_bit_rate: int = 128_000
    transcode: bool = False
    """Re-encode the callee's H.264 too, rather than pass it through (VP8 always is)."""
    keyframe_interval: float = KEYFRAME_INTERVAL_S
    """Longest time between keyframes in the outputs (s): the transcoder's forced keyframes,
    the slate's GOP, and when the callee is asked for one."""
    stats_interval: float = 5.0
    """Seconds between `stats` events: a live view wants them more often than a log."""


@dataclass
class _Ending:
    reason: str = ""
    error: Sip2RtmpError | None = None
    signal_name: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def end(self, reason: str, error: Sip2RtmpError | None = None) -> None:
        if not self.done.is_set():
            self.reason, self.error = reason, error
            self.done.set()


def run_relay(
    settings: CallSettings,
    emit: EventSink,
    options: MediaOptions | None = None,
    control: RelayControl | None = None,
) -> None:
    """Run one relay to its end; raises the typed outcome of a failure."""
    asyncio.run(Relay(settings, emit, options or MediaOptions(), control).run())


class Relay:
    def __init__(
        self,
        settings: CallSettings,
        emit: EventSink,
        options: MediaOptions,
        control: RelayControl | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self._emit = emit
        self.control = control or RelayControl()
        self._ending = _Ending()
        self._answered_at: float | None = None
        self._leg: AudioLeg | None = None
        self._video: VideoLeg | None = None
        self._switch: VideoSwitch | None = None
        self._live: PassthroughVideo | TranscodedVideo | None = None
        """The callee's video as a source for the outputs, once its first keyframe came."""
        self._video_reported: dict[str, object] = {}
        self._pipeline: MediaPipeline | None = None
        self._call: SipCall | None = None
        self._output_states: dict[str, str] = {}
        self._slate_ready: asyncio.Future[SlateVideo] | None = None
        self._callee_slate_ready: asyncio.Future[SlateVideo] | None = None
        self._background: set[asyncio.Task[None]] = set()

    def emit(self, event: str, status: CallStatus | None = None, /, **data: object) -> None:
        self._emit(RelayEvent(event, status, dict(data)))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, signum)

        def wake() -> None:
            loop.call_soon_threadsafe(self._on_control)

        self.control.on_request(wake)
        try:
            await self._run()
        except Sip2RtmpError as error:
            status = CallStatus.BUSY if isinstance(error, BusyOrDeclined) else CallStatus.FAILED
            self.emit("status", status, reason=error.describe(), exitCode=int(error.exit_code))
            raise
        except Exception as error:  # a bug: still exactly one terminal status for the script
            reason = f"internal error: {type(error).__name__}"
            self.emit("status", CallStatus.FAILED, reason=reason, exitCode=int(ExitCode.INTERNAL))
            raise
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    def _in_background(self, work: Coroutine[object, object, None]) -> None:
        """Run `work` alongside, keeping a reference so the loop cannot drop it mid-way."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        self._ending.signal_name = name
        self._ending.end(name)

    def _on_control(self) -> None:
        if self.control.hangup_requested:
            self._ending.end("hangup requested")
        digits = "".join(self.control.take_dtmf())
        if digits and self._call is not None:
            self._in_background(self._send_dtmf(digits))

    async def _run(self) -> None:
        settings = self.settings
        async with SipSession(user_agent_config(settings), message_log=_log_message) as sip:
            if settings.register:
                self.emit(
                    "registering", server=str(settings.sip_server), transport=settings.sip_transport
                )
                expires = await self._unless_ended(sip.register())
                self.emit("registered", expires=expires)
            local_ip = sip.local_address[0]
            self._leg = await AudioLeg.open(
                local_ip,
                announce=self.options.announce,
                announce_loop=self.options.announce_loop,
                on_dtmf=lambda digit, method: self.emit(
                    "dtmf", digit=digit, direction="received", method=method
                ),
            )
            if settings.video:
                policy = KeyframePolicy.for_interval(self.options.keyframe_interval)
                self._video = await VideoLeg.open(local_ip, policy)
            try:
                await self._call_and_relay(sip, local_ip)
            finally:
                await self._leg.close()
                if self._video is not None:
                    await self._video.close()
            if settings.register:
                await sip.unregister()
                self.emit("unregistered")

    async def _call_and_relay(self, sip: SipSession, local_ip: str) -> None:
        assert self._leg is not None
        offer = build_offer(
            local_ip,
            self._leg.port,
            self._video.port if self._video is not None else None,
            session_id=int(time.time()),
            audio_codecs=self.settings.audio_codecs,
            video_codecs=OFFERED_CODECS,
        )
        # Rendered while it rings, so that an answered call's stream starts without waiting.
        self._slate_ready = _render_in_background(self._slate)
        if self._video is not None:
            self._callee_slate_ready = _render_in_background(
                self._slate, *CALLEE_SLATE_SIZE, profile=CALLEE_SLATE_PROFILE
            )
        self.emit("status", CallStatus.TRYING, callee=self.settings.callee_uri)
        call = await self._unless_ended(
            sip.invite(
                self.settings.callee_uri,
                offer.encode(),
                on_progress=lambda progress: self._on_progress(progress, offer),
                ring_timeout=self.settings.ring_timeout,
            )
        )
        self._call = call
        call.on_info = self._on_info
        try:
            negotiated = negotiate(offer, call.answer_sdp.decode("utf-8", "replace"))
        except SdpParseError as exc:
            # The dialog exists: raising ends the call with a BYE on the way out.
            raise CallFailed(200, f"with an unusable SDP answer: {exc}") from None
        self._answered_at = time.monotonic()
        self.emit(
            "status",
            CallStatus.ESTABLISHED,
            code=200,
            reason="OK",
            **_codecs(negotiated),
        )
        if negotiated.audio is not None:
            await self._leg.connect(negotiated.audio)
        if self._video is not None and negotiated.video and VideoLeg.relays(negotiated.video):
            await self._video.connect(negotiated.video, call.send_info)
            if negotiated.video.codec == "H264" and self._callee_slate_ready is not None:
                self._video.send_slate(await self._callee_slate_ready)
            else:
                log.info(
                    "sending no video to the callee: the slate is H.264, it chose %s",
                    negotiated.video.codec,
                )
        await self._relay(call, negotiated)

    async def _relay(self, call: SipCall, negotiated: NegotiatedSession) -> None:
        assert self._leg is not None
        settings = self.settings
        video = await self._video_source()
        sync = AvSync(negotiated.audio.clock_rate if negotiated.audio else 8000)
        pipeline = SyncedPipeline(
            [target.url for target in settings.rtmp_targets]
            + ([str(self.options.record)] if self.options.record else []),
            sync=sync,
            codec=negotiated.audio.codec if negotiated.audio else "PCMU",
            video=video,
            config=MediaConfig(
                audio_channels=self.options.audio_channels,
                audio_bit_rate=self.options.audio_bit_rate,
            ),
        )
        self._pipeline = pipeline
        if settings.audio:
            self._leg.attach(pipeline)
        pipeline.start()
        watchers = [
            asyncio.create_task(self._watch_call_end(call)),
            asyncio.create_task(self._watch_outputs(pipeline)),
            asyncio.create_task(self._watch_media(negotiated)),
            asyncio.create_task(self._report_stats(pipeline)),
        ]
        switch, leg = self._switch, self._video
        if switch is not None and leg is not None:
            self._leg.rtcp.attach(sync.audio_rtcp)
            leg.rtcp.attach(sync.video_rtcp)
            if self._live is not None:
                self._start_live(leg, self._live, pipeline.origin, sync)
            else:
                watchers.append(asyncio.create_task(self._attach_late(leg, switch, pipeline, sync)))
            watchers.append(asyncio.create_task(self._watch_video(leg)))
            watchers.append(asyncio.create_task(self._watch_video_mode(switch)))
        if settings.max_duration is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(settings.max_duration, self._ending.end, "max duration reached")
        if self.options.dtmf_script:
            watchers.append(asyncio.create_task(self._run_dtmf_script(self.options.dtmf_script)))
        try:
            await self._ending.done.wait()
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            if not call.ended.is_set():
                await call.hangup()
            if isinstance(self._live, TranscodedVideo):
                await asyncio.to_thread(self._live.close)
            await asyncio.to_thread(pipeline.stop)
            self._report_output_states(pipeline)
            self.emit("stats", **self.stats_snapshot(pipeline))  # the call's final numbers
        duration = time.monotonic() - (self._answered_at or time.monotonic())
        if self._ending.error is not None:
            raise self._ending.error
        self.emit(
            "status",
            CallStatus.FINISH,
            reason=self._ending.reason,
            duration=round(duration, 3),
        )

    async def _video_source(self) -> VideoSource:
        """The slate for a call without video, else a switch between the slate and the
        callee's video that opens on the callee's if its first keyframe arrives in time.

        A switch that opens on the callee's video gets the slate when its rendering is done,
        so the outputs never wait for it.
        """
        leg, slate_ready = self._video, self._slate_ready
        assert slate_ready is not None
        if leg is None or leg.stream is None:
            return await slate_ready
        if await leg.wait_keyframe(KEYFRAME_WAIT):
            live = self._live = await self._live_source(leg)
            switch = VideoSwitch(live=live)
            slate_ready.add_done_callback(functools.partial(_hand_over_slate, switch))
        else:
            switch = VideoSwitch(slate=await slate_ready)
        self._switch = switch
        self._report_video_mode(switch)
        return switch

    async def _live_source(self, leg: VideoLeg) -> PassthroughVideo | TranscodedVideo:
        """H.264 passes through unless ``--transcode``; VP8 is always transcoded."""
        if leg.passes_through and not self.options.transcode:
            return leg.passthrough()
        return await asyncio.to_thread(leg.transcoder, self.options.keyframe_interval)

    def _start_live(
        self,
        leg: VideoLeg,
        source: PassthroughVideo | TranscodedVideo,
        origin: float,
        sync: AvSync,
    ) -> None:
        """Stamp the callee's frames onto the pipeline's timeline from now on, by capture time
        once the sender reports give it."""
        source.start(origin)
        source.sync_to(sync.video_seconds)
        leg.attach(source)

    async def _attach_late(
        self, leg: VideoLeg, switch: VideoSwitch, pipeline: MediaPipeline, sync: AvSync
    ) -> None:
        """The callee's first keyframe came after the stream opened on the slate: go over to
        the callee's video at that keyframe."""
        await leg.keyframe_ready.wait()
        source = self._live = await self._live_source(leg)
        self._start_live(leg, source, pipeline.origin, sync)
        switch.attach(source)

    async def _watch_video_mode(self, switch: VideoSwitch) -> None:
        while True:
            await grid_sleep(WATCH_INTERVAL)
            self._report_video_mode(switch)

    def _report_video_mode(self, switch: VideoSwitch) -> None:
        """A `video` event whenever what the stream's video carries changes."""
        state = self._video_mode(switch)
        if state != self._video_reported:
            self._video_reported = state
            self.emit("video", **state)

    def _video_mode(self, switch: VideoSwitch) -> dict[str, object]:
        """What the stream's video carries now, as `video` events tell it."""
        live = self._live
        if switch.live and live is not None:
            mode = "passthrough" if isinstance(live, PassthroughVideo) else "transcode"
            return {"mode": mode, "width": live.width, "height": live.height}
        reason = "callee video stopped" if switch.slate_switches else "no keyframe from the callee"
        return {"mode": "slate", "reason": reason}

    def _slate(
        self, width: int = 1280, height: int = 720, profile: str | None = None
    ) -> SlateVideo:
        interval = self.options.keyframe_interval
        if self.options.slate is not None:
            return SlateVideo.image(
                self.options.slate,
                width=width,
                height=height,
                profile=profile,
                keyframe_interval_s=interval,
            )
        started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        callee = self.settings.callee_uri.split(":", 1)[-1].split(";", 1)[0]
        return SlateVideo.text(
            callee,
            f"call started {started}",
            width=width,
            height=height,
            profile=profile,
            keyframe_interval_s=interval,
        )

    async def _unless_ended(self, awaitable: Awaitable[T]) -> T:
        """Await a SIP step, abandoning it (CANCEL while ringing) when a signal arrives."""
        task = asyncio.ensure_future(awaitable)
        stop = asyncio.create_task(self._ending.done.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Sip2RtmpError):
                await task
            raise Interrupted(self._ending.signal_name or self._ending.reason)
        return task.result()

    def _on_progress(self, progress: CallProgress, offer: str) -> None:
        if progress.status == 100:
            return
        self.emit(
            "status",
            status_for_provisional(progress.status, progress.sdp is not None),
            code=progress.status,
            reason=progress.reason,
        )
        if progress.sdp and self._leg is not None:
            try:
                early = negotiate(offer, progress.sdp.decode("utf-8", "replace"))
            except SdpParseError as exc:
                log.warning(
                    "ignoring the early media of a %d: unusable SDP: %s", progress.status, exc
                )
                return
            if early.audio is not None:
                self._in_background(self._leg.connect(early.audio))

    def _on_info(self, content_type: str, body: bytes) -> None:
        digit = parse_info_dtmf(content_type, body)
        if digit:
            self.emit("dtmf", digit=digit, direction="received", method="info")

    async def _send_dtmf(self, digits: str) -> None:
        leg, call = self._leg, self._call
        if leg is None or call is None:
            return
        if leg.rfc4733:
            await leg.send_dtmf(digits)
            method = "rfc4733"
        else:
            for digit in digits:
                await call.send_info(
                    "application/dtmf-relay", f"Signal={digit}\r\nDuration=160\r\n".encode()
                )
                await asyncio.sleep(0.2)
            method = "info"
        for digit in digits:
            self.emit("dtmf", digit=digit, direction="sent", method=method)

    async def _run_dtmf_script(self, script: str) -> None:
        for step in DtmfScript.parse(script).steps:
            if step.wait:
                await asyncio.sleep(step.wait)
            if step.digits:
                await self._send_dtmf(step.digits)

    async def _watch_call_end(self, call: SipCall) -> None:
        reason = await call.wait_ended()
        self._ending.end("hangup by callee" if call.ended_by_remote else reason)

    async def _watch_video(self, leg: VideoLeg) -> None:
        await leg.first_packet.wait()
        self.emit("media", kind="video", remote=_address(leg.endpoint.remote_rtp))

    async def _watch_media(self, negotiated: NegotiatedSession) -> None:
        """No RTP at all from a callee that should send is a failure, not a silent stream."""
        audio = negotiated.audio
        if self._leg is None or audio is None or audio.direction not in ("sendrecv", "sendonly"):
            return
        try:
            await asyncio.wait_for(self._leg.first_packet.wait(), self.settings.media_timeout)
        except TimeoutError:
            self._ending.end("no media", MediaTimeout(self.settings.media_timeout))
            return
        self.emit("media", kind="audio", remote=_address(self._leg.endpoint.remote_rtp))

    async def _watch_outputs(self, pipeline: MediaPipeline) -> None:
        while True:
            self._report_output_states(pipeline)
            if pipeline.all_failed:
                failures = pipeline.failures()
                if failures:
                    self._ending.end("every output failed", failures[0])
                    return
            await grid_sleep(WATCH_INTERVAL)

    def _report_output_states(self, pipeline: MediaPipeline) -> None:
        for output in pipeline.stats().outputs:
            state = output.state.value
            if self._output_states.get(output.target) != state:
                self._output_states[output.target] = state
                data: dict[str, object] = {"target": output.target, "state": state}
                if output.last_error and state in ("reconnecting", "failed"):
                    data["error"] = output.last_error
                self.emit("output", **data)

    async def _report_stats(self, pipeline: MediaPipeline) -> None:
        while True:
            await grid_sleep(self.options.stats_interval)
            self.emit("stats", **self.stats_snapshot(pipeline))

    def stats_snapshot(self, pipeline: MediaPipeline) -> dict[str, object]:
        media = pipeline.stats()
        snapshot: dict[str, object] = {
            "duration": round(time.monotonic() - (self._answered_at or time.monotonic()), 1),
            "level_dbfs": round(media.level_dbfs, 1),
            "outputs": [
                {
                    "target": output.target,
                    "state": output.state.value,
                    "bitrate": round(output.bitrate),
                    "bytes": output.bytes_sent,
                    "reconnects": output.reconnects,
                }
                for output in media.outputs
            ],
        }
        leg = self._leg
        jitter = leg.stats if leg is not None else None
        if leg is not None and jitter is not None:
            expected = jitter.received + jitter.lost
            snapshot["rtp"] = {
                "received": jitter.received,
                "lost": jitter.lost,
                "late": jitter.late,
                "duplicate": jitter.duplicate,
                "reordered": jitter.reordered,
                "jitter_ms": round(jitter.jitter_ms, 1),
                "depth_ms": round(jitter.depth_ms, 1),
                "loss_pct": round(100.0 * jitter.lost / expected, 2) if expected else 0.0,
                "timeline_resyncs": media.resyncs,
                **asdict(leg.endpoint.source.stats),
            }
        if self._video is not None and self._switch is not None:
            video = self._video.stats
            source = self._video.source
            skew = source.av_skew if source is not None else None
            snapshot["video"] = {
                "mode": self._video_mode(self._switch)["mode"],
                "slate_switches": self._switch.slate_switches,
                "frames": self._switch.frames,
                "keyframes": self._switch.keyframes,
                "dropped": video.dropped,
                "keyframe_requests": video.keyframe_requests,
                "sent": video.frames_sent,
                "received": video.jitter.received if video.jitter else 0,
                "lost": video.jitter.lost if video.jitter else 0,
                "jitter_ms": round(video.jitter.jitter_ms, 1) if video.jitter else 0.0,
                "depth_ms": round(video.jitter.depth_ms, 1) if video.jitter else 0.0,
                "av_skew_ms": None if skew is None else round(1000 * skew),
                **asdict(self._video.endpoint.source.stats),
            }
        return snapshot


def user_agent_config(settings: CallSettings) -> UserAgentConfig:
    """The SIP account as the user agent sees it; every request goes to `sip_server`."""
    return UserAgentConfig(
        user=settings.sip_login or "sip2rtmp",
        domain=settings.sip_domain,
        credentials=Credentials(settings.sip_auth_name, settings.sip_password.reveal()),
        transport=settings.sip_transport,
        outbound_proxy=settings.sip_server.host,
        port=settings.sip_server.port,
        local_port=0,
        tls_ca_file=settings.sip_tls_ca,
    )


def _render_in_background(
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


def _codecs(negotiated: NegotiatedSession) -> dict[str, object]:
    result: dict[str, object] = {}
    for kind, stream in (("audio", negotiated.audio), ("video", negotiated.video)):
        if stream is not None:
            result[kind] = {"codec": stream.codec, "rate": stream.clock_rate}
    return result


def _address(address: tuple[str, int] | None) -> str:
    return f"{address[0]}:{address[1]}" if address else ""


def _log_message(direction: str, addr: tuple[str, int], data: bytes) -> None:
    if wire_log.isEnabledFor(logging.DEBUG):
        text = data.decode("utf-8", "replace")
        wire_log.debug("%s %s:%d\n%s", direction, addr[0], addr[1], text)
