"""Lip sync: video placed where the audio captured at the same instant sits on the output.

Each stream's RTCP sender reports pair an RTP timestamp with the sender's NTP wall clock
(RFC 3550 §6.4.1), which gives every RTP timestamp of either stream a capture instant on one
shared clock. Audio is the master: the pipeline lays it down continuously from the first
payload it is handed. Knowing where that first payload went, the capture instant of any video
frame translates into the output time of the audio captured with it. Arrival times cannot
do this: each stream has its own encoder, packetization and network delays.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sip2rtmp.media.passthrough import VIDEO_CLOCK
from sip2rtmp.media.pipeline import LOST, Lost, MediaConfig, MediaPipeline, VideoSource
from sip2rtmp.rtp.rtcp import RtcpPacket, SenderReport

RtcpListener = Callable[[list[RtcpPacket], float], None]

_NTP_UNIT = 1 << 32
_HALF = 1 << 31


def _ts_delta(later: int, earlier: int) -> int:
    """Signed difference of two 32-bit RTP timestamps (RFC 3550 §5.1 wrap-around)."""
    return ((later - earlier + _HALF) & 0xFFFFFFFF) - _HALF


@dataclass(frozen=True, slots=True)
class _Report:
    ntp_s: float
    rtp_ts: int


class AvSync:
    """Maps video RTP timestamps to output seconds once both streams sent a sender report.

    Feed ``audio_rtcp``/``video_rtcp`` with each leg's RTCP and ``audio_anchor`` with the
    first audio payload handed to the pipeline; ``video_seconds`` is None until all three
    are known.
    """

    def __init__(self, audio_clock: int, origin: float = 0.0) -> None:
        self.audio_clock = audio_clock
        self.origin = origin
        self._audio: _Report | None = None
        self._video: _Report | None = None
        self._anchor: tuple[int, float] | None = None
        self._base: float | None = None
        """Output seconds of the video timestamp in the latest video SR."""

    def audio_rtcp(self, packets: list[RtcpPacket], arrival: float) -> None:
        self._audio = _latest_report(packets) or self._audio
        self._update()

    def video_rtcp(self, packets: list[RtcpPacket], arrival: float) -> None:
        self._video = _latest_report(packets) or self._video
        self._update()

    def audio_anchor(self, rtp_ts: int, at: float) -> None:
        """The audio payload with ``rtp_ts`` starts the output's audio at clock time ``at``."""
        if self._anchor is None:
            self._anchor = (rtp_ts, at)
            self._update()

    @property
    def anchored(self) -> bool:
        return self._anchor is not None

    def video_seconds(self, rtp_ts: int) -> float | None:
        """Output time (seconds from ``origin``) of the audio captured with this frame."""
        base, video = self._base, self._video
        if base is None or video is None:
            return None
        return base + _ts_delta(rtp_ts, video.rtp_ts) / VIDEO_CLOCK

    def _update(self) -> None:
        audio, video, anchor = self._audio, self._video, self._anchor
        if audio is None or video is None or anchor is None:
            return
        anchor_ts, anchor_at = anchor
        # Output time of the audio SR's instant, then shifted to the video SR's instant.
        audio_sr_at = (
            anchor_at - self.origin + _ts_delta(audio.rtp_ts, anchor_ts) / self.audio_clock
        )
        self._base = audio_sr_at + (video.ntp_s - audio.ntp_s)


class SenderReportTap:
    """A leg's RTCP on its way to a listener that attaches late, keeping the latest compound
    packet that carries a sender report for it. A sender may report once with its first packets
    and then only every 5 s (RFC 3550 §6.2's minimum interval; FFmpeg does): a listener that
    attached after that first report would otherwise place the video blind for 5 s."""

    def __init__(self) -> None:
        self._listener: RtcpListener | None = None
        self._latest: tuple[list[RtcpPacket], float] | None = None

    def attach(self, listener: RtcpListener) -> None:
        """Send `listener` every RTCP compound from now on, and at once the latest report."""
        self._listener = listener
        if self._latest is not None:
            listener(*self._latest)

    def __call__(self, packets: list[RtcpPacket], arrival: float) -> None:
        if any(isinstance(packet, SenderReport) for packet in packets):
            self._latest = (packets, arrival)
        if self._listener is not None:
            self._listener(packets, arrival)


def _latest_report(packets: list[RtcpPacket]) -> _Report | None:
    report = next((p for p in reversed(packets) if isinstance(p, SenderReport)), None)
    if report is None:
        return None
    return _Report(report.ntp_timestamp / _NTP_UNIT, report.rtp_timestamp)


class SyncedPipeline(MediaPipeline):
    """A pipeline that tells ``AvSync`` where its audio timeline starts.

    The pipeline anchors audio on the time the first payload was due (or was handed over)
    and stacks later ones by RTP timestamp, so that time is the audio anchor.
    """

    def __init__(
        self,
        targets: Sequence[str],
        *,
        sync: AvSync,
        codec: str,
        video: VideoSource,
        config: MediaConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(targets, codec=codec, video=video, config=config, clock=clock)
        self._sync = sync
        self._anchor_clock = clock

    def start(self) -> None:
        super().start()
        self._sync.origin = self.origin

    def push_audio(self, payload: bytes | Lost, rtp_ts: int, due: float | None = None) -> None:
        if not self._sync.anchored and payload is not LOST:
            self._sync.audio_anchor(rtp_ts, self._anchor_clock() if due is None else due)
        super().push_audio(payload, rtp_ts, due)
