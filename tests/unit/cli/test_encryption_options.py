"""`--srtp`, `--rtmps-ca` and `--rtmps-insecure` as docs/cli.md and docs/usage.md describe them:
checked before anything is sent, taken from flags, profiles and the environment, warned about
when they leave something open; SRTP keys masked wherever text leaves the process; the hint a
refused plain-RTP offer gets; and the suite of an encrypted call in its events."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import ssl
import subprocess
from pathlib import Path

import pytest

from sip2rtmp.cli import main
from sip2rtmp.cli.events import record
from sip2rtmp.cli.live import LiveView
from sip2rtmp.cli.options import RunState
from sip2rtmp.cli.outcomes import ExitCode, explain
from sip2rtmp.cli.output import EventPrinter, Redactor, configure_logging, print_error
from sip2rtmp.config import ConfigError
from sip2rtmp.outcomes import Rejected, RunFailed, UnusableAnswer
from sip2rtmp.relay.events import Codec, Established, Failed, OutputChanged, RelayEvent
from tests.unit.cli.sip_stub import call_with_env
from tests.unit.cli.test_contract import VALID, assert_one_line_usage_error, clean_env, run
from tests.unit.cli.test_documented_outcomes import RejectingPeer, call_command
from tests.unit.cli.test_live import rendered
from tests.unit.cli.test_settings import settings

CALL = [*VALID, "--sip-password", "pw"]
SUITE = "AES_CM_128_HMAC_SHA1_80"
KEY = base64.b64encode(bytes(range(30))).decode()
"""A master key and salt as an `inline:` carries them (RFC 4568 §6.1: 30 bytes, base64)."""
OTHER_KEY = base64.b64encode(bytes(range(100, 130))).decode()
CRYPTO = f"a=crypto:1 {SUITE} inline:{KEY}|2^20|1:4"
OFFER = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    f"{CRYPTO}\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{OTHER_KEY}\r\n"
)
CLEAR_TEXT = "SRTP keys travel in clear text over SIP/{}: use --sip-transport tls to protect them"
SRTP_HINT = "the callee may require encrypted media: try --srtp required (with --sip-transport tls)"
RTMPS_URL = "rtmps://ingest.example.test/live"


@pytest.fixture
def system_cas() -> str:
    """The PEM bundle OpenSSL trusts by default: a real CA file for --rtmps-ca."""
    path = ssl.get_default_verify_paths().openssl_cafile
    if not Path(path).is_file():
        pytest.fail(f"no system CA bundle at {path} (Debian package ca-certificates)")
    return path


def assert_no_key(text: str) -> None:
    """No key left, and each masked once: text that passes several masks reads the same."""
    assert KEY not in text and OTHER_KEY not in text, text
    assert "inline:***" in text and "inline:****" not in text, text


# ---- settings from flags, profiles and the environment ---------------------------------------


def test_by_default_media_is_plain_and_rtmps_verified_against_the_system() -> None:
    s = settings()
    assert (s.srtp, s.rtmps_ca, s.rtmps_insecure) == ("off", None, False)


@pytest.mark.parametrize(
    ("typed", "mode"),
    [("off", "off"), ("optional", "optional"), ("required", "required"), ("Required", "required")],
)
def test_each_srtp_mode_reaches_the_settings(typed: str, mode: str) -> None:
    assert settings(srtp=typed).srtp == mode


@pytest.mark.parametrize("typed", ["mandatory", "on", "", "sdes"])
def test_any_other_srtp_mode_is_a_usage_error(typed: str) -> None:
    with pytest.raises(ConfigError, match=r"^--srtp must be one of off, optional, required$"):
        settings(srtp=typed)


def test_the_flags_reach_the_relay(
    system_cas: str, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    args = [*CALL, "--sip-transport", "tls", "--srtp", "required", "--rtmps-ca", system_cas]
    s, _, _ = call_with_env(args, {}, monkeypatch)
    assert (s.srtp, s.rtmps_ca, s.rtmps_insecure) == ("required", system_cas, False)
    s, _, _ = call_with_env([*CALL, "--rtmps-insecure"], {}, monkeypatch)
    assert (s.srtp, s.rtmps_ca, s.rtmps_insecure) == ("off", None, True)


@pytest.mark.parametrize(
    ("srtp_key", "ca_key", "insecure_key"),
    [("srtp", "rtmps-ca", "rtmps-insecure"), ("srtp", "rtmps_ca", "rtmps_insecure")],
)
def test_profile_keys_reach_the_relay(
    tmp_path: Path,
    system_cas: str,
    monkeypatch: pytest.MonkeyPatch,
    restore_logging: None,
    srtp_key: str,
    ca_key: str,
    insecure_key: str,
) -> None:
    verified = tmp_path / "verified.toml"
    verified.write_text(f'{srtp_key} = "optional"\n{ca_key} = "{system_cas}"\n')
    s, _, _ = call_with_env(["--profile", str(verified), *CALL], {}, monkeypatch)
    assert (s.srtp, s.rtmps_ca, s.rtmps_insecure) == ("optional", system_cas, False)
    insecure = tmp_path / "insecure.toml"
    insecure.write_text(f"{insecure_key} = true\n")
    s, _, _ = call_with_env(["--profile", str(insecure), *CALL], {}, monkeypatch)
    assert s.rtmps_insecure is True


def test_a_bad_srtp_value_in_a_profile_names_the_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = tmp_path / "bad.toml"
    profile.write_text('srtp = "always"\n')
    with pytest.raises(ConfigError) as raised:
        call_with_env(["--profile", str(profile), *CALL], {}, monkeypatch)
    assert str(profile) in raised.value.message and "srtp" in raised.value.message


def test_a_bad_srtp_flag_is_one_line_exit_2() -> None:
    assert_one_line_usage_error(run("call", *CALL, "--srtp", "sometimes"), "--srtp")


def test_a_ca_and_no_verification_together_are_a_usage_error(system_cas: str) -> None:
    with pytest.raises(ConfigError, match=r"^--rtmps-insecure .*: --rtmps-ca contradicts it$"):
        settings(rtmps_ca=system_cas, rtmps_insecure=True)
    result = run("call", *CALL, "--rtmps-ca", system_cas, "--rtmps-insecure")
    assert_one_line_usage_error(result, "--rtmps-ca contradicts it")


def test_a_ca_file_that_cannot_serve_is_a_usage_error(tmp_path: Path) -> None:
    """Found before the call, not when the output connects: missing, a directory, not PEM."""
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match=f"^--rtmps-ca {re.escape(str(missing))}: no such file$"):
        settings(rtmps_ca=str(missing))
    with pytest.raises(
        ConfigError, match=f"^--rtmps-ca {re.escape(str(tmp_path))}: cannot read it"
    ):
        settings(rtmps_ca=str(tmp_path))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(
        ConfigError, match=f"^--rtmps-ca {re.escape(str(junk))}: holds no PEM certificate$"
    ):
        settings(rtmps_ca=str(junk))
    assert_one_line_usage_error(run("call", *CALL, "--rtmps-ca", str(missing)), "no such file")


# ---- warnings at the start ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "transport", "warned"),
    [
        ("required", "udp", True),
        ("optional", "udp", True),
        ("required", "tcp", True),
        ("optional", "tcp", True),
        ("required", "tls", False),
        ("off", "udp", False),
    ],
)
def test_srtp_over_unprotected_signalling_is_warned_about_once(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None, mode: str, transport: str, warned: bool
) -> None:
    """RFC 4568 §8.3: SDES keys are as safe as the signalling that carries them."""
    args = [*CALL, "--srtp", mode, "--sip-transport", transport]
    _, _, stderr = call_with_env(args, {}, monkeypatch)
    warning = CLEAR_TEXT.format(transport.upper())
    assert stderr.count(warning) == (1 if warned else 0), stderr
    assert ("SRTP keys" in stderr) is warned
    if warned:
        assert "WARNING" in next(line for line in stderr.splitlines() if warning in line)


@pytest.mark.parametrize(
    ("urls", "warned"),
    [((RTMPS_URL,), True), (("rtmp://127.0.0.1/live", RTMPS_URL), True), ((), False)],
)
def test_rtmps_without_verification_is_warned_about_once(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None, urls: tuple[str, ...], warned: bool
) -> None:
    """`VALID` streams to rtmp:// only: nothing to verify there, nothing to warn about."""
    extra = [arg for url in urls for arg in ("--rtmp-url", url)]
    _, _, stderr = call_with_env([*CALL, *extra, "--rtmps-insecure"], {}, monkeypatch)
    assert stderr.count("--rtmps-insecure: ") == (1 if warned else 0), stderr
    if warned:
        assert "stream key" in stderr and "not checked" in stderr


