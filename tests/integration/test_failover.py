"""Servers that fail, connections that drop, media that stops: real calls in a world of their own.

Each test runs `sip2rtmp call` in a fresh network namespace that has only `lo`, with dnsmasq as
its resolver (tests/support/srv_world.py) and a standalone baresip callee that plays a tone.
What happened is measured from outside sip2rtmp wherever possible: by the failed server
itself, the callee's log, the kernel's rule counters and the recording sip2rtmp wrote; the
JSON events and the SIP log (`--log-file`) say what sip2rtmp made of it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sip2rtmp.lab import LabError, write_tone
from sip2rtmp.lab.standalone import StandaloneCallee, start_standalone_callee
from tests.integration.conftest import CallProcess, CallRun
from tests.integration.sip_log import Logged, sip_messages
from tests.integration.test_relay_media import assert_tone
from tests.support.netns import NetnsUnavailable, NetworkNamespace
from tests.support.srv_world import (
    DOMAIN,
    BlackHole,
    Resolver,
    SrvTarget,
    refusing_peer,
    start_resolver,
)

pytestmark = pytest.mark.netns

TONE_HZ = 440
CALLEE_SIP_PORT = 5080
CALLEE_RTP_PORTS = (11000, 11099)
"""Outside sip2rtmp's own RTP range (16384-32767): a rule on these ports hits only the
callee's media."""
LIVE = SrvTarget("live", "127.0.0.1", CALLEE_SIP_PORT, priority=20)
"""The callee, published as the second choice."""
INVITE_TIMEOUT = 32.0
"""RFC 3261 §17.1.1.2 Timer B (64*T1): the longest an INVITE client transaction may wait."""
AT_ONCE = 2.0
"""From the first INVITE to the answer when nothing has to time out: an error response or an
ICMP error moves to the next server without waiting."""
SERVER_CHANGED = "failover"
"""The JSON name of the relay's SipServerChanged event (docs/events.md)."""
RECONNECTED = "reconnected"
"""The JSON name of the relay's SipReconnected event (docs/events.md)."""
BYE_RECEIVED = "session closed: Connection reset by peer"
WATCH_TABLE = "s2r_watch"
"""Rules that only count."""
"""What baresip 1.0 logs when the far end's BYE ends its call."""


@dataclass
class World:
    namespace: NetworkNamespace
    callee: StandaloneCallee
    run_dir: Path

    def resolver(self, *targets: SrvTarget, transport: str = "udp") -> Resolver:
        try:
            return start_resolver(
                self.namespace, self.run_dir / "dns", targets, transport=transport
            )
        except NetnsUnavailable as exc:
            pytest.fail(f"could not start the namespace's resolver: {exc}", pytrace=False)

    def call(self, *args: str, max_duration: float) -> CallProcess:
        """`sip2rtmp call` in the namespace, without registering, recording to a file."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIP2RTMP_")}
        argv = [
            "--no-register", "--no-video", "--record", str(self.record), "--json",
            "--max-duration", str(max_duration), "--log-file", str(self.log), *args,
        ]  # fmt: skip
        return CallProcess(argv, self.log, "", env, prefix=self.namespace.prefix)

    @property
    def record(self) -> Path:
        return self.run_dir / "call.flv"

    @property
    def log(self) -> Path:
        return self.run_dir / "sip2rtmp.log"

    def load(self, table: str, rules: str) -> None:
        """An nftables table of one output chain (all loopback traffic crosses it)."""
        self.namespace.nft(
            f"table inet {table} {{\n    chain output {{\n"
            f"        type filter hook output priority 0; policy accept;\n{rules}\n    }}\n}}\n"
        )

    def counters(self, table: str) -> dict[str, int]:
        return {r.comment: r.packets for r in self.namespace.rule_counters("inet", table)}

    def drop(self, table: str) -> None:
        self.namespace.nft(f"delete table inet {table}")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A namespace with only `lo` and a tone callee at sip:tone@127.0.0.1:5080 (UDP and TCP)."""
    try:
        namespace = NetworkNamespace.create("s2rf")
    except NetnsUnavailable as exc:
        pytest.fail(f"this environment cannot run network-namespace tests: {exc}", pytrace=False)
    callee: StandaloneCallee | None = None
    try:
        tone = tmp_path / f"tone-{TONE_HZ}.wav"
        write_tone(tone, TONE_HZ, seconds=90)
        callee = start_standalone_callee(
            tmp_path / "callee",
            tone,
            sip_port=CALLEE_SIP_PORT,
            rtp_ports=CALLEE_RTP_PORTS,
            prefix=namespace.prefix,
        )
        yield World(namespace, callee, tmp_path)
    except LabError as exc:
        pytest.fail(f"could not start the callee: {exc}", pytrace=False)
    finally:
        if callee is not None:
            callee.stop()
        namespace.delete()


