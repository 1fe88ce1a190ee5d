"""`sip2rtmp serve` as a client of the reference system's REST API meets it: a real server
process on loopback, driven over HTTP, with its calls measured at the lab's callees (their
logs), in nginx's recordings and at the server's webhook.

The tests that place calls are marked `lab`; those that only send requests the server must
refuse run without it, against a server whose calls could reach no SIP server at all.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from sip2rtmp.lab import RELAY_ACCOUNT, RTMP_URL, SIP_DOMAIN, SIP_HOST, SIP_PORT, Lab, account
from sip2rtmp.lab.recording import read_recording
from tests.integration.test_failover import BYE_RECEIVED
from tests.integration.test_relay_media import assert_no_audio_gap, assert_tone, recording_of
from tests.support.serve import (
    Reply,
    ServeProcess,
    WebhookSink,
    offline_profile,
    serving,
    write_profile,
)

STARTUP = "/rest-api/call/startup"
PASSWORD = RELAY_ACCOUNT.password
ORDER = ("NEW", "TRYING", "RING", "RING_MEDIA", "SESSION_PROGRESS", "ESTABLISHED")
"""The statuses a call may pass through up to its answer, in the only order they may come."""
TONE_HZ = account("tone").tone_hz or 0
SECOND_CALLEE = "pcmu"
"""The other call of the two-call test: a different baresip, also sending 440 Hz."""
ANSWER_S = 20.0
"""From startup to ESTABLISHED on loopback, with the machine busy."""
HEARD_S = 5.0
"""From a request to what the callee logs of it (DTMF, BYE)."""
LAB_PROFILE = {
    "sip-login": RELAY_ACCOUNT.user,
    "sip-domain": SIP_DOMAIN,
    "sip-outbound-proxy": SIP_HOST,
}
"""The lab's relay account without its password: a call connects only with the password its
startup body carries."""


def new_call() -> tuple[str, str]:
    """A fresh call id and stream key."""
    tag = uuid.uuid4().hex[:10]
    return f"serve-{tag}", f"serve{tag}"


def reference_body(call_id: str, stream: str, **changes: object) -> dict[str, object]:
    """The reference system's documented startup body: every field, booleans as strings,
    an `appKey` (accepted and ignored); `changes` adds or replaces fields."""
    body: dict[str, object] = {
        "callId": call_id,
        "callee": "tone",
        "rtmpUrl": RTMP_URL,
        "rtmpStream": stream,
        "hasAudio": "true",
        "hasVideo": "false",
        "sipLogin": RELAY_ACCOUNT.user,
        "sipAuthenticationName": RELAY_ACCOUNT.user,
        "sipPassword": PASSWORD,
        "sipDomain": SIP_DOMAIN,
        "sipOutboundProxy": SIP_HOST,
        "sipPort": SIP_PORT,
        "sipRegisterRequired": "true",
        "appKey": "reference-application-key",
    }
    body.update(changes)
    return body


def in_order(seen: Sequence[str], order: Sequence[str] = ORDER) -> bool:
    """Whether `seen` takes its statuses from `order` without going back."""
    positions = [order.index(status) for status in seen if status in order]
    return len(positions) == len(seen) and positions == sorted(set(positions))


def assert_refused(reply: Reply, status: int, *names: str) -> dict[str, Any]:
    """A refusal with a JSON object body whose `error` (or `field`) names one of `names`."""
    assert reply.status == status, f"expected {status}: {reply}"
    body = reply.json
    assert isinstance(body, dict) and isinstance(body.get("error"), str), f"no JSON error: {reply}"
    said = f"{body.get('field', '')} {body['error']}".lower()
    assert any(name.lower() in said for name in names), f"{reply} names none of {names}"
    return body


def wait_for_log(lab: Lab, user: str, since: int, pattern: str, count: int = 1) -> list[str]:
    """The matches of `pattern` in what the callee logged after offset `since`, once there
    are `count` of them."""
    deadline = time.monotonic() + HEARD_S
    while True:
        found = re.findall(pattern, lab.callee_log(user)[since:])
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def wait_for_webhook(hooks: WebhookSink, call_id: str, status: str) -> list[str]:
    deadline = time.monotonic() + HEARD_S
    while status not in hooks.statuses(call_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    return hooks.statuses(call_id)


@pytest.fixture(scope="module")
def hooks() -> Iterator[WebhookSink]:
    sink = WebhookSink()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def lab_server(
    lab: Lab, hooks: WebhookSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """One server for the lab calls: two calls at most, every status change posted to
    `hooks`, debug logging on (where a password would leak first)."""
    root = tmp_path_factory.mktemp("serve-lab")
    profile = write_profile(root / "lab.toml", LAB_PROFILE)
    args = ["--profile", str(profile), "--max-calls", "2", "--webhook", hooks.url, "-vv"]
    with serving(root, args) as server:
        yield server


@pytest.fixture(scope="module")
def offline_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A server whose calls could reach no SIP server (a closed port), for the requests it
    must refuse before any call starts."""
    root = tmp_path_factory.mktemp("serve-offline")
    args = ["--profile", str(offline_profile(root / "offline.toml")), "--max-calls", "1", "-vv"]
    with serving(root, args) as server:
        yield server


