"""Starting and stopping the lab: idempotent up, a down that leaves nothing behind, clear errors."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from sip2rtmp.cli.lab import lab as lab_command
from sip2rtmp.cli.outcomes import ExitCode
from sip2rtmp.lab import CALLEES, PROGRAMS, RTMPS_URLS, Lab, LabError
from sip2rtmp.lab.accounts import CALLEE_RTP_BASE


def _live_processes(groups: set[int]) -> set[int]:
    """PIDs of live (not zombie) processes whose process group is one of `groups`."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        state, pgid = fields[0], int(fields[2])
        if pgid in groups and state not in ("Z", "X"):
            found.add(int(stat.parent.name))
    return found


@pytest.mark.lab
def test_up_again_leaves_the_running_programs_alone(lab: Lab) -> None:
    before = lab.status()

    after = lab.up()

    assert [p.pid for p in after.programs] == [p.pid for p in before.programs]
    assert after.all_running
    assert after.all_registered


@pytest.mark.lab
def test_down_leaves_no_process_of_the_lab_running(lab: Lab) -> None:
    pids = {p.pid for p in lab.status().programs if p.pid is not None}
    assert len(pids) == len(PROGRAMS)
    # Each program leads its own process group: kamailio's children and nginx's workers too.
    assert _live_processes(pids) >= pids

    lab.down()
    try:
        assert _live_processes(pids) == set()
        assert not lab.is_up()
        assert not any(p.running for p in lab.status().programs)
    finally:
        lab.up()
    assert lab.is_up()


def test_a_missing_program_is_named_with_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))

    with pytest.raises(LabError) as raised:
        Lab(tmp_path / "run").up()

    message = str(raised.value)
    assert "kamailio not found (install the Debian package kamailio)" in message
    assert "baresip not found (install the Debian package baresip-core)" in message
    assert "\n" not in message


def test_cli_reports_a_lab_error_in_one_line_with_its_exit_code(tmp_path: Path) -> None:
    sip2rtmp = Path(sys.executable).with_name("sip2rtmp")
    env = {**os.environ, "PATH": str(tmp_path / "nothing-here")}
    result = subprocess.run(
        [str(sip2rtmp), "lab", "--run-dir", str(tmp_path / "run"), "up"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )

    assert result.returncode == int(ExitCode.LAB_FAILED) == 11
    assert result.stderr.count("\n") == 1
    assert "kamailio not found" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.lab
def test_cli_status_json_is_one_object(lab: Lab) -> None:
    result = CliRunner().invoke(lab_command, ["--run-dir", str(lab.run_dir), "status", "--json"])

    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["up"] is True
    assert set(status["programs"]) == set(PROGRAMS)
    assert {a.user for a in CALLEES} <= set(status["registered"])
    assert status["rtmps"] == RTMPS_URLS, "docs/lab.md: the RTMPS endpoints are listed"


@pytest.mark.lab
def test_cli_status_prints_a_table(lab: Lab) -> None:
    result = CliRunner().invoke(lab_command, ["--run-dir", str(lab.run_dir), "status"])

    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line}
    assert all(rows[program][0] == "running" for program in PROGRAMS)


_SOCKET = re.compile(
    r"^(?P<proto>\S+)\s+\S+\s+\d+\s+\d+\s+(?P<local>\S+)\s+\S+(?:\s+(?P<users>.*))?$"
)


def _bound_sockets(pids: set[int]) -> list[tuple[str, str, str, int]]:
    """(protocol, local address, program, pid) of every listening TCP and bound UDP socket that
    one of `pids` holds, as `ss` lists them."""
    listed = subprocess.run(
        ["ss", "-H", "-l", "-n", "-t", "-u", "-p"], capture_output=True, text=True, check=True
    ).stdout
    sockets = []
    for line in listed.splitlines():
        found = _SOCKET.match(line.strip())
        assert found, f"unexpected line from ss: {line!r}"
        users = found["users"] or ""  # no owner shown: not one of the lab's processes
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", users)}
        if owners & pids:
            program = ",".join(sorted(set(re.findall(r'\("([^"]+)"', users))))
            sockets.append((found["proto"], found["local"], program, min(owners & pids)))
    return sockets


