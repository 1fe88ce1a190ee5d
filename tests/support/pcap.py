"""Capture UDP with tcpdump and read it back: what really crossed the wire, not what was logged.

Inside a namespace the capture on `lo` sees what the kernel delivered, after any nftables drop in
the output hook, so it shows exactly what each end could receive.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

_GLOBAL_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")
_PCAP_MAGIC_USEC = 0xA1B2C3D4
_LINKTYPE_ETHERNET = 1
_ETHERNET_HEADER = 14
_ETHERTYPE_IPV4 = 0x0800
_IPPROTO_UDP = 17


class CaptureUnavailable(RuntimeError):
    """tcpdump is missing or did not start listening."""


@dataclass(frozen=True)
class UdpDatagram:
    time: float
    """Seconds since the epoch, as tcpdump stamped the packet."""
    source_port: int
    destination_port: int
    payload: bytes


class UdpCapture:
    """`tcpdump -i lo` writing a pcap file for a BPF filter; `stop()` ends it and flushes."""

    def __init__(self, process: subprocess.Popen[bytes], path: Path, log: Path) -> None:
        self.process = process
        self.path = path
        self.log = log

    @classmethod
    def start(
        cls, path: Path, bpf_filter: str, prefix: Sequence[str] = (), timeout: float = 5.0
    ) -> UdpCapture:
        """Returns once tcpdump listens, so nothing sent afterwards is missed."""
        if shutil.which("tcpdump") is None:
            raise CaptureUnavailable("tcpdump not found (install tcpdump)")
        log = path.with_suffix(".log")
        # Immediate mode: without it libpcap hands packets over in blocks, and the block
        # pending when tcpdump is stopped (up to a second of traffic) never reaches the file.
        argv = [
            *prefix, "tcpdump", "-i", "lo", "--immediate-mode", "-U", "-n", "-w", str(path),
            bpf_filter,
        ]  # fmt: skip
        with log.open("wb") as output:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )
        capture = cls(process, path, log)
        deadline = time.monotonic() + timeout
        while b"listening on" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                capture.stop()
                raise CaptureUnavailable(f"tcpdump did not start: {log.read_text().strip()}")
            time.sleep(0.05)
        return capture

    def stop(self, timeout: float = 5.0) -> None:
        """SIGINT lets tcpdump write out what it buffered; SIGKILL if it does not exit.

        A packet the kernel queued but tcpdump has not yet read when SIGINT arrives is lost,
        which on a loaded machine can be the last message of a test, so stopping waits first
        until the file has stopped growing."""
        if self.process.poll() is None:
            self._settle()
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait(timeout)

    def _settle(self, quiet: float = 0.2, limit: float = 2.0) -> None:
        """Return once the pcap file has not grown for ``quiet`` seconds (at most ``limit``)."""
        deadline = time.monotonic() + limit
        size = -1
        while time.monotonic() < deadline:
            current = self.path.stat().st_size if self.path.exists() else 0
            if current == size:
                return
            size = current
            time.sleep(quiet)


def read_udp(path: Path) -> Iterator[UdpDatagram]:
    """Every IPv4 UDP datagram of a classic (microsecond, little-endian) Ethernet pcap file."""
    data = path.read_bytes()
    magic, _, _, _, _, _, linktype = _GLOBAL_HEADER.unpack_from(data)
    if magic != _PCAP_MAGIC_USEC or linktype != _LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: not a little-endian Ethernet pcap (magic {magic:#x})")
    offset = _GLOBAL_HEADER.size
    while offset + _RECORD_HEADER.size <= len(data):
        seconds, micros, captured, _ = _RECORD_HEADER.unpack_from(data, offset)
        offset += _RECORD_HEADER.size
        frame = data[offset : offset + captured]
        offset += captured
        if int.from_bytes(frame[12:14], "big") != _ETHERTYPE_IPV4:
            continue
        ip = frame[_ETHERNET_HEADER:]
        if ip[9] != _IPPROTO_UDP:
            continue
        udp = ip[(ip[0] & 0x0F) * 4 :]
        source, destination, length = struct.unpack_from("!HHH", udp)
        yield UdpDatagram(seconds + micros / 1e6, source, destination, udp[8:length])
