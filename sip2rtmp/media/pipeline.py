"""The media side of a call: RTP audio in, one H.264 + AAC timeline out to every output.

Threads: the caller (the asyncio loop) only enqueues; one media thread decodes, places audio
on the timeline, encodes AAC and stamps video; each output muxes in its own thread. Media
time is 0 at ``start()`` and advances with the wall clock, so both tracks keep flowing (slate
and silence) whether or not RTP arrives.
"""

from __future__ import annotations

import math
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from sip2rtmp.media.audio import AacEncoder, AudioDecoder, AudioTimeline
from sip2rtmp.media.output import OutputPolicy, OutputState, OutputStats, RtmpOutput
from sip2rtmp.media.packets import AUDIO_RATE, EncodedPacket, StreamTemplates
from sip2rtmp.media.threads import name_native_thread
from sip2rtmp.outcomes import OutputFailed

LEVEL_DECAY = 0.9
"""Per 20 ms packet: a meter falls about 45 dB a second, fast enough to follow speech."""
LEVEL_FLOOR_DBFS = -90.0
LATE_RUN_RESYNC = 10
"""Consecutive chunks wholly behind the playhead (200 ms of 20 ms packets) that mean the
timeline really moved (a timestamp jump back, a stall that did not end): re-anchor then."""
FOLLOW_STEP_S = 0.01
"""How far the jitter buffer's schedule may move later before the audio placement follows it.
The schedule moves when the buffer deepens or the sender falls behind its timestamps; each
step leaves a gap that short, rather than letting the audio drift into lateness and lose
hundreds of milliseconds at a re-anchor."""
_FOLLOW_STEP = int(FOLLOW_STEP_S * AUDIO_RATE)
ARRIVAL_LEAD_S = 0.05
"""How far ahead of real time audio encoded on arrival may go: the event loop's grid hands a
packet over up to 20 ms before its slot (`sip2rtmp.net.grid`); what lies further ahead (a
sender's clock running fast) waits for its time."""


class Lost(Enum):
    """Marks an RTP slot the jitter buffer gave up on."""

    LOST = "lost"


LOST = Lost.LOST


@dataclass(frozen=True, slots=True)
class CodecSwitch:
    """In the inbound queue: the payloads after this one are ``codec``."""

    codec: str


class VideoSource(Protocol):
    """Where video comes from: the slate, or the callee's own H.264 passed through."""

    @property
    def template(self) -> Any: ...

    def packets_until(self, seconds: float) -> list[EncodedPacket]: ...


@dataclass(frozen=True, slots=True)
class MediaConfig:
    audio_channels: int = 1
    audio_bit_rate: int = 128_000
    latency_s: float = 0.08
    """How far the outputs run behind real time: room for audio handed over a little after
    its slot, by the event loop's 40 ms grid (`sip2rtmp.net.grid`) and the thread hand-over.
    Nothing else holds the GIL for long: outputs connect on sockets of their own
    (`sip2rtmp.net.rtmp_socket`), not inside PyAV."""
    max_ahead_s: float = 1.0
    """Audio stamped further ahead than this (clock drift, timestamp jumps) is re-anchored."""
    tick_s: float = 0.4
    """How often the media thread wakes to decode what arrived and encode what is due. Each
    wake-up starts on cold caches, so packets are taken in batches: decoding Opus and encoding
    AAC cost 1.04 CPU-s per minute of audio woken 10 times a second and 0.78 woken 5 times
    (2-CPU virtual machine); waking 2.5 times a second took another 0.15 CPU-s a minute off
    the whole process (30 s calls alternated with 5 a second: Opus 0.61-0.63 against
    0.68-0.69 CPU-s, H.264 passed through 0.73-0.74 against 0.79-0.81). Lateness does not
    depend on it (every wake ingests before it encodes, so audio is late only when it arrives
    ``latency_s`` after its slot); the stream's delay grows by half a tick on average, which
    ``audio_on_arrival`` (`--latency low`) takes out of the audio's path."""
    silence_grace_s: float = 0.0
    """How much longer than ``latency_s`` a hole in the callee's audio waits before it goes
    out as silence, while the audio that came goes out at ``latency_s``: room for an event
    loop that hands audio over on a coarser grid (80 ms instead of 40 ms by default,
    `sip2rtmp.relay.options.GRID_STRIDES`) without a longer delay for the stream."""
    audio_on_arrival: bool = False
    """Encode the callee's audio the moment it is handed over (`--latency low`) instead of at
    the next tick ``latency_s`` behind real time: the tick's wait and the headroom leave the
    audio's delay, for a media-thread wake-up per hand-over (the event loop's 40 ms grid).
    The video goes as far as the audio (the slate at once, the callee's as it arrives);
    silence where no audio came still goes out on the tick."""
    start_tick_s: float = 0.02
    start_s: float = 1.0
    """The stream's first second runs on a fine tick: players and ingest servers get the
    first packets the moment they are due (with ``tick_s`` up to a tick later)."""
    inbound_capacity: int = 500
    output_policy: OutputPolicy = field(default_factory=OutputPolicy)
    rtmps_tls: ssl.SSLContext | None = None
    """How rtmps:// outputs verify their servers (`sip2rtmp.net.rtmps`); None for the
    system's CAs."""


