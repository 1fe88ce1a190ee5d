"""Calls over a bad network: random loss, delay, jitter and reordering on the callee's RTP.

Every claim is measured: loss from the kernel's own drop counter and sip2rtmp's stats events,
the continuity of the AAC timeline and the tone from the recording it wrote, and what reached
the far end from the far end's side of the call.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sip2rtmp.lab import LabError, write_tone
from sip2rtmp.lab.accounts import LabAccount, account
from sip2rtmp.lab.recording import (
    Recording,
    decode_audio,
    dominant_frequency,
    read_recording,
    tone_seconds,
)
from sip2rtmp.lab.standalone import StandaloneCallee, start_standalone_callee
from sip2rtmp.rtp.rtcp import FullIntraRequest, PictureLossIndication, parse_compound
from tests.integration.conftest import SIP2RTMP, read_events
from tests.support.netns import NetnsUnavailable, NetworkNamespace
from tests.support.pcap import CaptureUnavailable, UdpCapture, UdpDatagram, read_udp
from tests.support.sip_peer import SipPeer
from tests.support.udp_relay import UdpRelay

TONE_HZ = 440
DTS_TOLERANCE = 0.002
"""FLV stores milliseconds: a 21.33 ms AAC frame shows as steps of 21 or 22 ms."""
RATE = 48000

CALLEE_RTP_PORTS = (11000, 11099)
"""Outside sip2rtmp's own RTP range (16384-32767): the drop rule and the capture see only the
callee's side."""
LOSS_PERCENT = 5
FAULT_TABLE = "sip2rtmp_faults"
LOSS_RULESET = f"""
table inet {FAULT_TABLE} {{
    chain output {{
        type filter hook output priority 0; policy accept;
        udp sport {CALLEE_RTP_PORTS[0]}-{CALLEE_RTP_PORTS[1]} counter comment "callee-sent"
        udp sport {CALLEE_RTP_PORTS[0]}-{CALLEE_RTP_PORTS[1]} numgen random mod 100 < \
{LOSS_PERCENT} counter drop comment "callee-dropped"
    }}
}}
"""


@dataclass
class CallResult:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    elapsed: float

    def statuses(self) -> list[str]:
        return [e["status"] for e in self.events if e.get("event") == "status"]

    def last_rtp_stats(self) -> dict[str, Any]:
        stats = [e["rtp"] for e in self.events if e.get("event") == "stats" and "rtp" in e]
        assert stats, f"no stats event with rtp counters: {self.events}"
        rtp: dict[str, Any] = stats[-1]
        return rtp

    def call_duration(self) -> float:
        finish = [e for e in self.events if e.get("status") == "FINISH"]
        assert finish, f"the call did not FINISH: {self.statuses()}\n{self.stderr[-2000:]}"
        return float(finish[-1]["duration"])

    def stream_duration(self) -> float:
        """Seconds from the outputs' start to the FINISH: the span a recording can hold. A
        callee whose first keyframe is lost keeps the outputs waiting for it (`KEYFRAME_WAIT`)
        after the answer, from which `call_duration` counts."""
        finish = [e for e in self.events if e.get("status") == "FINISH"]
        outputs = [e for e in self.events if e.get("event") == "output"]
        assert finish and outputs, f"no output ran to a FINISH: {self.events}"
        started = datetime.fromisoformat(outputs[0]["ts"])
        return (datetime.fromisoformat(finish[-1]["ts"]) - started).total_seconds()


