"""A SIP world of its own for server location and failover: a namespace with only `lo`, a DNS
server that publishes SRV records for `srv.test`, and the SIP servers a test puts behind them.

Everything listens on 127.0.0.0/8 inside the namespace, so a server that never answers, one
that refuses, and the real callee can sit side by side at distinct loopback addresses. The
resolver is dnsmasq on the namespace's 127.0.0.1:53; `ip netns exec` bind-mounts
/etc/netns/<name>/resolv.conf over /etc/resolv.conf, so a program run there finds it as the
system resolver (RFC 3263 lookups included).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sip2rtmp.netaddr import Address
from sip2rtmp.sip.message import Request, SipParseError, parse_message
from tests.support.netns import NetnsUnavailable, NetworkNamespace
from tests.support.sip_peer import SipPeer

DOMAIN = "srv.test"
CLONE_NEWNET = 0x40000000
"""setns(2) flag: switch only the network namespace (sched.h)."""
NETNS_ETC = Path("/etc/netns")


@contextlib.contextmanager
def entered(namespace: NetworkNamespace) -> Iterator[None]:
    """Run the block in `namespace`'s network stack (this thread only).

    A socket keeps the namespace it was made in, so a peer built here serves the namespace
    from the test's own threads; the thread returns home however the block ends.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    with (
        open("/proc/thread-self/ns/net", "rb") as home,
        open(f"/run/netns/{namespace.name}", "rb") as there,
    ):
        if libc.setns(there.fileno(), CLONE_NEWNET) != 0:
            raise NetnsUnavailable(
                f"setns into {namespace.name}: {os.strerror(ctypes.get_errno())}"
            )
        try:
            yield
        finally:
            if libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                raise NetnsUnavailable(f"setns home: {os.strerror(ctypes.get_errno())}")


@dataclass(frozen=True)
class SrvTarget:
    """One SRV record of `_sip._<transport>.srv.test` and the A record of its target."""

    name: str
    """Target host, a label under srv.test (e.g. "dead" → dead.srv.test)."""
    address: str
    port: int
    priority: int
    weight: int = 0

    @property
    def host(self) -> str:
        return f"{self.name}.{DOMAIN}"

    @property
    def hostport(self) -> str:
        return f"{self.address}:{self.port}"


class Resolver:
    """dnsmasq answering for srv.test inside a namespace, and that namespace's resolv.conf."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path, etc_dir: Path) -> None:
        self.process = process
        self.log_path = log_path
        self.etc_dir = etc_dir

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def queries(self) -> list[str]:
        """Each query it received, as `TYPE name` (e.g. `SRV _sip._udp.srv.test`)."""
        found = []
        for line in self.log().splitlines():
            _, marker, rest = line.partition(": query[")
            if marker:
                kind, _, tail = rest.partition("] ")
                found.append(f"{kind} {tail.split(' ')[0]}")
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.etc_dir, ignore_errors=True)


def start_resolver(
    namespace: NetworkNamespace,
    run_dir: Path,
    targets: Sequence[SrvTarget],
    *,
    transport: str = "udp",
    ready_timeout: float = 5.0,
) -> Resolver:
    """dnsmasq on the namespace's 127.0.0.1:53, authoritative for *.test: SRV records only
    for the bare domain (no A record, no NAPTR: an RFC 3263 client must go through SRV)."""
    if shutil.which("dnsmasq") is None:
        raise NetnsUnavailable("dnsmasq not found (install dnsmasq-base)")
    etc_dir = NETNS_ETC / namespace.name
    etc_dir.mkdir(parents=True, exist_ok=True)
    (etc_dir / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "dnsmasq.log"
    proto = "_tcp" if transport in ("tcp", "tls") else "_udp"
    service = "_sips" if transport == "tls" else "_sip"
    argv = [
        *namespace.prefix, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
        "--pid-file", "--user=root", "--port=53", "--listen-address=127.0.0.1",
        "--bind-interfaces", "--no-resolv", "--no-hosts", "--local=/test/", "--log-queries",
        f"--log-facility={log_path}",
    ]  # fmt: skip
    for target in targets:
        argv.append(
            f"--srv-host={service}.{proto}.{DOMAIN},{target.host},{target.port},"
            f"{target.priority},{target.weight}"
        )
        argv.append(f"--host-record={target.host},{target.address}")
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    resolver = Resolver(process, log_path, etc_dir)
    deadline = time.monotonic() + ready_timeout
    while "started, version" not in resolver.log():
        if process.poll() is not None or time.monotonic() > deadline:
            resolver.stop()
            raise NetnsUnavailable(f"dnsmasq did not start: {resolver.log()[-500:]}")
        time.sleep(0.05)
    return resolver


@dataclass
class Arrival:
    at: float
    """Wall-clock seconds (time.time()), comparable with the events' `ts`."""
    source: Address
    request: Request | None
    """The datagram parsed as a SIP request, None if it was anything else."""


@dataclass
class BlackHole:
    """A UDP socket that reads every datagram and never answers: to the sender, a server that
    is down without saying so (no response, and no ICMP port-unreachable either)."""

    sock: socket.socket
    arrivals: list[Arrival] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def open(cls, namespace: NetworkNamespace, address: Address) -> BlackHole:
        with entered(namespace):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(address)
        sock.settimeout(0.1)
        hole = cls(sock)
        hole._thread = threading.Thread(target=hole._swallow, name="black-hole", daemon=True)
        hole._thread.start()
        return hole

    def _swallow(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                message = parse_message(data)
            except SipParseError:
                message = None
            request = message if isinstance(message, Request) else None
            self.arrivals.append(Arrival(time.time(), (source[0], source[1]), request))

    def requests(self, method: str) -> list[Arrival]:
        return [a for a in self.arrivals if a.request is not None and a.request.method == method]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self.sock.close()


class RefusingPeer(SipPeer):
    """A server that answers every INVITE `503 Service Unavailable` with `Retry-After`
    (RFC 3261 §21.5.4, §20.33): it is up, and tells the caller to go elsewhere for now."""

    def __init__(self, retry_after: int = 120) -> None:
        super().__init__(user="busy", send_media=False)
        self.retry_after = retry_after
        self.invites: list[float] = []
        """Wall-clock arrival of each INVITE (retransmissions included)."""

    def _on_invite(self, invite: Request, addr: Address) -> None:
        self.invites.append(time.time())
        refusal = self._response(invite, 503, "Service Unavailable")
        refusal.headers.add("Retry-After", str(self.retry_after))
        self._sip.sendto(refusal.to_bytes(), addr)


def refusing_peer(namespace: NetworkNamespace, retry_after: int = 120) -> RefusingPeer:
    """A started RefusingPeer whose sockets live in `namespace` (on its 127.0.0.1)."""
    with entered(namespace):
        peer = RefusingPeer(retry_after)
    peer.start()
    return peer
