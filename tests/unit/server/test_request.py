"""The startup body's validation: the reference's forms, extras by flag name, defaults."""

from __future__ import annotations

from typing import Any

import pytest

from sip2rtmp.config import Secret
from sip2rtmp.server.request import BadRequest, parse_start_request
from tests.unit.server.api_support import PASSWORD, startup_body


def refused(body: object, defaults: dict[str, object] | None = None) -> tuple[str, str]:
    with pytest.raises(BadRequest) as caught:
        parse_start_request(body, defaults or {})
    return caught.value.field, caught.value.reason


@pytest.mark.parametrize(
    ("given", "expected"),
    [("true", True), ("false", False), ("TRUE", True), (True, True), (False, False)],
)
def test_booleans_are_json_booleans_or_their_strings(given: object, expected: bool) -> None:
    request = parse_start_request(
        startup_body(hasAudio=given, hasVideo=given, sipRegisterRequired=given), {}
    )
    assert (request.has_audio, request.has_video, request.sip_register_required) == (
        expected,
        expected,
        expected,
    )


@pytest.mark.parametrize("given", ["yes", 1, 0, "", ["true"]])
def test_anything_else_is_not_a_boolean(given: object) -> None:
    assert refused(startup_body(hasVideo=given))[0] == "hasVideo"


def test_extras_are_converted_like_their_flags() -> None:
    body = startup_body(
        **{"max-duration": "90", "srtp": "OPTIONAL", "early-media": "true", "audio-channels": 2}
    )
    extras = parse_start_request(body, {}).extras
    assert dict(extras) == {
        "max-duration": 90.0,
        "srtp": "optional",
        "early-media": True,
        "audio-channels": 2,
    }


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("srtp", "sometimes", "must be one of off, optional, required"),
        ("audio-channels", 3, "must be an integer from 1 to 2"),
        ("ring-timeout", "inf", "must be a finite number"),
        ("announce", "/no/such/file.wav", "files are not accepted: the server has no --media-dir"),
        ("slate", 0, "must be a file name (a string)"),
        ("sip-password", PASSWORD, "send it as sipPassword"),
        ("log-file", "/etc/passwd", "unknown field"),
        ("record", "/tmp/x.flv", "unknown field"),
        ("profile", "other", "unknown field"),
    ],
)
def test_extras_are_checked(name: str, value: object, reason: str) -> None:
    assert refused(startup_body(**{name: value})) == (name, reason)


def test_no_reason_quotes_the_password() -> None:
    reasons = [
        refused(startup_body(sipPassword=["x", PASSWORD])),
        refused(startup_body(sipPassword=PASSWORD + "\n")),
        refused(startup_body(sipPassword=PASSWORD, sipPort=PASSWORD)),
    ]
    assert [field for field, _ in reasons] == ["sipPassword", "sipPassword", "sipPort"]
    assert [reason for _, reason in reasons if PASSWORD in reason] == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"callId": "a\x00b"}, "callId"),
        ({"callee": "sip:x\ud800@lab"}, "callee"),
        ({"callee": "   "}, "callee"),
        ({"rtmpStream": "a", "toStream": "b"}, "toStream"),
        ({"sipDomain": "bad domain"}, "sipDomain"),
        ({"sipPort": True}, "sipPort"),
        ({"sipPort": 5060.5}, "sipPort"),
    ],
)
def test_values_a_worker_could_not_take_are_refused(changes: dict[str, Any], field: str) -> None:
    assert refused(startup_body(**changes))[0] == field


def test_a_profile_fills_what_the_body_omits() -> None:
    defaults: dict[str, object] = {
        "callee": "sip:studio@lab.example",
        "rtmp_urls": ("rtmp://127.0.0.1/live",),
        "rtmp_streams": ("profile-key",),
        "sip_login": "relay",
        "video": False,
        "register": False,
        "sip_password": "from-profile",
    }
    request = parse_start_request({"callId": "p1"}, defaults)
    assert (request.callee, request.rtmp_url, request.rtmp_stream) == (
        "sip:studio@lab.example",
        "rtmp://127.0.0.1/live",
        "profile-key",
    )
    assert (request.sip_login, request.has_video, request.sip_register_required) == (
        "relay",
        False,
        False,
    )
    assert request.sip_password is None  # the worker reads it from the profile itself
    given = parse_start_request(startup_body(), defaults)
    assert (given.callee, given.sip_password) == ("sip:echo@lab.example", Secret(PASSWORD))


def test_without_a_profile_callee_and_rtmp_url_are_required() -> None:
    assert refused({"rtmpUrl": "rtmp://h/app"}) == ("callee", "is required")
    assert refused({"callee": "sip:a@b"}) == ("rtmpUrl", "is required")


def test_a_missing_call_id_gets_a_random_one() -> None:
    first = parse_start_request(startup_body(callId=None), {})
    second = parse_start_request(startup_body(callId=None), {})
    assert len(first.call_id) == 36 and first.call_id != second.call_id
