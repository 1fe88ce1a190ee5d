"""What docs/cli.md promises about defaults and sources of the flags, measured on what
`sip2rtmp call` hands the relay: timeouts, audio defaults, the password prompt, the profile
file's default place, every `SIP2RTMP_*` variable and the `--help` exit-code table."""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click.testing
import pytest

from sip2rtmp.config import CallSettings, HostPort
from sip2rtmp.relay.options import MediaOptions
from tests.unit.cli.sip_stub import call_with_env
from tests.unit.cli.test_contract import VALID, assert_one_line_usage_error, run
from tests.unit.cli.test_video_options import invoke_call
from tests.unit.test_errors import documented_codes

CLI_DOC = next(
    folder / "docs" / "cli.md"
    for folder in Path(__file__).resolve().parents
    if (folder / "docs" / "cli.md").is_file()
)


def test_timeouts_and_audio_default_as_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.md: --ring-timeout default 60, --media-timeout default 15, mono AAC, all four
    codecs offered as Opus, G.722, PCMU, PCMA."""
    settings, media = invoke_call(*VALID, "--sip-password", "pw", monkeypatch=monkeypatch)
    assert (settings.ring_timeout, settings.media_timeout) == (60.0, 15.0)
    assert media.audio_channels == 1
    assert settings.audio_codecs == ("opus", "G722", "PCMU", "PCMA")
    assert (settings.audio, settings.video, settings.register) == (True, True, True)


def test_the_password_is_prompted_for_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    typed = "typed-Pw-5521"
    settings, _, stderr = call_with_env(VALID, {}, monkeypatch)
    assert settings.sip_password.reveal() == "" and "SIP password" not in stderr, "no terminal"

    monkeypatch.setattr(click.testing._NamedTextIOWrapper, "isatty", lambda self: True)
    settings, _, stderr = call_with_env(VALID, {}, monkeypatch, stdin=f"{typed}\n")
    assert "SIP password" in stderr
    assert settings.sip_password.reveal() == typed
    assert typed not in stderr, "the prompt does not echo"

    settings, _, stderr = call_with_env([*VALID, "--no-register"], {}, monkeypatch, stdin="x\n")
    assert "SIP password" not in stderr, "no account to register, nothing to ask"


@pytest.mark.parametrize("xdg", [False, True])
def test_the_default_profile_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xdg: bool
) -> None:
    """cli.md: `--profile NAME` reads `$XDG_CONFIG_HOME/sip2rtmp/config.toml`, else
    `~/.config/sip2rtmp/config.toml`."""
    base = tmp_path / ("xdg" if xdg else "home/.config")
    (base / "sip2rtmp").mkdir(parents=True)
    (base / "sip2rtmp" / "config.toml").write_text(
        '[profiles.weekly]\ncallee = "2002"\nring-timeout = 7\n'
    )
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if xdg:
        monkeypatch.setenv("XDG_CONFIG_HOME", str(base))
    else:
        monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    args = ["--profile", "weekly", *VALID[2:], "--sip-password", "pw"]
    settings, _ = invoke_call(*args, monkeypatch=monkeypatch)
    assert settings.callee_uri == "sip:2002@example.test"
    assert settings.ring_timeout == 7.0


def _documented_variables() -> set[str]:
    """The variables of `call` (those of `serve`, SIP2RTMP_SERVE_*, are tested with it)."""
    found = set(re.findall(r"`(SIP2RTMP_[A-Z_]+)`", CLI_DOC.read_text()))
    return {name for name in found if not name.startswith("SIP2RTMP_SERVE_")}


SYSTEM_CAS = ssl.get_default_verify_paths().openssl_cafile
"""A PEM file of CAs on every machine with OpenSSL's CA bundle (ca-certificates)."""
Check = Callable[[CallSettings], Any]
ENVIRONMENT: dict[str, tuple[str, Check, Any]] = {
    "SIP2RTMP_CALLEE": ("3003", lambda s: s.callee_uri, "sip:3003@example.test"),
    "SIP2RTMP_SIP_LOGIN": ("envuser", lambda s: s.sip_login, "envuser"),
    "SIP2RTMP_SIP_AUTH_NAME": ("authname", lambda s: s.sip_auth_name, "authname"),
    "SIP2RTMP_SIP_PASSWORD": ("env-Pw-77", lambda s: s.sip_password.reveal(), "env-Pw-77"),
    "SIP2RTMP_SIP_DOMAIN": ("env.test", lambda s: s.sip_domain, "env.test"),
    "SIP2RTMP_SIP_OUTBOUND_PROXY": (
        "10.1.2.3:5070",
        lambda s: s.sip_outbound_proxy,
        HostPort("10.1.2.3", 5070),
    ),
    "SIP2RTMP_SIP_PORT": ("5999", lambda s: s.sip_server.port, 5999),
    "SIP2RTMP_SIP_TRANSPORT": ("tcp", lambda s: s.sip_transport, "tcp"),
    "SIP2RTMP_REGISTER": ("false", lambda s: s.register, False),
    "SIP2RTMP_RTMP_URL": (
        "rtmp://env.test/app",
        lambda s: [t.url for t in s.rtmp_targets],
        ["rtmp://env.test/app"],
    ),
    "SIP2RTMP_RTMP_STREAM": (
        "envkey-123456",
        lambda s: s.rtmp_targets[0].stream_key,
        "envkey-123456",
    ),
    "SIP2RTMP_AUDIO": ("false", lambda s: s.audio, False),
    "SIP2RTMP_VIDEO": ("false", lambda s: s.video, False),
    "SIP2RTMP_CALL_ID": ("env-call-9", lambda s: s.call_id, "env-call-9"),
    "SIP2RTMP_NAT": ("off", lambda s: s.nat, "off"),
    "SIP2RTMP_PUBLIC_ADDRESS": ("198.51.100.7", lambda s: s.public_address, "198.51.100.7"),
    "SIP2RTMP_STUN": ("stun.env.test", lambda s: s.stun_server, HostPort("stun.env.test", 3478)),
    "SIP2RTMP_KEEPALIVE": ("0", lambda s: s.keepalive, None),
    "SIP2RTMP_EARLY_MEDIA": ("true", lambda s: s.early_media, True),
    "SIP2RTMP_DISPLAY_NAME": ("Studio A", lambda s: s.display_name, "Studio A"),
    "SIP2RTMP_CALLER_ID": ("+4930123", lambda s: s.caller_id, "+4930123"),
    "SIP2RTMP_ASSERTED_IDENTITY": (
        "tel:+4930123",
        lambda s: s.asserted_identity,
        "tel:+4930123",
    ),
    "SIP2RTMP_IDENTITY_HEADER": ("pai", lambda s: s.identity_header, "P-Asserted-Identity"),
    "SIP2RTMP_SRTP": ("optional", lambda s: s.srtp, "optional"),
    "SIP2RTMP_RTMPS_CA": (SYSTEM_CAS, lambda s: s.rtmps_ca, SYSTEM_CAS),
    "SIP2RTMP_RTMPS_INSECURE": ("true", lambda s: s.rtmps_insecure, True),
}
"""Each variable docs/cli.md lists, a value for it, and where that value shows."""
MEDIA_ENVIRONMENT: dict[str, tuple[str, Callable[[MediaOptions], Any], Any]] = {
    "SIP2RTMP_LATENCY": ("low", lambda m: m.latency, "low"),
}
"""The same for the variables that set what goes into the outputs rather than the call."""