# The reference's call, from startup to FINISH -------------------------------------------


@pytest.mark.lab
def test_the_reference_startup_body_runs_a_call_from_startup_to_finish(
    lab: Lab, lab_server: ServeProcess, hooks: WebhookSink
) -> None:
    """The documented body starts a call to `tone`; `find` and the webhook see TRYING, maybe
    RING, then ESTABLISHED; both kinds of `send_dtmf` reach the callee; `terminate` ends the
    call with a BYE and `find` then shows FINISH; nginx's recording has the callee's tone.
    The password the body carried appears in no response, no server output, no webhook and no
    worker's command line, and the stream key on no command line."""
    call_id, stream = new_call()
    since = len(lab.callee_log("tone"))
    reply = lab_server.post(STARTUP, reference_body(call_id, stream))
    assert reply.status == 200, reply
    assert isinstance(reply.json, dict) and reply.json.get("callId") == call_id, reply

    call, seen = lab_server.wait_for(call_id, ["ESTABLISHED"], ANSWER_S)
    answered = time.monotonic()
    assert in_order(seen), f"find showed {seen}"
    assert call["hasAudio"] is True and call["hasVideo"] is False, call
    assert call["sipStatus"] == 200, call
    assert "tone" in str(call["callee"]), call
    assert stream not in str(call["rtmpUrl"]) and str(call["rtmpUrl"]).startswith(RTMP_URL), call

    worker = lab_server.worker_of(call_id)
    assert lab_server.comm(worker) == "sip2rtmp-call"
    argv = lab_server.cmdline(worker)
    assert not [word for word in argv if PASSWORD in word or stream in word], argv

    reply = lab_server.post(
        "/rest-api/call/send_dtmf", {"callId": call_id, "dtmf": "5*9", "type": "RFC2833"}
    )
    assert reply.status == 200, reply
    events = wait_for_log(lab, "tone", since, r"received event: '(.)' \(end=1\)", 3)
    assert "5*9" in "".join(events), f"RFC 4733 events the callee logged: {events}"
    reply = lab_server.post(
        "/rest-api/call/send_dtmf", {"callId": call_id, "dtmf": "8", "type": "INFO"}
    )
    assert reply.status == 200, reply
    infos = wait_for_log(lab, "tone", since, r"received DTMF: '(.)'")
    assert "8" in infos, f"SIP INFO digits the callee logged: {infos}"

    time.sleep(max(0.0, 6.0 - (time.monotonic() - answered)))
    byes = lab.callee_log("tone")[since:].count(BYE_RECEIVED)
    reply = lab_server.post("/rest-api/call/terminate", {"callId": call_id})
    assert reply.status == 200, reply
    assert wait_for_log(lab, "tone", since, re.escape(BYE_RECEIVED), byes + 1)[byes:], (
        "the callee got no BYE"
    )
    call, _ = lab_server.wait_for(call_id, ["FINISH"], 10)
    assert call["duration"] >= 5.0, call

    hooked = wait_for_webhook(hooks, call_id, "FINISH")
    assert hooked and hooked[-1] == "FINISH", f"webhook statuses {hooked}"
    assert in_order(hooked[:-1]) and "TRYING" in hooked and "ESTABLISHED" in hooked, hooked

    found_all = lab_server.post("/rest-api/call/find_all", {})
    assert found_all.status == 200, found_all
    assert call_id in [c.get("callId") for c in found_all.json], found_all

    assert_tone(recording_of(lab, stream), TONE_HZ)

    leaks = [str(r) for r in lab_server.replies if PASSWORD in r.text]
    assert not leaks, f"the password came back in {leaks}"
    assert PASSWORD not in lab_server.output, "the password is in the server's output"
    assert PASSWORD not in repr(hooks.bodies), "the password was posted to the webhook"