def _is_loopback(local: str) -> bool:
    host = local.rpartition(":")[0].strip("[]").partition("%")[0]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # `*`: every address
        return False


@pytest.mark.lab
def test_the_lab_serves_on_loopback_only(lab: Lab) -> None:
    """docs/lab.md: every port the lab serves (SIP, RTMP/RTMPS, stats, the callees' control ports),
    TCP or UDP, listens on 127.0.0.0/8; what baresip binds to all addresses is only its DNS
    client's sockets (one per callee and address family) and RTP/RTCP sockets in the callees'
    media port range."""
    leaders = {p.pid for p in lab.status().programs if p.pid is not None}
    assert len(leaders) == len(PROGRAMS)
    sockets = _bound_sockets(_live_processes(leaders))
    programs = {program for _, _, program, _ in sockets}
    assert {"kamailio", "nginx", "baresip"} <= programs, sockets
    exposed = [socket for socket in sockets if not _is_loopback(socket[1])]
    assert all(program == "baresip" and proto == "udp" for proto, _, program, _ in exposed), exposed
    low, high = CALLEE_RTP_BASE, CALLEE_RTP_BASE + 100 * len(CALLEES) - 1
    outside_media = [s for s in exposed if not low <= _port(s[1]) <= high]
    per_callee_and_family = Counter(
        (pid, local.startswith("*")) for _, local, _, pid in outside_media
    )
    assert all(count == 1 for count in per_callee_and_family.values()), outside_media


def _port(local: str) -> int:
    return int(local.rpartition(":")[2])


@pytest.mark.lab
def test_nothing_in_the_lab_needs_a_dns_resolver(lab: Lab) -> None:
    """docs/lab.md: kamailio's DNS is off and every address a lab program listens on, sends to
    or asks (baresip's outbound proxy and resolver) is an IP literal, so no name is looked up."""
    kamailio = (lab.run_dir / "kamailio" / "kamailio.cfg").read_text()
    assert {"dns=no", "rev_dns=no", "use_dns_cache=off"} <= set(kamailio.splitlines())
    addresses = re.findall(r"^listen=\w+:([^:\s]+):\d+$", kamailio, re.M)
    nginx = (lab.run_dir / "nginx" / "nginx.conf").read_text()
    addresses += re.findall(r"^\s*listen ([^:\s]+):\d+", nginx, re.M)
    for callee in (lab.run_dir / "baresip").iterdir():
        config = (callee / "config").read_text()
        for key in ("sip_listen", "dns_server", "net_interface", "ctrl_tcp_listen"):
            (value,) = re.findall(rf"^{key}\s+(\S+)$", config, re.M)
            addresses.append(value.rsplit(":", 1)[0] if ":" in value else value)
        addresses += re.findall(r'outbound="sip:([^:;"]+)', (callee / "accounts").read_text())
    assert len(addresses) >= 3 + 3 + 5 * len(CALLEES), addresses
    assert all(ipaddress.ip_address(address).is_loopback for address in addresses), addresses


@pytest.mark.lab
def test_the_packages_system_services_are_not_running(
    lab: Lab, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """README: `scripts/bootstrap` installs nginx and kamailio without starting their system
    services (port 80, 5060 on every address): only the lab's own instances run, and those
    the tests start from their own directories (the NAT world's)."""
    ours = (str(lab.run_dir), str(tmp_path_factory.getbasetemp()))
    processes = subprocess.run(
        ["ps", "-eo", "stat=,args="], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    services = [
        command
        for state, _, command in (line.strip().partition(" ") for line in processes)
        if not state.startswith("Z")  # a zombie has ended: nothing of it runs or listens
        and ("kamailio" in command or "nginx: master" in command)
        and not any(directory in command for directory in ours)
    ]
    assert not services, services
    listening = subprocess.run(
        ["ss", "-H", "-l", "-n", "-t"], capture_output=True, text=True, check=True
    ).stdout
    assert not re.search(r"[:\]]80\s", listening), listening
