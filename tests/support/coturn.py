"""A throwaway STUN server: Debian's coturn (`turnserver`), STUN only, on one address.

No configuration file is read (`-c /dev/null` keeps /etc/turnserver.conf out) and every file
it writes (log, pid file, its SQLite user database) lives in a temporary directory, so it
needs no root-only path. `prefix` runs it elsewhere, e.g. `ip netns exec NAME` inside a
network namespace; readiness is then probed from inside that namespace too.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from sip2rtmp.nat.stun import STUN_PORT
from sip2rtmp.netaddr import Address, format_address

READY_TIMEOUT = 10.0

_PROBE = """
import socket, sys, time
from sip2rtmp.nat.stun import StunError, binding_request, new_transaction_id
from sip2rtmp.nat.stun import parse_binding_response
host, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
with socket.socket(family, socket.SOCK_DGRAM) as sock:
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        tid = new_transaction_id()
        try:
            sock.sendto(binding_request(tid), (host, port))
            data = sock.recv(2048)
            print("%s %d" % parse_binding_response(data, tid))
            sys.exit(0)
        except (OSError, StunError):
            time.sleep(0.05)
sys.exit("no STUN answer")
"""
"""Asks for a binding until one is answered: run where the server's clients will be."""


class CoturnError(RuntimeError):
    """turnserver is missing, did not start, or did not answer."""


class Coturn:
    """A running `turnserver --stun-only` on `address`; `stop()` ends it."""

    def __init__(self, address: Address, process: subprocess.Popen[bytes], workdir: Path):
        self.address = address
        self.process = process
        self.workdir = workdir

    @property
    def log(self) -> str:
        """What turnserver printed: its start-up, and why it stopped."""
        path = self.workdir / "turnserver.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)


def command(ip: str, port: int, workdir: Path) -> list[str]:
    """turnserver as a bare STUN server (RFC 5389 Binding only) on `ip:port`, UDP and TCP."""
    return [
        "turnserver",
        "-c", "/dev/null",
        f"--listening-ip={ip}",
        f"--relay-ip={ip}",
        f"--listening-port={port}",
        "--stun-only",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--no-rfc5780",
        "--relay-threads=1",
        "--log-file=stdout",
        "--simple-log",
        f"--pidfile={workdir / 'turnserver.pid'}",
        f"--userdb={workdir / 'turndb'}",
    ]  # fmt: skip


def start(
    ip: str,
    port: int = STUN_PORT,
    *,
    prefix: Sequence[str] = (),
    timeout: float = READY_TIMEOUT,
) -> Coturn:
    """Start turnserver on `ip:port` (inside whatever `prefix` enters) and return once it
    answers a binding request there."""
    if shutil.which("turnserver") is None:
        raise CoturnError("turnserver not found (install coturn, as scripts/bootstrap does)")
    workdir = Path(tempfile.mkdtemp(prefix="s2r-coturn-"))
    with (workdir / "turnserver.log").open("wb") as log:
        process = subprocess.Popen(
            [*prefix, *command(ip, port, workdir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Coturn((ip, port), process, workdir)
    try:
        _wait_answering(server, prefix, timeout)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def running(ip: str, port: int = STUN_PORT, *, prefix: Sequence[str] = ()) -> Iterator[Coturn]:
    """`start` … `stop`, for a fixture or a `with` block."""
    server = start(ip, port, prefix=prefix)
    try:
        yield server
    finally:
        server.stop()


def free_udp_port(ip: str) -> int:
    """A UDP port nothing is bound to on `ip` right now."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def free_stun_port(ip: str) -> int:
    """A port free on `ip` for both UDP and TCP, as turnserver listens on both: a UDP port
    alone may be some TCP connection's local port (one in TIME_WAIT too), and turnserver
    then never answers."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    for _ in range(64):
        port = free_udp_port(ip)
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((ip, port))
            except OSError:
                continue
            return port
    raise CoturnError(f"no port on {ip} free for both UDP and TCP")


def _wait_answering(server: Coturn, prefix: Sequence[str], timeout: float) -> None:
    host, port = server.address
    probe = subprocess.Popen(
        [*prefix, sys.executable, "-c", _PROBE, host, str(port), str(timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout + 5
    while probe.poll() is None and server.process.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if probe.poll() is None:
        probe.kill()
    _, err = probe.communicate()
    if probe.returncode != 0:
        exited = server.process.poll()
        state = f"exited with {exited}" if exited is not None else "runs but does not answer"
        raise CoturnError(
            f"turnserver on {format_address(server.address)} {state}: {err.strip()}\n"
            + server.log[-2000:]
        )