# Two calls: refusals while they run, and one worker killed -----------------------------


@pytest.mark.lab
def test_a_killed_worker_fails_its_own_call_and_no_other(
    lab: Lab, lab_server: ServeProcess
) -> None:
    """While one call runs a second with its callId, or with its rtmpUrl and stream, is
    refused 409; with two running (--max-calls 2) a third is refused 503. SIGKILL to one
    worker leaves the other call established and its recording without a gap, and `find`
    reports the killed call FAILED with the signal as the reason."""
    killed_id, killed_stream = new_call()
    kept_id, kept_stream = new_call()
    limit = {"max-duration": 60}
    reply = lab_server.post(STARTUP, reference_body(killed_id, killed_stream, **limit))
    assert reply.status == 200, reply

    _, other_stream = new_call()
    again = lab_server.post(STARTUP, reference_body(killed_id, other_stream))
    assert_refused(again, 409, "callId", killed_id)
    other_id, _ = new_call()
    same_place = lab_server.post(STARTUP, reference_body(other_id, killed_stream))
    assert_refused(same_place, 409, "rtmpUrl", "rtmpStream", "stream")

    second = reference_body(kept_id, kept_stream, callee=SECOND_CALLEE, **limit)
    reply = lab_server.post(STARTUP, second)
    assert reply.status == 200, reply
    third_id, third_stream = new_call()
    assert_refused(
        lab_server.post(STARTUP, reference_body(third_id, third_stream)),
        503,
        "calls",
        "max",
        "capacity",
        "busy",
    )

    lab_server.wait_for(killed_id, ["ESTABLISHED"], ANSWER_S)
    lab_server.wait_for(kept_id, ["ESTABLISHED"], ANSWER_S)
    time.sleep(3)
    os.kill(lab_server.worker_of(killed_id), signal.SIGKILL)
    killed_at = time.monotonic()
    failed, _ = lab_server.wait_for(killed_id, ["FAILED"], 5)
    assert re.search(r"signal 9|SIGKILL", str(failed["reason"])), failed
    assert lab_server.find(kept_id)["status"] == "ESTABLISHED"

    time.sleep(4)
    assert lab_server.find(kept_id)["status"] == "ESTABLISHED"
    reply = lab_server.post("/rest-api/call/terminate", {"callId": kept_id})
    assert reply.status == 200, reply
    kept, _ = lab_server.wait_for(kept_id, ["FINISH"], 10)
    after_kill = time.monotonic() - killed_at
    assert lab_server.get("/health").status == 200
    assert lab_server.process.poll() is None, "the server ended"

    path = recording_of(lab, kept_stream)
    recording = read_recording(path)
    assert_no_audio_gap(recording)
    # Without a gap and longer than the time from the kill to the end, the recording ran
    # through the kill: the other call's stream never stopped.
    assert after_kill + 1.0 <= recording.duration <= kept["duration"] + 0.5, (
        recording.duration,
        after_kill,
        kept,
    )
    assert_tone(path, account(SECOND_CALLEE).tone_hz or 0)


# SIGTERM: every call hung up, exit 0 ---------------------------------------------------


