"""A NAT world from network namespaces: a home network behind a router, and a carrier beyond it.

    home (192.168.77.2) ── router (192.168.77.1 | 198.51.100.1, NAT) ── carrier (198.51.100.10)

sip2rtmp runs in "home"; its resolver is the carrier's dnsmasq. The "router" forwards and
translates with nftables in one of three modes, and its UDP conntrack timeouts can be lowered
to those of a forgetful home router. The "carrier" is the internet: kamailio for carrier.test
without any NAT fix-up (it trusts Contact and SDP, as plain PBXs and many carriers do), tone
callees registered to it, dnsmasq publishing carrier.test by SRV only, a STUN-only coturn and
nginx-rtmp recording what is published. The carrier has no route back to 192.168.77.0/24, so a
private address in an SDP or a Contact is truly unreachable. Addresses are documentation
ranges (RFC 5737, RFC 1918); nothing touches the host's own network.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from sip2rtmp.lab.accounts import LabAccount, account
from sip2rtmp.lab.lab import (
    SIP_PORT,
    LabError,
    baresip_account,
    callee_modules,
    write_baresip_config,
    write_kamailio_config,
    write_tone,
)
from sip2rtmp.nat.stun import STUN_PORT
from tests.support import coturn
from tests.support.netns import NetnsUnavailable, NetworkNamespace

HOME_ADDRESS = "192.168.77.2"
ROUTER_LAN_ADDRESS = "192.168.77.1"
ROUTER_WAN_ADDRESS = "198.51.100.1"
"""What the carrier sees as the source of everything from home, except through one-to-one."""
ONE_TO_ONE_ADDRESS = "198.51.100.50"
"""The home host's own public address in the one-to-one mode (static 1:1 NAT)."""
CARRIER_ADDRESS = "198.51.100.10"
"""Every carrier service listens here: SIP, DNS, STUN, RTMP."""
CARRIER_DOMAIN = "carrier.test"
CARRIER_SIP_HOST = "sip.carrier.test"
"""The SRV target: the only name with an A record besides STUN_HOST."""
STUN_HOST = "stun.carrier.test"

RTMP_PORT = 1935
RTMP_URL = f"rtmp://{CARRIER_ADDRESS}:{RTMP_PORT}/live"
PORT_RANGE = (40000, 40999)
"""Where the port-range mode maps every source port: a port is never kept."""
WORLD_CALLEES = (account("tone"), account("pcmu"))
"""Two 440 Hz callees, so two calls can run at once."""

NAME_PREFIX = "s2rnat"
"""Namespaces are `s2rnat-<pid of the builder>-<role>-<random>`: a world whose builder is gone
is a leftover of a killed run, and the next build removes it."""
NFT_TABLE = "nat_world"
_DNS_QUERY = re.compile(r"query\[(\w+)\] (\S+) from ")
READY_TIMEOUT = 10.0


class NatMode(StrEnum):
    """How the router translates (nftables on its WAN side)."""

    MASQUERADE = "masquerade"
    """Source NAT to the WAN address; the kernel keeps the source port when it is free."""
    PORT_RANGE = "port-range"
    """Source NAT to the WAN address and PORT_RANGE: every port changes, so a port learnt from
    `received`/`rport` of the SIP socket says nothing about the RTP sockets."""
    ONE_TO_ONE = "one-to-one"
    """Static 1:1 NAT, both ways: ONE_TO_ONE_ADDRESS <-> HOME_ADDRESS, ports kept."""


_NAT_RULES = {
    NatMode.MASQUERADE: ("", 'oifname "wan" masquerade'),
    NatMode.PORT_RANGE: (
        "",
        f'oifname "wan" meta l4proto {{ tcp, udp }} masquerade to :{PORT_RANGE[0]}-{PORT_RANGE[1]}',
    ),
    NatMode.ONE_TO_ONE: (
        f'iifname "wan" ip daddr {ONE_TO_ONE_ADDRESS} dnat to {HOME_ADDRESS}',
        f'oifname "wan" ip saddr {HOME_ADDRESS} snat to {ONE_TO_ONE_ADDRESS}',
    ),
}
"""(prerouting rule, postrouting rule) of each mode."""