def run_call(
    callee: str,
    record: Path,
    max_duration: float,
    prefix: Sequence[str] = (),
    extra: Sequence[str] = (),
    video: bool = False,
) -> CallResult:
    """`sip2rtmp call` without registering, recording to a file, events read from stdout and
    held to their contract (`read_events`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIP2RTMP_")}
    argv = [
        *prefix, SIP2RTMP, "call", "--no-register", "--callee", callee, "--record", str(record),
        *([] if video else ["--no-video"]), "--max-duration", str(max_duration), "--json", *extra,
    ]  # fmt: skip
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=max_duration + 15,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"sip2rtmp call did not end within {exc.timeout} s")
    events = read_events(done.stdout, done.returncode)
    return CallResult(done.returncode, events, done.stderr, time.monotonic() - started)


def assert_one_timeline(record: Path) -> Recording:
    """One AAC track whose timestamps rise by at most one frame: no gap, no step back."""
    assert record.exists(), f"no recording at {record}"
    recording = read_recording(record)
    audio = recording.kinds("audio")
    assert [s.codec for s in audio] == ["aac"], recording.describe()
    frame = 1024 / audio[0].sample_rate
    steps = [b - a for a, b in itertools.pairwise(recording.audio_dts)]
    assert steps, "the recording holds no audio"
    assert min(steps) > 0, "audio DTS not increasing"
    worst = max(steps)
    assert worst <= frame + DTS_TOLERANCE, (
        f"gap in the AAC timeline: a {worst * 1000:.1f} ms step "
        f"at {recording.audio_dts[steps.index(worst)]:.2f} s (one frame is {frame * 1000:.1f} ms)"
    )
    return recording


def assert_clean_recording(record: Path, stream_duration: float) -> None:
    """One AAC timeline without holes, as long as the stream ran, carrying the callee's tone."""
    recording = assert_one_timeline(record)
    assert abs(recording.duration - stream_duration) <= 1.0, (
        f"recording lasts {recording.duration:.2f} s, the stream ran {stream_duration:.2f} s"
    )
    samples = decode_audio(record, RATE)[RATE:]
    frequency = dominant_frequency(samples, RATE)
    assert abs(frequency - TONE_HZ) <= 5, f"dominant frequency {frequency:.1f} Hz"
    present = tone_seconds(samples, RATE, TONE_HZ)
    share = float(present.mean()) if present.size else 0.0
    assert share >= 0.95, (
        f"the tone is in only {share:.0%} of 100 ms windows after the first second"
    )


@dataclass
class LossyCallee:
    namespace: NetworkNamespace
    callee: StandaloneCallee


@pytest.fixture
def lossy_callee(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LossyCallee]:
    """A tone callee in a namespace of its own whose outgoing UDP loses ~5 % at random.

    Parametrized indirectly with a lab account, the callee sends that account's video too.
    """
    video_account: LabAccount | None = getattr(request, "param", None)
    try:
        namespace = NetworkNamespace.create()
    except NetnsUnavailable as exc:
        pytest.fail(f"this environment cannot run network-namespace tests: {exc}", pytrace=False)
    callee: StandaloneCallee | None = None
    try:
        namespace.nft(LOSS_RULESET)
        tone = tmp_path / f"tone-{TONE_HZ}.wav"
        write_tone(tone, TONE_HZ, seconds=60)
        callee = start_standalone_callee(
            tmp_path / "callee",
            tone,
            user=video_account.user if video_account else "tone",
            rtp_ports=CALLEE_RTP_PORTS,
            video_codec=video_account.video_codec if video_account else None,
            prefix=namespace.prefix,
        )
        yield LossyCallee(namespace, callee)
    except (NetnsUnavailable, LabError) as exc:
        pytest.fail(f"could not set up the lossy callee: {exc}", pytrace=False)
    finally:
        if callee is not None:
            callee.stop()
        namespace.delete()


LATENCIES = ["normal", "low"]
"""Both `--latency` modes: audio encoded on arrival must conceal and smooth as well."""


@pytest.mark.netns
@pytest.mark.parametrize("latency", LATENCIES)
def test_random_loss_is_concealed_without_gaps(
    lossy_callee: LossyCallee, tmp_path: Path, latency: str
) -> None:
    record = tmp_path / "lossy.flv"
    result = run_call(
        lossy_callee.callee.uri,
        record,
        max_duration=12,
        prefix=lossy_callee.namespace.prefix,
        extra=("--latency", latency),
    )
    assert result.returncode == 0, (
        f"exit {result.returncode}: {result.statuses()}\n{result.stderr[-2000:]}\n"
        f"callee log:\n{lossy_callee.callee.log()[-1500:]}"
    )

    rules = lossy_callee.namespace.rule_counters("inet", FAULT_TABLE)
    counters = {rule.comment: rule.packets for rule in rules}
    sent, dropped = counters["callee-sent"], counters["callee-dropped"]
    assert sent > 400, f"the callee sent only {sent} UDP packets"
    assert dropped > 0, "the nftables rule dropped nothing"
    dropped_pct = 100 * dropped / sent

    rtp = result.last_rtp_stats()
    assert rtp["received"] > 200, rtp
    assert 2.0 <= rtp["loss_pct"] <= 10.0, (
        f"loss {rtp['loss_pct']} % (rule dropped {dropped_pct:.1f} %)"
    )
    assert abs(rtp["loss_pct"] - dropped_pct) <= 3.0, (
        f"sip2rtmp reports {rtp['loss_pct']} % lost, the rule dropped {dropped_pct:.1f} %"
    )
    assert_clean_recording(record, result.stream_duration())


