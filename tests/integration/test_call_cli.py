"""`sip2rtmp call` against kamailio and baresip: signalling outcomes, seen from the outside.

Each test drives the installed CLI as a user would and checks its exit code, its events, and
the SIP messages it logged (parsed with our own parser).
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from sip2rtmp.lab import BUSY_USER, DECLINE_USER, RELAY_ACCOUNT, UNKNOWN_USER, Lab
from sip2rtmp.lab.recording import read_recording
from tests.integration.sip_log import count, sip_messages

pytestmark = pytest.mark.lab
WRONG_PASSWORD = "Wrong-Pw-Zebra-0417"


def assert_no_secret(run: Any, *secrets: str) -> None:
    for secret in (RELAY_ACCOUNT.password, *secrets):
        assert secret not in run.everything
    assert "Traceback" not in run.stderr


def test_register_call_and_stay_up_60_s_over_udp_and_tcp(start_call: Any) -> None:
    """Real servers challenge twice (401, 407); a wrong ACK would drop the call after ~32 s.

    Both transports run at once, to different callees, so the minute is spent only once.
    """
    calls = {
        "udp": start_call("tone", "--no-video", "--max-duration", "60", transport="udp"),
        "tcp": start_call("pcmu", "--no-video", "--max-duration", "60", transport="tcp"),
    }
    for transport, call in calls.items():
        run = call.wait(100)
        assert run.returncode == 0, (transport, run.stderr)
        assert run.statuses[0] == "TRYING"
        assert "ESTABLISHED" in run.statuses
        assert run.statuses[-1] == "FINISH"
        assert run.last("status")["reason"] == "max duration reached"
        assert 59 <= run.last("status")["duration"] <= 62
        messages = sip_messages(run.log)
        assert {m.peer for m in messages} == {"127.0.0.1:5060"}
        assert count(messages, "received", status=401, of="REGISTER") >= 1
        assert count(messages, "received", status=200, of="REGISTER") >= 1
        assert count(messages, "received", status=407, of="INVITE") == 1
        # The callee retransmits its 200 OK until our ACK arrives: one 200 means it arrived.
        assert count(messages, "received", status=200, of="INVITE") == 1, transport
        assert count(messages, "sent", method="ACK") == 2  # for the 407, and for the 200
        assert count(messages, "sent", method="BYE") == 1
        assert count(messages, "received", status=200, of="BYE") == 1
        assert_no_secret(run)


def test_call_over_tls_trusting_the_lab_ca(start_call: Any, lab: Lab) -> None:
    run = start_call(
        "tone",
        "--no-video",
        "--max-duration",
        "3",
        "--sip-tls-ca",
        str(lab.tls_ca),
        transport="tls",
    ).wait(30)
    assert run.returncode == 0, run.stderr
    assert {m.peer for m in sip_messages(run.log)} == {"127.0.0.1:5061"}
    assert run.statuses[-1] == "FINISH"


def test_tls_refuses_an_untrusted_certificate(start_call: Any) -> None:
    run = start_call("tone", "--no-video", "--max-duration", "3", transport="tls").wait(30)
    assert run.returncode == 7, run.stderr
    assert "certificate" in run.stderr.lower()
    assert len(run.stderr.strip().splitlines()) == 1


def test_rtmp_server_that_refuses_fails_the_run_with_exit_8(start_call: Any) -> None:
    run = start_call(
        "tone",
        "--no-video",
        "--rtmp-url",
        "rtmp://127.0.0.1:1/live",
        "--rtmp-stream",
        "k",
        rtmp=False,
    ).wait(30)
    assert run.returncode == 8, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "RTMP output rtmp://127.0.0.1:1/live/" in lines[0]
    messages = sip_messages(run.log)
    assert count(messages, "sent", method="BYE") == 1, "the call is hung up cleanly"
    assert run.statuses[-1] == "FAILED"


def test_password_from_a_command_and_stereo_aac(start_call: Any, lab: Lab) -> None:
    run = start_call(
        "tone",
        "--no-video",
        "--max-duration",
        "3",
        "--audio-channels",
        "2",
        "--sip-password-command",
        f"printf {RELAY_ACCOUNT.password}",
        password=None,
    ).wait(30)
    assert run.returncode == 0, run.stderr
    assert count(sip_messages(run.log), "received", status=200, of="REGISTER") >= 1
    [path] = lab.recordings(run.stream_key)
    [audio] = read_recording(path).kinds("audio")
    assert audio.channels == 2
    assert RELAY_ACCOUNT.password not in run.everything


def test_plain_lines_off_a_terminal(start_call: Any) -> None:
    """Cron and pipes get one line per state change and periodic summaries, no live view."""
    run = start_call("tone", "--no-video", "--max-duration", "6", json_events=False).wait(30)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    words = [line.split()[1] for line in lines]
    assert words[:2] == ["registering", "registered"]
    for status in ("TRYING", "RING", "ESTABLISHED", "FINISH"):
        assert status in words
    assert words.index("TRYING") < words.index("ESTABLISHED") < words.index("FINISH")
    finish = lines[words.index("FINISH")]
    assert 'reason="max duration reached"' in finish
    assert "\x1b[" not in run.stdout, "no terminal control codes off a terminal"
    assert_no_secret(run)


def test_ack_and_bye_follow_the_dialog(start_call: Any) -> None:
    """RFC 3261 §12-13: ACK for 2xx and BYE use the route set, tags and CSeq of the dialog."""
    run = start_call("tone", "--no-video", "--max-duration", "2").wait(30)
    assert run.returncode == 0, run.stderr
    messages = sip_messages(run.log)
    ok = next(m for m in messages if m.direction == "received" and m.is_response(200, "INVITE"))
    ack_200 = [m for m in messages if m.direction == "sent" and m.is_request("ACK")][-1]
    bye = next(m for m in messages if m.direction == "sent" and m.is_request("BYE"))
    invite = [m for m in messages if m.direction == "sent" and m.is_request("INVITE")][-1]
    record_route = ok.message.headers.get_all("Record-Route")
    assert record_route, "kamailio record-routes"
    contact = ok.message.headers.get("Contact") or ""
    for request in (ack_200, bye):
        assert request.message.headers.get_all("Route") == list(reversed(record_route))
        assert request.message.uri in contact  # type: ignore[union-attr]
        assert request.message.headers.get("To") == ok.message.headers.get("To")
        assert request.message.headers.get("Call-ID") == invite.message.headers.get("Call-ID")
    assert ack_200.cseq == (invite.cseq[0], "ACK")
    assert bye.cseq[0] > invite.cseq[0]
    assert ack_200.message.headers.get("Via") != invite.message.headers.get("Via")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_ends_the_call_cleanly(start_call: Any, signum: signal.Signals) -> None:
    call = start_call("tone", "--no-video")
    call.wait_for_status("ESTABLISHED", 15)
    time.sleep(1.5)
    call.signal(signum)
    run = call.wait(20)
    assert run.returncode == 0, run.stderr
    assert run.statuses[-1] == "FINISH"
    assert run.last("status")["reason"] == signum.name
    messages = sip_messages(run.log)
    assert count(messages, "sent", method="BYE") == 1
    assert count(messages, "received", status=200, of="BYE") == 1
    assert "Traceback" not in run.stderr


def test_callee_hangup_ends_with_exit_0(start_call: Any, lab: Lab) -> None:
    call = start_call("tone", "--no-video")
    call.wait_for_status("ESTABLISHED", 15)
    time.sleep(1.5)
    lab.callee_command("tone", "hangup")
    run = call.wait(20)
    assert run.returncode == 0, run.stderr
    assert run.last("status")["reason"] == "hangup by callee"
    messages = sip_messages(run.log)
    assert count(messages, "received", method="BYE") == 1
    assert count(messages, "sent", status=200, of="BYE") == 1
    assert count(messages, "sent", method="BYE") == 0


def test_sigint_while_ringing_cancels(start_call: Any) -> None:
    call = start_call("noanswer", "--no-video")
    call.wait_for_status("RING", 15)
    call.signal(signal.SIGINT)
    run = call.wait(15)
    assert run.returncode == 130, run.stderr
    messages = sip_messages(run.log)
    assert count(messages, "sent", method="CANCEL") == 1
    assert count(messages, "received", status=487, of="INVITE") == 1
    assert len(run.stderr.strip().splitlines()) == 1
    assert "interrupted" in run.stderr


@pytest.mark.parametrize(
    ("callee", "extra", "password", "code", "words"),
    [
        ("tone", [], WRONG_PASSWORD, 3, "authentication failed"),
        (UNKNOWN_USER, [], RELAY_ACCOUNT.password, 4, "not found"),
        (BUSY_USER, [], RELAY_ACCOUNT.password, 5, "busy"),
        (DECLINE_USER, [], RELAY_ACCOUNT.password, 5, "declined"),
        ("noanswer", ["--ring-timeout", "3"], RELAY_ACCOUNT.password, 6, "no answer within 3 s"),
        (
            "tone",
            ["--sip-outbound-proxy", "127.0.0.1:5999"],
            RELAY_ACCOUNT.password,
            7,
            "unreachable",
        ),
    ],
    ids=["wrong-password", "unknown-callee", "busy", "decline", "no-answer", "no-sip-server"],
)
def test_failures_have_their_own_exit_code_and_one_line(
    start_call: Any, callee: str, extra: list[str], password: str, code: int, words: str
) -> None:
    run = start_call(callee, "--no-video", *extra, password=password).wait(15)
    assert run.returncode == code, run.stderr
    assert run.elapsed < 10
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert words in lines[0]
    assert run.statuses[-1] in ("FAILED", "BUSY")
    assert run.last("status")["exitCode"] == code
    assert_no_secret(run, WRONG_PASSWORD)
    if callee == "noanswer":
        assert count(sip_messages(run.log), "sent", method="CANCEL") == 1
