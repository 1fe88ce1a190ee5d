"""`sip2rtmp check` against the lab: real credentials at kamailio, a real RTMP server."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from sip2rtmp.cli.outcomes import ExitCode
from sip2rtmp.lab import RELAY_ACCOUNT, RTMP_URL, SIP_DOMAIN, SIP_HOST, SIP_PORT, Lab
from tests.unit.cli.test_check import STREAM_KEY, WRONG_PASSWORD, marks
from tests.unit.cli.test_contract import run

pytestmark = pytest.mark.lab


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed CLI's `check`: its exit code, stdout and stderr, no settings from the
    environment."""
    return run("check", *args, timeout=60)


def lab_args(password: str, *extra: str) -> list[str]:
    return [
        "--sip-login",
        RELAY_ACCOUNT.user,
        "--sip-password",
        password,
        "--sip-domain",
        SIP_DOMAIN,
        "--sip-outbound-proxy",
        f"{SIP_HOST}:{SIP_PORT}",
        "--rtmp-url",
        RTMP_URL,
        "--rtmp-stream",
        STREAM_KEY,
        *extra,
    ]


def everything(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_lab_passes_with_the_right_password(lab: Lab, transport: str) -> None:
    result = run_check(*lab_args(RELAY_ACCOUNT.password, "--sip-transport", transport))
    assert result.returncode == 0, everything(result)
    assert set(marks(result.stdout)) == {"✓"}
    assert "reachable, OPTIONS answered 200 OK" in result.stdout, "no challenge for OPTIONS"
    assert "credentials accepted" in result.stdout
    assert "accepted the stream" in result.stdout
    assert RELAY_ACCOUNT.password not in everything(result)
    assert STREAM_KEY not in everything(result)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_lab_reports_the_server_target_and_the_address_kamailio_saw(
    lab: Lab, transport: str
) -> None:
    """An outbound proxy given as IP:port is its one target, nothing looked up; kamailio's
    answer on loopback names the address the OPTIONS came from, which is our own."""
    result = run_check(*lab_args(RELAY_ACCOUNT.password, "--sip-transport", transport))
    lines = result.stdout.splitlines()
    assert result.returncode == 0, everything(result)
    server = f"{SIP_HOST}:{SIP_PORT}"
    assert f"✓ SIP server location {server}: an IP address, nothing to look up" in lines
    assert (
        f"✓ SIP server target {transport}:{server}: 1 of 1: IP address {SIP_HOST} "
        "(answered the OPTIONS)"
    ) in lines
    public = [line for line in lines if line.startswith("✓ public address")]
    assert len(public) == 1, result.stdout
    assert public[0].startswith(f"✓ public address {transport}:127.0.0.1:")
    assert public[0].endswith(
        ": same as local (no other address in the answer's Via received/rport)"
    )


def test_lab_wrong_password_fails_with_exit_3_and_one_line(lab: Lab) -> None:
    result = run_check(*lab_args(WRONG_PASSWORD))
    assert result.returncode == ExitCode.AUTHENTICATION_FAILED, everything(result)
    failed = [line for line in result.stdout.splitlines() if line.startswith("✗")]
    assert len(failed) == 1
    assert failed[0].startswith(f"✗ SIP registration {RELAY_ACCOUNT.user}@{SIP_DOMAIN}")
    assert "authentication failed" in failed[0]
    assert WRONG_PASSWORD not in everything(result)
    assert result.stderr == ""


def test_lab_closed_rtmp_port_fails_with_exit_8(lab: Lab) -> None:
    result = run_check(*lab_args(RELAY_ACCOUNT.password, "--rtmp-url", "rtmp://127.0.0.1:1/live"))
    assert result.returncode == ExitCode.RTMP_FAILED, everything(result)
    failed = [line for line in result.stdout.splitlines() if line.startswith("✗")]
    assert len(failed) == 1
    assert failed[0].startswith("✗ RTMP output rtmp://127.0.0.1:1/live/")
    assert STREAM_KEY not in everything(result)


def test_lab_json_summary(lab: Lab) -> None:
    result = run_check(*lab_args(RELAY_ACCOUNT.password, "--json"))
    records: list[dict[str, Any]] = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0, everything(result)
    assert records[-1] == {"event": "checked", "ok": True, "exitCode": 0}
    public = next(record for record in records if record.get("check") == "public address")
    assert public["source"] == "local"
    assert public["address"] == public["local"]
    assert public["local"].startswith("127.0.0.1:")
    location = next(record for record in records if record.get("check") == "SIP server location")
    assert location["tried"] == []
    assert [target["address"] for target in location["targets"]] == [f"{SIP_HOST}:{SIP_PORT}"]
    assert RELAY_ACCOUNT.password not in result.stdout