VIDEO_CALLEE = account("video")
KEYFRAME_GAP = 2.1
"""The 2 s ingest interval, plus FLV's millisecond rounding and a frame's slack."""
REQUEST_PERIOD = 2.0
"""Without losses a keyframe is asked for shortly before every 2 s interval runs out."""
REQUEST_AFTER_LOSS = 0.7
"""A loss is answered by a request at once, or at the next retry (0.5 s) plus playout delay;
or needs none, when a request sent just before it already has a keyframe on its way."""
FIRST_REQUEST = 1.0
"""The first request follows the callee's first video packet, which tells its SSRC."""
X264_IFRAMES = re.compile(r"libx264 @ \w+\] frame I:(\d+)")
"""libx264 sums up the frames it encoded when baresip closes the encoder at hangup."""


@dataclass
class VideoWire:
    """The callee's video and the keyframe requests sent to it, as captured inside the netns."""

    ssrc: int
    rtp_port: int
    arrivals: list[tuple[float, int]]
    """(time, sequence number) of each video packet that survived the drop rule."""
    idr_timestamps: set[int]
    """RTP timestamps of pictures with an IDR slice (NAL type 5) that got through."""
    idr_arrivals: list[float]
    """When the first IDR slice of each of those pictures arrived."""
    requests: list[tuple[float, int, int]]
    """(time, destination port, media SSRC) of each PLI and FIR entry sent to the callee."""

    @property
    def losses(self) -> list[float]:
        """Arrival times of the packets that came after a gap in the sequence numbers."""
        return [t for (_, a), (t, b) in itertools.pairwise(self.arrivals) if (b - a) & 0xFFFF != 1]


def read_video_wire(datagrams: Sequence[UdpDatagram], ports: tuple[int, int]) -> VideoWire:
    """Pick the callee's H.264 (dynamic payload type, from an even port of its range) and the
    RTCP sent to its odd ports, and parse that RTCP with the relay's own parser."""
    low, high = ports
    video = [
        d for d in datagrams
        if low <= d.source_port <= high and d.source_port % 2 == 0
        and len(d.payload) > 12 and d.payload[1] & 0x7F >= 96
    ]  # fmt: skip
    assert video, "no video RTP from the callee was captured"
    ssrcs = {int.from_bytes(d.payload[8:12], "big") for d in video}
    video_ports = {d.source_port for d in video}
    assert len(ssrcs) == 1 and len(video_ports) == 1, (ssrcs, video_ports)
    idr_packets = [d for d in video if d.payload[12] & 0x1F == 5]
    first_idr: dict[int, float] = {}
    for d in idr_packets:
        first_idr.setdefault(int.from_bytes(d.payload[4:8], "big"), d.time)
    requests: list[tuple[float, int, int]] = []
    for d in datagrams:
        if low <= d.destination_port <= high and d.destination_port % 2 == 1:
            for packet in parse_compound(d.payload):
                if isinstance(packet, PictureLossIndication):
                    requests.append((d.time, d.destination_port, packet.media_ssrc))
                elif isinstance(packet, FullIntraRequest):
                    requests += [(d.time, d.destination_port, s) for s, _ in packet.entries]
    return VideoWire(
        ssrc=ssrcs.pop(),
        rtp_port=video_ports.pop(),
        arrivals=[(d.time, int.from_bytes(d.payload[2:4], "big")) for d in video],
        idr_timestamps=set(first_idr),
        idr_arrivals=sorted(first_idr.values()),
        requests=requests,
    )


