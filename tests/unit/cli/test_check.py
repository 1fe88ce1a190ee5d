"""`sip2rtmp check` offline: a stub SIP server, closed ports, codecs and media files.

The checks against the lab's kamailio and RTMP server are in tests/integration/test_check_lab.py.
"""

from __future__ import annotations

import json
import os
import socket
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sip2rtmp.cli import check as check_module
from sip2rtmp.cli.check import _audio_profile, check
from sip2rtmp.cli.main import run
from sip2rtmp.cli.outcomes import ExitCode
from sip2rtmp.config import ConfigError
from tests.unit.cli.sip_stub import OptionsResponder, invoke_check

WRONG_PASSWORD = "Wrong-Pw-Check-Walrus-5521"
STREAM_KEY = "check-key-Gannet-3390"


@pytest.fixture
def responder() -> Iterator[OptionsResponder]:
    server = OptionsResponder()
    yield server
    server.close()


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def marks(stdout: str) -> list[str]:
    return [line.split(" ", 1)[0] for line in stdout.splitlines()]


def offline_args(port: int, *extra: str) -> list[str]:
    return [
        "--sip-domain",
        "pbx.test",
        "--sip-outbound-proxy",
        f"127.0.0.1:{port}",
        "--no-register",
        "--rtmp-url",
        "rtmp://127.0.0.1:1/live",
        "--rtmp-stream",
        STREAM_KEY,
        *extra,
    ]


def test_closed_rtmp_port_fails_with_exit_8(responder: OptionsResponder) -> None:
    code, stdout = invoke_check(*offline_args(responder.port))
    assert code == ExitCode.RTMP_FAILED
    assert responder.requests == [("OPTIONS", None)]
    lines = stdout.splitlines()
    assert lines[0].startswith(f"✓ SIP server udp:127.0.0.1:{responder.port}: reachable")
    assert "OPTIONS answered 200 OK" in lines[0]
    assert lines[1:3] == [
        f"✓ SIP server location 127.0.0.1:{responder.port}: an IP address, nothing to look up",
        f"✓ SIP server target udp:127.0.0.1:{responder.port}: 1 of 1: IP address 127.0.0.1 "
        "(answered the OPTIONS)",
    ]
    assert lines[3].startswith("✓ public address udp:127.0.0.1:")
    assert lines[3].endswith(
        ": same as local (no other address in the answer's Via received/rport)"
    )
    assert lines[4].startswith("- SIP registration")
    failed = [line for line in lines if line.startswith("✗")]
    assert len(failed) == 1
    assert failed[0].startswith("✗ RTMP output rtmp://127.0.0.1:1/live/chec****")
    assert "Connection refused" in failed[0]
    assert STREAM_KEY not in stdout


def test_unreachable_sip_server_fails_with_exit_7_and_skips_registration() -> None:
    port = closed_udp_port()
    code, stdout = invoke_check(
        "--sip-login",
        "relay",
        "--sip-password",
        "irrelevant-Pw-1",
        "--sip-domain",
        "pbx.test",
        "--sip-outbound-proxy",
        f"127.0.0.1:{port}",
        "--rtmp-url",
        "rtmp://127.0.0.1:1/live/key-123456789",
    )
    assert code == ExitCode.SIP_UNREACHABLE
    lines = stdout.splitlines()
    assert lines[0].startswith(f"✗ SIP server udp:127.0.0.1:{port}")
    assert lines[2] == f"✓ SIP server target udp:127.0.0.1:{port}: 1 of 1: IP address 127.0.0.1"
    assert lines[3:5] == [
        f"- public address udp:127.0.0.1:{port}: server unreachable",
        "- SIP registration relay@pbx.test: server unreachable",
    ]
    assert marks(stdout).count("✗") == 2  # the SIP server, and the closed RTMP port


def test_a_silent_sip_server_fails_with_exit_7_after_the_options_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = int(silent.getsockname()[1])
        started = time.monotonic()
        code, stdout = invoke_check(*offline_args(port))
        waited = time.monotonic() - started
    assert code == ExitCode.SIP_UNREACHABLE
    assert waited == pytest.approx(check_module.OPTIONS_TIMEOUT, abs=1.5)
    lines = stdout.splitlines()
    assert lines[0] == (
        f"✗ SIP server udp:127.0.0.1:{port}: no answer to OPTIONS within 5 s — check "
        "--sip-domain, --sip-outbound-proxy, --sip-port and --sip-transport"
    )
    assert "- SIP registration pbx.test: server unreachable" in lines


