"""A tcpdump capture on loopback, and the packets, RTP and RTMP messages read back from it."""

from __future__ import annotations

import bisect
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sip2rtmp.lab import RTMP_PORT, SIP_PORT


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
