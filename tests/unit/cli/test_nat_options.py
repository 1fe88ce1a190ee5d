"""`--nat`, `--public-address`, `--stun` and `--keepalive`: checked like every flag, taken
from profiles and the environment, and carried to the relay; and how the command line shows
what the relay reports behind a NAT (the advertised addresses, a failover, a registration
refresh retried, a connection reopened, media that stopped)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from sip2rtmp.cli.live import LiveView
from sip2rtmp.cli.outcomes import ExitCode, explain
from sip2rtmp.cli.output import EventPrinter
from sip2rtmp.config import HostPort
from sip2rtmp.outcomes import MediaTimedOut, Rejected
from sip2rtmp.relay.events import (
    Failed,
    NatAddress,
    Registered,
    RegistrationRetry,
    SipReconnected,
    SipServerChanged,
)
from tests.unit.cli.sip_stub import call_with_env
from tests.unit.cli.test_contract import VALID, assert_one_line_usage_error, run
from tests.unit.cli.test_live import FakeClock, rendered

CALL = [*VALID, "--sip-password", "pw"]


def nat_settings(*args: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    settings, _, _ = call_with_env([*CALL, *args], {}, monkeypatch)
    return settings.nat, settings.public_address, settings.stun_server, settings.keepalive


def test_the_defaults_discover_and_keep_alive_every_25_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert nat_settings(monkeypatch=monkeypatch) == ("auto", None, None, 25.0)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--nat", "off"], ("off", None, None, 25.0)),
        (["--nat", "OFF", "--keepalive", "0"], ("off", None, None, None)),
        (["--public-address", "198.51.100.7"], ("auto", "198.51.100.7", None, 25.0)),
        (["--public-address", "[2001:db8::7]"], ("auto", "2001:db8::7", None, 25.0)),
        (
            ["--stun", "stun.example.test"],
            ("auto", None, HostPort("stun.example.test", 3478), 25.0),
        ),
        (["--stun", "192.0.2.9:3479"], ("auto", None, HostPort("192.0.2.9", 3479), 25.0)),
        (["--stun", "[2001:db8::9]:19302"], ("auto", None, HostPort("2001:db8::9", 19302), 25.0)),
        (["--keepalive", "12.5"], ("auto", None, None, 12.5)),
    ],
)
def test_each_flag_reaches_the_relay(
    args: list[str], expected: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert nat_settings(*args, monkeypatch=monkeypatch) == expected


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--public-address", "nat.example.test"],
            "--public-address 'nat.example.test' is not an IP",
        ),
        (["--public-address", "0.0.0.0"], "--public-address 0.0.0.0 is not a unicast address"),
        (["--nat", "off", "--stun", "stun.example.test"], "--stun contradicts it"),
        (["--nat", "off", "--public-address", "198.51.100.7"], "--public-address contradicts it"),
        (["--keepalive", "-1"], "--keepalive must be a number of seconds, or 0 for none"),
        (["--keepalive", "nan"], "--keepalive must be a number of seconds, or 0 for none"),
        (["--stun", "stun.example.test:0"], "--stun"),
        (["--nat", "sometimes"], "--nat"),
    ],
)
def test_a_bad_or_contradicting_value_is_a_one_line_usage_error(
    args: list[str], needle: str
) -> None:
    assert_one_line_usage_error(run("call", *CALL, *args), needle)


@pytest.mark.parametrize("dash", ["-", "_"])
def test_profile_keys_and_environment_reach_the_relay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dash: str
) -> None:
    profile = tmp_path / "cloud.toml"
    profile.write_text(
        f'public{dash}address = "198.51.100.7"\nstun = "stun.example.test:3479"\nkeepalive = 0\n'
    )
    found = nat_settings("--profile", str(profile), monkeypatch=monkeypatch)
    assert found == ("auto", "198.51.100.7", HostPort("stun.example.test", 3479), None)
    settings, _, _ = call_with_env(CALL, {"SIP2RTMP_NAT": "off"}, monkeypatch)
    assert settings.nat == "off"


def test_a_flag_that_contradicts_the_profiles_nat_mode_is_a_usage_error(tmp_path: Path) -> None:
    profile = tmp_path / "home.toml"
    profile.write_text('nat = "off"\n')
    result = run("call", "--profile", str(profile), *CALL, "--stun", "stun.example.test")
    assert_one_line_usage_error(result, "--nat off advertises the local address")


def test_media_that_stopped_has_the_media_timeout_exit_code_and_its_own_words() -> None:
    never = explain(MediaTimedOut(15))
    stopped = explain(MediaTimedOut(15, stopped=True))
    assert never.exit_code == stopped.exit_code == ExitCode.MEDIA_TIMEOUT
    assert int(stopped.exit_code) == 9
    assert never.message == "no media from the callee within 15 s"
    assert stopped.message == "the callee's media stopped: no RTP for 15 s"
    assert stopped.hint and stopped.hint != never.hint


def test_the_new_events_as_json_lines() -> None:
    """docs/events.md: each event's name and fields, in order; the retry's reason is the
    outcome in the words a failure would use."""
    stream = io.StringIO()
    printer = EventPrinter("c1", as_json=True, stream=stream)
    refused = Rejected("REGISTER", 503, "Service Unavailable", "10.77.0.3:5060")
    for event in (
        NatAddress("sip", "198.51.100.2:5060", "received"),
        NatAddress("media", "198.51.100.2", "stun"),
        SipServerChanged("10.77.0.2:5060", "10.77.0.3:5060", "no answer"),
        RegistrationRetry(refused, 32.0),
        SipReconnected("10.77.0.3:5060"),
    ):
        printer(event)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [[(k, v) for k, v in r.items() if k not in ("ts", "callId")] for r in records] == [
        [("event", "nat"), ("kind", "sip"), ("address", "198.51.100.2:5060"),
         ("source", "received")],
        [("event", "nat"), ("kind", "media"), ("address", "198.51.100.2"), ("source", "stun")],
        [("event", "failover"), ("failed", "10.77.0.2:5060"), ("next", "10.77.0.3:5060"),
         ("reason", "no answer")],
        [("event", "registration_retry"), ("reason", explain(refused).message),
         ("retry_in", 32.0)],
        [("event", "reconnected"), ("server", "10.77.0.3:5060")],
    ]  # fmt: skip
    assert all("status" not in record for record in records), "no status changes"


def test_the_live_view_shows_the_addresses_the_server_and_the_retry() -> None:
    view = LiveView(clock=FakeClock())
    view(NatAddress("sip", "198.51.100.2:5060", "received"))
    view(NatAddress("media", "198.51.100.2", "stun"))
    text = rendered(view, width=140)
    assert "SIP 198.51.100.2:5060 (received)   media 198.51.100.2 (stun)" in text
    assert "Server" not in text
    view(SipServerChanged("10.77.0.2:5060", "10.77.0.3:5060", "no answer"))
    assert "10.77.0.3:5060, after 10.77.0.2:5060: no answer" in rendered(view, width=140)
    view(RegistrationRetry(Rejected("REGISTER", 403, "Forbidden", "10.77.0.3:5060"), 30.0))
    text = rendered(view, width=140)
    assert "refresh failed (authentication failed (SIP 403)), retrying in 30 s" in text
    view(SipReconnected("10.77.0.3:5060"))
    view(Registered(300))
    text = rendered(view, width=140)
    assert "10.77.0.3:5060, connection reopened" in text
    assert "registered, expires in 300 s" in text
    view(Failed(MediaTimedOut(15, stopped=True)))
    assert "the callee's media stopped: no RTP for 15 s" in rendered(view, width=140)