def test_json_reports_one_object_per_check_and_a_summary(responder: OptionsResponder) -> None:
    code, stdout = invoke_check(*offline_args(responder.port, "--json"))
    records = [json.loads(line) for line in stdout.splitlines()]
    assert code == ExitCode.RTMP_FAILED
    assert {r["event"] for r in records[:-1]} == {"check"}
    assert [r["check"] for r in records[:6]] == [
        "SIP server",
        "SIP server location",
        "SIP server target",
        "public address",
        "SIP registration",
        "RTMP output",
    ]
    assert [r["result"] for r in records[:6]] == ["pass", "pass", "pass", "pass", "skip", "fail"]
    assert records[5]["exitCode"] == ExitCode.RTMP_FAILED
    assert "exitCode" not in records[0]
    address = f"127.0.0.1:{responder.port}"
    assert records[1]["tried"] == []
    assert records[1]["targets"] == [
        {"address": address, "transport": "udp", "record": "IP address 127.0.0.1"}
    ]
    assert (records[2]["order"], records[2]["answered"]) == (1, True)
    assert records[3]["source"] == "local"
    assert records[3]["address"] == records[3]["local"]
    assert records[-1] == {"event": "checked", "ok": False, "exitCode": 8}
    codecs = {r["target"] for r in records[:-1] if r["check"] == "codec"}
    assert codecs >= {"aac", "libx264", "opus"}


def test_registration_is_removed_again(responder: OptionsResponder) -> None:
    args = offline_args(responder.port, "--sip-login", "relay", "--sip-password", WRONG_PASSWORD)
    code, stdout = invoke_check(*[arg for arg in args if arg != "--no-register"])
    assert code == ExitCode.RTMP_FAILED
    assert responder.requests == [("OPTIONS", None), ("REGISTER", "600"), ("REGISTER", "0")]
    assert "✓ SIP registration relay@pbx.test: credentials accepted" in stdout
    assert WRONG_PASSWORD not in stdout


def test_installed_codecs_all_pass() -> None:
    results = check_module.check_codecs()
    assert [r.result for r in results] == [check_module.Result.PASS] * len(check_module.CODECS)


def test_a_missing_codec_fails_as_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    codecs = (*check_module.CODECS, ("no_such_codec", ("r", "w"), "a codec nobody has"))
    monkeypatch.setattr(check_module, "CODECS", codecs)
    failed = [r for r in check_module.check_codecs() if r.result is check_module.Result.FAIL]
    assert len(failed) == 1
    assert failed[0].exit_code == ExitCode.USAGE
    assert failed[0].line() == (
        "✗ codec no_such_codec: no decoder and encoder in this PyAV build (a codec nobody has)"
    )


def test_a_call_profile_works_for_check(tmp_path: Path, responder: OptionsResponder) -> None:
    profile = tmp_path / "weekly.toml"
    profile.write_text(
        'callee = "conference@bridge.test"\n'
        "max-duration = 3600\n"
        'sip-domain = "pbx.test"\n'
        f'sip-outbound-proxy = "127.0.0.1:{responder.port}"\n'
        "register = false\n"
        'rtmp-url = ["rtmp://127.0.0.1:1/live"]\n'
    )
    code, stdout = invoke_check("--profile", str(profile))
    assert code == ExitCode.RTMP_FAILED
    # The profile names a callee: a second OPTIONS asks it what media it takes.
    assert responder.requests == [("OPTIONS", None), ("OPTIONS", None)]
    assert stdout.startswith(f"✓ SIP server udp:127.0.0.1:{responder.port}")
    assert "- callee media sip:conference@bridge.test: answered 200 without SDP" in stdout


def test_no_sip_server_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--no-register", "--rtmp-url", "rtmp://127.0.0.1/live"]
    with pytest.raises(ConfigError, match="missing --sip-domain or --sip-outbound-proxy"):
        invoke_check(*args)
    for name in [key for key in os.environ if key.startswith("SIP2RTMP_")]:
        monkeypatch.delenv(name)
    assert run(["check", *args]) == ExitCode.USAGE
    assert "--sip-outbound-proxy" in capsys.readouterr().err


def test_help_shows_the_sip_and_rtmp_flags_but_not_the_call_only_ones() -> None:
    result = CliRunner().invoke(check, ["--help"])
    for flag in ("--sip-login", "--sip-password", "--sip-outbound-proxy", "--rtmp-url", "--json"):
        assert flag in result.stdout
    for flag in ("--callee", "--max-duration", "--ring-timeout", "--call-id"):
        assert flag not in result.stdout


def test_announcement_and_slate_files_are_decoded(tmp_path: Path) -> None:
    tone = tmp_path / "tone.wav"
    with wave.open(str(tone), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * 8000 * 2)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    results = check_module.check_media_files(tone, True, broken)
    assert results[0].line() == (f"✓ announcement {tone}: decodes: 2.0 s, played looped")
    assert results[1].result is check_module.Result.FAIL
    assert results[1].exit_code == ExitCode.USAGE
    assert results[1].line().startswith(f"✗ slate {broken}: --slate {broken}: ")


@pytest.mark.parametrize(
    ("sdp", "profile"),
    [
        (None, None),
        (
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/SAVP 0\r\n",
            "RTP/SAVP",
        ),
        (b"v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nt=0 0\r\nm=video 9 RTP/SAVP 96\r\n", None),
        (b"v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n", "RTP/AVP"),
        (b"not sdp at all", None),
    ],
)
def test_the_callee_media_check_reads_the_audio_profile_of_an_options_answer(
    sdp: bytes | None, profile: str | None
) -> None:
    assert _audio_profile(sdp) == profile
