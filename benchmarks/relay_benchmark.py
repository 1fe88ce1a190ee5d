"""Cost and delay of relaying one lab call, against the ffmpeg pipeline a user would script.

Two runs, one after the other, each holding a call to a lab callee for the same time and
publishing into the lab's nginx-rtmp; ``--case`` picks an audio-only call, an H.264 video call
(passed through) or a VP8 one (transcoded to H.264):

1. ``sip2rtmp call … --json``: the real CLI, measured as a whole process.
2. The do-it-yourself baseline: sip2rtmp's SIP core places the call with an offer whose RTP
   ports belong to ``ffmpeg``, which reads the call through an SDP file and publishes AAC plus
   H.264 into nginx: the callee's H.264 copied, its VP8 transcoded, or for an audio-only call
   a black 1280x720 10 fps slate. Only the ffmpeg process is measured.

CPU and peak RSS come from the kernel (``wait4`` rusage over the whole process life, and
``/proc/<pid>/stat`` over the steady part of the call). Timings come from a tcpdump capture on
loopback: the SIP 200 OK, the first RTMP media message, and the audio delay, found by muting
the callee for a second now and then and matching each tone onset in the RTP it sends with the
same onset in the decoded AAC of the published stream.

    .venv/bin/python -m benchmarks.relay_benchmark --case h264 --write docs/performance.md
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import av
import numpy as np
import numpy.typing as npt

from sip2rtmp.lab import RELAY_ACCOUNT, RTMP_PORT, RTMP_URL, SIP_DOMAIN, SIP_HOST, SIP_PORT, Lab
from sip2rtmp.lab import account as lab_account
from sip2rtmp.media.audio import audio_context, rtp_audio_codec
from sip2rtmp.media.outbound import OutboundAudio
from sip2rtmp.media.pipeline import MediaConfig
from sip2rtmp.net.sip_session import SipSession
from sip2rtmp.rtp.packet import RtpPacket
from sip2rtmp.rtp.rtcp import PictureLossIndication
from sip2rtmp.sip.auth import Credentials
from sip2rtmp.sip.sdp import NegotiatedStream, SessionDescription, build_offer, negotiate
from sip2rtmp.sip.useragent import UserAgentConfig

CPU_RATIO_TARGET = 0.5
"""sip2rtmp may use at most half the CPU of the ffmpeg baseline."""
ADDED_LATENCY_TARGET_S = 0.100
"""Audio delay beyond the jitter buffer's depth."""
FIRST_PACKET_TARGET_S = 0.300
"""From the 200 OK to the first FLV media packet on the wire."""
RSS_TARGET_MB = 120.0

STEADY_SKIP_S = 2.0
"""The steady-state CPU window starts this long after the answer (call set-up excluded)."""
PROBE_FIRST_S = 3.0
PROBE_PERIOD_S = 5.037
"""No multiple of sip2rtmp's 40 ms loop grid or 200 ms media tick: the eleven onsets of a
60 s call fall at phases spread over two ticks, not at one phase that luck picks per run."""
PROBE_MUTED_S = 1.0
ONSET_QUIET_S = 0.4
"""An onset is the first loud sample after at least this long without one."""
PAIRING_WINDOW_S = 2.0
SLATE_SIZE = "1280x720"
SLATE_FPS = 10
KEYFRAME_INTERVAL_S = 2
VIDEO_FPS = 25
"""The lab callees' frame rate; ffmpeg guesses 90000 from the RTP clock unless told."""
CORE_SHARE_TARGET = 0.05
"""An H.264 passthrough call may use at most this share of one core."""


@dataclass(frozen=True)
class Case:
    """One kind of call the benchmark can measure."""

    callee: str
    video_codec: str | None
    """What the baseline offers for video, in build_offer's names; None for audio only.

    H.264 is offered in packetization-mode 0: the lab's ``video`` callee rejects a mode-1-only
    offer, and answers sip2rtmp's offer with mode 0 too.
    """
    summary: str
    audio_codec: str | None = None
    """The one audio codec both runs offer; None: sip2rtmp offers all it has, and the baseline
    the one that call agreed on."""


CASES = {
    "audio": Case("tone", None, "audio only, the baseline adds a black slate"),
    "g711": Case("pcmu", None, "audio only in G.711 µ-law: nothing above 4 kHz"),
    "h264": Case("video", "H264/0", "H.264 640x480 25 fps passed through"),
    "h264-g711": Case("video", "H264/0", "H.264 passed through, G.711 µ-law audio", "PCMU"),
    "vp8": Case("vp8", "VP8", "VP8 640x480 25 fps transcoded to H.264"),
}

Samples = npt.NDArray[np.float32]


# ---- processes --------------------------------------------------------------------------------


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _stat_fields(path: Path) -> list[str]:
    """Fields of a /proc stat line after the command name (which may contain spaces)."""
    text = path.read_text()
    return text[text.rindex(")") + 2 :].split()