def encoded_iframes(callee: StandaloneCallee, timeout: float = 3.0) -> int:
    """How many I-frames the callee's encoder produced, from the summary it logs at hangup."""
    deadline = time.monotonic() + timeout
    while (found := X264_IFRAMES.search(callee.log())) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"no libx264 summary in the callee's log:\n{callee.log()[-1500:]}")
        time.sleep(0.1)
    return int(found.group(1))


@pytest.mark.netns
@pytest.mark.parametrize("lossy_callee", [VIDEO_CALLEE], indirect=True, ids=["h264"])
def test_video_recovers_from_random_loss_by_asking_for_keyframes(
    lossy_callee: LossyCallee, tmp_path: Path
) -> None:
    """Loss breaks the callee's pictures; PLIs on the wire must bring keyframes back in time."""
    low, high = CALLEE_RTP_PORTS
    try:
        capture = UdpCapture.start(
            tmp_path / "callee-rtp.pcap",
            f"udp and portrange {low}-{high}",
            prefix=lossy_callee.namespace.prefix,
        )
    except CaptureUnavailable as exc:
        pytest.fail(f"this environment cannot capture packets: {exc}", pytrace=False)
    record = tmp_path / "lossy-video.flv"
    try:
        result = run_call(
            lossy_callee.callee.uri,
            record,
            max_duration=12,
            prefix=lossy_callee.namespace.prefix,
            video=True,
        )
    finally:
        capture.stop()
    assert result.returncode == 0, (
        f"exit {result.returncode}: {result.statuses()}\n{result.stderr[-2000:]}\n"
        f"callee log:\n{lossy_callee.callee.log()[-1500:]}"
    )
    counters = {
        r.comment: r.packets for r in lossy_callee.namespace.rule_counters("inet", FAULT_TABLE)
    }
    assert counters["callee-dropped"] > 0, "the nftables rule dropped nothing"

    stats = [e["video"] for e in result.events if e.get("event") == "stats" and "video" in e]
    assert stats, f"no stats event with video counters: {result.events}"
    video_stats = stats[-1]
    assert video_stats["mode"] == "passthrough", video_stats
    assert video_stats["lost"] > 0, f"sip2rtmp saw no video loss: {video_stats}"
    assert video_stats["keyframe_requests"] > 0, video_stats

    wire = read_video_wire(list(read_udp(capture.path)), CALLEE_RTP_PORTS)
    assert wire.losses, "no gap in the callee's video sequence numbers reached sip2rtmp"
    assert len(wire.requests) >= 5, (
        f"only {len(wire.requests)} keyframe requests reached the callee"
    )
    assert {(port, ssrc) for _, port, ssrc in wire.requests} == {(wire.rtp_port + 1, wire.ssrc)}, (
        "keyframe requests must go to the callee's video RTCP port, for its video SSRC"
    )
    # The last stats event is taken at hangup, while a request may still be on its way out.
    assert abs(len(wire.requests) - video_stats["keyframe_requests"]) <= 3, (
        f"{len(wire.requests)} requests captured, sip2rtmp counted "
        f"{video_stats['keyframe_requests']}"
    )
    times = [t for t, _, _ in wire.requests]
    first_video, last_video = wire.arrivals[0][0], wire.arrivals[-1][0]
    assert times[0] - first_video <= FIRST_REQUEST, (
        f"first request {times[0] - first_video:.2f} s after the first video packet"
    )
    periods = [b - a for a, b in itertools.pairwise([*times, last_video])]
    assert max(periods) <= REQUEST_PERIOD, f"{max(periods):.2f} s without a keyframe request"
    unanswered = [
        round(loss - first_video, 2)
        for loss in wire.losses
        if loss < last_video - REQUEST_AFTER_LOSS
        and not any(loss <= t <= loss + REQUEST_AFTER_LOSS for t in times)
        and not any(loss < t <= loss + REQUEST_AFTER_LOSS for t in wire.idr_arrivals)
    ]
    assert not unanswered, f"losses at {unanswered} s were not followed by a keyframe request"

    iframes = encoded_iframes(lossy_callee.callee)
    assert iframes >= max(len(wire.idr_timestamps), 3), (
        f"the callee encoded {iframes} I-frames, {len(wire.idr_timestamps)} IDRs were captured"
    )

    recording = read_recording(record)
    video = recording.kinds("video")
    assert [(s.codec, s.width, s.height) for s in video] == [("h264", 640, 480)], (
        recording.describe()
    )
    assert recording.video_dts, "the recording holds no video"
    assert recording.video_keyframes[:1] == recording.video_dts[:1], (
        "the first video packet is not a keyframe"
    )
    steps = [b - a for a, b in itertools.pairwise(recording.video_dts)]
    assert min(steps) > 0, "video DTS not strictly increasing"
    assert_clean_recording(record, result.stream_duration())
    assert recording.max_keyframe_gap <= KEYFRAME_GAP, (
        f"keyframes up to {recording.max_keyframe_gap:.2f} s apart: "
        f"{[round(k, 2) for k in recording.video_keyframes]}"
    )


