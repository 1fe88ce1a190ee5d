"""The REST API against fake workers: every route's answers, and what never leaks."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from sip2rtmp.config import Secret
from sip2rtmp.server import api
from sip2rtmp.server.config import MAX_BODY, ServerConfig
from tests.unit.server.api_support import PASSWORD, STREAM_KEY, Api, run_api, startup_body

TOKEN = "t0ken-abcdefghijklmnop"


def test_the_reference_startup_body_starts_a_worker_with_its_values() -> None:
    async def scenario(a: Api) -> None:
        status, call = await a.post("startup", startup_body())
        assert status == 200
        assert call["callId"] == "c1" and call["status"] == "TRYING"
        assert (call["hasAudio"], call["hasVideo"]) == (True, False)
        assert call["rtmpUrl"].startswith("rtmp://127.0.0.1/live/")
        assert STREAM_KEY not in call["rtmpUrl"]
        request = a.workers["c1"].request
        assert a.workers["c1"].started
        assert request.sip_password == Secret(PASSWORD)
        assert (request.sip_port, request.sip_register_required) == (5060, True)
        assert (request.rtmp_stream, request.sip_login) == (STREAM_KEY, "relay")

    run_api(scenario)


def test_find_follows_the_workers_status_events() -> None:
    async def scenario(a: Api) -> None:
        await a.post("startup", startup_body())
        seen = []
        for event in (
            {"event": "status", "status": "RING", "code": 180, "reason": "Ringing"},
            {"event": "status", "status": "ESTABLISHED", "code": 200, "reason": "OK"},
        ):
            a.workers["c1"].emit(event)
            status, calls = await a.post("find", {"callId": "c1"})
            assert status == 200 and len(calls) == 1
            seen.append((calls[0]["status"], calls[0]["sipStatus"], calls[0]["sipMessage"]))
        assert seen == [("RING", 180, "Ringing"), ("ESTABLISHED", 200, "OK")]
        a.clock[0] += 12.5
        _, calls = await a.post("find", {"status": "ESTABLISHED"})
        assert [call["callId"] for call in calls] == ["c1"]
        assert calls[0]["duration"] == 12.5

    run_api(scenario)


def test_find_answers_404_for_an_unknown_call_or_an_empty_status() -> None:
    async def scenario(a: Api) -> None:
        await a.post("startup", startup_body())
        assert await a.post("find", {"callId": "nope"}) == (
            404,
            {"error": "no call with this callId", "field": "callId"},
        )
        status, body = await a.post("find", {"status": "FINISH"})
        assert (status, body["field"]) == (404, "status")
        status, body = await a.post("find", {"status": "SLEEPING"})
        assert (status, body["field"]) == (400, "status")
        status, calls = await a.post("find_all", {})
        assert status == 200 and [call["callId"] for call in calls] == ["c1"]

    run_api(scenario)


def test_a_duplicate_call_id_or_destination_is_refused_with_409() -> None:
    async def scenario(a: Api) -> None:
        await a.post("startup", startup_body("c1"))
        status, body = await a.post("startup", startup_body("c1", rtmpStream="other"))
        assert (status, body["field"]) == (409, "callId")
        status, body = await a.post("startup", startup_body("c2"))
        assert (status, body["field"]) == (409, "rtmpUrl")
        assert "c2" not in a.workers
        status, _ = await a.post("startup", startup_body("c3", rtmpStream="another-key"))
        assert status == 200
        a.workers["c1"].emit({"event": "status", "status": "FINISH", "reason": "bye"})
        status, _ = await a.post("startup", startup_body("c2"))
        assert status == 200

    run_api(scenario)


def test_toStream_is_taken_for_rtmpStream() -> None:
    async def scenario(a: Api) -> None:
        body = startup_body(rtmpStream=None, toStream="alias-key-123")
        status, _ = await a.post("startup", body)
        assert status == 200
        assert a.workers["c1"].request.rtmp_stream == "alias-key-123"

    run_api(scenario)


def test_beyond_max_calls_startup_answers_503() -> None:
    async def scenario(a: Api) -> None:
        for index in range(2):
            status, _ = await a.post("startup", startup_body(f"c{index}", rtmpStream=f"k{index}"))
            assert status == 200
        status, body = await a.post("startup", startup_body("c9", rtmpStream="k9"))
        assert status == 503 and "max-calls" in body["error"]
        a.workers["c0"].emit({"event": "status", "status": "FAILED", "reason": "x", "exitCode": 3})
        status, _ = await a.post("startup", startup_body("c9", rtmpStream="k9"))
        assert status == 200

    run_api(scenario, ServerConfig(max_calls=2))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"hasAudio": "yes"}, "hasAudio"),
        ({"callee": None}, "callee"),
        ({"rtmpUrl": "http://example.com/live"}, "rtmpUrl"),
        ({"sipPort": "70000"}, "sipPort"),
        ({"max-duration": "soon"}, "max-duration"),
        ({"sip-password-command": "cat /etc/shadow"}, "sip-password-command"),
        ({"control": "none"}, "control"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_a_bad_field_is_named_in_a_400(changes: dict[str, Any], field: str) -> None:
    async def scenario(a: Api) -> None:
        status, body = await a.post("startup", startup_body(**changes))
        assert (status, body["field"]) == (400, field)
        assert body["error"] and a.workers == {}

    run_api(scenario)


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b"[" * 5000])
def test_a_body_that_is_not_a_json_object_is_a_400(raw: bytes) -> None:
    async def scenario(a: Api) -> None:
        for path in ("startup", "find", "terminate", "send_dtmf"):
            response = await a.client.post(f"/rest-api/call/{path}", data=raw)
            body = await response.json()
            assert (response.status, body["field"]) == (400, "body"), path

    run_api(scenario)


def test_a_body_over_the_limit_is_a_413() -> None:
    async def scenario(a: Api) -> None:
        body = startup_body(callee="x" * MAX_BODY)
        response = await a.client.post("/rest-api/call/startup", data=json.dumps(body))
        assert response.status == 413
        assert "bytes" in (await response.json())["error"]
        assert a.workers == {}

    run_api(scenario)


@pytest.mark.parametrize(
    ("kind", "method"), [("RFC2833", "rfc4733"), ("INFO", "info"), (None, None)]
)
def test_send_dtmf_sends_the_digits_by_the_method_asked(kind: str | None, method: str) -> None:
    async def scenario(a: Api) -> None:
        await a.post("startup", startup_body())
        body = {"callId": "c1", "dtmf": "123#", **({"type": kind} if kind else {})}
        status, call = await a.post("send_dtmf", body)
        assert status == 200 and call["callId"] == "c1"
        expected = {"command": "dtmf", "digits": "123#"}
        if method:
            expected["method"] = method
        assert a.workers["c1"].commands == [expected]

    run_api(scenario)


def test_send_dtmf_errors() -> None:
    async def scenario(a: Api) -> None:
        await a.post("startup", startup_body())
        assert (await a.post("send_dtmf", {"callId": "c1", "dtmf": "12x"}))[0] == 400
        assert (await a.post("send_dtmf", {"callId": "c1", "dtmf": "1", "type": "X"}))[0] == 400
        assert (await a.post("send_dtmf", {"callId": "zz", "dtmf": "1"}))[0] == 404
        a.workers["c1"].answer = False
        status, body = await a.post("send_dtmf", {"callId": "c1", "dtmf": "1"})
        assert (status, body["error"]) == (409, "the call is not answered yet")
        a.workers["c1"].emit({"event": "status", "status": "FINISH", "reason": "bye"})
        status, body = await a.post("send_dtmf", {"callId": "c1", "dtmf": "1"})
        assert status == 409 and "ended" in body["error"]
        assert len(a.workers["c1"].commands) == 1

    run_api(scenario)


def test_a_command_the_worker_does_not_answer_is_a_202(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "COMMAND_TIMEOUT", 0.05)

    async def scenario(a: Api) -> None:
        await a.post("startup", startup_body())
        a.workers["c1"].answer = None
        status, _ = await a.post("send_dtmf", {"callId": "c1", "dtmf": "5"})
        assert status == 202 and a.workers["c1"].commands[0]["digits"] == "5"

    run_api(scenario)


def test_inject_stream_sends_a_file_of_the_media_dir_or_a_stream_url(tmp_path: Path) -> None:
    """A client names files inside --media-dir only (relative or absolute), and streams by
    http(s)/rtmp(s) URL: never another file the server can read, nor `file:` URLs."""
    media = tmp_path / "media"
    media.mkdir()
    clip = media / "clip.wav"
    clip.write_bytes(b"RIFF")
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"RIFF")

    async def scenario(a: Api) -> None:
        await a.post("startup", startup_body())
        assert (await a.post("inject_stream", {"callId": "c1", "file": "clip.wav"}))[0] == 200
        assert (await a.post("inject_stream", {"callId": "c1", "file": str(clip)}))[0] == 200
        url = "http://127.0.0.1/a.mp3"
        assert (await a.post("inject_stream", {"callId": "c1", "url": url}))[0] == 200
        outside = "no such file in the server's --media-dir"
        for name in ("nope.wav", str(secret), "../secret.wav", "/etc/passwd"):
            refused = {"callId": "c1", "file": name}
            assert await a.post("inject_stream", refused) == (
                400,
                {"error": outside, "field": "file"},
            ), name
        for bad_url in ("file:///etc/passwd", "/etc/passwd", "concat:a|b"):
            answer = await a.post("inject_stream", {"callId": "c1", "url": bad_url})
            assert answer[0] == 400 and answer[1]["field"] == "url", bad_url
        both = {"callId": "c1", "file": "clip.wav", "url": url}
        assert (await a.post("inject_stream", both))[0] == 400
        assert a.workers["c1"].commands == [
            {"command": "inject", "file": str(clip.resolve())},
            {"command": "inject", "file": str(clip.resolve())},
            {"command": "inject", "file": url},
        ]

    run_api(scenario, ServerConfig(media_dir=media))


def test_without_a_media_dir_no_file_is_accepted(tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF")

    async def scenario(a: Api) -> None:
        await a.post("startup", startup_body())
        answer = await a.post("inject_stream", {"callId": "c1", "file": str(clip)})
        assert answer == (
            400,
            {"error": "files are not accepted: the server has no --media-dir", "field": "file"},
        )
        announced = await a.post("startup", startup_body("c2", announce=str(clip)))
        assert announced[0] == 400 and announced[1]["field"] == "announce"
        assert a.workers["c1"].commands == []

    run_api(scenario)


def test_terminate_hangs_up_and_the_call_stays_findable_for_keep_finished() -> None:
    async def scenario(a: Api) -> None:
        await a.post("startup", startup_body())
        assert (await a.post("terminate", {"callId": "c1"}))[0] == 200
        await a.server.shutdown()  # waits for the hang-up started in the background
        assert a.workers["c1"].terminated == [ServerConfig().terminate_timeout]
        a.clock[0] += 59.0
        status, calls = await a.post("find", {"callId": "c1"})
        assert (status, calls[0]["status"], calls[0]["exitCode"]) == (200, "FINISH", 0)
        assert (await a.post("terminate", {"callId": "c1"}))[0] == 200
        assert a.workers["c1"].terminated == [ServerConfig().terminate_timeout]
        a.clock[0] += 1.0
        assert (await a.post("find", {"callId": "c1"}))[0] == 404
        assert (await a.post("terminate", {"callId": "c1"}))[0] == 404

    run_api(scenario, ServerConfig(keep_finished=60.0))


def test_shutdown_hangs_up_every_running_call() -> None:
    async def scenario(a: Api) -> None:
        for index in range(3):
            await a.post("startup", startup_body(f"c{index}", rtmpStream=f"k{index}"))
        a.workers["c0"].emit({"event": "status", "status": "BUSY", "reason": "busy"})
        await a.server.shutdown()
        assert [len(a.workers[f"c{i}"].terminated) for i in range(3)] == [0, 1, 1]

    run_api(scenario)


def test_a_configured_token_is_required_except_for_health() -> None:
    async def scenario(a: Api) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        wrong = {"Authorization": f"Bearer {TOKEN[:-1]}x"}
        assert (await a.post("find_all", {}))[0] == 401
        assert (await a.post("find_all", {}, headers=wrong))[0] == 401
        assert (await a.post("find_all", {}, headers={"Authorization": TOKEN}))[0] == 401
        assert (await a.post("find_all", {}, headers=headers))[0] == 200
        assert (await a.client.get("/openapi.json")).status == 401
        assert (await a.client.get("/health")).status == 200

    run_api(scenario, ServerConfig(token=Secret(TOKEN)))


def test_health_counts_the_calls() -> None:
    async def scenario(a: Api) -> None:
        await a.post("startup", startup_body())
        response = await a.client.get("/health")
        assert await response.json() == {"status": "ok", "calls": 1, "running": 1, "maxCalls": 10}

    run_api(scenario)


def test_the_password_and_stream_key_never_leave_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="sip2rtmp")
    texts: list[str] = []

    async def scenario(a: Api) -> None:
        bodies = [
            startup_body(),
            startup_body(),
            startup_body("c2", hasVideo="maybe"),
            startup_body("c3", sipPassword=7),
            startup_body("c4", rtmpStream="bad\nkey"),
        ]
        for body in bodies:
            texts.append(json.dumps(await a.post("startup", body)))
        for path, body in (("find", {"callId": "c1"}), ("find_all", {})):
            texts.append(json.dumps(await a.post(path, body)))
        texts.append(await (await a.client.get("/openapi.json")).text())

    run_api(scenario)
    texts.extend(record.getMessage() for record in caplog.records)
    assert any("c1" in text for text in texts)
    assert [text for text in texts if PASSWORD in text or STREAM_KEY in text] == []


def test_metrics_are_served_as_prometheus_text() -> None:
    async def scenario(a: Api) -> None:
        response = await a.client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        assert "# TYPE" in await response.text()

    run_api(scenario)