_ROUTER_BASE = f"""
table ip {NFT_TABLE} {{
    chain input {{
        type filter hook input priority filter; policy drop;
        iifname "lo" accept
        ct state established,related accept
    }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
    }}
}}
"""
"""The router answers nothing itself, as a home router's firewall does. It matters: a packet
that reaches the router unsolicited would otherwise leave a conntrack entry for its own
address and port, and the kernel then gives the next outbound mapping a different port."""


@dataclass
class _Service:
    """One program the world started, with its log."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


@dataclass
class NatWorld:
    """The three namespaces and the carrier's programs; `close()` removes all of it."""

    run_dir: Path
    home: NetworkNamespace
    router: NetworkNamespace
    carrier: NetworkNamespace
    services: dict[str, _Service] = field(default_factory=dict)
    stun: coturn.Coturn | None = None
    mode: NatMode | None = None

    # Paths and logs ----------------------------------------------------------------------------

    @property
    def recordings_dir(self) -> Path:
        """Where the carrier's nginx writes `<stream key>-<unixtime>.flv` for every publish."""
        return self.run_dir / "recordings"

    @property
    def kamcmd_socket(self) -> Path:
        return self.run_dir / "kamailio" / "ctl.sock"

    @property
    def resolv_conf(self) -> Path:
        """`ip netns exec` mounts this over /etc/resolv.conf for programs run in home."""
        return Path("/etc/netns") / self.home.name / "resolv.conf"

    def log(self, name: str) -> str:
        """The log of a carrier program: kamailio, dnsmasq, nginx or baresip-<user>."""
        return self.services[name].log()

    def callee_log(self, user: str) -> str:
        return self.log(f"baresip-{user}")

    def dns_queries(self) -> list[tuple[str, str]]:
        """(type, name) of every query the carrier's dnsmasq answered so far, in order."""
        return _DNS_QUERY.findall(self.log("dnsmasq"))

    # Router ------------------------------------------------------------------------------------

    def set_nat(self, mode: NatMode) -> None:
        """Switch the router's translation and forget every mapping of the previous one."""
        prerouting, postrouting = _NAT_RULES[mode]
        commands = [
            f"flush chain ip {NFT_TABLE} prerouting",
            f"flush chain ip {NFT_TABLE} postrouting",
        ]
        if prerouting:
            commands.append(f"add rule ip {NFT_TABLE} prerouting {prerouting}")
        commands.append(f"add rule ip {NFT_TABLE} postrouting {postrouting}")
        self.router.nft("\n".join(commands) + "\n")
        self.flush_conntrack()
        self.mode = mode

    def flush_conntrack(self) -> None:
        _run([*self.router.prefix, "conntrack", "-F"], allow_failure=True)

    def set_udp_timeouts(self, unreplied: int, stream: int | None = None) -> None:
        """How long the router keeps an idle UDP mapping: one seen one way only, and one seen
        both ways (`_stream`, `unreplied` unless given). Both are per network namespace."""
        values = {"nf_conntrack_udp_timeout": unreplied, "nf_conntrack_udp_timeout_stream": stream}
        for key, seconds in values.items():
            setting = f"net.netfilter.{key}={unreplied if seconds is None else seconds}"
            _run([*self.router.prefix, "sysctl", "-q", "-w", setting])

    def udp_timeouts(self) -> tuple[int, int]:
        values = [
            int(_run([*self.router.prefix, "sysctl", "-n", f"net.netfilter.{key}"]).strip())
            for key in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream")
        ]
        return values[0], values[1]

    def conntrack(self) -> str:
        """The router's current mappings (`conntrack -L`), for a failure's message."""
        return _run([*self.router.prefix, "conntrack", "-L"], allow_failure=True)

    # Carrier -----------------------------------------------------------------------------------

    def kamcmd(self, *args: str) -> str:
        return _run(["kamcmd", "-s", f"unix:{self.kamcmd_socket}", *args])

    def registered_users(self) -> frozenset[str]:
        users = set()
        for line in self.kamcmd("ul.dump", "brief").splitlines():
            key, _, value = line.strip().partition(":")
            if key == "AoR":
                users.add(value.strip().partition("@")[0])
        return frozenset(users)

    def contacts(self, user: str) -> str:
        """kamailio's location entry for `user`: the Contact it would send requests to."""
        return self.kamcmd("ul.lookup", "location", f"s:{user}")

    def hang_up(self, user: str) -> None:
        """Make a callee end its call with BYE, as its user would (baresip's `hangup`).

        The control port listens on the carrier's loopback, so the command is sent from there.
        """
        port = account(user).ctrl_port
        script = (
            "import sys; from sip2rtmp.lab.lab import baresip_command; "
            "baresip_command(int(sys.argv[1]), 'hangup')"
        )
        _run([*self.carrier.prefix, sys.executable, "-c", script, str(port)])

    def recording(self, stream_key: str) -> Path | None:
        found = sorted(self.recordings_dir.glob(f"{stream_key}-*.flv"), key=_mtime)
        return found[-1] if found else None

    # Home --------------------------------------------------------------------------------------

    def in_home(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside home, behind the router, with the carrier's resolver."""
        return [*self.home.prefix, *argv]

    # Teardown ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every program, delete the namespaces and the resolver file; never raises."""
        for service in reversed(list(self.services.values())):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                service.stop()
        if self.stun is not None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self.stun.stop()
        for namespace in (self.home, self.carrier, self.router):
            namespace.delete()
        shutil.rmtree(self.resolv_conf.parent, ignore_errors=True)


@contextlib.contextmanager
def nat_world(run_dir: Path) -> Iterator[NatWorld]:
    """Build the world in `run_dir`, NAT in masquerade mode; removed on the way out."""
    remove_leftover_worlds()
    world = _create_namespaces(run_dir)
    try:
        _wire(world)
        world.set_nat(NatMode.MASQUERADE)
        _start_carrier(world)
        yield world
    finally:
        world.close()


def remove_leftover_worlds() -> list[str]:
    """Delete the namespaces (and resolver files) of worlds whose builder no longer runs."""
    listed = _run(["ip", "netns", "list"], allow_failure=True)
    removed = []
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) < 3 or parts[0] != NAME_PREFIX or not parts[1].isdigit():
            continue
        if _alive(int(parts[1])):
            continue
        NetworkNamespace(name).delete()
        shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
        removed.append(name)
    return removed


