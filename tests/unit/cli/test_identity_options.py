"""Caller identity and early media as docs/cli.md describes them: `--display-name`,
`--caller-id`, `--asserted-identity`, `--identity-header` and `--early-media`, checked before
anything is sent and handed to the relay as typed (or escaped) from flags, profiles and the
environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from sip2rtmp.config import ConfigError
from tests.unit.cli.sip_stub import call_with_env
from tests.unit.cli.test_contract import VALID, assert_one_line_usage_error, run
from tests.unit.cli.test_settings import settings

IDENTITY = "sip:+4930123@carrier.test"


def test_without_the_flags_the_call_names_only_the_account() -> None:
    """The defaults: no display name, the login as From user, no identity header to send
    (ppi would be the header), no early media."""
    s = settings()
    assert (s.display_name, s.caller_id, s.asserted_identity) == (None, None, None)
    assert s.identity_header == "P-Preferred-Identity"
    assert s.early_media is False


def test_the_display_name_is_kept_as_typed() -> None:
    """Quotes and backslashes are the quoted-string's to escape when the From is written
    (RFC 3261 §25.1 `quoted-pair`); here the name stays as the user typed it."""
    assert settings(display_name='Studio "A" \\ Ü').display_name == 'Studio "A" \\ Ü'
    assert settings(display_name="").display_name is None


@pytest.mark.parametrize("name", ["Studio\r\nVia: x", "Studio\nA", "Stu\x00dio", "A\x1b[2J"])
def test_a_display_name_a_quoted_string_cannot_hold_is_a_usage_error(name: str) -> None:
    with pytest.raises(ConfigError, match="--display-name: control characters"):
        settings(display_name=name)


def test_an_undecodable_display_name_is_a_usage_error() -> None:
    """Command-line bytes that are not UTF-8 arrive as lone surrogates."""
    with pytest.raises(ConfigError, match="--display-name: is not valid UTF-8"):
        settings(display_name="Studio \udcff")


@pytest.mark.parametrize(
    ("typed", "sent"),
    [("4930123", "4930123"), ("+49-30-123", "+49-30-123"), ("desk#1", "desk%231")],
)
def test_the_caller_id_is_escaped_like_the_login(typed: str, sent: str) -> None:
    s = settings(caller_id=typed)
    assert s.caller_id == sent
    assert s.sip_login == "relay", "the account stays the login"


@pytest.mark.parametrize("typed", ["49 30 123", "4930123\r\n", "\t"])
def test_a_caller_id_with_whitespace_or_controls_is_a_usage_error(typed: str) -> None:
    with pytest.raises(ConfigError, match=r"^--caller-id: "):
        settings(caller_id=typed)


@pytest.mark.parametrize(
    ("typed", "sent"),
    [
        (IDENTITY, IDENTITY),
        ("SIPS:studio@carrier.test", "sips:studio@carrier.test"),
        ("sip:studio@[2001:db8:0::1]:5061", "sip:studio@[2001:db8::1]:5061"),
        ("tel:+49-30-123", "tel:+49-30-123"),
        ("tel:123;phone-context=+4930", "tel:123;phone-context=+4930"),
    ],
)
def test_the_asserted_identity_is_a_sip_sips_or_tel_uri(typed: str, sent: str) -> None:
    """RFC 3325 §9.1: the header holds a name-addr whose URI is a SIP, SIPS or tel URI."""
    assert settings(asserted_identity=typed).asserted_identity == sent


@pytest.mark.parametrize(
    ("typed", "needle"),
    [
        ("+4930123", "is not a sip:, sips: or tel: URI"),
        ("studio@carrier.test", "is not a sip:, sips: or tel: URI"),
        ("mailto:studio@carrier.test", "is not a sip:, sips: or tel: URI"),
        ("sip:a@carrier.test?Via=x", "URI headers"),
        ("sip:a@carrier.test>, <sip:b@x.test", "whitespace"),
        ("sip:a@carrier.test\r\nVia:x", "control characters"),
        ("tel:123", "phone-context"),
    ],
)
def test_anything_else_as_asserted_identity_is_a_usage_error(typed: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=r"^--asserted-identity") as raised:
        settings(asserted_identity=typed)
    assert needle in raised.value.message


@pytest.mark.parametrize(
    ("value", "header"),
    [
        ("pai", "P-Asserted-Identity"),
        ("PPI", "P-Preferred-Identity"),
        ("ppi", "P-Preferred-Identity"),
    ],
)
def test_the_identity_header_is_named_by_its_initials(value: str, header: str) -> None:
    assert settings(identity_header=value).identity_header == header
    with pytest.raises(ConfigError, match="--identity-header must be one of pai, ppi"):
        settings(identity_header="P-Asserted-Identity")


FLAGS = [
    "--display-name", "Studio A", "--caller-id", "4930123", "--asserted-identity", IDENTITY,
    "--identity-header", "pai", "--early-media",
]  # fmt: skip


def test_the_flags_reach_the_relay(monkeypatch: pytest.MonkeyPatch) -> None:
    s, _, _ = call_with_env([*VALID, "--sip-password", "pw", *FLAGS], {}, monkeypatch)
    assert (s.display_name, s.caller_id, s.asserted_identity) == ("Studio A", "4930123", IDENTITY)
    assert (s.identity_header, s.early_media) == ("P-Asserted-Identity", True)


def test_profile_keys_reach_the_relay_and_flags_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = tmp_path / "carrier.toml"
    profile.write_text(
        'display-name = "Studio A"\ncaller_id = "4930123"\n'
        f'asserted-identity = "{IDENTITY}"\nidentity-header = "pai"\nearly-media = true\n'
    )
    args = ["--profile", str(profile), *VALID, "--sip-password", "pw"]
    s, _, _ = call_with_env(args, {}, monkeypatch)
    assert (s.display_name, s.caller_id, s.asserted_identity) == ("Studio A", "4930123", IDENTITY)
    assert (s.identity_header, s.early_media) == ("P-Asserted-Identity", True)
    s, _, _ = call_with_env([*args, "--identity-header", "ppi"], {}, monkeypatch)
    assert s.identity_header == "P-Preferred-Identity"


def test_a_profile_with_a_wrong_type_names_the_key(tmp_path: Path) -> None:
    profile = tmp_path / "carrier.toml"
    profile.write_text('early-media = "yes"\n')
    result = run("call", "--profile", str(profile), *VALID, "--sip-password", "pw")
    assert_one_line_usage_error(result, "early-media must be true or false")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--display-name", "Studio\r\nVia: SIP/2.0/UDP evil.test"], "--display-name"),
        (["--caller-id", "49 30"], "--caller-id"),
        (["--asserted-identity", "+4930123"], "--asserted-identity"),
        (["--identity-header", "pid"], "--identity-header"),
    ],
)
def test_bad_identity_flags_are_one_line_usage_errors(args: list[str], needle: str) -> None:
    assert_one_line_usage_error(run("call", *VALID, "--sip-password", "pw", *args), needle)


def test_check_takes_the_call_flags_but_does_not_list_them() -> None:
    """A profile written for `call` works for `check`; its --help lists what it checks."""
    result = run("check", "--help")
    assert result.returncode == 0
    for flag in ("--display-name", "--caller-id", "--asserted-identity", "--early-media"):
        assert flag not in result.stdout
    assert "--sip-login" in result.stdout
