"""`sip2rtmp serve` under a fuzzer driven by the OpenAPI document it serves (schemathesis).

Every operation of `/openapi.json` gets generated requests, valid and invalid, against a real
server process. No answer may be a 5xx, each must be one the document declares with the
content and schema it declares, and the server must still be up and healthy afterwards.

The server's calls could reach no SIP server (its profile's outbound proxy is a closed port)
and it runs one call at most: a startup body the fuzzer gets right starts one worker that
fails within a second, one arriving meanwhile is refused 503, and the fuzz stays fast and
off the lab.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis import checks

from sip2rtmp.lab import RTMP_URL
from tests.support.serve import ServeProcess, offline_profile, serving

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
RESPONSE_CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    root = tmp_path_factory.mktemp("serve-fuzz")
    args = ["--profile", str(offline_profile(root / "offline.toml")), "--max-calls", "1"]
    with serving(root, args) as server:
        yield server


schema = schemathesis.openapi.from_path(DOCUMENT)
"""Read at collection: the copy in docs/, which tests/unit/server holds equal to what
`/openapi.json` serves."""


@pytest.fixture(scope="module")
def known_call(fuzzed_server: ServeProcess) -> str:
    """A call the server knows, ended (FAILED: its SIP server is unreachable), so that the
    fuzz reaches past the 404 of an unknown callId."""
    body = {"callId": "fuzz-known", "callee": "tone", "rtmpUrl": RTMP_URL, "rtmpStream": "fz"}
    reply = fuzzed_server.post("/rest-api/call/startup", body)
    assert reply.status == 200, reply
    fuzzed_server.wait_for("fuzz-known", ["FAILED"], 15)
    return "fuzz-known"


@pytest.mark.fuzz
@schema.parametrize()
def test_no_generated_request_gets_a_server_error(
    case: schemathesis.Case[Any], fuzzed_server: ServeProcess, known_call: str
) -> None:
    """Each generated request as it is and, when its body names a callId, again with the
    known call's."""
    case.call_and_validate(base_url=fuzzed_server.url, checks=RESPONSE_CHECKS, timeout=10)
    if isinstance(case.body, dict) and "callId" in case.body:
        case.body = {**case.body, "callId": known_call}
        case.call_and_validate(base_url=fuzzed_server.url, checks=RESPONSE_CHECKS, timeout=10)


def test_the_server_survives_the_fuzz(fuzzed_server: ServeProcess) -> None:
    """Runs after the fuzz (file order): the same process still answers, and it printed no
    traceback while being fuzzed."""
    assert fuzzed_server.process.poll() is None, fuzzed_server.output[-3000:]
    assert fuzzed_server.get("/health").status == 200
    assert "Traceback" not in fuzzed_server.output, fuzzed_server.output[-3000:]