def timestamp(event: dict[str, Any]) -> float:
    """An event's `ts` (ISO 8601 UTC) as seconds since the epoch."""
    return datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()


def status(run: CallRun, name: str) -> dict[str, Any]:
    found = [e for e in run.events if e.get("status") == name]
    assert found, f"no {name} status: {evidence(run)}"
    return found[0]


def events(run: CallRun, name: str) -> list[dict[str, Any]]:
    return [e for e in run.events if e.get("event") == name]


def evidence(run: CallRun, callee: StandaloneCallee | None = None) -> str:
    """Everything needed to tell where a failed run went wrong."""
    parts = [
        f"exit {run.returncode} after {run.elapsed:.1f} s",
        "events:\n" + run.stdout[-3000:],
        "stderr:\n" + run.stderr[-1500:],
        "SIP log:\n" + run.log[-4000:],
    ]
    if callee is not None:
        parts.append("callee log:\n" + callee.log()[-1500:])
    return "\n".join(parts)


def sent_invites(run: CallRun) -> list[Logged]:
    return [m for m in sip_messages(run.log) if m.direction == "sent" and m.is_request("INVITE")]


def first_peers(messages: list[Logged]) -> list[str]:
    """The peers in the order they were first used."""
    return list(dict.fromkeys(m.peer for m in messages))


def assert_failed_over(
    run: CallRun, world: World, failed: str, reason_has: str, within: float
) -> None:
    """The call went to `failed` first, then to the callee, was answered by the callee within
    `within` s of the first INVITE, said so in one server-changed event, and the recording
    carries the callee's tone."""
    assert run.returncode == 0, evidence(run, world.callee)
    trying, established = status(run, "TRYING"), status(run, "ESTABLISHED")
    answer_after = timestamp(established) - timestamp(trying)
    assert answer_after <= within, (
        f"answered {answer_after:.1f} s after the first INVITE (limit {within} s)\n"
        + evidence(run, world.callee)
    )
    assert first_peers(sent_invites(run)) == [failed, LIVE.hostport], evidence(run)
    changes = events(run, SERVER_CHANGED)
    assert len(changes) == 1, f"expected one {SERVER_CHANGED} event: {evidence(run)}"
    change = changes[0]
    assert (change.get("failed"), change.get("next")) == (failed, LIVE.hostport), change
    reason = str(change.get("reason") or "")
    assert reason and reason_has in reason, f"the event does not say why ({reason_has}): {change}"
    assert timestamp(change) <= timestamp(established), "the failover was reported late"
    callee_log = world.callee.log()
    assert callee_log.count("Call established") == 1, callee_log[-1500:]
    assert BYE_RECEIVED in callee_log, "the callee never got the BYE"
    assert_tone(world.record, TONE_HZ)


def test_the_world_resolves_names_and_answers_calls(world: World) -> None:
    """The world itself: a name the namespace's resolver knows leads to the callee, and the
    call records its tone. Without this, a failing failover test could be the world's fault."""
    resolver = world.resolver(LIVE)
    try:
        run = world.call("--callee", f"sip:tone@{LIVE.host}:{LIVE.port}", max_duration=4).wait(30)
    finally:
        resolver.stop()
    assert run.returncode == 0, evidence(run, world.callee)
    assert f"A {LIVE.host}" in resolver.queries(), resolver.log()
    assert first_peers(sent_invites(run)) == [LIVE.hostport], evidence(run)
    assert BYE_RECEIVED in world.callee.log(), "the callee never got the BYE"
    assert_tone(world.record, TONE_HZ)


