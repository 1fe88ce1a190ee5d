"""RTMPS that checks whom it talks to, against the lab's three RTMPS endpoints (docs/lab.md):
one whose certificate the lab CA signed for 127.0.0.1, one self-signed, one the lab CA signed
for evil.example only. Measured from what nginx recorded behind each: a refused endpoint must
have received no stream at all, so neither the media nor the stream key reached it.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from sip2rtmp.cli.options import INSECURE_RTMPS_WARNING
from sip2rtmp.lab import (
    RELAY_ACCOUNT,
    RTMP_URL,
    RTMPS_SELF_SIGNED_URL,
    RTMPS_URL,
    RTMPS_WRONG_HOST_URL,
    Lab,
    account,
)
from tests.integration.test_check_lab import everything, lab_args, run_check
from tests.integration.test_relay_media import assert_tone, recording_of
from tests.unit.cli.test_check import marks

pytestmark = pytest.mark.lab

TONE_HZ = account("tone").tone_hz or 0
REFUSALS = {
    RTMPS_SELF_SIGNED_URL: re.compile(r"self[- ]signed", re.I),
    RTMPS_WRONG_HOST_URL: re.compile(r"mismatch|not valid for|host ?name", re.I),
}
"""Why each bad endpoint must be refused, as the message should say it."""


def where(url: str) -> str:
    """host:port of an RTMP URL, as messages name the server."""
    return url.split("/")[2]


def outputs(run: Any) -> dict[str, list[dict[str, Any]]]:
    """The `output` events of a run by host:port."""
    found: dict[str, list[dict[str, Any]]] = {}
    for event in run.events:
        if event["event"] == "output":
            found.setdefault(where(event["target"]), []).append(event)
    return found


def test_verified_rtmps_streams_and_bad_certificates_are_refused_while_the_call_goes_on(
    start_call: Any, lab: Lab
) -> None:
    """One call, four outputs: RTMPS to the lab endpoint trusted through `--rtmps-ca` and plain
    RTMP both record the tone; the self-signed and the wrong-host endpoints fail, each with a
    message naming the host and the reason, and nginx behind them received nothing; the call
    itself goes on and ends with exit 0."""
    base = f"v{uuid.uuid4().hex[:8]}"
    keys = {url: f"{base}-{index}" for index, url in enumerate(
        (RTMPS_URL, RTMP_URL, RTMPS_SELF_SIGNED_URL, RTMPS_WRONG_HOST_URL)
    )}  # fmt: skip
    targets = [
        arg for url, key in keys.items() for arg in ("--rtmp-url", url, "--rtmp-stream", key)
    ]
    run = start_call(
        "tone", "--no-video", "--max-duration", "6", "--rtmps-ca", str(lab.tls_ca), *targets,
        rtmp=False,
    ).wait(60)  # fmt: skip

    assert run.returncode == 0, run.stderr
    for url in (RTMPS_URL, RTMP_URL):
        assert_tone(recording_of(lab, keys[url]), TONE_HZ, share=0.9)
    states = outputs(run)
    assert [e["state"] for e in states[where(RTMPS_URL)]][-2:] == ["live", "closed"], states
    for url, reason in REFUSALS.items():
        events = states.get(where(url), [])
        assert "live" not in [e["state"] for e in events], f"{url} went live: {events}"
        failed = [e for e in events if e["state"] == "failed"]
        assert failed, f"no failed output event for {url}: {events}"
        message = str(failed[-1].get("error", ""))
        assert "127.0.0.1" in message and reason.search(message), (
            f"the refusal of {url} names no host or reason: {message!r}"
        )
        assert lab.recordings(keys[url]) == [], f"nginx behind {url} received the stream"
        assert keys[url] not in run.everything, "a stream key in the output or the log"


def test_insecure_rtmps_streams_to_both_bad_endpoints_with_a_warning(
    start_call: Any, lab: Lab
) -> None:
    """`--rtmps-insecure`: the self-signed and the wrong-host endpoints take the stream (their
    recordings hold the tone), and stderr says loudly that nothing was verified."""
    base = f"i{uuid.uuid4().hex[:8]}"
    keys = {RTMPS_SELF_SIGNED_URL: f"{base}-self", RTMPS_WRONG_HOST_URL: f"{base}-host"}
    targets = [
        arg for url, key in keys.items() for arg in ("--rtmp-url", url, "--rtmp-stream", key)
    ]
    run = start_call(
        "tone", "--no-video", "--max-duration", "5", "--rtmps-insecure", *targets, rtmp=False
    ).wait(60)

    assert run.returncode == 0, run.stderr
    assert INSECURE_RTMPS_WARNING in run.stderr, run.stderr
    for key in keys.values():
        assert_tone(recording_of(lab, key), TONE_HZ, share=0.9)


def test_check_passes_the_verified_endpoint_and_fails_the_bad_certificates(lab: Lab) -> None:
    """`sip2rtmp check` with all three RTMPS endpoints: PASS for the one the lab CA vouches for,
    FAIL naming the host and the reason for the other two, and a failing exit code."""
    urls = (RTMPS_URL, RTMPS_SELF_SIGNED_URL, RTMPS_WRONG_HOST_URL)
    targets = [arg for url in urls for arg in ("--rtmp-url", url)]
    args = lab_args(RELAY_ACCOUNT.password, "--rtmps-ca", str(lab.tls_ca))
    # lab_args names one RTMP output; the three RTMPS URLs take its place (one stream key).
    position = args.index("--rtmp-url")
    result = run_check(*args[:position], *targets, *args[position + 2 :])

    assert result.returncode != 0, everything(result)
    lines = result.stdout.splitlines()
    for url in urls:
        about = [line for line in lines if where(url) in line]
        assert about, f"check says nothing about {url}: {everything(result)}"
        if url == RTMPS_URL:
            assert set(marks("\n".join(about))) == {"✓"}, about
        else:
            assert "✗" in marks("\n".join(about)), about
            assert any(REFUSALS[url].search(line) for line in about), about
