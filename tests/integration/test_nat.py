"""Calls from behind a NAT to a carrier that trusts our SDP and Contact (support/nat_world.py).

The carrier's kamailio has no NAT fix-up and its callees send RTP to the SDP's address: the
stream has the tone only if sip2rtmp advertised the router's public side. Each claim is
measured where it lands: the tone in nginx's recording, the BYE in sip2rtmp's SIP log, the
router's own conntrack table, the addresses in the offer sip2rtmp sent.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sip2rtmp.lab import RELAY_ACCOUNT
from sip2rtmp.lab.accounts import account
from sip2rtmp.lab.recording import decode_audio, tone_seconds
from sip2rtmp.nat.stun import STUN_PORT
from sip2rtmp.sip.sdp import SessionDescription
from tests.integration.conftest import SIP2RTMP, read_events
from tests.integration.sip_log import Logged, count, sip_messages
from tests.support.nat_world import (
    CARRIER_ADDRESS,
    CARRIER_DOMAIN,
    CARRIER_SIP_HOST,
    HOME_ADDRESS,
    ONE_TO_ONE_ADDRESS,
    PORT_RANGE,
    ROUTER_WAN_ADDRESS,
    RTMP_URL,
    STUN_HOST,
    NatMode,
    NatWorld,
)

pytestmark = [pytest.mark.netns, pytest.mark.lab]

RATE = 48000
TONE_HZ = account("tone").tone_hz or 0
DEFAULT_UDP_TIMEOUTS = (30, 120)
"""The kernel's own conntrack UDP timeouts (one-way, two-way), restored after every test."""
ROUTER_UDP_TIMEOUT = 30
"""A common home-router and cloud-NAT figure for an idle UDP mapping."""


@dataclass
class HomeCall:
    """A finished `sip2rtmp call` run inside home: its events, debug log and recording."""

    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    log: str
    recording: Path | None

    def finish(self) -> dict[str, Any]:
        ends = [e for e in self.events if e.get("status") in ("FINISH", "FAILED", "BUSY")]
        assert ends, f"no terminal status: {self.events}"
        return ends[-1]

    def nat(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == "nat" and e.get("kind") == kind]

    def sip(self) -> list[Logged]:
        return sip_messages(self.log)

    def offer_hosts(self) -> tuple[str, list[int]]:
        """The `c=` host and `m=` ports of the first INVITE's SDP offer."""
        invites = [m for m in self.sip() if m.direction == "sent" and m.is_request("INVITE")]
        assert invites, "no INVITE in the debug log"
        sdp = SessionDescription.parse(invites[0].message.body.decode())
        host = sdp.connection.address if sdp.connection else ""
        return host, [media.port for media in sdp.media]

    def describe(self) -> str:
        return (
            f"exit {self.returncode}, {self.finish()}\n"
            f"nat events: {self.nat('sip') + self.nat('media')}\n{self.stderr[-1500:]}"
        )