def test_a_silent_first_server_fails_over_to_the_second(world: World) -> None:
    """RFC 3263 §4.3: the next SRV target when a request times out. The first target is a
    black hole (it reads and never answers, not even with ICMP)."""
    dead = SrvTarget("dead", "127.0.0.2", 5062, priority=10)
    hole = BlackHole.open(world.namespace, (dead.address, dead.port))
    resolver = world.resolver(dead, LIVE)
    try:
        process = world.call("--sip-domain", DOMAIN, "--callee", "tone", max_duration=6)
        run = process.wait(INVITE_TIMEOUT + 30)
    finally:
        hole.close()
        resolver.stop()
    assert f"SRV _sip._udp.{DOMAIN}" in resolver.queries(), resolver.log()
    invites = hole.requests("INVITE")
    assert invites, f"the first SRV target never got an INVITE: {evidence(run)}"
    assert all(a.request is not None and "tone@" in a.request.uri for a in invites)
    established = timestamp(status(run, "ESTABLISHED"))
    assert established - invites[0].at <= INVITE_TIMEOUT, (
        f"answered {established - invites[0].at:.1f} s after the first INVITE was lost"
    )
    assert len(invites) == len(hole.arrivals), "the silent server got more than INVITEs"
    assert_failed_over(run, world, dead.hostport, "", within=INVITE_TIMEOUT)


def test_an_unreachable_first_server_fails_over_at_once(world: World) -> None:
    """RFC 3261 §8.1.3.1 / RFC 3263 §4.3: an ICMP port-unreachable is a transport error; the
    next target is tried without waiting for a timeout."""
    closed = SrvTarget("closed", "127.0.0.3", 5063, priority=10)
    world.load(
        WATCH_TABLE,
        "        icmp type destination-unreachable icmp code port-unreachable counter "
        'comment "port-unreachable"',
    )
    resolver = world.resolver(closed, LIVE)
    try:
        run = world.call("--sip-domain", DOMAIN, "--callee", "tone", max_duration=6).wait(60)
    finally:
        resolver.stop()
    assert world.counters(WATCH_TABLE)["port-unreachable"] > 0, "no ICMP error was sent"
    assert_failed_over(run, world, closed.hostport, "", within=AT_ONCE)


def test_503_with_retry_after_moves_to_the_next_server_at_once(world: World) -> None:
    """RFC 3263 §4.3 and RFC 3261 §21.5.4: a 503 from the first target sends the request to
    the next one at once (Retry-After keeps the refusing server out for that long)."""
    peer = refusing_peer(world.namespace, retry_after=120)
    busy = SrvTarget("busy", "127.0.0.1", peer.port, priority=10)
    resolver = world.resolver(busy, LIVE)
    try:
        run = world.call("--sip-domain", DOMAIN, "--callee", "tone", max_duration=6).wait(60)
    finally:
        peer.stop()
        resolver.stop()
    assert len(peer.invites) == 1, f"the refusing server got {len(peer.invites)} INVITEs"
    assert peer.seen.ack_at is not None, "the 503 was not acknowledged (RFC 3261 §17.1.1.3)"
    assert_failed_over(run, world, busy.hostport, "503", within=AT_ONCE)


CUT_TABLE = "s2r_cut"
CUT_RULES = f"""\
        tcp dport {CALLEE_SIP_PORT} tcp flags & rst == 0 counter reject with tcp reset \
comment "cut-to-callee"
        tcp sport {CALLEE_SIP_PORT} tcp flags & rst == 0 counter reject with tcp reset \
comment "cut-from-callee\""""
"""Every segment either way is answered with a reset; the resets themselves must pass (a
reset's reset would be dropped, and the cut would go unnoticed)."""
ACCEPT_RULE = (
    f"        tcp sport {CALLEE_SIP_PORT} tcp flags & (syn | ack) == syn | ack counter "
    'comment "accepted"'
)
"""The callee's SYN-ACKs: connections it accepted (a SYN rejected by the cut never gets one)."""
CUT_AFTER = 3.0
CUT_FOR = 5.0