# ---- SRTP keys in no output -----------------------------------------------------------------


def test_a_logged_sdp_has_its_keys_masked_in_the_log_file_and_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """-vv and --log-file log every SIP message with its body: the a=crypto lines keep their
    tag and suite, the rest of the SDP is untouched."""
    log_file = tmp_path / "run.log"
    configure_logging(2, False, log_file, Redactor())
    invite = f"INVITE sip:1001@pbx.test SIP/2.0\r\nContent-Type: application/sdp\r\n\r\n{OFFER}"
    logging.getLogger("sip2rtmp.sip.wire").debug("sent 192.0.2.9:5060\n%s", invite)
    logging.getLogger("sip2rtmp.relay").info("answer refused: %s", CRYPTO)
    for text in (log_file.read_text(), capsys.readouterr().err):
        assert_no_key(text)
        assert f"a=crypto:1 {SUITE} inline:***\n" in text
        assert "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:***\n" in text
        assert "m=audio 4000 RTP/SAVP 0\n" in text
        assert f"answer refused: a=crypto:1 {SUITE} inline:***\n" in text


def test_an_error_line_has_its_keys_masked(capsys: pytest.CaptureFixture[str]) -> None:
    print_error(f"the answer's {CRYPTO} is unusable", f"peer said {CRYPTO}")
    line = capsys.readouterr().err
    assert_no_key(line)
    assert line.count("\n") == 1


