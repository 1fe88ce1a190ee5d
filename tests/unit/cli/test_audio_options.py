"""`--audio-codecs`: checked like every flag, taken from profiles, and carried to the offer."""

from __future__ import annotations

from pathlib import Path

import pytest

from sip2rtmp.sip.sdp import DEFAULT_AUDIO_CODECS
from tests.unit.cli.test_contract import VALID, assert_one_line_usage_error, run
from tests.unit.cli.test_video_options import invoke_call


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("G729", "--audio-codecs: unknown audio codec 'G729'; choose from opus, G722, PCMU, PCMA"),
        ("PCMU,,g.711", "unknown audio codec 'g.711'"),
        (" , ", "--audio-codecs needs at least one of opus, G722, PCMU, PCMA"),
    ],
)
def test_a_bad_codec_list_is_a_one_line_usage_error(value: str, needle: str) -> None:
    assert_one_line_usage_error(run("call", *VALID, "--audio-codecs", value), needle)


def test_codecs_come_from_the_flag_or_the_profile_in_the_order_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = (*VALID, "--sip-password", "pw")
    settings, _ = invoke_call(*base, monkeypatch=monkeypatch)
    assert settings.audio_codecs == DEFAULT_AUDIO_CODECS
    profile = tmp_path / "pbx.toml"
    profile.write_text('audio-codecs = "pcma, PCMU"\n')
    settings, _ = invoke_call("--profile", str(profile), *base, monkeypatch=monkeypatch)
    assert settings.audio_codecs == ("PCMA", "PCMU")
    settings, _ = invoke_call(
        "--profile", str(profile), *base, "--audio-codecs", "G722", monkeypatch=monkeypatch
    )
    assert settings.audio_codecs == ("G722",), "the flag wins over the profile"