@dataclass(frozen=True, slots=True)
class PipelineStats:
    media_time_s: float
    audio_payloads: int
    audio_lost: int
    audio_concealed: int
    audio_discarded: int
    inbound_dropped: int
    resyncs: int
    level_dbfs: float
    """Recent peak RMS of the callee's audio (dB full scale, -90 for silence)."""
    outputs: tuple[OutputStats, ...]


class MediaPipeline:
    """Owns the decoder, the AAC encoder, the video source and the outputs of one call."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        codec: str,
        video: VideoSource,
        config: MediaConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not targets:
            raise ValueError("a pipeline needs at least one output")
        self.config = config or MediaConfig()
        self._clock = clock
        self._video = video
        self._decoder = AudioDecoder(codec, channels=self.config.audio_channels)
        self._encoder = AacEncoder(
            channels=self.config.audio_channels, bit_rate=self.config.audio_bit_rate
        )
        self._timeline = AudioTimeline(
            self.config.audio_channels,
            int((self.config.latency_s + self.config.max_ahead_s + 1.0) * AUDIO_RATE),
        )
        templates = StreamTemplates(video=video.template, audio=self._encoder.template)
        self.outputs = [
            RtmpOutput(
                target,
                templates,
                self.config.output_policy,
                clock=clock,
                tls=self.config.rtmps_tls,
            )
            for target in targets
        ]
        self._inbound: deque[tuple[bytes | Lost | CodecSwitch, int, float, float | None]] = deque()
        """Hand-over from the event loop: deque appends and pops are atomic, no lock needed."""
        self._thread = threading.Thread(target=self._run, name="media", daemon=True)
        self._stopping = threading.Event()
        self._arrived = threading.Event()
        """Set by a hand-over when audio is encoded on arrival, and by ``stop``."""
        self._t0 = 0.0
        self._offset: int | None = None
        self._payloads = 0
        self._lost = 0
        self._inbound_dropped = 0
        self._resyncs = 0
        self._level = 0.0
        self._late_run = 0
        self._retired = (0, 0)
        """Concealed and discarded counts of the decoders a codec switch retired."""

    def start(self) -> None:
        """Media time 0 is now; outputs begin connecting at once."""
        self._t0 = self._clock()
        for output in self.outputs:
            output.start()
        self._thread.start()

    @property
    def origin(self) -> float:
        """The clock reading of media time 0, so other tracks can stamp onto the same timeline."""
        return self._t0

    def push_audio(self, payload: bytes | Lost, rtp_ts: int, due: float | None = None) -> None:
        """Hand over one RTP payload (or LOST) in jitter-buffer order; never blocks.

        `due` is when the jitter buffer scheduled it (this pipeline's clock): the timeline is
        anchored on the first one, so a stall between the buffer and here at the start (a busy
        loop, the media stack still loading) does not delay the audio for the whole call.
        Without it, the hand-over time anchors.
        """
        if len(self._inbound) >= self.config.inbound_capacity:
            self._inbound_dropped += 1
            return
        self._inbound.append((payload, rtp_ts, self._clock(), due))

    def audio_handed_over(self) -> None:
        """The payloads of one playout are all pushed: with ``audio_on_arrival`` the media
        thread wakes for them now, once for the lot."""
        if self.config.audio_on_arrival:
            self._arrived.set()

    def switch_audio(self, codec: str) -> None:
        """The payloads pushed from now on are ``codec`` (a re-INVITE changed it, RFC 3264
        §8.3.2, or the answer's differs from the early media's): they get a decoder of
        their own, anchored like the first payload of the call on its due time, so the
        audio goes on in the same timeline with no gap but the one the sender left."""
        self._inbound.append((CodecSwitch(codec), 0, self._clock(), None))

    def stop(self) -> None:
        """Flush the encoder and close every output with a proper trailer.

        Blocks for up to the outputs' close timeout: from asyncio, use ``asyncio.to_thread``.
        """
        self._stopping.set()
        self._arrived.set()
        if self._thread.is_alive():
            self._thread.join()
        for output in self.outputs:
            output.close()

    def stats(self) -> PipelineStats:
        return PipelineStats(
            media_time_s=max(self._clock() - self._t0, 0.0) if self._t0 else 0.0,
            audio_payloads=self._payloads,
            audio_lost=self._lost,
            audio_concealed=self._retired[0] + self._decoder.concealed,
            audio_discarded=self._retired[1] + self._decoder.discarded,
            inbound_dropped=self._inbound_dropped,
            resyncs=self._resyncs,
            level_dbfs=max(20.0 * math.log10(self._level), LEVEL_FLOOR_DBFS)
            if self._level > 0
            else LEVEL_FLOOR_DBFS,
            outputs=tuple(output.stats() for output in self.outputs),
        )

    def failures(self) -> list[OutputFailed]:
        return [failure for output in self.outputs if (failure := output.failure)]

    @property
    def all_failed(self) -> bool:
        return all(output.state is OutputState.FAILED for output in self.outputs)

    def _run(self) -> None:
        name_native_thread("s2r-media")
        deadline = self._t0
        start_until = self._t0 + self.config.start_s
        while not self._stopping.is_set():
            deadline += self.config.tick_s if deadline >= start_until else self.config.start_tick_s
            while self._sleep_until(deadline):
                self._ingest_all()
                self._emit_due()
            self._ingest_all()
            self._emit_due()
        self._ingest_all()
        self._emit(self._clock() - self._t0)
        self._distribute(self._encoder.flush())

    def _sleep_until(self, deadline: float) -> bool:
        """Sleep until ``deadline``; True when audio handed over first (``audio_on_arrival``)."""
        remaining = deadline - self._clock()
        if remaining <= 0:
            return False
        if not self.config.audio_on_arrival:
            self._stopping.wait(remaining)
            return False
        arrived = self._arrived.wait(remaining)
        self._arrived.clear()
        return arrived and not self._stopping.is_set()

    def _ingest_all(self) -> None:
        """Take everything handed over since the last time."""
        inbound = self._inbound
        while inbound:
            self._ingest(*inbound.popleft())

    def _ingest(
        self, payload: bytes | Lost | CodecSwitch, rtp_ts: int, arrival: float, due: float | None
    ) -> None:
        if isinstance(payload, CodecSwitch):
            self._switch_decoder(payload.codec)
            return
        if payload is LOST:
            self._lost += 1
            chunks = self._decoder.conceal(rtp_ts)
        else:
            self._payloads += 1
            chunks = self._decoder.decode(payload, rtp_ts)
            for chunk in chunks:
                flat = chunk.samples.reshape(-1)
                rms = math.sqrt(float(flat.dot(flat)) / flat.size) if flat.size else 0.0
                self._level = max(rms, self._level * LEVEL_DECAY)
        arrival_pos = int((arrival - self._t0) * AUDIO_RATE)
        max_ahead = int(self.config.max_ahead_s * AUDIO_RATE)
        self._follow_schedule(rtp_ts, arrival if due is None else due, scheduled=due is not None)
        if self._offset is None:  # nothing decoded yet, so nothing to place
            return
        for chunk in chunks:
            position = chunk.pts + self._offset
            end = position + chunk.samples.shape[1]
            # A burst that arrives after a stall (a busy machine, a loop held up) is late
            # only once: its slots already went out as silence, and the
            # packets after it are on time again. Re-anchoring for it would add the stall to
            # the delay for the rest of the call, so only a lasting lateness re-anchors.
            self._late_run = self._late_run + 1 if end <= self._timeline.playhead else 0
            if self._late_run >= LATE_RUN_RESYNC or end > arrival_pos + max_ahead:
                self._offset = max(arrival_pos, self._timeline.playhead) - chunk.pts
                position = chunk.pts + self._offset
                self._late_run = 0
                self._resyncs += 1
            self._timeline.write(position, chunk.samples)

    def _switch_decoder(self, codec: str) -> None:
        """A decoder for ``codec``; the next payload anchors the audio again."""
        old = self._decoder
        self._retired = (self._retired[0] + old.concealed, self._retired[1] + old.discarded)
        self._decoder = AudioDecoder(codec, channels=self.config.audio_channels)
        self._offset = None
        self._late_run = 0

    def _follow_schedule(self, rtp_ts: int, due: float, *, scheduled: bool) -> None:
        """Anchor the audio on the first payload's due time, then follow the jitter buffer's
        schedule when it moves later by more than FOLLOW_STEP_S.

        Only the buffer's own schedule is followed, never the hand-over time: a stall between
        the buffer and here is late only once (see ``_ingest``).
        """
        item_pts = self._decoder.pts_of(rtp_ts)
        if item_pts is None:
            return
        offset = int((due - self._t0) * AUDIO_RATE) - item_pts
        if self._offset is None:
            self._offset = offset
        elif scheduled and offset - self._offset > _FOLLOW_STEP:
            self._offset = offset
            self._resyncs += 1

    def _emit_due(self) -> None:
        """Emit up to ``latency_s`` behind real time; holes ``silence_grace_s`` further."""
        horizon_s = self._clock() - self._t0 - self.config.latency_s
        self._emit(horizon_s, horizon_s - self.config.silence_grace_s)

    def _emit(self, horizon_s: float, silence_s: float | None = None) -> None:
        """Encode audio and take video up to ``horizon_s``, then hand both out in time order.

        Audio that came goes as far as ``horizon_s``; where none came, silence goes only as
        far as ``silence_s`` (by default the horizon) and the stream's audio waits there.

        Audio encoded on arrival goes as far as it was written, up to ``ARRIVAL_LEAD_S``
        ahead of real time, and the video as far as the audio: a player that keeps the two
        in sync waits for the later one. Not before the horizon reaches media time 0: the
        stream's first video goes out when it does in either mode. (Taken sooner, nginx's
        recording of a passed-through call opened on the callee's second keyframe in 2 of
        17 calls; why was not found.)
        """
        packets: list[EncodedPacket] = []
        frame = self._encoder.frame_size
        target = int(horizon_s * AUDIO_RATE)
        if silence_s is not None and silence_s < horizon_s:
            target = max(int(silence_s * AUDIO_RATE), min(self._timeline.written, target))
        video_s = horizon_s
        if self.config.audio_on_arrival:
            lead = int((horizon_s + self.config.latency_s + ARRIVAL_LEAD_S) * AUDIO_RATE)
            target = max(target, min(self._timeline.written, lead))
        while self._timeline.playhead + frame <= target:
            pts = self._timeline.playhead
            packets.extend(self._encoder.encode(self._timeline.read(frame), pts))
        if self.config.audio_on_arrival and horizon_s >= 0:
            video_s = max(horizon_s, self._timeline.playhead / AUDIO_RATE)
        packets.extend(self._video.packets_until(video_s))
        packets.sort(key=lambda packet: packet.seconds)
        self._distribute(packets)

    def _distribute(self, packets: list[EncodedPacket]) -> None:
        for output in self.outputs:
            output.submit(packets)
