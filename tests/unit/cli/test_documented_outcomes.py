"""How `sip2rtmp call` ends when the callee does not take the call, measured on the real
command against a SIP peer on loopback: the exit code of docs/exit-codes.md, the status of
docs/events.md, the offer it sent, and the sockets it holds while it rings."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sip2rtmp.netaddr import Address
from sip2rtmp.sip.message import Request
from tests.support.sip_peer import SipPeer
from tests.unit.cli.test_contract import SIP2RTMP, clean_env

TERMINAL = {"FINISH", "FAILED", "BUSY"}


class RejectingPeer(SipPeer):
    """Answers the INVITE with `status` or, with None, rings until a CANCEL, which ends the
    INVITE with 487 (RFC 3261 §9.2)."""

    def __init__(self, status: int | None, reason: str = "") -> None:
        super().__init__(send_media=False)
        self.status = status
        self.reason = reason
        self.invites = 0
        self._ringing: tuple[Request, Address] | None = None

    def _on_sip(self) -> None:
        cancel = self._sip.recv(16, socket.MSG_PEEK).startswith(b"CANCEL ")
        super()._on_sip()
        if cancel and self._ringing is not None:
            invite, addr = self._ringing
            self._sip.sendto(self._response(invite, 487, "Request Terminated").to_bytes(), addr)

    def _on_invite(self, invite: Request, addr: Address) -> None:
        self.invites += 1
        self._ringing = (invite, addr)
        self.seen.offer = invite.body.decode("utf-8", "replace")
        if self.status is None:
            self._sip.sendto(self._response(invite, 180, "Ringing").to_bytes(), addr)
        else:
            self._sip.sendto(self._response(invite, self.status, self.reason).to_bytes(), addr)


def call_command(peer: SipPeer, *extra: str) -> list[str]:
    return [
        SIP2RTMP, "call", "--json", "--no-register", "--callee", peer.uri,
        "--sip-login", "relay", "--sip-outbound-proxy", f"127.0.0.1:{peer.port}",
        "--rtmp-url", "rtmp://127.0.0.1:1/live", "--call-id", "doc-run-1", *extra,
    ]  # fmt: skip


@pytest.fixture
def started() -> Iterator[list[SipPeer]]:
    peers: list[SipPeer] = []
    yield peers
    for peer in peers:
        peer.stop()


def run_against(
    peer: SipPeer, started: list[SipPeer], *extra: str
) -> tuple[int, list[dict[str, Any]]]:
    peer.start()
    started.append(peer)
    done = subprocess.run(
        call_command(peer, *extra),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=clean_env(),
    )  # fmt: skip
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(events) == len(done.stdout.splitlines()), "stdout holds only JSON events"
    return done.returncode, events


@pytest.mark.parametrize(
    ("status", "reason", "code", "final"),
    [
        (486, "Busy Here", 5, "BUSY"),
        (600, "Busy Everywhere", 5, "BUSY"),
        (603, "Decline", 5, "BUSY"),
        (404, "Not Found", 4, "FAILED"),
        (480, "Temporarily Unavailable", 4, "FAILED"),
        (604, "Does Not Exist Anywhere", 4, "FAILED"),
    ],
)
def test_a_refused_call_exits_with_its_documented_code(
    status: int, reason: str, code: int, final: str, started: list[SipPeer]
) -> None:
    """exit-codes.md: 4 for 404/480/604, 5 for 486/600/603; events.md: BUSY for the latter,
    exactly one terminal status, `ts` and the given `callId` on every event."""
    peer = RejectingPeer(status, reason)
    exit_code, events = run_against(peer, started)
    assert exit_code == code
    assert peer.invites >= 1
    terminal = [e for e in events if e.get("status") in TERMINAL]
    assert [(e["status"], e["exitCode"]) for e in terminal] == [(final, code)]
    assert str(status) in terminal[0]["reason"]
    assert events[-1] is terminal[0]
    for event in events:
        assert event["callId"] == "doc-run-1"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|\+00:00)", event["ts"])


def test_the_offer_lists_the_default_codecs_in_order(started: list[SipPeer]) -> None:
    """cli.md: `--audio-codecs` defaults to Opus, G.722, PCMU, PCMA, in that order."""
    peer = RejectingPeer(486, "Busy Here")
    run_against(peer, started)
    audio = next(line for line in peer.seen.offer.splitlines() if line.startswith("m=audio"))
    payload_types = audio.split()[3:]
    names = {
        pt: name for pt, name in re.findall(r"^a=rtpmap:(\d+) ([^/]+)/", peer.seen.offer, re.M)
    }
    signalling = ("telephone-event", "CN")  # DTMF and comfort noise come after the codecs
    named = [names.get(pt, pt) for pt in payload_types if names.get(pt) not in signalling]
    assert named == ["opus", "G722", "PCMU", "PCMA"]


def _listening_tcp_inodes() -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A":  # TCP_LISTEN
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _udp_inodes() -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        inodes |= {row.split()[9] for row in Path(table).read_text().splitlines()[1:]}
    return inodes


def test_a_ringing_run_holds_no_listening_tcp_port(started: list[SipPeer]) -> None:
    """security.md: `sip2rtmp` opens no TCP port that listens beyond loopback (and with only
    rtmp:// outputs none at all); its sockets are the SIP socket and the RTP/RTCP pairs. Then
    exit 6 when unanswered within --ring-timeout."""
    peer = RejectingPeer(None)
    peer.start()
    started.append(peer)
    process = subprocess.Popen(
        call_command(peer, "--ring-timeout", "3"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env=clean_env(), text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not peer.invites and time.monotonic() < deadline:
            time.sleep(0.05)
        assert peer.invites, "the INVITE never arrived"
        sockets = _socket_inodes(process.pid)
        udp = sockets & _udp_inodes()
        assert sockets & _listening_tcp_inodes() == set()
        assert len(udp) >= 5, "the SIP socket and an RTP/RTCP pair per medium are seen"
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 6, stderr


def test_refused_sockets_are_what_the_sampling_sees() -> None:
    """The /proc reading above finds a listener when there is one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert _socket_inodes(os.getpid()) & _listening_tcp_inodes()


class FallingSilentPeer(SipPeer):
    """Answers and streams its tone until told to fall silent: a callee whose RTP stops
    mid-call (gone without a BYE, or the network between cut)."""

    def fall_silent(self) -> float:
        """Stop sending now; when it stopped."""
        self._media_stop.set()
        return time.monotonic()


def test_a_callee_whose_rtp_stops_is_hung_up_a_media_timeout_later(
    started: list[SipPeer], tmp_path: Path
) -> None:
    """cli.md: `--media-timeout` also ends a call whose RTP stops mid-call, with a BYE;
    exit-codes.md: 9, with a line that says the callee's media stopped."""
    peer = FallingSilentPeer()
    peer.start()
    started.append(peer)
    command = [
        SIP2RTMP, "call", "--json", "--no-register", "--no-video", "--callee", peer.uri,
        "--sip-login", "relay", "--sip-outbound-proxy", f"127.0.0.1:{peer.port}",
        "--record", str(tmp_path / "call.flv"), "--media-timeout", "2", "--max-duration", "30",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env=clean_env(), text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while peer.seen.rtp_sent < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert peer.seen.rtp_sent >= 150, "3 s of the callee's tone never went out"
        silent_at = peer.fall_silent()
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 9, stderr
    assert peer.seen.bye_at is not None, "no BYE reached the callee"
    assert 2.0 - 0.1 < peer.seen.bye_at - silent_at < 2.0 + 1.0
    final = json.loads(stdout.splitlines()[-1])
    assert (final["status"], final["exitCode"]) == ("FAILED", 9)
    assert final["reason"] == "the callee's media stopped: no RTP for 2 s"
    assert "the callee's media stopped: no RTP for 2 s" in stderr
