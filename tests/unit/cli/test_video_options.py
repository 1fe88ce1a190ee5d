"""`--transcode` and `--keyframe-interval`: checked like every flag, taken from profiles, and
carried to what the outputs get (the slate's GOP) and to when the callee is asked for a
keyframe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sip2rtmp.media.passthrough import VIDEO_CLOCK
from sip2rtmp.relay.media import render_slate
from sip2rtmp.relay.options import MediaOptions
from sip2rtmp.relay.video import KeyframePolicy
from tests.unit.cli.sip_stub import call_with_env
from tests.unit.cli.test_contract import VALID, assert_one_line_usage_error, run


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("0.4", "--keyframe-interval must be 0.5 to 10 seconds, not 0.4"),
        ("10.5", "--keyframe-interval must be 0.5 to 10 seconds, not 10.5"),
        ("-2", "--keyframe-interval must be 0.5 to 10 seconds"),
        ("nan", "--keyframe-interval must be 0.5 to 10 seconds"),
        ("often", "--keyframe-interval"),
    ],
)
def test_a_bad_keyframe_interval_is_a_one_line_usage_error(value: str, needle: str) -> None:
    assert_one_line_usage_error(run("call", *VALID, "--keyframe-interval", value), needle)


def test_a_bad_keyframe_interval_in_a_profile_names_the_file(tmp_path: Path) -> None:
    profile = tmp_path / "show.toml"
    profile.write_text('keyframe_interval = "often"\n')
    result = run("call", "--profile", str(profile), *VALID)
    assert_one_line_usage_error(result, "keyframe_interval must be a float")
    assert str(profile) in result.stderr
    profile.write_text("keyframe-interval = 20\n")
    assert_one_line_usage_error(run("call", "--profile", str(profile), *VALID), "not 20")


def invoke_call(*args: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, MediaOptions]:
    """Run `call` in process up to the relay; returns the settings and media options it got."""
    settings, media, _ = call_with_env(list(args), {}, monkeypatch)
    return settings, media


def test_defaults_pass_through_with_keyframes_every_two_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, media = invoke_call(*VALID, "--sip-password", "pw", monkeypatch=monkeypatch)
    assert (media.transcode, media.keyframe_interval) == (False, 2.0)


@pytest.mark.parametrize("spelling", ["keyframe_interval", "keyframe-interval"])
def test_profile_keys_and_flags_reach_the_relay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    profile = tmp_path / "show.toml"
    profile.write_text(f"{spelling} = 1\ntranscode = true\n")
    args = ("--profile", str(profile), *VALID, "--sip-password", "pw")
    settings, media = invoke_call(*args, monkeypatch=monkeypatch)
    assert (media.transcode, media.keyframe_interval) == (True, 1.0)
    _, media = invoke_call(*args, "--keyframe-interval", "0.5", monkeypatch=monkeypatch)
    assert media.keyframe_interval == 0.5, "the flag wins over the profile"

    slate = render_slate(settings, media, 64, 64)
    keyframes = [p.dts for p in slate.packets_until(3.0) if p.keyframe]
    assert keyframes == list(range(0, 3 * VIDEO_CLOCK + 1, VIDEO_CLOCK // 2)), "a 0.5 s GOP"


@pytest.mark.parametrize(("interval", "lead"), [(0.5, 0.2), (1.0, 0.4), (2.0, 0.8), (10.0, 0.8)])
def test_the_callee_is_asked_before_the_interval_runs_out(interval: float, lead: float) -> None:
    policy = KeyframePolicy.for_interval(interval)
    assert (policy.interval_s, policy.lead_s) == pytest.approx((interval, lead))
    assert KeyframePolicy.for_interval(2.0) == KeyframePolicy(), "2 s is the default"


def test_call_help_lists_the_video_flags_and_check_hides_them() -> None:
    result = run("call", "--help")
    assert "--transcode" in result.stdout
    assert "--keyframe-interval SECONDS" in result.stdout
    assert "[default: 2.0]" in result.stdout
    hidden = run("check", "--help").stdout
    assert "--transcode" not in hidden and "--keyframe-interval" not in hidden