class HomeCallProcess:
    """`sip2rtmp call --json` running in home, through the router, to the carrier."""

    def __init__(self, world: NatWorld, tmp_path: Path, callee: str, *extra: str) -> None:
        self.world = world
        self.stream_key = f"n{uuid.uuid4().hex[:10]}"
        self.log_file = tmp_path / f"{self.stream_key}.log"
        self.started = time.monotonic()
        self.established: float | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIP2RTMP_")}
        env["SIP2RTMP_SIP_PASSWORD"] = RELAY_ACCOUNT.password
        argv = [
            SIP2RTMP, "call", "--sip-login", RELAY_ACCOUNT.user, "--sip-domain", CARRIER_DOMAIN,
            "--callee", callee, "--rtmp-url", RTMP_URL, "--rtmp-stream", self.stream_key,
            "--no-video", "--json", "--log-file", str(self.log_file), "-vv", *extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            world.in_home(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._stdout.append(line)
            if '"ESTABLISHED"' in line and self.established is None:
                self.established = time.monotonic()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)

    def nat_events(self, kind: str) -> list[dict[str, Any]]:
        """The `nat` events of `kind` printed so far."""
        events = [json.loads(line) for line in list(self._stdout) if '"nat"' in line]
        return [e for e in events if e.get("event") == "nat" and e.get("kind") == kind]

    def wait_established(self, timeout: float) -> float:
        """The moment (monotonic) the callee answered."""
        deadline = time.monotonic() + timeout
        while self.established is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.2)
                pytest.fail(f"no ESTABLISHED: {''.join(self._stdout)}{''.join(self._stderr)}")
            time.sleep(0.05)
        return self.established

    def wait(self, timeout: float) -> HomeCall:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"sip2rtmp did not end within {timeout} s: {''.join(self._stdout)}")
        for reader in self._readers:
            reader.join(5)
        stdout = "".join(self._stdout)
        log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return HomeCall(
            returncode=self.process.returncode,
            events=read_events(stdout, self.process.returncode),
            stderr="".join(self._stderr),
            log=log,
            recording=self.world.recording(self.stream_key),
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def world(nat_world: NatWorld) -> Iterator[NatWorld]:
    """The session's NAT world, with the router's timeouts and mode back to defaults after."""
    yield nat_world
    nat_world.set_udp_timeouts(*DEFAULT_UDP_TIMEOUTS)
    nat_world.set_nat(NatMode.MASQUERADE)


@pytest.fixture
def home_call(world: NatWorld, tmp_path: Path) -> Iterator[Any]:
    """Factory: start a call from home; whatever still runs at the end is killed."""
    started: list[HomeCallProcess] = []

    def start(callee: str, *extra: str) -> HomeCallProcess:
        call = HomeCallProcess(world, tmp_path, callee, *extra)
        started.append(call)
        return call

    yield start
    for call in started:
        call.kill()


def tone_share(recording: Path | None) -> float:
    """Share of 100 ms windows after the first second in which the callee's tone dominates."""
    assert recording is not None, "nginx recorded nothing for the stream"
    samples = decode_audio(recording, RATE)[RATE:]
    present = tone_seconds(samples, RATE, TONE_HZ)
    return float(present.mean()) if present.size else 0.0


def run_home_call(home_call: Any, callee: str, *extra: str, max_duration: float) -> HomeCall:
    process: HomeCallProcess = home_call(callee, "--max-duration", str(max_duration), *extra)
    return process.wait(max_duration + 40)


# ---- 1. SRV only, masquerade: auto works, off is the real fault --------------------------------


def test_srv_only_domain_through_masquerade_records_the_tone(
    world: NatWorld, home_call: Any
) -> None:
    """Nothing but `--sip-domain carrier.test`: the server is found by SRV (the bare domain
    has no A record), and the public address learnt from `received`/`rport` goes into the
    offer, so the callee's RTP comes back through the router."""
    world.set_nat(NatMode.MASQUERADE)
    asked_before = len(world.dns_queries())
    call = run_home_call(home_call, "tone", max_duration=8)
    assert call.returncode == 0, call.describe()
    asked = world.dns_queries()[asked_before:]
    assert ("SRV", f"_sip._udp.{CARRIER_DOMAIN}") in asked, asked
    first = call.sip()[0]
    assert first.is_request("REGISTER") and first.peer == f"{CARRIER_ADDRESS}:5060", first
    host, _ = call.offer_hosts()
    assert host == ROUTER_WAN_ADDRESS, f"the offer advertised {host}"
    assert [e["source"] for e in call.nat("media")] == ["received"], call.describe()
    share = tone_share(call.recording)
    assert share >= 0.9, f"the tone is in {share:.0%} of 100 ms windows\n{call.describe()}"


def test_nat_off_through_masquerade_loses_the_callees_audio(
    world: NatWorld, home_call: Any
) -> None:
    """The same call advertising the private address: the call itself goes through (INVITE,
    200, ACK), but no RTP arrives and the run ends with the media timeout's exit code. The
    fault is the NAT's: the offer named 192.168.77.2, and the callee's own kernel refused to
    send there (baresip counts the failed sends and logs the unreachable network)."""
    world.set_nat(NatMode.MASQUERADE)
    callee_log_before = len(world.callee_log("tone"))
    call = run_home_call(home_call, "tone", "--nat", "off", "--media-timeout", "5", max_duration=20)
    host, _ = call.offer_hosts()
    assert host == HOME_ADDRESS, f"with --nat off the offer advertised {host}"
    statuses = [e.get("status") for e in call.events if e.get("event") == "status"]
    assert "ESTABLISHED" in statuses, call.describe()
    assert call.returncode == 9, call.describe()
    share = tone_share(call.recording) if call.recording is not None else 0.0
    assert share < 0.1, f"tone in {share:.0%} of windows although the offer was private"
    callee_log = wait_for_call_summary(world, "tone", callee_log_before)
    assert "Network is unreachable" in callee_log, callee_log[-1500:]
    sent_errors = int(CALLEE_ERRORS.findall(callee_log)[-1][0])
    assert sent_errors > 0, "the callee reports no failed RTP sends"


CALLEE_ERRORS = re.compile(r"errors:\s+(\d+)\s+(\d+)")
"""baresip's RTP summary at the end of a call (`rtp_stats yes`): transmit and receive errors."""


def wait_for_call_summary(world: NatWorld, user: str, since: int, timeout: float = 5.0) -> str:
    """What the callee logged since offset `since`, once it has logged the call's summary."""
    deadline = time.monotonic() + timeout
    while not CALLEE_ERRORS.search(text := world.callee_log(user)[since:]):
        if time.monotonic() > deadline:
            pytest.fail(f"the callee logged no RTP summary:\n{text[-1500:]}")
        time.sleep(0.1)
    return text


# ---- 2. STUN through a port-changing NAT, a configured address through 1:1 NAT ----------------


def test_stun_through_port_range_nat_records_the_tone(world: NatWorld, home_call: Any) -> None:
    """The router maps every port into 40000-40999: `received` would name the right host but
    the local RTP port. STUN from the RTP socket learns the mapped port, which the offer
    advertises."""
    world.set_nat(NatMode.PORT_RANGE)
    call = run_home_call(home_call, "tone", "--stun", f"{STUN_HOST}:{STUN_PORT}", max_duration=8)
    assert call.returncode == 0, call.describe()
    media = call.nat("media")
    assert [e["source"] for e in media] == ["stun"], call.describe()
    assert media[0]["address"].partition(":")[0] == ROUTER_WAN_ADDRESS, media
    host, ports = call.offer_hosts()
    assert host == ROUTER_WAN_ADDRESS
    assert all(PORT_RANGE[0] <= port <= PORT_RANGE[1] for port in ports), ports
    share = tone_share(call.recording)
    assert share >= 0.9, f"the tone is in {share:.0%} of 100 ms windows\n{call.describe()}"


def test_public_address_through_one_to_one_nat_records_the_tone(
    world: NatWorld, home_call: Any
) -> None:
    world.set_nat(NatMode.ONE_TO_ONE)
    call = run_home_call(home_call, "tone", "--public-address", ONE_TO_ONE_ADDRESS, max_duration=8)
    assert call.returncode == 0, call.describe()
    assert [e["source"] for e in call.nat("media")] == ["configured"], call.describe()
    host, _ = call.offer_hosts()
    assert host == ONE_TO_ONE_ADDRESS
    share = tone_share(call.recording)
    assert share >= 0.9, f"the tone is in {share:.0%} of 100 ms windows\n{call.describe()}"


# ---- 3. Keep-alives hold the SIP mapping through a router that forgets after 30 s -------------

CALL_SECONDS = 60
HANGUP_AFTER = 50


def sip_mapping_alive(conntrack: str, public_port: int) -> bool:
    """Whether the router still maps the carrier's SIP port to `public_port` (a reply tuple
    `src=<carrier> ... sport=5060 dport=<public port>`)."""
    pattern = rf"src={re.escape(CARRIER_ADDRESS)} dst=\S+ sport=5060 dport={public_port}\b"
    return any(re.search(pattern, line) for line in conntrack.splitlines())


def sip_public_port(process: HomeCallProcess) -> int:
    """The router's port for the run's SIP socket, from its `nat` event of kind `sip`."""
    events = process.nat_events("sip")
    assert events, "no nat event of kind sip"
    return int(str(events[-1]["address"]).rpartition(":")[2])


def test_keepalives_hold_the_binding_for_the_callees_bye(world: NatWorld, home_call: Any) -> None:
    """Two calls at once through a router whose UDP mappings live 30 s idle; each callee
    hangs up 50 s after answering. With the default keep-alive the SIP mapping is still
    there and the BYE arrives; with `--keepalive 0` the mapping is gone (the router's own
    table says so), the BYE is lost and the call runs to its maximum duration."""
    world.set_nat(NatMode.MASQUERADE)
    world.set_udp_timeouts(ROUTER_UDP_TIMEOUT)
    assert world.udp_timeouts() == (ROUTER_UDP_TIMEOUT, ROUTER_UDP_TIMEOUT)
    duration = ["--max-duration", str(CALL_SECONDS), "--media-timeout", "15"]
    kept = home_call("tone", *duration)
    lapsed = home_call("pcmu", *duration, "--keepalive", "0")
    answered = {"tone": kept.wait_established(20), "pcmu": lapsed.wait_established(20)}
    mappings: dict[str, bool] = {}
    for user in sorted(answered, key=answered.__getitem__):
        time.sleep(max(0.0, answered[user] + HANGUP_AFTER - time.monotonic()))
        process = kept if user == "tone" else lapsed
        public_port = sip_public_port(process)
        mappings[user] = sip_mapping_alive(world.conntrack(), public_port)
        world.hang_up(user)
    kept_call = kept.wait(CALL_SECONDS + 20)
    lapsed_call = lapsed.wait(CALL_SECONDS + 20)

    assert mappings == {"tone": True, "pcmu": False}, (
        f"SIP mappings at hangup (True: present): {mappings}\n{world.conntrack()}"
    )
    assert kept_call.returncode == 0, kept_call.describe()
    finish = kept_call.finish()
    assert finish["reason"] == "hangup by callee", kept_call.describe()
    assert abs(finish["duration"] - HANGUP_AFTER) <= 3, finish
    assert count(kept_call.sip(), "received", method="BYE") >= 1

    assert lapsed_call.returncode == 0, lapsed_call.describe()
    finish = lapsed_call.finish()
    assert finish["reason"] == "max duration reached", lapsed_call.describe()
    assert count(lapsed_call.sip(), "received", method="BYE") == 0


# ---- 4. check: DNS targets and the public address ---------------------------------------------


def test_check_reports_the_srv_target_and_the_public_address(world: NatWorld) -> None:
    world.set_nat(NatMode.MASQUERADE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIP2RTMP_")}
    env["SIP2RTMP_SIP_PASSWORD"] = RELAY_ACCOUNT.password
    argv = [
        SIP2RTMP, "check", "--sip-login", RELAY_ACCOUNT.user, "--sip-domain", CARRIER_DOMAIN,
        "--rtmp-url", RTMP_URL, "--rtmp-stream", "check",
    ]  # fmt: skip
    done = subprocess.run(
        world.in_home(argv), capture_output=True, text=True, env=env, timeout=60, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"_sip._udp.{CARRIER_DOMAIN}" in output, output
    assert CARRIER_SIP_HOST in output and f"{CARRIER_ADDRESS}:5060" in output, output
    public = re.compile(rf"{re.escape(ROUTER_WAN_ADDRESS)}(?![\d.])")
    assert public.search(output), f"the public address {ROUTER_WAN_ADDRESS} is not reported"