def process_cpu_s(pid: int) -> float:
    """user+sys of every thread of `pid`, plus children it has reaped."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return sum(int(value) for value in fields[11:15]) / _clock_ticks()


def thread_cpu_s(pid: int) -> dict[int, float]:
    """user+sys per thread id; threads come and go, so a vanished one is skipped."""
    result: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = _stat_fields(task / "stat")
            result[int(task.name)] = (int(fields[11]) + int(fields[12])) / _clock_ticks()
    return result


def socket_ports(pid: int) -> tuple[set[int], set[int]]:
    """Local UDP and TCP ports of the sockets `pid` holds open right now."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])

    def ports(table: str) -> set[int]:
        found = set()
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            columns = line.split()
            if columns[9] in inodes:
                found.add(int(columns[1].rsplit(":", 1)[1], 16))
        return found

    return ports("udp"), ports("tcp")


@dataclass
class Usage:
    """What one measured process cost."""

    cpu_s: float
    """user+sys over its whole life, start-up and shutdown included."""
    max_rss_kb: int
    steady_cpu_s: float
    steady_s: float
    threads: list[tuple[str, float]]
    """CPU seconds per thread over the steady window, busiest first."""

    @property
    def steady_cpu_per_min(self) -> float:
        return self.steady_cpu_s * 60.0 / self.steady_s if self.steady_s else 0.0


class Watched:
    """A child process whose sockets, thread CPU and steady-window CPU are sampled."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.udp_ports: set[int] = set()
        self.tcp_ports: set[int] = set()
        self._window: list[tuple[float, float, dict[int, float]]] = []
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_sockets, daemon=True)
        self._sampler.start()

    def _sample_sockets(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(OSError):
                udp, tcp = socket_ports(self.process.pid)
                self.udp_ports |= udp
                self.tcp_ports |= tcp

    def mark(self) -> None:
        """One edge of the steady window (call twice)."""
        pid = self.process.pid
        self._window.append((time.monotonic(), process_cpu_s(pid), thread_cpu_s(pid)))

    def reap(self, timeout: float) -> Usage:
        """Wait for the exit (SIGKILL after `timeout`) and read the kernel's accounting."""
        pid = self.process.pid
        deadline = time.monotonic() + timeout
        while True:
            waited, status, rusage = os.wait4(pid, os.WNOHANG)
            if waited:
                break
            if time.monotonic() > deadline:
                self.process.kill()
                deadline = float("inf")
            time.sleep(0.05)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self._stop.set()
        self._sampler.join()
        steady_cpu = steady_s = 0.0
        threads: list[tuple[str, float]] = []
        if len(self._window) == 2:
            (t0, cpu0, threads0), (t1, cpu1, threads1) = self._window
            steady_cpu, steady_s = cpu1 - cpu0, t1 - t0
            for rank, tid in enumerate(sorted(threads1)):
                name = "main" if tid == pid else f"thread {rank}"
                threads.append((name, threads1[tid] - threads0.get(tid, 0.0)))
            threads.sort(key=lambda item: -item[1])
        return Usage(
            cpu_s=rusage.ru_utime + rusage.ru_stime,
            max_rss_kb=rusage.ru_maxrss,
            steady_cpu_s=steady_cpu,
            steady_s=steady_s,
            threads=threads,
        )


def sleep_until(deadline: float) -> None:
    time.sleep(max(deadline - time.monotonic(), 0.0))


# ---- the capture ----------------------------------------------------------------------------


