"""`sip2rtmp serve`'s flags: what it refuses before it listens."""

from __future__ import annotations

from pathlib import Path

import pytest

from sip2rtmp.cli.main import run


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--listen", "0.0.0.0:8081"],
        ["serve", "--listen", "[::]:8081"],
        ["serve", "--listen", "192.0.2.1:8081"],
        ["serve", "--listen", "127.0.0.1:99999"],
        ["serve", "--webhook", "ftp://example.com/hook"],
    ],
)
def test_unsafe_or_malformed_settings_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv) == 2
    assert "sip2rtmp:" in capsys.readouterr().err


def test_a_short_or_missing_token_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = tmp_path / "token"
    short.write_text("abc\n", encoding="utf-8")
    for path in (short, tmp_path / "missing"):
        argv = ["serve", "--listen", "0.0.0.0:8081", "--token-file", str(path)]
        assert run(argv) == 2
        assert "--token-file" in capsys.readouterr().err


def test_beyond_loopback_the_message_names_the_missing_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run(["serve", "--listen", "0.0.0.0:8081"])
    assert "--token-file" in capsys.readouterr().err


def test_the_listen_address_comes_from_the_environment_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/cli.md: `SIP2RTMP_SERVE_LISTEN` stands for --listen; a public address read from
    it is held to the same rule (a token first)."""
    monkeypatch.setenv("SIP2RTMP_SERVE_LISTEN", "192.0.2.1:8081")
    assert run(["serve"]) == 2
    assert "192.0.2.1" in capsys.readouterr().err