MINIMAL = {
    "SIP2RTMP_CALLEE": "1001",
    "SIP2RTMP_SIP_LOGIN": "relay",
    "SIP2RTMP_SIP_DOMAIN": "example.test",
    "SIP2RTMP_SIP_PASSWORD": "pw",
    "SIP2RTMP_RTMP_URL": "rtmp://127.0.0.1/live",
}
"""Enough for a call, the flags left out so that each variable is read as it is."""


def test_every_documented_variable_is_listed_here() -> None:
    assert _documented_variables() == set(ENVIRONMENT) | set(MEDIA_ENVIRONMENT)


@pytest.mark.parametrize("name", sorted(MEDIA_ENVIRONMENT))
def test_each_documented_media_variable_reaches_the_relay(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    value, show, expected = MEDIA_ENVIRONMENT[name]
    _, media, _ = call_with_env([], {**MINIMAL, name: value}, monkeypatch)
    assert show(media) == expected


@pytest.mark.parametrize("name", sorted(ENVIRONMENT))
def test_each_documented_variable_reaches_the_relay(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    value, show, expected = ENVIRONMENT[name]
    env = {key: v for key, v in MINIMAL.items() if key != "SIP2RTMP_RTMP_URL"}
    env[name] = value
    args = [] if name == "SIP2RTMP_RTMP_URL" else ["--rtmp-url", "rtmp://127.0.0.1/live"]
    settings, _, _ = call_with_env(args, env, monkeypatch)
    assert show(settings) == expected


def test_several_outputs_from_the_environment_are_separated_by_spaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {**MINIMAL, "SIP2RTMP_RTMP_URL": "rtmp://a.test/x rtmps://b.test/y"}
    env["SIP2RTMP_RTMP_STREAM"] = "key-for-a key-for-b"
    settings, _, _ = call_with_env([], env, monkeypatch)
    assert [(t.url, t.stream_key) for t in settings.rtmp_targets] == [
        ("rtmp://a.test/x/key-for-a", "key-for-a"),
        ("rtmps://b.test/y/key-for-b", "key-for-b"),
    ]


def test_a_flag_wins_over_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**MINIMAL, "SIP2RTMP_CALL_ID": "from-env"}
    env.pop("SIP2RTMP_RTMP_URL")
    args = ["--rtmp-url", "rtmp://127.0.0.1/live", "--call-id", "from-flag"]
    settings, _, _ = call_with_env(args, env, monkeypatch)
    assert settings.call_id == "from-flag"


@pytest.mark.parametrize("login", ["re lay", "relay\t", " relay"])
def test_whitespace_in_the_login_is_a_usage_error(login: str) -> None:
    """cli.md, Addresses: no whitespace in --sip-login (RFC 3261 §25.1 `user`)."""
    args = [*VALID[:2], "--sip-login", login, *VALID[4:], "--sip-password", "pw"]
    assert_one_line_usage_error(run("call", *args), "--sip-login")


def test_help_prints_the_exit_code_table_of_the_docs() -> None:
    """cli.md: `sip2rtmp --help` prints the same table as docs/exit-codes.md."""
    result = run("--help")
    assert result.returncode == 0
    shown = re.findall(r"^\s+(\d+)\s+(\S.*?)\s*$", result.stdout.split("Exit codes:")[1], re.M)
    assert {int(code): meaning for code, meaning in shown} == documented_codes()


def test_a_usage_error_prints_no_event() -> None:
    """events.md: a usage error (exit 2) is refused before the run starts: stdout stays empty
    even with --json, and stderr has its one line."""
    result = run("call", *VALID, "--sip-password", "pw", "--json", "--no-audio", "--no-video")
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