class Capture:
    """tcpdump on loopback for SIP, the callee's RTP and RTMP, written to a pcap file."""

    def __init__(self, path: Path, callee_rtp: tuple[int, int]) -> None:
        self.path = path
        low, high = callee_rtp
        expression = f"udp port {SIP_PORT} or udp portrange {low}-{high} or tcp port {RTMP_PORT}"
        self._process = subprocess.Popen(
            [
                "tcpdump",
                "-i",
                "lo",
                "-n",
                "-U",
                "-s",
                "0",
                "-B",
                "8192",
                "-w",
                str(path),
                *expression.split(),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self._process.stderr is not None
        line = self._process.stderr.readline().decode(errors="replace")
        if "listening" not in line:
            self._process.wait()
            raise RuntimeError(f"tcpdump did not start: {line.strip()}")

    def stop(self) -> None:
        time.sleep(0.3)
        self._process.send_signal(signal.SIGINT)
        self._process.communicate(timeout=10)


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured IPv4 UDP or TCP packet."""

    time: float
    tcp: bool
    src_port: int
    dst_port: int
    seq: int
    payload: bytes


def read_pcap(path: Path) -> Iterator[Frame]:
    """The IPv4 UDP/TCP packets of a classic pcap file (Ethernet or Linux cooked link)."""
    data = path.read_bytes()
    magic = data[:4]
    order = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    fraction = 1e-9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    link = struct.unpack(order + "I", data[20:24])[0]
    link_header = {1: 14, 113: 16}.get(link)
    if link_header is None:
        raise ValueError(f"unsupported pcap link type {link}")
    offset = 24
    while offset + 16 <= len(data):
        seconds, fractional, length, _ = struct.unpack(order + "IIII", data[offset : offset + 16])
        packet = data[offset + 16 : offset + 16 + length]
        offset += 16 + length
        ethertype = packet[link_header - 2 : link_header]
        ip = packet[link_header:]
        if ethertype != b"\x08\x00" or len(ip) < 20:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4], "big")
        protocol = ip[9]
        when = seconds + fractional * fraction
        ports = ip[ihl : ihl + 4]
        src, dst = int.from_bytes(ports[:2], "big"), int.from_bytes(ports[2:], "big")
        if protocol == 17:
            yield Frame(when, False, src, dst, 0, ip[ihl + 8 : total])
        elif protocol == 6:
            seq = int.from_bytes(ip[ihl + 4 : ihl + 8], "big")
            data_offset = (ip[ihl + 12] >> 4) * 4
            yield Frame(when, True, src, dst, seq, ip[ihl + data_offset : total])


@dataclass(frozen=True, slots=True)
class RtpFrame:
    time: float
    payload_type: int
    payload: bytes


def parse_rtp(frame: Frame) -> RtpFrame | None:
    data = frame.payload
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    header = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10 and len(data) >= header + 4:
        header += 4 + 4 * int.from_bytes(data[header + 2 : header + 4], "big")
    end = len(data) - (data[-1] if data[0] & 0x20 else 0)
    return RtpFrame(frame.time, data[1] & 0x7F, data[header:end])


@dataclass(frozen=True, slots=True)
class RtmpMessage:
    type_id: int
    payload: bytes
    time: float
    """Capture time of the segment that carried the message's last byte."""


def tcp_stream(
    frames: list[Frame], src_port: int, dst_port: int
) -> tuple[bytes, list[tuple[int, float]]]:
    """The in-order bytes one side sent, and (end offset, capture time) of each segment."""
    segments = [f for f in frames if f.tcp and f.src_port == src_port and f.dst_port == dst_port]
    segments = [f for f in segments if f.payload]
    stream = bytearray()
    carried: list[tuple[int, float]] = []
    expected: int | None = None
    for segment in segments:
        if expected is None:
            expected = segment.seq
        skip = (expected - segment.seq) & 0xFFFFFFFF
        if skip >= 1 << 31:
            break
        fresh = segment.payload[skip:]
        if fresh:
            stream += fresh
            carried.append((len(stream), segment.time))
            expected = (expected + len(fresh)) & 0xFFFFFFFF
    return bytes(stream), carried


def rtmp_messages(stream: bytes, carried: list[tuple[int, float]]) -> list[RtmpMessage]:
    """Messages of an RTMP client's byte stream (after the C0/C1/C2 handshake)."""
    ends = [end for end, _ in carried]
    chunk_size = 128
    headers: dict[int, list[int]] = {}
    """Per chunk stream: [length, type id, extended-timestamp flag]."""
    partial: dict[int, bytearray] = {}
    messages: list[RtmpMessage] = []
    pos = 1 + 1536 + 1536
    while pos < len(stream):
        first = stream[pos]
        fmt, csid = first >> 6, first & 0x3F
        pos += 1
        if csid in (0, 1):
            width = csid + 1
            csid = 64 + int.from_bytes(stream[pos : pos + width], "little")
            pos += width
        header = headers.setdefault(csid, [0, 0, 0])
        if fmt <= 2:
            header[2] = int(stream[pos : pos + 3] == b"\xff\xff\xff")
            pos += 3
        if fmt <= 1:
            header[0] = int.from_bytes(stream[pos : pos + 3], "big")
            header[1] = stream[pos + 3]
            pos += 4
        if fmt == 0:
            pos += 4
        if header[2]:
            pos += 4
        body = partial.setdefault(csid, bytearray())
        take = min(chunk_size, header[0] - len(body))
        if take < 0 or pos + take > len(stream):
            break
        body += stream[pos : pos + take]
        pos += take
        if len(body) == header[0]:
            del partial[csid]
            when = carried[min(bisect.bisect_left(ends, pos), len(carried) - 1)][1]
            messages.append(RtmpMessage(header[1], bytes(body), when))
            if header[1] == 1:
                chunk_size = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
    return messages


def is_media(message: RtmpMessage) -> bool:
    """An FLV audio or video packet carrying media, not a sequence header."""
    return message.type_id in (8, 9) and len(message.payload) > 2 and message.payload[1] == 1


# ---- audio onsets -----------------------------------------------------------------------------


def _mono(frame: Any) -> Samples:
    samples = frame.to_ndarray()
    if samples.dtype == np.int16:
        samples = samples.astype(np.float32) / 32768.0
    return np.asarray(samples[0], dtype=np.float32)


def decode_rtp(codec: str, packets: list[RtpFrame]) -> tuple[Samples, list[int]]:
    """Decoded samples of a call's RTP, and the packet index of every sample."""
    info = rtp_audio_codec(codec)
    decoder = audio_context(info.ffmpeg_name, "r")
    decoder.sample_rate = info.sample_rate
    decoder.layout = info.decode_layout or "mono"
    return _decode_each(decoder, [packet.payload for packet in packets])


def decode_flv_audio(messages: list[RtmpMessage]) -> tuple[Samples, list[int], list[float]]:
    """Decoded AAC of an RTMP stream, the message index of every sample, each message's time."""
    audio = [m for m in messages if m.type_id == 8 and len(m.payload) > 2]
    config = next((m.payload[2:] for m in audio if m.payload[1] == 0), None)
    frames = [m for m in audio if m.payload[1] == 1]
    if config is None or not frames:
        return np.zeros(0, np.float32), [], []
    decoder = audio_context("aac", "r")
    decoder.extradata = config
    samples, owner = _decode_each(decoder, [m.payload[2:] for m in frames])
    return samples, owner, [m.time for m in frames]


def _decode_each(decoder: Any, payloads: list[bytes]) -> tuple[Samples, list[int]]:
    parts: list[Samples] = []
    owner: list[int] = []
    for index, payload in enumerate(payloads):
        for frame in decoder.decode(av.Packet(payload)):
            samples = _mono(frame)
            parts.append(samples)
            owner.extend([index] * len(samples))
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), owner


def onsets(samples: Samples, rate: int) -> list[int]:
    """Sample indices where the tone comes back after at least ONSET_QUIET_S of quiet.

    Loud means at least half the stream's steady amplitude, so codec pre-echo and the
    rising edge of a resampled onset stay below it on both sides of the relay.
    """
    if not len(samples):
        return []
    magnitude = np.abs(samples)
    loud = np.flatnonzero(magnitude >= 0.5 * np.percentile(magnitude, 99))
    if not len(loud):
        return []
    quiet = int(ONSET_QUIET_S * rate)
    starts = [int(index) for index in loud[1:][np.diff(loud) >= quiet]]
    return ([int(loud[0])] if loud[0] >= quiet else []) + starts


def audio_delays(codec: str, rtp: list[RtpFrame], messages: list[RtmpMessage]) -> list[float]:
    """For each tone onset: from the RTP packet that carried it to the FLV packet that did."""
    samples, packet_of = decode_rtp(codec, rtp)
    flv, message_of, message_times = decode_flv_audio(messages)
    rate = rtp_audio_codec(codec).sample_rate
    arrivals = [rtp[packet_of[index]].time for index in onsets(samples, rate)]
    writes = [message_times[message_of[index]] for index in onsets(flv, 48_000)]
    delays = []
    for arrival in arrivals:
        later = [w - arrival for w in writes if 0 <= w - arrival < PAIRING_WINDOW_S]
        if later:
            delays.append(min(later))
    return delays


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


# ---- the callee -------------------------------------------------------------------------------


class Callee:
    """The lab callee's baresip control port: mutes and unmutes to make tone onsets."""

    def __init__(self, user: str) -> None:
        port = lab_account(user).ctrl_port
        if port is None:
            raise ValueError(f"lab user {user} has no control port")
        self._port = port

    def command(self, command: str) -> str:
        body = json.dumps({"command": command, "params": "", "token": command}).encode()
        with socket.create_connection((SIP_HOST, self._port), timeout=5) as connection:
            connection.sendall(str(len(body)).encode() + b":" + body + b",")
            reply = b""
            while not reply.endswith(b","):
                chunk = connection.recv(65536)
                if not chunk:
                    break
                reply += chunk
        text = reply.split(b":", 1)[1][:-1] if b":" in reply else b"{}"
        return str(json.loads(text).get("data", ""))

    def active_calls(self) -> int:
        found = re.search(r"Active calls \((\d+)\)", self.command("listcalls"))
        return int(found.group(1)) if found else -1

    def probe(self, start: float, end: float) -> str:
        """Mute for a second every few seconds between `start` and `end` (monotonic).

        ``mute`` acts on the callee's current call, so a slot is skipped whenever the callee
        has any call besides ours.
        """
        probes = skipped = 0
        moment = start
        while moment + PROBE_MUTED_S + 1.0 < end:
            sleep_until(moment)
            moment += PROBE_PERIOD_S
            if self.active_calls() != 1:
                skipped += 1
                continue
            self.command("mute")
            try:
                time.sleep(PROBE_MUTED_S)
            finally:
                self.command("mute")
            probes += 1
        note = f"{probes} onsets"
        return note + (f", {skipped} skipped: the callee had other calls" if skipped else "")


# ---- the two runs -----------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    codec: str
    call_s: float
    usage: Usage
    wire: Wire | None
    probe_note: str
    depth_ms: list[float] = field(default_factory=list)
    live_event_s: float | None = None
    """ESTABLISHED event to the output's `live` event (sip2rtmp polls output state at 2 Hz)."""
    video_codec: str | None = None

    @property
    def cpu_per_min(self) -> float:
        return self.usage.cpu_s * 60.0 / self.call_s


@dataclass
class Options:
    duration: float
    callee: str
    video_codec: str | None
    capture: bool
    probe: bool
    work_dir: Path
    audio_codec: str | None = None


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def _sip2rtmp_command() -> list[str]:
    script = Path(sys.executable).with_name("sip2rtmp")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sip2rtmp"]


class EventReader:
    """Reads the NDJSON events of a `sip2rtmp call --json` with their arrival times."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                with self._changed:
                    self.events.append((time.time(), record))
                    self._changed.notify_all()
        with self._changed:
            self.events.append((time.time(), {"event": "eof"}))
            self._changed.notify_all()

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout: float
    ) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for when, record in self.events:
                    if match(record):
                        return when, record
                    if record["event"] == "eof":
                        raise RuntimeError("sip2rtmp ended before the call was answered")
                if not self._changed.wait(max(deadline - time.monotonic(), 0.0)):
                    raise RuntimeError("no ESTABLISHED event in time")

    def find(self, match: Callable[[dict[str, Any]], bool]) -> list[tuple[float, dict[str, Any]]]:
        with self._changed:
            return [(when, record) for when, record in self.events if match(record)]


def run_sip2rtmp(options: Options) -> Run:
    callee = lab_account(options.callee)
    assert callee.rtp_ports is not None
    stream_key = f"bench-sip2rtmp-{_stamp()}"
    capture = (
        Capture(options.work_dir / "sip2rtmp.pcap", callee.rtp_ports) if options.capture else None
    )
    command = [
        *_sip2rtmp_command(),
        "call",
        "--callee",
        options.callee,
        "--sip-login",
        RELAY_ACCOUNT.user,
        "--sip-domain",
        SIP_DOMAIN,
        "--sip-outbound-proxy",
        SIP_HOST,
        "--rtmp-url",
        RTMP_URL,
        "--rtmp-stream",
        stream_key,
        *([] if options.video_codec else ["--no-video"]),
        *(["--audio-codecs", options.audio_codec] if options.audio_codec else []),
        "--max-duration",
        f"{options.duration:g}",
        "--json",
    ]
    env = dict(os.environ, SIP2RTMP_SIP_PASSWORD=RELAY_ACCOUNT.password)
    with (options.work_dir / "sip2rtmp.stderr").open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=env)
    assert process.stdout is not None
    watched = Watched(process)
    events = EventReader(process.stdout)
    try:
        answered_wall, answered = events.wait_for(
            lambda r: r.get("status") == "ESTABLISHED", timeout=30
        )
    except RuntimeError:
        process.terminate()
        watched.reap(10)
        raise
    answered_at = time.monotonic() - (time.time() - answered_wall)
    sleep_until(answered_at + STEADY_SKIP_S)
    watched.mark()
    note = _probe(options, answered_at)
    sleep_until(answered_at + options.duration - 0.5)
    watched.mark()
    usage = watched.reap(timeout=options.duration + 30)
    if capture is not None:
        capture.stop()
    _forget_recordings(stream_key)
    codec = str(answered.get("audio", {}).get("codec", "PCMU"))
    live = events.find(lambda r: r.get("event") == "output" and r.get("state") == "live")
    depths = [
        float(r["rtp"]["depth_ms"])
        for _, r in events.find(lambda r: r.get("event") == "stats" and "rtp" in r)
    ]
    wire = None
    if capture is not None:
        wire = analyse(
            capture.path,
            sip_ports=watched.udp_ports,
            rtp_ports=watched.udp_ports,
            rtmp_ports=watched.tcp_ports,
            codec=codec,
        )
    return Run(
        label="sip2rtmp",
        codec=codec,
        call_s=options.duration,
        usage=usage,
        wire=wire,
        probe_note=note,
        depth_ms=depths,
        live_event_s=live[0][0] - answered_wall if live else None,
        video_codec=options.video_codec,
    )


def _forget_recordings(stream_key: str) -> None:
    """nginx records every lab stream; a benchmark's recordings are of no use afterwards."""
    time.sleep(0.5)
    for path in Lab().recordings(stream_key):
        path.unlink(missing_ok=True)


def _probe(options: Options, answered_at: float) -> str:
    if not options.probe:
        return "not probed"
    end = answered_at + options.duration - 1.0
    return Callee(options.callee).probe(answered_at + PROBE_FIRST_S, end)


def free_rtp_ports(count: int) -> int:
    """An even UDP port with the `count` - 1 ports after it free too (RTP/RTCP pairs)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((SIP_HOST, 0))
            port = int(probe.getsockname()[1]) & ~1
        try:
            with contextlib.ExitStack() as stack:
                for offset in range(count):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    sock.bind((SIP_HOST, port + offset))
            return port
        except OSError:
            continue
    raise RuntimeError("no free RTP ports")


def _x264(gop: int) -> list[str]:
    """libx264 as sip2rtmp runs it: live settings and a keyframe every `gop` frames exactly."""
    return [
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-sc_threshold",
        "0",
    ]


def ffmpeg_command(sdp: Path, target: str, video_codec: str | None) -> list[str]:
    """What a user would run: the call's RTP in, AAC plus H.264 out.

    The H.264 is the callee's own, copied; VP8 transcoded; or, for an audio-only call, a
    live-encoded black slate.
    """
    if video_codec is None:
        video = [
            "-re",
            "-f",
            "lavfi",
            "-i",
            f"color=c=black:s={SLATE_SIZE}:r={SLATE_FPS}",
            "-map",
            "1:v",
            "-map",
            "0:a",
            *_x264(SLATE_FPS * KEYFRAME_INTERVAL_S),
        ]
    else:
        encode = (
            ["-c:v", "copy"]
            if video_codec == "H264/0"
            else [
                *_x264(VIDEO_FPS * KEYFRAME_INTERVAL_S),
                "-r",
                str(VIDEO_FPS),
            ]
        )
        video = ["-map", "0:v", "-map", "0:a", *encode]
    return [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-protocol_whitelist",
        "file,udp,rtp",
        "-i",
        str(sdp),
        *video,
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-ar",
        "48000",
        "-ac",
        "1",
        "-f",
        "flv",
        target,
    ]


def baseline_offer(port: int, codec: str, video_codec: str | None) -> tuple[str, str]:
    """The SIP leg's offer, with ffmpeg's ports, and ffmpeg's SDP for what the callee sends.

    ffmpeg opens one stream per media section and reads its first payload type, so its SDP
    keeps only the codec of each section (telephone-events dropped).
    """
    offer = build_offer(
        SIP_HOST,
        port,
        port + 2 if video_codec else None,
        session_id=int(time.time()),
        audio_codecs=(codec,),
        video_codecs=(video_codec,) if video_codec else (),
        rtcp_mux=False,
    )
    sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=baseline\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    for media in SessionDescription.parse(offer).media:
        payload_type = media.payload_types[0]
        sdp += f"m={media.kind} {media.port} RTP/AVP {payload_type}\r\n"
        rtpmap = next(v for v in media.values("rtpmap") if v.startswith(f"{payload_type} "))
        sdp += f"a=rtpmap:{rtpmap}\r\n"
        fmtp = media.fmtp_text(payload_type)
        sdp += f"a=fmtp:{payload_type} {fmtp}\r\n" if fmtp else ""
    return offer, sdp


class SipLeg:
    """sip2rtmp's SIP core in a thread: calls the callee with RTP pointed at ffmpeg's ports.

    It also sends 20 ms of encoded silence every 20 ms toward the callee, as sip2rtmp does:
    the lab's baresip hangs up after 30 s without RTP from the caller (``rtp_timeout``), even
    when none ever arrived. With video it asks for keyframes too (``_send_to_callee``).
    """

    def __init__(self, callee: str, offer: str) -> None:
        self.answered = threading.Event()
        self.answered_at = 0.0
        self.sip_port = 0
        self.error: BaseException | None = None
        self._hangup = threading.Event()
        self._args = (callee, offer)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def hang_up(self) -> None:
        self._hangup.set()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._call(*self._args))
        except BaseException as error:
            self.error = error
            self.answered.set()

    async def _call(self, callee: str, offer: str) -> None:
        config = UserAgentConfig(
            user=RELAY_ACCOUNT.user,
            domain=SIP_DOMAIN,
            credentials=Credentials(RELAY_ACCOUNT.user, RELAY_ACCOUNT.password),
            transport="udp",
            outbound_proxy=SIP_HOST,
            port=SIP_PORT,
        )
        async with SipSession(config) as sip:
            self.sip_port = sip.local_address[1]
            call = await sip.invite(f"sip:{callee}@{SIP_DOMAIN}", offer.encode(), ring_timeout=20)
            self.answered_at = time.monotonic()
            session = negotiate(offer, call.answer_sdp.decode("utf-8", "replace"))
            offered = SessionDescription.parse(offer).media
            if session.audio is None or (len(offered) > 1 and session.video is None):
                raise RuntimeError("the callee did not accept the offered media")
            self.answered.set()
            sender = asyncio.create_task(
                _send_to_callee(session.audio, session.video, _video_ssrc(call.answer_sdp))
            )
            await asyncio.to_thread(self._hangup.wait)
            sender.cancel()
            await call.hangup()


def _video_ssrc(answer: bytes) -> int:
    """The SSRC the callee declares for its video (baresip does), else 0."""
    media = SessionDescription.parse(answer.decode("utf-8", "replace")).media
    ssrc = next((m.first("ssrc") for m in media if m.kind == "video"), None)
    return int(ssrc.split()[0]) if ssrc else 0


async def _send_to_callee(
    stream: NegotiatedStream, video: NegotiatedStream | None, video_ssrc: int
) -> None:
    """Silence every 20 ms, and a PLI every KEYFRAME_INTERVAL_S when there is video.

    baresip sends a keyframe when the call starts and then only when asked, and ffmpeg
    cannot start a video stream without one; sip2rtmp asks on a schedule of its own, so both
    published streams can be joined within a few seconds.
    """
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(SIP_HOST, 0)
    )
    source = OutboundAudio(stream.codec)
    start = loop.time()
    try:
        for slot in itertools.count():
            packet = RtpPacket(
                stream.payload_type,
                slot & 0xFFFF,
                slot * source.timestamp_step & 0xFFFFFFFF,
                0x5EED,
                source.silence,
                marker=slot == 0,
            )
            transport.sendto(packet.serialize(), stream.rtp_address)
            if video is not None and slot % (KEYFRAME_INTERVAL_S * 50) == 0:
                pli = PictureLossIndication(0x5EED, video_ssrc)
                transport.sendto(pli.serialize(), video.rtcp_address)
            await asyncio.sleep(max(start + (slot + 1) * 0.02 - loop.time(), 0.0))
    finally:
        transport.close()


def run_baseline(options: Options, codec: str) -> Run:
    callee = lab_account(options.callee)
    assert callee.rtp_ports is not None
    port = free_rtp_ports(4 if options.video_codec else 2)
    offer, sdp_text = baseline_offer(port, codec, options.video_codec)
    sdp = options.work_dir / "call.sdp"
    sdp.write_text(sdp_text)
    stream_key = f"bench-ffmpeg-{_stamp()}"
    target = f"{RTMP_URL}/{stream_key}"
    capture = (
        Capture(options.work_dir / "ffmpeg.pcap", callee.rtp_ports) if options.capture else None
    )
    with (options.work_dir / "ffmpeg.stderr").open("wb") as stderr:
        process = subprocess.Popen(ffmpeg_command(sdp, target, options.video_codec), stderr=stderr)
    watched = Watched(process)
    leg = SipLeg(options.callee, offer)
    leg.answered.wait(30)
    if leg.error is not None or not leg.answered.is_set():
        process.send_signal(signal.SIGINT)
        watched.reap(10)
        raise RuntimeError(f"baseline call failed: {leg.error or 'no answer'}")
    answered_at = leg.answered_at
    sleep_until(answered_at + STEADY_SKIP_S)
    watched.mark()
    note = _probe(options, answered_at)
    sleep_until(answered_at + options.duration - 0.5)
    watched.mark()
    sleep_until(answered_at + options.duration)
    process.send_signal(signal.SIGINT)
    leg.hang_up()
    usage = watched.reap(timeout=15)
    if capture is not None:
        capture.stop()
    _forget_recordings(stream_key)
    wire = None
    if capture is not None:
        wire = analyse(
            capture.path,
            sip_ports={leg.sip_port},
            rtp_ports={port},
            rtmp_ports=watched.tcp_ports,
            codec=codec,
        )
    return Run(
        label="ffmpeg baseline",
        codec=codec,
        call_s=options.duration,
        usage=usage,
        wire=wire,
        probe_note=note,
        video_codec=options.video_codec,
    )


# ---- the report -------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False)
    libavcodec = ".".join(str(n) for n in av.library_versions["libavcodec"])
    return {
        "CPU": f"{model}, {os.cpu_count()} logical CPUs",
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "PyAV": f"{av.__version__} (its FFmpeg: libavcodec {libavcodec})",
        "ffmpeg CLI": " ".join(ffmpeg.stdout.split()[:3]),
    }


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "**missed**")


def verdicts(ours: Run, baseline: Run) -> list[tuple[str, str, str, str]]:
    """(target, sip2rtmp measured, baseline for reference, verdict) per target."""
    rows: list[tuple[str, str, str, str]] = []
    ratio = ours.cpu_per_min / baseline.cpu_per_min if baseline.cpu_per_min else None
    steady_ratio = (
        ours.usage.steady_cpu_per_min / baseline.usage.steady_cpu_per_min
        if baseline.usage.steady_cpu_per_min
        else None
    )
    rows.append(
        (
            f"CPU at most {CPU_RATIO_TARGET:.0%} of the baseline (whole process)",
            f"{ours.cpu_per_min:.2f} CPU-s/min ({ratio:.0%} of baseline)"
            if ratio is not None
            else f"{ours.cpu_per_min:.2f} CPU-s/min",
            f"{baseline.cpu_per_min:.2f} CPU-s/min",
            _verdict(None if ratio is None else ratio <= CPU_RATIO_TARGET),
        )
    )
    rows.append(
        (
            f"CPU at most {CPU_RATIO_TARGET:.0%} of the baseline (steady call)",
            f"{ours.usage.steady_cpu_per_min:.2f} CPU-s/min"
            + (f" ({steady_ratio:.0%} of baseline)" if steady_ratio is not None else ""),
            f"{baseline.usage.steady_cpu_per_min:.2f} CPU-s/min",
            _verdict(None if steady_ratio is None else steady_ratio <= CPU_RATIO_TARGET),
        )
    )
    if ours.video_codec == "H264/0":
        core_cpu = CORE_SHARE_TARGET * 60.0
        rows.append(
            (
                f"H.264 passthrough call at most {CORE_SHARE_TARGET:.0%} of one core"
                f" ({core_cpu:g} CPU-s/min, whole process)",
                f"{ours.cpu_per_min:.2f} CPU-s/min ({ours.cpu_per_min / 60:.1%} of a core;"
                f" steady call {ours.usage.steady_cpu_per_min:.2f})",
                f"{baseline.cpu_per_min:.2f} CPU-s/min",
                _verdict(ours.cpu_per_min <= core_cpu),
            )
        )
    depth_s = statistics.median(ours.depth_ms) / 1000 if ours.depth_ms else None
    delays = ours.wire.delays if ours.wire else []
    added = statistics.median(delays) - depth_s if delays and depth_s is not None else None
    base_delays = baseline.wire.delays if baseline.wire else []
    rows.append(
        (
            f"added audio delay at most {_ms(ADDED_LATENCY_TARGET_S)} beyond the jitter buffer",
            f"{_ms(added)} (median delay {_ms(statistics.median(delays) if delays else None)}"
            f" minus depth {_ms(depth_s)})",
            f"median delay {_ms(statistics.median(base_delays) if base_delays else None)}",
            _verdict(None if added is None else added <= ADDED_LATENCY_TARGET_S),
        )
    )
    first = ours.wire.since_ok(ours.wire.first_media_at) if ours.wire else None
    base_first = baseline.wire.since_ok(baseline.wire.first_media_at) if baseline.wire else None
    rows.append(
        (
            f"first FLV media packet within {_ms(FIRST_PACKET_TARGET_S)} of the 200 OK",
            _ms(first),
            _ms(base_first),
            _verdict(None if first is None else first <= FIRST_PACKET_TARGET_S),
        )
    )
    rss = ours.usage.max_rss_kb / 1024
    rows.append(
        (
            f"peak RSS under {RSS_TARGET_MB:.0f} MB",
            f"{rss:.0f} MB",
            f"{baseline.usage.max_rss_kb / 1024:.0f} MB",
            _verdict(rss < RSS_TARGET_MB),
        )
    )
    return rows


def details(ours: Run, baseline: Run) -> list[str]:
    """Supporting measurements: the numbers behind each verdict."""
    lines = []
    for run in (ours, baseline):
        usage = run.usage
        lines.append(
            f"- {run.label} ({' + '.join(filter(None, (run.codec, run.video_codec)))} from the"
            f" callee): {usage.cpu_s:.2f} CPU-s over the whole"
            f" process for a {run.call_s:g} s call; {usage.steady_cpu_s:.2f} CPU-s in the steady"
            f" {usage.steady_s:.1f} s window; peak RSS {usage.max_rss_kb / 1024:.1f} MB."
        )
        if run.wire is not None:
            wire = run.wire
            delays = wire.delays
            spread = (
                f"{len(delays)} onsets, min {_ms(min(delays))}, median"
                f" {_ms(statistics.median(delays))}, max {_ms(max(delays))}"
                if delays
                else "no onsets matched"
            )
            lines.append(
                f"  - after the 200 OK: RTMP connection opened at"
                f" {_ms(wire.since_ok(wire.connect_at))}, first media packet at"
                f" {_ms(wire.since_ok(wire.first_media_at))}."
            )
            lines.append(f"  - audio delay RTP in → FLV out ({run.probe_note}): {spread}.")
    if ours.depth_ms:
        lines.append(
            f"- sip2rtmp jitter buffer depth (stats events): median"
            f" {statistics.median(ours.depth_ms):.0f} ms, range {min(ours.depth_ms):.0f}-"
            f"{max(ours.depth_ms):.0f} ms; designed output delay MediaConfig.latency_s ="
            f" {MediaConfig().latency_s * 1000:.0f} ms on top of it."
        )
    if ours.live_event_s is not None:
        lines.append(
            f"- sip2rtmp `output` live event {_ms(ours.live_event_s)} after the ESTABLISHED event"
            " (state is polled every 0.5 s, so this is coarse)."
        )
    if ours.usage.threads:
        busiest = ", ".join(f"{name} {cpu:.2f} s" for name, cpu in ours.usage.threads[:5])
        lines.append(f"- sip2rtmp CPU by thread in the steady window: {busiest}.")
    return lines


def results_markdown(ours: Run, baseline: Run, duration: float, case: str) -> str:
    today = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Measured {today}, {duration:g} s calls to the lab callee `{CASES[case].callee}`"
        f" ({CASES[case].summary}).",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in machine().items()]
    lines += ["", "| target | sip2rtmp | ffmpeg baseline | verdict |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in verdicts(ours, baseline)]
    lines += ["", *details(ours, baseline)]
    return "\n".join(lines)


DOCUMENT = """# Performance

How much a relayed call costs and how late its audio reaches the stream, measured against
the ffmpeg pipeline a user would otherwise script. `benchmarks/README.md` says how it is
measured; rerun with:

    .venv/bin/python -m benchmarks.relay_benchmark --case audio --write docs/performance.md
"""


def markers(case: str) -> tuple[str, str]:
    """Each case has its own results block, so rerunning one leaves the others alone."""
    return (
        f"<!-- relay-benchmark {case} results: start -->",
        f"<!-- relay-benchmark {case} results: end -->",
    )


def write_results(path: Path, block: str, case: str) -> None:
    """Replace the case's results block of `path`, keeping everything around it.

    A case without a block yet gets one at the end of the file.
    """
    start, end = markers(case)
    text = path.read_text() if path.exists() else DOCUMENT
    if start not in text or end not in text:
        text = f"{text.rstrip()}\n\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(f"{head}{start}\n{block}\n{end}{tail}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per call")
    parser.add_argument(
        "--case",
        choices=CASES,
        default="audio",
        help="; ".join(f"{name}: {case.summary}" for name, case in CASES.items()),
    )
    parser.add_argument("--callee", help="lab callee (default: the case's)")
    parser.add_argument(
        "--baseline-codec",
        help="codec the baseline offers (default: the one sip2rtmp's call negotiated)",
    )
    parser.add_argument("--write", type=Path, metavar="MARKDOWN", help="update this results file")
    parser.add_argument(
        "--no-probe", action="store_true", help="never mute the callee (no delay measurement)"
    )
    parser.add_argument("--work-dir", type=Path, help="keep captures and logs here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Lab().is_up():
        print("the lab is not running: .venv/bin/sip2rtmp lab up", file=sys.stderr)
        return 2
    capture = shutil.which("tcpdump") is not None
    if not capture:
        print("tcpdump not found: timings and audio delay will not be measured", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        work_dir = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work_dir.mkdir(parents=True, exist_ok=True)
        case = CASES[args.case]
        options = Options(
            duration=args.duration,
            callee=args.callee or case.callee,
            video_codec=case.video_codec,
            audio_codec=case.audio_codec,
            capture=capture,
            probe=capture and not args.no_probe,
            work_dir=work_dir,
        )
        print(f"sip2rtmp: {args.duration:g} s call to {options.callee} …", file=sys.stderr)
        ours = run_sip2rtmp(options)
        codec = args.baseline_codec or ours.codec
        print(f"ffmpeg baseline: {args.duration:g} s call, {codec} …", file=sys.stderr)
        baseline = run_baseline(options, codec)
    block = results_markdown(ours, baseline, args.duration, args.case)
    print(block)
    if args.write:
        write_results(args.write, block, args.case)
    return 0


if __name__ == "__main__":
    sys.exit(main())