@pytest.mark.lab
def test_sigterm_hangs_up_the_running_call_and_exits_0(lab: Lab, tmp_path: Path) -> None:
    """A profile holding the password lets a client start a call with no credentials in its
    body; SIGTERM to the server then sends the callee a BYE, ends the worker and exits 0."""
    profile = write_profile(tmp_path / "full.toml", {**LAB_PROFILE, "sip-password": PASSWORD})
    server = ServeProcess(tmp_path, ["--profile", str(profile)])
    try:
        server.wait_ready()
        call_id, stream = new_call()
        body = {
            "callId": call_id,
            "callee": "tone",
            "rtmpUrl": RTMP_URL,
            "rtmpStream": stream,
            "hasAudio": True,
            "hasVideo": False,
        }
        since = len(lab.callee_log("tone"))
        reply = server.post(STARTUP, body)
        assert reply.status == 200, reply
        server.wait_for(call_id, ["ESTABLISHED"], ANSWER_S)
        workers = server.processes()
        assert server.workers(), "no worker process"
        byes = lab.callee_log("tone")[since:].count(BYE_RECEIVED)
        assert server.stop(30) == 0, server.output[-3000:]
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
    assert wait_for_log(lab, "tone", since, re.escape(BYE_RECEIVED), byes + 1)[byes:], (
        "the callee got no BYE"
    )
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "a worker outlived it"


# Refusals that need no call -------------------------------------------------------------

BAD_FIELDS = [
    ("callee", None),
    ("callId", ""),
    ("hasAudio", "maybe"),
    ("hasVideo", 3),
    ("sipRegisterRequired", "sometimes"),
    ("sipPort", "five"),
    ("sipPort", 70000),
    ("rtmpUrl", "ftp://127.0.0.1/live"),
    ("no-such-flag", 1),
    ("control", "none"),
    ("json", True),
    ("sip-password", "from-extras"),
    ("max-duration", "soon"),
]
"""A field and a value the server must refuse 400, naming the field (None: left out)."""


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS)
def test_a_bad_startup_field_is_refused_400_naming_it(
    offline_server: ServeProcess, field: str, value: object
) -> None:
    """Each bad field gets a 400 whose JSON body names it, and the password of the refused
    body is not in the answer."""
    call_id, stream = new_call()
    body = reference_body(call_id, stream)
    if value is None:
        del body[field]
    else:
        body[field] = value
    reply = offline_server.post(STARTUP, body)
    refusal = assert_refused(reply, 400, field)
    assert refusal.get("field") == field, reply
    assert PASSWORD not in reply.text
    assert offline_server.post("/rest-api/call/find", {"callId": call_id}).status == 404


def test_a_body_that_is_no_json_object_is_refused(offline_server: ServeProcess) -> None:
    """Not JSON, a JSON array, and a body over the size limit: refused with a JSON error."""
    for raw, statuses in [
        (b"{not json", {400, 415}),
        (b"[1, 2]", {400}),
        (b'{"callId": "' + b"x" * 70_000 + b'"}', {413}),
    ]:
        reply = offline_server.request("POST", STARTUP, raw=raw)
        assert reply.status in statuses, f"{raw[:20]!r}: {reply}"
        assert isinstance(reply.json, dict) and reply.json.get("error"), reply


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/rest-api/call/find", {}),
        ("/rest-api/call/terminate", {}),
        ("/rest-api/call/send_dtmf", {"dtmf": "1", "type": "RFC2833"}),
        ("/rest-api/call/inject_stream", {"file": "/dev/null"}),
    ],
)
def test_an_unknown_call_id_is_404(
    offline_server: ServeProcess, path: str, extra: dict[str, str]
) -> None:
    reply = offline_server.post(path, {"callId": "serve-nobody", **extra})
    assert_refused(reply, 404, "serve-nobody", "callId", "not found", "unknown", "no call")


def test_nothing_refused_carries_the_password_into_the_servers_output(
    offline_server: ServeProcess,
) -> None:
    """After every refusal above (and the server's own logging of them), the password is in
    no response and nowhere in what the server printed."""
    reply = offline_server.post(STARTUP, reference_body("", "x", sipPort="bad"))
    assert reply.status == 400, reply
    assert not [str(r) for r in offline_server.replies if PASSWORD in r.text]
    assert PASSWORD not in offline_server.output
    assert offline_server.process.poll() is None, "the server ended"
