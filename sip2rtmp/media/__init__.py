"""Everything between decoded RTP payloads and the RTMP servers, plus audio toward the callee."""

from sip2rtmp.media.audio import AacEncoder, AudioDecoder, AudioTimeline, PcmChunk, rtp_audio_codec
from sip2rtmp.media.outbound import OutboundAudio
from sip2rtmp.media.output import OutputPolicy, OutputState, OutputStats, RtmpOutput, redact
from sip2rtmp.media.packets import EncodedPacket, StreamTemplates, Track
from sip2rtmp.media.pipeline import LOST, Lost, MediaConfig, MediaPipeline, PipelineStats
from sip2rtmp.media.slate import SlateVideo

__all__ = [
    "LOST",
    "AacEncoder",
    "AudioDecoder",
    "AudioTimeline",
    "EncodedPacket",
    "Lost",
    "MediaConfig",
    "MediaPipeline",
    "OutboundAudio",
    "OutputPolicy",
    "OutputState",
    "OutputStats",
    "PcmChunk",
    "PipelineStats",
    "RtmpOutput",
    "SlateVideo",
    "StreamTemplates",
    "Track",
    "redact",
    "rtp_audio_codec",
]
