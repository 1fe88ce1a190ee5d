"""`--latency normal|low`: checked like every flag, taken from the environment and profiles,
and carried to the media pipeline as audio encoded on arrival."""

from __future__ import annotations

from pathlib import Path

import pytest

from sip2rtmp.net.grid import GRID_S
from sip2rtmp.relay.media import media_config
from sip2rtmp.relay.options import GRID_STRIDES, Latency, MediaOptions
from tests.unit.cli.sip_stub import call_with_env
from tests.unit.cli.test_contract import VALID, assert_one_line_usage_error, run

PASSWORD = ("--sip-password", "pw")


def latency_of(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    _, media, _ = call_with_env([*VALID, *PASSWORD, *args], env, monkeypatch)
    return media.latency


def test_the_default_is_normal_and_low_is_chosen_by_flag_or_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert latency_of([], {}, monkeypatch) == "normal"
    assert latency_of(["--latency", "low"], {}, monkeypatch) == "low"
    assert latency_of([], {"SIP2RTMP_LATENCY": "low"}, monkeypatch) == "low"
    assert latency_of(["--latency", "normal"], {"SIP2RTMP_LATENCY": "low"}, monkeypatch) == (
        "normal"
    ), "the flag wins over the environment"


def test_a_profile_sets_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = tmp_path / "show.toml"
    profile.write_text('latency = "low"\n')
    assert latency_of(["--profile", str(profile)], {}, monkeypatch) == "low"


@pytest.mark.parametrize("value", ["fast", "LOWEST", ""])
def test_an_unknown_latency_is_a_one_line_usage_error(value: str) -> None:
    assert_one_line_usage_error(run("call", *VALID, "--latency", value), "--latency")


@pytest.mark.parametrize(
    ("latency", "on_arrival", "stride"), [("normal", False, 2), ("low", True, 1)]
)
def test_low_latency_encodes_audio_on_arrival(
    latency: Latency, on_arrival: bool, stride: int
) -> None:
    """`low` encodes on arrival and wakes the loop every 40 ms; `normal` every 80 ms, a hole
    in the audio waiting the extra 40 ms before it goes out as silence."""
    options = MediaOptions(latency=latency, audio_channels=2, audio_bit_rate=96_000)
    config = media_config(options, None)
    assert config.audio_on_arrival is on_arrival
    assert GRID_STRIDES[latency] == stride
    assert config.silence_grace_s == pytest.approx((stride - 1) * GRID_S)
    assert (config.audio_channels, config.audio_bit_rate) == (2, 96_000)
