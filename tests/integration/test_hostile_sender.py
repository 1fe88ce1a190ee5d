"""A third party on another port tries to take over a live call's broadcast.

During a PCMU call to a baresip tone callee relayed into the lab's nginx-rtmp, an intruder
on the same host but another port sends a well-formed 2600 Hz PCMU stream with its own SSRC
to the relay's audio port, and forged RTCP sender reports to its RTCP port and to the RTP
port (as with rtcp-mux). The recording must never carry the intruder's tone, the callee's
tone must go on during and after the intrusion, the relay must send nothing to the intruder
(symmetric RTP only toward a validated source) and its stats must count what it dropped.
The intruder joins a live stream in one test, and streams from before the answer, ahead of
the callee's first packet, in the other.
"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sip2rtmp.lab import Lab, account
from sip2rtmp.lab.accounts import LabAccount
from sip2rtmp.lab.recording import decode_audio, tone_seconds
from sip2rtmp.rtp.packet import RtpPacket
from sip2rtmp.rtp.rtcp import SenderReport, SourceDescription, compound, ntp_from_unix
from tests.support.pcap import CaptureUnavailable, UdpCapture, read_udp
from tests.support.sip_peer import SAMPLES_PER_PACKET, tone_packet

pytestmark = pytest.mark.lab

CALLEE = account("pcmu")
RINGING = account("noanswer")
"""A callee that rings until told to answer: the intruder gets a head start."""
RING_S = 1.0
INTRUDER_HZ = 2600
"""The classic in-band trunk tone: far from the callee's 440 Hz, easy to find in a spectrum."""
RATE = 48000
WINDOW = 0.1
"""Seconds per FFT window of the recording."""
RELAY_PORTS_FILTER = "udp and dst portrange 16384-32767"
"""Everything sent to sip2rtmp's RTP port range: the callee's and the intruder's streams."""
SDP_AUDIO_PORT = re.compile(r"^m=audio (\d+) ", re.MULTILINE)
FORGED_SR_OFFSET = 3600.0
"""The forged sender reports claim a wall clock an hour ahead (the finding's A/V sync shift)."""


class Intruder:
    """Sends a consistent PCMU stream (sequential numbers, one SSRC, 20 ms apart) from a port
    of its own to the relay's audio RTP port, plus a forged SR every half second."""

    def __init__(self, host: str, rtp_port: int) -> None:
        self.target = (host, rtp_port)
        self.rtcp_target = (host, rtp_port + 1)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port: int = self.sock.getsockname()[1]
        self.ssrc = random.randrange(1 << 32)
        self.rtp_sent = 0
        self.rtcp_sent = 0
        self.received = 0
        """Datagrams the relay sent to the intruder: none may come."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="intruder", daemon=True)

    def start(self) -> Intruder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.sock.close()

    def _run(self) -> None:
        seq, timestamp = random.randrange(1 << 16), random.randrange(1 << 32)
        start = time.monotonic()
        index = 0
        while not self._stop.is_set():
            packet = RtpPacket(
                0,
                (seq + index) & 0xFFFF,
                (timestamp + index * SAMPLES_PER_PACKET) & 0xFFFFFFFF,
                self.ssrc,
                tone_packet(index, INTRUDER_HZ),
                marker=index == 0,
            )
            self._send(packet.serialize(), self.target)
            self.rtp_sent += 1
            if index % 25 == 0:
                report = SenderReport(
                    self.ssrc,
                    ntp_from_unix(time.time() + FORGED_SR_OFFSET),
                    (timestamp + index * SAMPLES_PER_PACKET) & 0xFFFFFFFF,
                    index,
                    index * SAMPLES_PER_PACKET,
                )
                forged = compound(report, SourceDescription.cname(self.ssrc, "intruder@lab"))
                for target in (self.rtcp_target, self.target):
                    self._send(forged, target)
                    self.rtcp_sent += 1
            index += 1
            self._listen_until(start + index * 0.02)

    def _send(self, data: bytes, target: tuple[str, int]) -> None:
        with contextlib.suppress(OSError):  # an ICMP error from an earlier datagram
            self.sock.sendto(data, target)

    def _listen_until(self, deadline: float) -> None:
        """Wait for the next send slot while counting whatever the relay sends us."""
        while (wait := deadline - time.monotonic()) > 0:
            self.sock.settimeout(wait)
            try:
                self.sock.recv(2048)
            except TimeoutError:
                return
            except OSError:  # ICMP port unreachable once the relay closed its ports
                continue
            self.received += 1


def relay_audio_port(log_file: Path, timeout: float = 15.0) -> int:
    """The relay's audio RTP port, from the SDP offer of the INVITE in its debug log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log_file.exists():
            found = SDP_AUDIO_PORT.search(log_file.read_text(errors="replace"))
            if found:
                return int(found.group(1))
        time.sleep(0.005)
    pytest.fail(f"no INVITE with an audio offer in {log_file}")


def recording_of(lab: Lab, key: str) -> Path:
    paths = lab.recordings(key)
    assert len(paths) == 1, f"expected one recording of {key}, found {paths}"
    return paths[0]


def windows_with(samples: np.ndarray[Any, Any], hz: float) -> np.ndarray[Any, Any]:
    return tone_seconds(samples, RATE, hz, WINDOW)


