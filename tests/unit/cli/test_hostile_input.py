"""Hostile text in flags, profiles and the environment: refused at the edge with exit 2 and one
line naming the flag, before anything is sent (a UDP socket stands in for the SIP proxy)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.cli.test_contract import SIP2RTMP, clean_env, run

INJECTION = "1002>\r\nX-Injected: 1"


@pytest.fixture
def proxy() -> Iterator[socket.socket]:
    """Where a run would send its first REGISTER; the test checks nothing arrived."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        yield sock


def call(
    proxy: socket.socket, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    flags = {
        "--callee": "1002",
        "--sip-login": "relay",
        "--sip-password": "Pw-Hostile-Input-4471",
        "--sip-domain": "example.test",
        "--sip-outbound-proxy": f"127.0.0.1:{proxy.getsockname()[1]}",
        "--rtmp-url": "rtmp://127.0.0.1:1/live",
        "--rtmp-stream": "key-123456789",
        "--max-duration": "1",
        "--ring-timeout": "1",
    }
    given = dict(zip(args[::2], args[1::2], strict=True))
    argv = [arg for name, value in (flags | given).items() if value for arg in (name, value)]
    return run("call", *argv, env=env)


def assert_refused(
    result: subprocess.CompletedProcess[str], proxy: socket.socket, needle: str
) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"sip2rtmp: error: {needle}"), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert "X-Injected" not in result.stderr
    with pytest.raises(BlockingIOError):
        proxy.recv(65536)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--callee", INJECTION),
        ("--callee", "sip:1002@example.test?X-Injected=1"),
        ("--callee", "1002@example.test>"),
        ("--sip-login", INJECTION),
        ("--sip-login", "relay\x7f"),
        ("--sip-auth-name", 'relay"\r\nX-Injected: 1'),
        ("--sip-domain", "example.test>\r\nX-Injected: 1"),
        ("--sip-domain", "example.test,evil.test"),
        ("--sip-outbound-proxy", "127.0.0.1\r\nX-Injected: 1"),
        ("--call-id", "c1\x1b]0;pwned\x07"),
        ("--rtmp-url", "rtmp://127.0.0.1/live\r\nX-Injected: 1"),
        ("--rtmp-stream", "key\r\n"),
    ],
)
def test_a_hostile_flag_is_refused_naming_it(proxy: socket.socket, flag: str, value: str) -> None:
    assert_refused(call(proxy, flag, value), proxy, f"{flag}:")


def test_header_injection_through_the_callee_prints_one_line(proxy: socket.socket) -> None:
    result = call(proxy, "--callee", INJECTION)
    assert result.stderr == "sip2rtmp: error: --callee: control characters are not allowed\n"


@pytest.mark.parametrize(
    ("line", "flag"),
    [
        ('callee = "1002>\\r\\nX-Injected: 1"', "--callee"),
        ('sip-login = "relay\\u0000"', "--sip-login"),  # a NUL cannot be an argument; TOML has it
        ('sip_auth_name = "relay\\u001b[2J"', "--sip-auth-name"),
    ],
)
def test_a_hostile_profile_value_is_refused_naming_its_flag(
    proxy: socket.socket, tmp_path: Path, line: str, flag: str
) -> None:
    profile = tmp_path / "evil.toml"
    profile.write_text(line + "\n")
    assert_refused(call(proxy, "--profile", str(profile), flag, ""), proxy, f"{flag}:")


def test_a_hostile_environment_value_is_refused_naming_its_flag(proxy: socket.socket) -> None:
    result = call(proxy, "--sip-login", "", env={"SIP2RTMP_SIP_LOGIN": INJECTION})
    assert_refused(result, proxy, "--sip-login:")


def test_ordinary_values_pass_validation(proxy: socket.socket) -> None:
    """The same run with plain values gets as far as the network: the proxy hears a REGISTER."""
    proxy.setblocking(True)
    proxy.settimeout(10)
    process = subprocess.Popen(
        [SIP2RTMP, "call", "--callee", "conf*1234#", "--sip-login", "relay",
         "--sip-password", "Pw-Hostile-Input-4471", "--sip-domain", "example.test",
         "--sip-outbound-proxy", f"127.0.0.1:{proxy.getsockname()[1]}",
         "--rtmp-url", "rtmp://127.0.0.1:1/live", "--rtmp-stream", "key-123456789"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=clean_env(),
    )  # fmt: skip
    try:
        data = proxy.recv(65536)
    finally:
        process.kill()
        process.wait()
    assert data.startswith(b"REGISTER sip:example.test SIP/2.0\r\n")
    assert b"From: <sip:relay@example.test>" in data
