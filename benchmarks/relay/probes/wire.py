"""What the capture shows for one run: the 200 OK, the RTMP connection, the first FLV media
packet and the audio delays."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.relay.probes.capture import (
    is_media,
    parse_rtp,
    read_pcap,
    rtmp_messages,
    tcp_stream,
)
from benchmarks.relay.probes.onsets import audio_delays
from sip2rtmp.lab import RTMP_PORT, SIP_PORT
from sip2rtmp.sip.sdp import SessionDescription


@dataclass
class Wire:
    """What the capture shows for one run."""

    ok_at: float | None = None
    connect_at: float | None = None
    first_media_at: float | None = None
    delays: list[float] = field(default_factory=list)

    def since_ok(self, moment: float | None) -> float | None:
        return None if moment is None or self.ok_at is None else moment - self.ok_at


def analyse(
    capture: Path,
    *,
    sip_ports: set[int],
    rtp_ports: set[int],
    rtmp_ports: set[int],
    codec: str,
) -> Wire:
    """Timings and audio delays of one run; its audio RTP is told from video by the answer."""
    frames = list(read_pcap(capture))
    wire = Wire()
    audio_port: int | None = None
    for frame in frames:
        if (
            not frame.tcp
            and frame.src_port == SIP_PORT
            and frame.dst_port in sip_ports
            and frame.payload.startswith(b"SIP/2.0 200")
            and re.search(rb"\r\nCSeq:\s*\d+\s+INVITE", frame.payload, re.IGNORECASE)
        ):
            wire.ok_at = frame.time
            answer = SessionDescription.parse(frame.payload.split(b"\r\n\r\n", 1)[1].decode())
            audio_port = next(m.port for m in answer.media if m.kind == "audio")
            break
    rtp = [
        packet
        for frame in frames
        if not frame.tcp and frame.src_port == audio_port and frame.dst_port in rtp_ports
        if (packet := parse_rtp(frame)) is not None
    ]
    if rtp:
        media_pt = Counter(packet.payload_type for packet in rtp).most_common(1)[0][0]
        rtp = [packet for packet in rtp if packet.payload_type == media_pt]
    connections = [
        (frame.time, frame.src_port)
        for frame in frames
        if frame.tcp and frame.dst_port == RTMP_PORT and frame.src_port in rtmp_ports
    ]
    if not connections:
        return wire
    wire.connect_at, client_port = min(connections)
    messages = rtmp_messages(*tcp_stream(frames, client_port, RTMP_PORT))
    wire.first_media_at = next((m.time for m in messages if is_media(m)), None)
    wire.delays = audio_delays(codec, rtp, messages) if rtp else []
    return wire
