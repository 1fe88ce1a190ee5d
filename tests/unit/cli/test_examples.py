"""usage.md: `examples/` holds a cron line, a systemd service and timer, and a config file with
two profiles. Each is read as the program that consumes it would read it: the profiles by the
project's own loader, the command lines split like a shell splits them, and their flags run
through `sip2rtmp call` up to the relay."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from sip2rtmp.cli import call as call_module
from sip2rtmp.cli.profile import load_profile
from tests.unit.cli.test_video_options import invoke_call

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
CONFIG = EXAMPLES / "config.toml"
SERVICE = EXAMPLES / "systemd" / "sip2rtmp-weekly.service"
TIMER = EXAMPLES / "systemd" / "sip2rtmp-weekly.timer"
PASSWORD = ("--sip-password", "example-pw")
"""Both examples take the password from the environment, which the test runner clears."""


def _unit(path: Path) -> configparser.ConfigParser:
    """A systemd unit file: INI sections, `#` comments, case-sensitive keys."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def _sip2rtmp_args(words: list[str]) -> list[str]:
    """The arguments of the `sip2rtmp call` in a shell command, up to its redirection."""
    start = next(i for i, word in enumerate(words) if Path(word).name == "sip2rtmp")
    assert words[start + 1] == "call", words
    args: list[str] = []
    for word in words[start + 2 :]:
        if word in {">>", ">", "2>&1", "&&", "||", ";", "|"}:
            break
        args.append(word)
    return args


def _cron_entry() -> list[str]:
    """The crontab's one entry: five time fields and the command (crontab(5))."""
    entries = [
        line
        for line in (EXAMPLES / "crontab").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert len(entries) == 1, entries
    fields = entries[0].split(None, 5)
    assert len(fields) == 6, fields
    return fields


def _cron_args() -> list[str]:
    return _sip2rtmp_args(shlex.split(_cron_entry()[5]))


def _service_exec() -> list[str]:
    return shlex.split(_unit(SERVICE)["Service"]["ExecStart"])


def _service_args() -> list[str]:
    shell, flag, script = _service_exec()
    assert (shell, flag) == ("/bin/sh", "-c")
    return _sip2rtmp_args(shlex.split(script))


def _help_flags() -> set[str]:
    result = CliRunner().invoke(call_module.call, ["--help"])
    assert result.exit_code == 0, result.output
    return set(re.findall(r"--[a-z][a-z0-9-]*", result.output))


@pytest.mark.parametrize("name", ["weekly", "hotline"])
def test_each_example_profile_gives_valid_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, table = load_profile(name, CONFIG)
    settings, _ = invoke_call("--config", str(CONFIG), "--profile", name, *PASSWORD,
                              monkeypatch=monkeypatch)  # fmt: skip
    assert settings.sip_login == table["sip-login"]
    assert settings.sip_domain == table["sip-domain"]
    assert settings.sip_transport == table["sip-transport"]
    urls = table["rtmp-url"]
    assert len(settings.rtmp_targets) == len(urls) >= 1
    assert settings.video is table.get("video", True)


def test_the_profiles_differ_where_the_file_says() -> None:
    """The two profiles are two setups: one TLS stream, one TCP call behind a proxy to two."""
    _, weekly = load_profile("weekly", CONFIG)
    _, hotline = load_profile("hotline", CONFIG)
    assert (weekly["sip-transport"], len(weekly["rtmp-url"])) == ("tls", 1)
    assert (hotline["sip-transport"], len(hotline["rtmp-url"])) == ("tcp", 2)
    assert "sip-outbound-proxy" in hotline


@pytest.mark.parametrize("source", ["crontab", "service"])
def test_every_flag_of_the_scheduled_commands_is_a_call_flag(source: str) -> None:
    args = _cron_args() if source == "crontab" else _service_args()
    flags = {arg for arg in args if arg.startswith("--")}
    assert flags, args
    assert flags <= _help_flags(), flags - _help_flags()


def test_the_cron_line_runs_the_weekly_profile_from_the_default_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cron line names no `--config`: it reads `$XDG_CONFIG_HOME/sip2rtmp/config.toml`,
    where the config's own header says to copy it."""
    assert "~/.config/sip2rtmp/config.toml" in CONFIG.read_text()
    (tmp_path / "sip2rtmp").mkdir()
    shutil.copy(CONFIG, tmp_path / "sip2rtmp" / "config.toml")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    settings, _ = invoke_call(*_cron_args(), *PASSWORD, monkeypatch=monkeypatch)
    _, weekly = load_profile("weekly", CONFIG)
    assert settings.max_duration == weekly["max-duration"]
    assert settings.sip_transport == weekly["sip-transport"]


def test_the_service_runs_the_installed_config_with_its_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _unit(SERVICE)["Service"]
    exec_start = _service_exec()
    assert Path(exec_start[0]).is_absolute(), "systemd.service(5): an absolute program path"
    args = _service_args()
    config = args[args.index("--config") + 1]
    assert f"the profile to {config}" in " ".join(SERVICE.read_text().split()), (
        "the install note puts the config where ExecStart reads it"
    )
    credential, source = service["LoadCredential"].split(":", 1)
    assert f'"$CREDENTIALS_DIRECTORY/{credential}"' in exec_start[2]
    assert f"password alone to {source}" in " ".join(SERVICE.read_text().split())
    installed = tmp_path / "config.toml"
    shutil.copy(CONFIG, installed)
    args[args.index("--config") + 1] = str(installed)
    settings, _ = invoke_call(*args, *PASSWORD, monkeypatch=monkeypatch)
    assert settings.callee_uri.startswith("sip:conference@bridge.example.com")


def test_the_timer_starts_the_service_when_the_cron_line_does() -> None:
    """A timer with no `Unit=` starts the service of its own name (systemd.timer(5))."""
    timer = _unit(TIMER)
    assert timer["Timer"].get("Unit", f"{TIMER.stem}.service") == SERVICE.name
    assert TIMER.stem == SERVICE.stem
    assert TIMER.name in SERVICE.read_text(), "the service names the timer that starts it"
    assert timer["Install"]["WantedBy"] == "timers.target"
    minute, hour, _, _, weekday = _cron_entry()[:5]
    weekdays = {"0": "Sun", "7": "Sun", "1": "Mon", "6": "Sat"}
    day, _, clock = timer["Timer"]["OnCalendar"].split()
    assert day == weekdays[weekday]
    assert clock == f"{int(hour):02d}:{int(minute):02d}:00"
