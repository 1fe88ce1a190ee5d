"""The OpenAPI document: docs/openapi.json is what /openapi.json serves, and it is OpenAPI 3."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
from schemathesis.specs.openapi.definitions import OPENAPI_30

from sip2rtmp.server.openapi import document
from sip2rtmp.server.request import extra_options
from tests.unit.server.api_support import Api, run_api

DOCS = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"
ROUTES = {
    "/rest-api/call/startup",
    "/rest-api/call/terminate",
    "/rest-api/call/find",
    "/rest-api/call/find_all",
    "/rest-api/call/send_dtmf",
    "/rest-api/call/inject_stream",
    "/health",
    "/metrics",
    "/openapi.json",
}


def test_docs_hold_the_document_the_server_serves() -> None:
    """Regenerate with `python -m sip2rtmp.server.openapi > docs/openapi.json`."""
    served: list[Any] = []

    async def scenario(a: Api) -> None:
        response = await a.client.get("/openapi.json")
        assert response.status == 200
        served.append(await response.json())

    run_api(scenario)
    assert served == [json.loads(DOCS.read_text(encoding="utf-8"))]


def test_the_document_is_valid_openapi_3_0() -> None:
    errors = [
        f"{'/'.join(map(str, error.instance_path))}: {error.message[:120]}"
        for error in jsonschema_rs.validator_for(OPENAPI_30).iter_errors(document())
    ]
    assert errors == []


def refs(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                yield item
            else:
                yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


def test_every_route_is_described_and_every_reference_resolves() -> None:
    doc = document()
    assert set(doc["paths"]) == ROUTES
    schemas = doc["components"]["schemas"]
    dangling = [
        ref for ref in refs(doc) if ref.removeprefix("#/components/schemas/") not in schemas
    ]
    assert dangling == []


def test_the_startup_body_lists_every_extra_and_no_secret_flag() -> None:
    body = document()["paths"]["/rest-api/call/startup"]["post"]["requestBody"]
    properties = body["content"]["application/json"]["schema"]["properties"]
    assert set(extra_options()) <= set(properties)
    assert {"max-duration", "srtp", "early-media"} <= set(properties)
    flags = {"sip-password", "sip-password-file", "sip-password-command", "control", "json"}
    assert flags & set(properties) == set()
    assert properties["srtp"]["enum"] == ["off", "optional", "required"]