# Building ----------------------------------------------------------------------------------------


def _create_namespaces(run_dir: Path) -> NatWorld:
    for tool in ("conntrack", "dnsmasq", "turnserver", "kamailio", "baresip", "nginx"):
        if shutil.which(tool) is None:
            raise NetnsUnavailable(f"{tool} not found (scripts/bootstrap installs it)")
    created: list[NetworkNamespace] = []
    try:
        for role in ("home", "router", "carrier"):
            created.append(NetworkNamespace.create(f"{NAME_PREFIX}-{os.getpid()}-{role}"))
    except NetnsUnavailable:
        for namespace in created:
            namespace.delete()
        raise
    run_dir.mkdir(parents=True, exist_ok=True)
    home, router, carrier = created
    return NatWorld(run_dir, home, router, carrier)


def _wire(world: NatWorld) -> None:
    """Two veth links, addresses and routes; the router forwards, the carrier routes nothing
    beyond its own link."""
    home, router, carrier = world.home.name, world.router.name, world.carrier.name
    ip_commands = [
        [router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", home],
        [router, "link", "add", "wan", "type", "veth", "peer", "name", "eth0", "netns", carrier],
        [router, "addr", "add", f"{ROUTER_LAN_ADDRESS}/24", "dev", "lan"],
        [router, "addr", "add", f"{ROUTER_WAN_ADDRESS}/24", "dev", "wan"],
        # The one-to-one address is the router's too, so it answers ARP for it.
        [router, "addr", "add", f"{ONE_TO_ONE_ADDRESS}/32", "dev", "wan"],
        [router, "link", "set", "lan", "up"],
        [router, "link", "set", "wan", "up"],
        [home, "addr", "add", f"{HOME_ADDRESS}/24", "dev", "eth0"],
        [home, "link", "set", "eth0", "up"],
        [home, "route", "add", "default", "via", ROUTER_LAN_ADDRESS],
        [carrier, "addr", "add", f"{CARRIER_ADDRESS}/24", "dev", "eth0"],
        [carrier, "link", "set", "eth0", "up"],
    ]
    for namespace, *args in ip_commands:
        _run(["ip", "-n", namespace, *args])
    _run([*world.router.prefix, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    world.router.nft(_ROUTER_BASE)
    world.resolv_conf.parent.mkdir(parents=True, exist_ok=True)
    world.resolv_conf.write_text(f"nameserver {CARRIER_ADDRESS}\noptions timeout:2 attempts:1\n")


def _start_carrier(world: NatWorld) -> None:
    run_dir = world.run_dir
    (run_dir / "logs").mkdir(exist_ok=True)
    world.recordings_dir.mkdir(exist_ok=True)
    _start_dnsmasq(world)
    _start_coturn(world)
    _start_nginx(world)
    _start_kamailio(world)
    tone_hz = {a.tone_hz for a in WORLD_CALLEES}
    if len(tone_hz) != 1 or None in tone_hz:
        raise LabError("the world's callees must send one tone")
    tone = run_dir / "media" / "tone.wav"
    write_tone(tone, float(next(iter(tone_hz)) or 0), seconds=120)
    for callee in WORLD_CALLEES:
        _start_callee(world, callee, tone)
    _wait(
        "the callees to register with the carrier's kamailio",
        lambda: all(a.user in world.registered_users() for a in WORLD_CALLEES),
        world,
        [f"baresip-{a.user}" for a in WORLD_CALLEES],
    )


def _start_dnsmasq(world: NatWorld) -> None:
    """carrier.test by SRV only: `_sip._udp` and `_sip._tcp` point to sip.carrier.test, which
    has an A record; the bare domain has none (`--local` answers it from here, empty)."""
    argv = [
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        "--user=root", "--bind-interfaces", f"--listen-address={CARRIER_ADDRESS}",
        f"--local=/{CARRIER_DOMAIN}/", "--log-queries", "--log-facility=-",
        f"--pid-file={world.run_dir / 'dnsmasq.pid'}",
        f"--srv-host=_sip._udp.{CARRIER_DOMAIN},{CARRIER_SIP_HOST},{SIP_PORT},10,10",
        f"--srv-host=_sip._tcp.{CARRIER_DOMAIN},{CARRIER_SIP_HOST},{SIP_PORT},10,10",
        f"--host-record={CARRIER_SIP_HOST},{CARRIER_ADDRESS}",
        f"--host-record={STUN_HOST},{CARRIER_ADDRESS}",
    ]  # fmt: skip
    _spawn(world, "dnsmasq", argv)
    _wait_listening(world, "dnsmasq", "udp", 53)


def _start_coturn(world: NatWorld) -> None:
    """A STUN-only coturn: binding requests answered, every TURN request ignored."""
    try:
        world.stun = coturn.start(CARRIER_ADDRESS, STUN_PORT, prefix=world.carrier.prefix)
    except coturn.CoturnError as exc:
        raise LabError(str(exc)) from None


def _start_nginx(world: NatWorld) -> None:
    root = world.run_dir / "nginx"
    root.mkdir(exist_ok=True)
    config = root / "nginx.conf"
    config.write_text(
        "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n"
        f"daemon off; user root; pid {root}/nginx.pid; error_log stderr info;\n"
        "events { worker_connections 64; }\n"
        f"rtmp {{ server {{ listen {CARRIER_ADDRESS}:{RTMP_PORT}; application live {{\n"
        f"live on; record all; record_unique on; record_path {world.recordings_dir}; }} }} }}\n"
    )
    _spawn(world, "nginx", ["nginx", "-p", f"{root}/", "-c", str(config), "-e", "stderr"])
    _wait_listening(world, "nginx", "tcp", RTMP_PORT)


def _start_kamailio(world: NatWorld) -> None:
    kamailio_dir = world.run_dir / "kamailio"
    tls_dir = kamailio_dir / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True)
    certificate, key = tls_dir / "server.pem", tls_dir / "server.key"
    if not certificate.exists():
        # The template always listens for TLS too; the world never uses it.
        _run([
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(certificate), "-days", "30",
            "-subj", f"/CN={CARRIER_SIP_HOST}",
        ])  # fmt: skip
    world.kamcmd_socket.unlink(missing_ok=True)
    argv = write_kamailio_config(
        kamailio_dir,
        ctl_socket=world.kamcmd_socket,
        tls_certificate=certificate,
        tls_key=key,
        domain=CARRIER_DOMAIN,
        host=CARRIER_ADDRESS,
    )
    _spawn(world, "kamailio", argv)

    def answers() -> bool:
        try:
            world.kamcmd("core.uptime")
        except NetnsUnavailable:
            return False
        return True

    _wait("kamailio to answer kamcmd", answers, world, ["kamailio"])


def _start_callee(world: NatWorld, callee: LabAccount, tone: Path) -> None:
    assert callee.sip_port is not None and callee.ctrl_port is not None
    assert callee.rtp_ports is not None
    config_dir = world.run_dir / "baresip" / callee.user
    write_baresip_config(
        config_dir,
        sip_port=callee.sip_port,
        ctrl_port=callee.ctrl_port,
        rtp_ports=callee.rtp_ports,
        tone=tone,
        received_dir=world.run_dir / "received" / callee.user,
        modules=callee_modules(callee),
        account_line=baresip_account(callee, CARRIER_DOMAIN, f"{CARRIER_ADDRESS}:{SIP_PORT}"),
        sip_host=CARRIER_ADDRESS,
    )
    argv = ["stdbuf", "-oL", "-eL", "baresip", "-f", str(config_dir)]
    _spawn(world, f"baresip-{callee.user}", argv)


# Processes ---------------------------------------------------------------------------------------


def _spawn(world: NatWorld, name: str, argv: Sequence[str]) -> None:
    """Start `argv` in the carrier namespace, in a session of its own, logging to logs/."""
    log_path = world.run_dir / "logs" / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*world.carrier.prefix, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=world.run_dir,
            start_new_session=True,
        )
    world.services[name] = _Service(name, process, log_path)


def _wait_listening(world: NatWorld, name: str, protocol: str, port: int) -> None:
    flag = "-u" if protocol == "udp" else "-t"

    def listening() -> bool:
        listed = _run([*world.carrier.prefix, "ss", "-H", "-n", "-l", flag], allow_failure=True)
        return any(
            line.split()[3].endswith(f":{port}") for line in listed.splitlines() if line.split()
        )

    _wait(f"{name} to listen on {protocol} {port}", listening, world, [name])


def _wait(what: str, ready: Callable[[], bool], world: NatWorld, names: Sequence[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready():
        for name in names:
            service = world.services[name]
            if service.process.poll() is not None:
                raise LabError(f"{name} exited at start: {_last_line(service.log())}")
        if time.monotonic() > deadline:
            logs = "; ".join(f"{n}: {_last_line(world.services[n].log())}" for n in names)
            raise LabError(f"timed out waiting for {what} ({logs})")
        time.sleep(0.05)


def _run(argv: Sequence[str], *, allow_failure: bool = False) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsUnavailable(f"{' '.join(argv)} failed: {exc}") from exc
    if done.returncode != 0 and not allow_failure:
        raise NetnsUnavailable(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def _mtime(path: Path) -> float:
    return path.stat().st_mtime
