"""Where the SIP password may come from: a flag/env/profile value, a file, or a command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sip2rtmp.cli.options import password_from
from sip2rtmp.config import ConfigError

SECRET = "Pw-from-source-41c7"
SIP2RTMP = str(Path(sys.executable).with_name("sip2rtmp"))


def test_the_given_value_is_used_as_it_is() -> None:
    assert password_from(SECRET, None, None) == SECRET
    assert password_from(None, None, None) is None


def test_first_line_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text(f"{SECRET}\nsecond line\n")
    assert password_from(None, path, None) == SECRET


def test_first_line_of_a_command() -> None:
    assert password_from(None, None, f"printf '{SECRET}\\nmore'") == SECRET


def test_only_one_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only one of --sip-password, --sip-password-file"):
        password_from(SECRET, tmp_path / "pw", None)


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("false", "exited with 1"),
        ("/nonexistent/password-helper", "cannot run"),
        ("sh -c 'echo oops-output >&2; exit 3'", "exited with 3"),
    ],
)
def test_a_failing_command_is_a_usage_error_that_shows_no_output(command: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as raised:
        password_from(None, None, command)
    assert "oops-output" not in str(raised.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read --sip-password-file"):
        password_from(None, tmp_path / "absent", None)


def test_cli_reports_conflicting_sources_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text(SECRET)
    done = subprocess.run(
        [SIP2RTMP, "call", "--callee", "1", "--sip-login", "u", "--sip-domain", "d.test",
         "--rtmp-url", "rtmp://h/a", "--sip-password", "other-Pw-9", "--sip-password-file",
         str(path)],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert SECRET not in done.stderr + done.stdout
    assert "other-Pw-9" not in done.stderr + done.stdout