def test_an_unexpected_error_has_its_keys_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(**_: object) -> None:
        raise ValueError(f"cannot use {CRYPTO}")

    monkeypatch.setattr(main.cli, "main", fail)
    assert main.run([]) == ExitCode.INTERNAL
    assert_no_key(capsys.readouterr().err)


def test_events_and_the_live_view_have_keys_masked() -> None:
    """A failure's reason and an output's error are free text that can quote SDP."""
    failed = Failed(UnusableAnswer(200, f"no usable crypto: {CRYPTO}"))
    output = OutputChanged("rtmp://h/live/***", "failed", f"bad {CRYPTO}")
    assert_no_key(explain(failed.outcome).message)
    assert_no_key(record(failed)["reason"])
    assert_no_key(record(output)["error"])
    for as_json in (True, False):
        printed = io.StringIO()
        printer = EventPrinter("c1", as_json=as_json, stream=printed)
        printer(failed)
        printer(output)
        assert_no_key(printed.getvalue())
    view = LiveView()
    view(output)
    view(failed)
    assert_no_key(rendered(view, width=400))


# ---- the hint of a refused plain-RTP offer --------------------------------------------------


@pytest.mark.parametrize("status", [488, 406, 415])
def test_a_plain_offer_refused_for_its_media_hints_at_srtp(status: int) -> None:
    refused = Rejected("INVITE", status, "Not Acceptable Here", "pbx.test")
    explained = explain(refused, srtp="off")
    assert explained.hint == SRTP_HINT
    assert explained.exit_code == ExitCode.CALL_FAILED, "the response's own exit code"
    for mode in ("optional", "required", None):
        assert SRTP_HINT not in explain(refused, srtp=mode).hint, mode


def test_only_a_refused_call_gets_the_srtp_hint() -> None:
    """A REGISTER answered 488 is not about media; a busy callee keeps its own hint."""
    assert explain(Rejected("REGISTER", 488, "", "pbx.test"), srtp="off").hint == ""
    busy = explain(Rejected("INVITE", 486, "Busy Here", "pbx.test"), srtp="off")
    assert busy.hint == "try again later"


@pytest.mark.parametrize(("mode", "hinted"), [("off", True), ("required", False)])
def test_the_command_line_knows_the_srtp_mode_of_the_refused_call(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], mode: str, hinted: bool
) -> None:
    def refuse(*, obj: RunState, **_: object) -> None:
        obj.srtp = "off" if mode == "off" else "required"
        raise RunFailed(Rejected("INVITE", 488, "Not Acceptable Here", "pbx.test"))

    monkeypatch.setattr(main.cli, "main", refuse)
    assert main.run([]) == ExitCode.CALL_FAILED
    line = "sip2rtmp: error: call failed (SIP 488 Not Acceptable Here)"
    assert capsys.readouterr().err == line + (f" — {SRTP_HINT}" if hinted else "") + "\n"


@pytest.mark.parametrize(("mode", "hinted"), [("off", True), ("required", False)])
def test_a_callee_refusing_the_offer_gets_one_line_and_its_code(mode: str, hinted: bool) -> None:
    """The real command against a SIP peer that answers every INVITE 488."""
    peer = RejectingPeer(488, "Not Acceptable Here")
    peer.start()
    try:
        done = subprocess.run(
            call_command(peer, "--srtp", mode),
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=clean_env(),
        )  # fmt: skip
    finally:
        peer.stop()
    assert done.returncode == ExitCode.CALL_FAILED, done.stderr
    assert peer.invites >= 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("sip2rtmp: error:")]
    assert len(errors) == 1 and "SIP 488" in errors[0], done.stderr
    assert (SRTP_HINT in errors[0]) is hinted
    assert "Traceback" not in done.stderr
    if mode == "off":
        assert done.stderr.splitlines() == errors, "nothing else on stderr"


# ---- the suite in events --------------------------------------------------------------------


def established(srtp: str | None) -> Established:
    return Established(200, "OK", Codec("PCMU", 8000), None, srtp=srtp)


def printed(event: RelayEvent, *, as_json: bool) -> str:
    stream = io.StringIO()
    EventPrinter("c1", as_json=as_json, stream=stream)(event)
    return stream.getvalue()


@pytest.mark.parametrize("suite", [SUITE, None])
def test_established_names_the_srtp_suite_or_null(suite: str | None) -> None:
    fields = record(established(suite))
    assert list(fields)[-1] == "srtp" and fields["srtp"] == suite
    assert json.loads(printed(established(suite), as_json=True))["srtp"] == suite
    plain = printed(established(suite), as_json=False)
    assert plain.rstrip("\n").endswith(f" srtp={suite or 'null'}")


def test_the_live_view_shows_the_suite_with_the_codecs() -> None:
    encrypted, plain = LiveView(), LiveView()
    encrypted(established(SUITE))
    plain(established(None))
    codecs = next(line for line in rendered(encrypted, width=160).splitlines() if "Codecs" in line)
    assert f"audio PCMU/8000   video none   SRTP {SUITE}   → RTMP" in codecs
    assert "SRTP" not in rendered(plain, width=160)