def band_ratio(samples: np.ndarray[Any, Any], hz: float) -> float:
    """Share of the recording's spectral energy within ±20 Hz of ``hz``: even a faint
    intruder mixed under the callee's tone would show here."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size))) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1 / RATE)
    band = spectrum[np.abs(freqs - hz) <= 20].sum()
    return float(band / spectrum[1:].sum())


def assert_not_hijacked(
    run: Any, lab: Lab, intruder: Intruder, stopped_after_answer: float, callee: LabAccount = CALLEE
) -> dict[str, Any]:
    """The recording carries the callee's tone and never the intruder's; returns the stats."""
    assert run.returncode == 0, run.stderr[-2000:]
    samples = decode_audio(recording_of(lab, run.stream_key), RATE)
    assert samples.size > 4 * RATE, "the recording holds less than 4 s of audio"
    intruder_windows = windows_with(samples, INTRUDER_HZ)
    assert not intruder_windows.any(), (
        f"the intruder's {INTRUDER_HZ} Hz dominates {int(intruder_windows.sum())} windows, "
        f"first at {float(np.argmax(intruder_windows)) * WINDOW:.1f} s"
    )
    ratio = band_ratio(samples, INTRUDER_HZ)
    assert ratio < 1e-3, f"{ratio:.2%} of the recording's energy is at {INTRUDER_HZ} Hz"
    callee_hz = callee.tone_hz or 0
    body = windows_with(samples[RATE:], callee_hz)
    assert body.mean() >= 0.95, f"the callee's tone is in only {body.mean():.0%} of windows"
    # The recording starts at about the answer: the windows after the intruder stopped.
    after = windows_with(samples[int((stopped_after_answer + 0.5) * RATE) :], callee_hz)
    assert after.size >= 15, "too little recording after the intruder stopped"
    assert after.mean() >= 0.95, (
        f"after the intruder stopped, the callee's tone is in only {after.mean():.0%} of windows"
    )
    assert intruder.received == 0, f"the relay sent {intruder.received} datagrams to the intruder"
    stats = [e for e in run.events if e["event"] == "stats" and "rtp" in e]
    assert stats, f"no stats event with rtp counters: {run.events}"
    rtp: dict[str, Any] = stats[-1]["rtp"]
    assert rtp["source_changes"] == 0, rtp
    assert rtp["rejected_rtcp"] >= intruder.rtcp_sent // 2, (rtp, intruder.rtcp_sent)
    return rtp


def test_intruder_mid_call_cannot_take_the_broadcast(start_call: Any, lab: Lab) -> None:
    """A third party joins a live stream for 3 s: dropped, counted, and the callee goes on."""
    call = start_call(CALLEE.user, "--no-video", "--max-duration", "8")
    port = relay_audio_port(call.log_file)
    call.wait_for_status("ESTABLISHED", 15)
    answered = time.monotonic()
    time.sleep(2.0)
    intruder = Intruder("127.0.0.1", port).start()
    time.sleep(3.0)
    intruder.stop()
    stopped_after_answer = time.monotonic() - answered
    run = call.wait(30)
    rtp = assert_not_hijacked(run, lab, intruder, stopped_after_answer)
    assert intruder.rtp_sent >= 140, intruder.rtp_sent
    assert rtp["rejected_source"] >= intruder.rtp_sent - 2, (rtp, intruder.rtp_sent)
    assert rtp["received"] >= 330, rtp  # the callee's 20 ms packets, about 7 s of them


def test_intruder_sending_before_the_callee_is_not_latched(
    start_call: Any, lab: Lab, tmp_path: Path
) -> None:
    """The intruder streams to the relay's port while the callee still rings, so its packets
    come long before the callee's first: the callee, from the address the SDP names, is still
    the one accepted and the intruder is never latched."""
    low, high = RINGING.rtp_ports or (0, 0)
    try:
        capture = UdpCapture.start(tmp_path / "to-relay.pcap", RELAY_PORTS_FILTER)
    except CaptureUnavailable as exc:
        pytest.fail(f"this environment cannot capture packets: {exc}", pytrace=False)
    try:
        call = start_call(
            RINGING.user, "--no-video", "--audio-codecs", "PCMU", "--max-duration", "5"
        )
        port = relay_audio_port(call.log_file)
        intruder = Intruder("127.0.0.1", port).start()
        call.wait_for_status("RING", 15)
        time.sleep(RING_S)
        lab.callee_command(RINGING.user, "accept")
        call.wait_for_status("ESTABLISHED", 5)
        answered = time.monotonic()
        time.sleep(2.5)
        intruder.stop()
        stopped_after_answer = time.monotonic() - answered
        run = call.wait(30)
    finally:
        capture.stop()
    to_relay = [d for d in read_udp(capture.path) if d.destination_port == port]
    callee_first = min(d.time for d in to_relay if low <= d.source_port <= high)
    ahead = [d for d in to_relay if d.source_port == intruder.port and d.time < callee_first]
    assert len(ahead) >= 25, f"only {len(ahead)} intruder datagrams before the callee's first"
    rtp = assert_not_hijacked(run, lab, intruder, stopped_after_answer, RINGING)
    media = next(e for e in run.events if e["event"] == "media" and e["kind"] == "audio")
    assert low <= int(media["remote"].rsplit(":", 1)[1]) <= high, media
    assert rtp["early"] >= 25, rtp  # the intruder's packets while it rang
    assert rtp["rejected_source"] + rtp["early"] >= intruder.rtp_sent - 2, (
        rtp,
        intruder.rtp_sent,
    )
