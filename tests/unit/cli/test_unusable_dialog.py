"""security.md: a 2xx whose dialog cannot be used is ACKed, ended with a BYE, and the run
fails with exit 10 and `answered with an unusable dialog: …`, measured on the real command."""

from __future__ import annotations

import json
import subprocess

from sip2rtmp.sip.message import Headers, Request, Response
from tests.support.sip_peer import SipPeer
from tests.unit.cli.test_contract import clean_env
from tests.unit.cli.test_documented_outcomes import call_command


class WildcardContactPeer(SipPeer):
    """Answers the INVITE with a 200 whose Contact is `*`: legal only in a REGISTER
    (RFC 3261 §10.2.2), so it names no remote target for the dialog (§12.1.2)."""

    def __init__(self) -> None:
        super().__init__(send_media=False)

    def _response(self, request: Request, status: int, reason: str, body: bytes = b"") -> Response:
        response = super()._response(request, status, reason, body)
        if status != 200 or request.method != "INVITE":
            return response
        headers = Headers()
        for name, value in response.headers:
            headers.add(name, "*" if name == "Contact" else value)
        return Response(status, reason, headers, body)


def test_an_answer_with_an_unusable_dialog_exits_10_with_one_line() -> None:
    peer = WildcardContactPeer()
    peer.start()
    try:
        done = subprocess.run(
            call_command(peer),
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=clean_env(),
        )  # fmt: skip
    finally:
        peer.stop()
    assert done.returncode == 10, done.stderr
    errors = done.stderr.splitlines()
    assert len(errors) == 1, errors
    assert "answered with an unusable dialog: " in errors[0]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    failed = [e for e in events if e.get("status") in {"FINISH", "FAILED", "BUSY"}]
    assert [(e["status"], e["exitCode"]) for e in failed] == [("FAILED", 10)]
    assert "answered with an unusable dialog: " in failed[0]["reason"]
    assert peer.seen.ack_at is not None, "the 2xx is ACKed (RFC 3261 §13.2.2.4)"
    assert peer.seen.bye_at is not None, "then the call is ended with a BYE"
    assert peer.seen.ack_at <= peer.seen.bye_at
