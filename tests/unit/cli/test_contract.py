"""The command-line contract, driven through the installed `sip2rtmp` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SIP2RTMP = str(Path(sys.executable).with_name("sip2rtmp"))
CALL_FLAGS = [
    "--callee",
    "--sip-login",
    "--sip-auth-name",
    "--sip-password",
    "--sip-domain",
    "--sip-outbound-proxy",
    "--sip-port",
    "--sip-transport",
    "--register / --no-register",
    "--rtmp-url",
    "--rtmp-stream",
    "--audio / --no-audio",
    "--video / --no-video",
    "--call-id",
    "--max-duration",
    "--early-media",
    "--display-name",
    "--caller-id",
    "--asserted-identity",
    "--identity-header",
    "--srtp",
    "--rtmps-ca",
    "--rtmps-insecure",
    "--json",
    "--profile",
]
VALID = [
    "--callee",
    "1001",
    "--sip-login",
    "relay",
    "--sip-domain",
    "example.test",
    "--rtmp-url",
    "rtmp://127.0.0.1/live",
    "--rtmp-stream",
    "key-123456789",
]


def clean_env() -> dict[str, str]:
    """The caller's environment without its SIP2RTMP_* settings, so only the test's flags count."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SIP2RTMP_")}


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """The installed CLI with `args`: exit code, stdout and stderr; `env` adds to a clean one."""
    full_env = clean_env()
    full_env.update(env or {})
    return subprocess.run(
        [SIP2RTMP, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=full_env,
    )


def assert_one_line_usage_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sip2rtmp: error:")
    assert needle in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_top_level_help_lists_commands_and_exit_codes() -> None:
    result = run("--help")
    assert result.returncode == 0
    for word in ("call", "lab", "Exit codes", "authentication"):
        assert word in result.stdout


def test_call_help_lists_every_contract_flag() -> None:
    result = run("call", "--help")
    assert result.returncode == 0
    for flag in CALL_FLAGS:
        assert flag in result.stdout, flag


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--sip-login", "relay", "--sip-domain", "x.test", "--rtmp-url", "rtmp://h/a"],
            "--callee",
        ),
        (VALID[:6], "--rtmp-url"),
        (["--callee", "1001", "--sip-domain", "x.test", "--rtmp-url", "rtmp://h/a"], "--sip-login"),
        ([*VALID[:8], "--rtmp-url", "http://example.test/live"], "not an rtmp"),
        ([*VALID, "--rtmp-url", "rtmp://"], "not an rtmp"),
        ([*VALID, "--sip-outbound-proxy", "proxy.test:99999"], "invalid port"),
        ([*VALID, "--sip-transport", "sctp"], "sctp"),
        ([*VALID, "--sip-port", "0"], "--sip-port"),
        ([*VALID, "--max-duration", "soon"], "--max-duration"),
        ([*VALID, "--max-duration", "-5"], "--max-duration"),
        ([*VALID, "--bogus"], "--bogus"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str], needle: str) -> None:
    assert_one_line_usage_error(run("call", *args), needle)


def test_unknown_subcommand_is_usage_error() -> None:
    assert_one_line_usage_error(run("dial"), "dial")


def test_password_and_stream_key_never_echoed_in_errors() -> None:
    password = "Pw-never-shown-8d1f"
    key = "streamkey-never-shown-77aa"
    result = run(
        "call",
        *VALID[:6],
        "--rtmp-url",
        f"ftp://127.0.0.1/live/{key}",
        "--sip-password",
        password,
    )
    assert result.returncode == 2
    assert password not in result.stderr + result.stdout
    assert key not in result.stderr + result.stdout


def test_profile_supplies_values_and_flags_win(tmp_path: Path) -> None:
    profile = tmp_path / "show.toml"
    profile.write_text('callee = "1001"\nrtmp-url = ["http://not-rtmp.test/live"]\n')
    result = run("call", "--profile", str(profile), *VALID[2:6])
    assert_one_line_usage_error(result, "not an rtmp")
    # The flag overrides the profile's bad URL, so the next problem is the unknown transport.
    result = run("call", "--profile", str(profile), *VALID[2:], "--sip-transport", "sctp")
    assert_one_line_usage_error(result, "sctp")


def test_environment_overrides_profile_and_flag_overrides_environment(tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text('sip_transport = "tcp"\nrtmp_url = "rtmp://h/a"\n')
    env = {"SIP2RTMP_SIP_TRANSPORT": "bogus-env"}
    result = run("call", "--profile", str(profile), *VALID[:6], env=env)
    assert_one_line_usage_error(result, "bogus-env")
    result = run(
        "call", "--profile", str(profile), *VALID[:6], "--sip-transport", "bogus-flag", env=env
    )
    assert_one_line_usage_error(result, "bogus-flag")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('sip-logn = "x"\n', "unknown key 'sip-logn'"),
        ('sip-port = "many"\n', "sip-port must be"),
        ("audio = 3\n", "audio must be true or false"),
        ("callee = \n", "not valid TOML"),
    ],
)
def test_bad_profile_names_file_and_key(tmp_path: Path, content: str, needle: str) -> None:
    profile = tmp_path / "bad.toml"
    profile.write_text(content)
    result = run("call", "--profile", str(profile), *VALID)
    assert_one_line_usage_error(result, needle)
    assert str(profile) in result.stderr


def test_named_profile_from_config_file(tmp_path: Path) -> None:
    config = tmp_path / "sip2rtmp" / "config.toml"
    config.parent.mkdir()
    config.write_text('[profiles.weekly]\nrtmp-url = "gopher://x"\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert_one_line_usage_error(run("call", "--profile", "weekly", *VALID[:6], env=env), "gopher")
    assert_one_line_usage_error(run("call", "--profile", "missing", *VALID, env=env), "missing")