@pytest.fixture
def jittery_peer() -> Iterator[tuple[SipPeer, UdpRelay]]:
    """A tone-sending SIP peer whose RTP crosses a relay adding 0-60 ms of random delay."""
    relay = UdpRelay(max_delay=0.06, swap_probability=0.05, seed=4733)
    peer = SipPeer(relay=relay)
    relay.start()
    peer.start()
    try:
        yield peer, relay
    finally:
        peer.stop()
        relay.stop()


@pytest.mark.parametrize("latency", LATENCIES)
def test_jitter_and_reordering_are_smoothed(
    jittery_peer: tuple[SipPeer, UdpRelay], tmp_path: Path, latency: str
) -> None:
    peer, relay = jittery_peer
    record = tmp_path / "jittery.flv"
    result = run_call(peer.uri, record, max_duration=10, extra=("--latency", latency))
    assert result.returncode == 0, (
        f"exit {result.returncode}: {result.statuses()}\n{result.stderr[-2000:]}"
    )

    impairment = relay.stats
    assert impairment.overflow == 0 and impairment.forwarded >= peer.seen.rtp_sent - 5, impairment
    assert impairment.reordered > 0 and impairment.swapped > 0, impairment
    assert 0.02 <= impairment.mean_delay <= 0.04, impairment
    rtp = result.last_rtp_stats()
    assert rtp["reordered"] >= 10, f"sip2rtmp saw almost no reordering: {rtp}"
    assert rtp["jitter_ms"] >= 5, f"sip2rtmp measured no jitter: {rtp}"
    assert rtp["late"] <= 0.02 * rtp["received"], f"too many late packets: {rtp}"
    assert_clean_recording(record, result.stream_duration())

    seen = peer.seen
    assert seen.ack_at is not None, "sip2rtmp never acknowledged the 200 OK"
    assert seen.ok_retransmissions == 0, "the 200 OK was retransmitted: no timely ACK"
    assert seen.bye_at is not None, "sip2rtmp never hung up with BYE"
    assert seen.payload_types == {0}, f"payload types sent to the callee: {seen.payload_types}"
    first = seen.first_rtp_after_ok
    assert first is not None, "the callee never received RTP from sip2rtmp"
    assert first <= 0.1, f"first RTP reached the callee {first * 1000:.0f} ms after the 200 OK"
    expected = result.call_duration() / 0.02
    assert seen.rtp_received >= 0.9 * expected, (
        f"the callee received {seen.rtp_received} RTP packets, expected about {expected:.0f}"
    )


def test_a_callee_that_sends_no_media_fails_after_the_media_timeout(tmp_path: Path) -> None:
    """An answered call with no RTP is a failure to report (exit 9), not a silent stream."""
    peer = SipPeer(send_media=False)
    peer.start()
    try:
        result = run_call(
            peer.uri, tmp_path / "silent.flv", max_duration=30, extra=["--media-timeout", "2"]
        )
    finally:
        peer.stop()
    assert result.returncode == 9, result.stderr
    assert result.elapsed < 8
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no media from the callee within 2 s" in lines[0]
    assert peer.seen.bye_at is not None, "the call was hung up with BYE"
    assert peer.seen.rtp_received > 50, "we kept sending toward the callee meanwhile"
