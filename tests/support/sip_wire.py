"""SIP as it crossed the loopback interface, read back by tshark: what a user agent really sent
and received, not what it logged, and parsed by Wireshark's dissector rather than ours.

tcpdump captures the lab registrar's ports (UDP, TCP and TLS). TLS is read with the session
keys Python's `ssl` writes to the file named by SSLKEYLOGFILE (NSS key log format), which
`ssl.create_default_context` honours, so the same capture covers all three transports.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sip2rtmp.lab import SIP_PORT, SIP_TLS_PORT
from tests.support.pcap import CaptureUnavailable, UdpCapture

LAB_SIP_PORTS = (SIP_PORT, SIP_TLS_PORT)


@dataclass(frozen=True)
class WireMessage:
    """One SIP message of the capture: its ports, direction and the fields tshark decoded."""

    time: float
    source_port: int
    destination_port: int
    direction: str
    """"sent" or "received", seen from the user agent under test."""
    fields: dict[str, list[str]]

    def all(self, name: str) -> list[str]:
        """Every value of a tshark field, in message order (e.g. each Via's branch)."""
        return self.fields.get(name, [])

    def first(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    @property
    def peer(self) -> str:
        port = self.destination_port if self.direction == "sent" else self.source_port
        return f"127.0.0.1:{port}"

    @property
    def method(self) -> str | None:
        return self.first("sip.Method")

    @property
    def status(self) -> int | None:
        code = self.first("sip.Status-Code")
        return int(code) if code else None

    @property
    def cseq(self) -> tuple[int, str]:
        return int(self.first("sip.CSeq.seq") or -1), self.first("sip.CSeq.method") or ""

    @property
    def call_id(self) -> str | None:
        return self.first("sip.Call-ID")

    @property
    def from_tag(self) -> str | None:
        return self.first("sip.from.tag")

    @property
    def to_tag(self) -> str | None:
        return self.first("sip.to.tag")

    @property
    def top_branch(self) -> str | None:
        return self.first("sip.Via.branch")

    @property
    def request_uri(self) -> str | None:
        return self.first("sip.r-uri")

    @property
    def contact_uri(self) -> str | None:
        return self.first("sip.contact.uri")

    @property
    def routes(self) -> list[str]:
        return self.all("sip.Route.uri")

    @property
    def record_routes(self) -> list[str]:
        return self.all("sip.Record-Route.uri")

    @property
    def text(self) -> str:
        """Header and body as they crossed the wire (decrypted for TLS)."""
        return "".join(self.all("sip.msg_hdr"))

    def is_request(self, method: str) -> bool:
        return self.method == method

    def is_response(self, status: int, method: str) -> bool:
        return self.status == status and self.cseq[1] == method


@dataclass
class SipWire:
    """The messages one user agent exchanged with the lab registrar, in capture order."""

    messages: list[WireMessage] = field(default_factory=list)

    def sent(self, method: str) -> list[WireMessage]:
        return [m for m in self.messages if m.direction == "sent" and m.is_request(method)]

    def responses(self, status: int, cseq_method: str) -> list[WireMessage]:
        return [
            m
            for m in self.messages
            if m.direction == "received" and m.is_response(status, cseq_method)
        ]


class SipCapture:
    """tcpdump on the registrar's SIP ports; TLS is readable for processes that have
    SSLKEYLOGFILE set to ``keylog`` when they make their TLS context."""

    def __init__(self, directory: Path) -> None:
        if shutil.which("tshark") is None:
            pytest.fail("tshark not found (scripts/bootstrap installs it)", pytrace=False)
        self.pcap = directory / "sip.pcap"
        self.keylog = directory / "tls-keys.log"
        ports = " or ".join(f"port {port}" for port in LAB_SIP_PORTS)
        try:
            self._tcpdump = UdpCapture.start(self.pcap, ports)
        except CaptureUnavailable as exc:
            pytest.fail(f"cannot capture SIP on loopback: {exc}", pytrace=False)

    def stop(self) -> None:
        self._tcpdump.stop()

    def read(self, ua_port: int) -> SipWire:
        """Stop capturing and return what the user agent on local port ``ua_port`` sent to
        or received from the registrar."""
        self.stop()
        return SipWire(
            [
                m
                for m in read_sip(self.pcap, self.keylog)
                if ua_port in (m.source_port, m.destination_port)
            ]
        )


def read_sip(pcap: Path, keylog: Path | None = None) -> list[WireMessage]:
    """Every SIP message tshark finds in ``pcap``, over UDP, TCP or TLS; a frame carrying
    several (TCP) yields each. Directions are filled in from the registrar's ports."""
    argv = ["tshark", "-r", str(pcap), "-Y", "sip", "-T", "json", "--no-duplicate-keys"]
    if keylog is not None and keylog.exists():
        argv += ["-o", f"tls.keylog_file:{keylog}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        pytest.fail(f"tshark could not read {pcap}: {done.stderr.strip()}", pytrace=False)
    messages = []
    for packet in json.loads(done.stdout or "[]"):
        layers = packet["_source"]["layers"]
        transport = layers.get("udp") or layers.get("tcp")
        prefix = "udp" if "udp" in layers else "tcp"
        source = int(transport[f"{prefix}.srcport"])
        destination = int(transport[f"{prefix}.dstport"])
        direction = "sent" if destination in LAB_SIP_PORTS else "received"
        time = float(layers["frame"]["frame.time_epoch"])
        sip = layers["sip"]
        for pdu in sip if isinstance(sip, list) else [sip]:
            messages.append(WireMessage(time, source, destination, direction, _flatten(pdu)))
    return messages


def _flatten(tree: Any) -> dict[str, list[str]]:
    """tshark's JSON tree of one message as field name -> every value, in order."""
    fields: defaultdict[str, list[str]] = defaultdict(list)

    def walk(node: dict[str, Any]) -> None:
        for name, value in node.items():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict):
                    walk(item)
                else:
                    fields[name].append(str(item))

    walk(tree)
    return dict(fields)
