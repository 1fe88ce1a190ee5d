"""The call's numbers as one typed `Stats` record, from what the legs and the pipeline count."""

from __future__ import annotations

from sip2rtmp.media.pipeline import PipelineStats
from sip2rtmp.media.switch import VideoSwitch
from sip2rtmp.relay.audio import AudioLeg
from sip2rtmp.relay.events import AudioStats, OutputStats, Stats, VideoStats
from sip2rtmp.relay.video import VideoLeg
from sip2rtmp.rtp.jitterbuffer import JitterStats


def call_stats(
    duration: float,
    media: PipelineStats,
    audio: AudioLeg,
    video: VideoLeg | None,
    switch: VideoSwitch | None,
    video_mode: str,
) -> Stats:
    """`video` and `switch` only for a call whose video the stream may carry."""
    return Stats(
        duration=round(duration, 1),
        level_dbfs=round(media.level_dbfs, 1),
        outputs=tuple(
            OutputStats(
                output.target,
                output.state.value,
                round(output.bitrate),
                output.bytes_sent,
                output.reconnects,
            )
            for output in media.outputs
        ),
        rtp=_audio_stats(audio, media.resyncs),
        video=_video_stats(video, switch, video_mode) if video and switch else None,
    )


def _audio_stats(leg: AudioLeg, resyncs: int) -> AudioStats | None:
    jitter = leg.stats
    if jitter is None:
        return None
    expected = jitter.received + jitter.lost
    return AudioStats(
        received=jitter.received,
        lost=jitter.lost,
        late=jitter.late,
        duplicate=jitter.duplicate,
        reordered=jitter.reordered,
        jitter_ms=round(jitter.jitter_ms, 1),
        depth_ms=round(jitter.depth_ms, 1),
        loss_pct=round(100.0 * jitter.lost / expected, 2) if expected else 0.0,
        timeline_resyncs=resyncs,
        source=leg.endpoint.source.stats,
    )


def _video_stats(leg: VideoLeg, switch: VideoSwitch, mode: str) -> VideoStats:
    stats = leg.stats
    jitter: JitterStats | None = stats.jitter
    skew = leg.source.av_skew if leg.source is not None else None
    return VideoStats(
        mode=mode,
        slate_switches=switch.slate_switches,
        frames=switch.frames,
        keyframes=switch.keyframes,
        dropped=stats.dropped,
        keyframe_requests=stats.keyframe_requests,
        sent=stats.frames_sent,
        received=jitter.received if jitter else 0,
        lost=jitter.lost if jitter else 0,
        jitter_ms=round(jitter.jitter_ms, 1) if jitter else 0.0,
        depth_ms=round(jitter.depth_ms, 1) if jitter else 0.0,
        av_skew_ms=None if skew is None else round(1000 * skew),
        source=leg.endpoint.source.stats,
    )
