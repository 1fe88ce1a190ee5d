"""Calls over a bad network: random loss, delay, jitter and reordering on the callee's RTP.

Every claim is measured: loss from the kernel's own drop counter and sip2rtmp's stats events,
the continuity of the AAC timeline and the tone from the recording it wrote, and what reached
the far end from the far end's side of the call.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sip2rtmp.errors import LabError
from sip2rtmp.lab import write_tone
from sip2rtmp.lab.recording import (
    decode_audio,
    dominant_frequency,
    read_recording,
    tone_seconds,
)
from sip2rtmp.lab.standalone import StandaloneCallee, start_standalone_callee
from tests.support.netns import NetnsUnavailable, NetworkNamespace
from tests.support.sip_peer import SipPeer
from tests.support.udp_relay import UdpRelay

SIP2RTMP = str(Path(sys.executable).with_name("sip2rtmp"))
TONE_HZ = 440
DTS_TOLERANCE = 0.002
"""FLV stores milliseconds: a 21.33 ms AAC frame shows as steps of 21 or 22 ms."""
RATE = 48000

CALLEE_RTP_PORTS = (30000, 30099)
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


def run_call(
    callee: str,
    record: Path,
    max_duration: float,
    prefix: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> CallResult:
    """`sip2rtmp call` without registering, recording to a file, events read from stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIP2RTMP_")}
    argv = [
        *prefix, SIP2RTMP, "call", "--no-register", "--callee", callee, "--record", str(record),
        "--no-video", "--max-duration", str(max_duration), "--json", *extra,
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
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return CallResult(done.returncode, events, done.stderr, time.monotonic() - started)


def assert_clean_recording(record: Path, call_duration: float) -> None:
    """One AAC timeline without holes, as long as the call, carrying the callee's tone."""
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
    assert abs(recording.duration - call_duration) <= 1.0, (
        f"recording lasts {recording.duration:.2f} s, the call {call_duration:.2f} s"
    )
    samples = decode_audio(record, RATE)[RATE:]
    frequency = dominant_frequency(samples, RATE)
    assert abs(frequency - TONE_HZ) <= 5, f"dominant frequency {frequency:.1f} Hz"
    present = tone_seconds(samples, RATE, TONE_HZ)
    share = float(present.mean()) if present.size else 0.0
    assert share >= 0.9, f"the tone is in only {share:.0%} of 100 ms windows after the first second"


@dataclass
class LossyCallee:
    namespace: NetworkNamespace
    callee: StandaloneCallee


@pytest.fixture
def lossy_callee(tmp_path: Path) -> Iterator[LossyCallee]:
    """A tone callee in a namespace of its own whose outgoing UDP loses ~5 % at random."""
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
            tmp_path / "callee", tone, rtp_ports=CALLEE_RTP_PORTS, prefix=namespace.prefix
        )
        yield LossyCallee(namespace, callee)
    except (NetnsUnavailable, LabError) as exc:
        pytest.fail(f"could not set up the lossy callee: {exc}", pytrace=False)
    finally:
        if callee is not None:
            callee.stop()
        namespace.delete()


@pytest.mark.netns
def test_random_loss_is_concealed_without_gaps(lossy_callee: LossyCallee, tmp_path: Path) -> None:
    record = tmp_path / "lossy.flv"
    result = run_call(
        lossy_callee.callee.uri, record, max_duration=12, prefix=lossy_callee.namespace.prefix
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
    assert_clean_recording(record, result.call_duration())


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


def test_jitter_and_reordering_are_smoothed(
    jittery_peer: tuple[SipPeer, UdpRelay], tmp_path: Path
) -> None:
    peer, relay = jittery_peer
    record = tmp_path / "jittery.flv"
    result = run_call(peer.uri, record, max_duration=10)
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
    assert_clean_recording(record, result.call_duration())

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