def test_a_tcp_connection_cut_mid_call_is_reopened_and_the_call_stays_up(world: World) -> None:
    """The SIP connection to the callee is reset mid-call (nftables rejects every segment with
    a TCP reset for a few seconds); sip2rtmp re-opens it, the call and the stream go on, and
    the call ends normally with a BYE over the new connection."""
    world.namespace.nft(
        f"table inet {WATCH_TABLE} {{\n    chain output {{\n"
        "        type filter hook output priority -10; policy accept;\n"
        f"{ACCEPT_RULE}\n    }}\n}}\n"
    )
    process = world.call(
        "--callee", f"sip:tone@127.0.0.1:{CALLEE_SIP_PORT}", "--sip-transport", "tcp",
        "--keepalive", "1", max_duration=16,
    )  # fmt: skip
    process.wait_for_status("ESTABLISHED", 15)
    time.sleep(CUT_AFTER)
    world.load(CUT_TABLE, CUT_RULES)
    cut_at = time.time()
    time.sleep(CUT_FOR)
    cut = world.counters(CUT_TABLE)
    world.drop(CUT_TABLE)
    restored_at = time.time()
    run = process.wait(30)
    assert run.returncode == 0, evidence(run, world.callee)
    assert sum(cut.values()) > 0, "the cut never hit a segment: nothing was sent during it"
    reconnected = events(run, RECONNECTED)
    assert reconnected, f"no {RECONNECTED} event: {evidence(run, world.callee)}"
    accepted = world.counters(WATCH_TABLE)["accepted"]
    assert accepted >= 2, f"the callee accepted {accepted} TCP connections: none was re-opened"
    assert all(cut_at < timestamp(e) for e in reconnected), reconnected
    assert timestamp(reconnected[-1]) <= restored_at + 5, (
        f"reconnected {timestamp(reconnected[-1]) - restored_at:.1f} s after the path came back"
    )
    finish = status(run, "FINISH")
    assert float(finish["duration"]) >= 15, f"the call ended early: {finish}"
    callee_log = world.callee.log()
    assert callee_log.count("Call established") == 1, callee_log[-1500:]
    assert BYE_RECEIVED in callee_log, "the callee never got the BYE over the new connection"
    assert_tone(world.record, TONE_HZ)


MEDIA_TIMEOUT = 3.0
STOP_AFTER = 4.0
STOP_TABLE = "s2r_stop"
STOP_RULE = (
    f"        udp sport {CALLEE_RTP_PORTS[0]}-{CALLEE_RTP_PORTS[1]} counter drop "
    'comment "callee-media"'
)


def test_media_that_stops_mid_call_ends_the_call_with_bye_and_exit_9(world: World) -> None:
    """The callee's RTP stops 4 s into the call (an nftables drop): the run hangs up with BYE
    within --media-timeout + 2 s of the stop, and exits 9 (docs/exit-codes.md)."""
    process = world.call(
        "--callee", f"sip:tone@127.0.0.1:{CALLEE_SIP_PORT}",
        "--media-timeout", str(MEDIA_TIMEOUT), max_duration=40,
    )  # fmt: skip
    process.wait_for_status("ESTABLISHED", 15)
    time.sleep(STOP_AFTER)
    world.load(STOP_TABLE, STOP_RULE)
    stopped_at = time.time()
    run = process.wait(30)
    assert run.returncode == 9, evidence(run, world.callee)
    assert world.counters(STOP_TABLE)["callee-media"] > 0, "the rule dropped nothing"
    failed = status(run, "FAILED")
    after = timestamp(failed) - stopped_at
    assert MEDIA_TIMEOUT - 0.5 <= after <= MEDIA_TIMEOUT + 2, (
        f"the run failed {after:.1f} s after the media stopped\n{evidence(run)}"
    )
    assert failed.get("exitCode") == 9, failed
    assert "media stopped" in str(failed.get("reason")), failed
    byes = [m for m in sip_messages(run.log) if m.direction == "sent" and m.is_request("BYE")]
    assert len(byes) == 1, f"{len(byes)} BYEs in the SIP log"
    assert BYE_RECEIVED in world.callee.log(), "the callee never got the BYE"
