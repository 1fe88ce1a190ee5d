"""The OpenAPI 3.0 document of the REST API, served at /openapi.json and kept in
docs/openapi.json (`python -m sip2rtmp.server.openapi > docs/openapi.json`).

The startup body's extras are generated from `call`'s options, so the document cannot drift
from what the server takes.
"""

from __future__ import annotations

import json
from typing import Any

import click

from sip2rtmp import __version__
from sip2rtmp.server.calls import STATUSES
from sip2rtmp.server.config import MAX_BODY
from sip2rtmp.server.request import MAX_CALL_ID, MAX_TEXT, extra_options

JSON = "application/json"
STRING_BOOLEAN: dict[str, Any] = {
    "oneOf": [{"type": "boolean"}, {"type": "string", "enum": ["true", "false"]}]
}
"""The reference's clients send booleans as JSON booleans or as the strings."""


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _text(description: str, *, limit: int = MAX_TEXT) -> dict[str, Any]:
    return {"type": "string", "maxLength": limit, "description": description}


def _extra_schema(option: click.Option) -> dict[str, Any]:
    kind = option.type
    schema: dict[str, Any]
    if option.is_flag:
        schema = dict(STRING_BOOLEAN)
    elif isinstance(kind, click.Choice):
        schema = {"type": "string", "enum": [str(choice) for choice in kind.choices]}
    elif isinstance(kind, click.IntRange):
        schema = {"type": "integer", "minimum": kind.min, "maximum": kind.max}
    elif kind == click.INT:
        schema = {"type": "integer"}
    elif kind == click.FLOAT:
        schema = {"type": "number"}
    else:
        schema = {"type": "string", "maxLength": MAX_TEXT}
    if option.help:
        schema["description"] = option.help
    return schema


def _start_body() -> dict[str, Any]:
    properties: dict[str, Any] = {
        "callId": _text("Id of the call (default: a random UUID).", limit=MAX_CALL_ID),
        "callee": _text("Who to call: an extension, user@host, or a sip:, sips:, tel: URI."),
        "rtmpUrl": _text("rtmp:// or rtmps:// server URL."),
        "rtmpStream": _text("Stream key appended to rtmpUrl."),
        "toStream": _text("The same as rtmpStream."),
        "hasAudio": {**STRING_BOOLEAN, "description": "Relay the call's audio."},
        "hasVideo": {**STRING_BOOLEAN, "description": "Offer and relay video."},
        "sipLogin": _text("SIP account user."),
        "sipAuthenticationName": _text("Digest user name (default: sipLogin)."),
        "sipPassword": {
            "type": "string",
            "maxLength": MAX_TEXT,
            "writeOnly": True,
            "description": "Digest password: never logged, never returned.",
        },
        "sipDomain": _text("SIP domain (registrar and From host)."),
        "sipOutboundProxy": _text("Send every request through this proxy."),
        "sipPort": {
            "oneOf": [
                {"type": "integer", "minimum": 1, "maximum": 65535},
                {"type": "string", "pattern": "^[0-9]{1,5}$"},
            ],
            "description": "SIP server port.",
        },
        "sipRegisterRequired": {**STRING_BOOLEAN, "description": "Register before calling."},
        "appKey": {"type": "string", "description": "Accepted and ignored."},
    }
    for name, option in sorted(extra_options().items()):
        properties[name] = _extra_schema(option)
    return {
        "type": "object",
        "description": "The reference system's startup body plus `sip2rtmp call`'s own flags"
        " by their long names. A profile given to the server fills omitted fields.",
        "properties": properties,
        "required": ["callee", "rtmpUrl"],
        "additionalProperties": False,
    }


def _call_object() -> dict[str, Any]:
    nullable_int = {"type": "integer", "nullable": True}
    nullable_text = {"type": "string", "nullable": True}
    return {
        "type": "object",
        "properties": {
            "callId": {"type": "string"},
            "status": _ref("Status"),
            "sipStatus": nullable_int,
            "sipMessage": nullable_text,
            "callee": {"type": "string"},
            "rtmpUrl": {"type": "string", "description": "The stream key masked."},
            "hasAudio": {"type": "boolean"},
            "hasVideo": {"type": "boolean"},
            "duration": {"type": "number", "description": "Seconds since the answer."},
            "outputs": {"type": "array", "items": {"type": "object"}},
            "stats": {"type": "object", "nullable": True},
            "reason": nullable_text,
            "exitCode": nullable_int,
        },
        "required": ["callId", "status", "callee", "rtmpUrl", "duration"],
    }


def _call_id_body(extra: dict[str, Any] | None = None, required: tuple[str, ...] = ()) -> Any:
    properties = {"callId": {"type": "string", "maxLength": MAX_CALL_ID}, **(extra or {})}
    return {
        "type": "object",
        "properties": properties,
        "required": ["callId", *required],
    }


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("Error")}}}


COMMON_ERRORS = {
    "400": _error("The body is not JSON, or a field is wrong (`field` names it)."),
    "401": _error("A bearer token is configured and the request has no valid one."),
    "413": _error(f"The body exceeds {MAX_BODY} bytes."),
}


def _operation(
    summary: str, body: dict[str, Any], ok: dict[str, Any], errors: dict[str, str]
) -> dict[str, Any]:
    responses = {"200": {"description": "Done.", "content": {JSON: {"schema": ok}}}}
    responses.update(COMMON_ERRORS)
    responses.update({code: _error(text) for code, text in errors.items()})
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {JSON: {"schema": body}}},
            "responses": dict(sorted(responses.items())),
        }
    }


def _command(summary: str, body: dict[str, Any]) -> dict[str, Any]:
    operation = _operation(
        summary,
        body,
        _ref("Call"),
        {
            "404": "No call with this callId.",
            "409": "The call has ended, or refused the command now (before the answer).",
        },
    )
    operation["post"]["responses"]["202"] = {
        "description": "Sent; the worker did not answer in time.",
        "content": {JSON: {"schema": _ref("Call")}},
    }
    operation["post"]["responses"] = dict(sorted(operation["post"]["responses"].items()))
    return operation


def _get(summary: str, content_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {
                "200": {"description": "OK.", "content": {content_type: {"schema": schema}}},
                "401": _error("A bearer token is configured and the request has no valid one."),
            },
        }
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of this server."""
    calls = {"type": "array", "items": _ref("Call")}
    dtmf = {
        "dtmf": {"type": "string", "pattern": "^[0-9A-Da-d*#]{1,64}$"},
        "type": {"type": "string", "enum": ["RFC2833", "INFO"]},
    }
    inject = {
        "file": {
            "type": "string",
            "description": "A file in the server's --media-dir (any FFmpeg format).",
        },
        "url": {
            "type": "string",
            "description": "An http(s):// or rtmp(s):// URL FFmpeg reads.",
        },
    }
    paths: dict[str, Any] = {
        "/rest-api/call/startup": _operation(
            "Start a call and relay it to RTMP.",
            _start_body(),
            _ref("Call"),
            {
                "409": "A call with this callId exists, or a running call streams to this"
                " rtmpUrl and stream.",
                "503": "--max-calls calls are running.",
            },
        ),
        "/rest-api/call/terminate": _operation(
            "Hang up a call (BYE); find then shows FINISH.",
            _call_id_body(),
            _ref("Call"),
            {"404": "No call with this callId."},
        ),
        "/rest-api/call/find": _operation(
            "The call with this callId, or the calls in this status.",
            {
                "type": "object",
                "properties": {
                    "callId": {"type": "string", "maxLength": MAX_CALL_ID},
                    "status": _ref("Status"),
                },
            },
            calls,
            {"404": "No such call, or no call in this status."},
        ),
        "/rest-api/call/find_all": _operation(
            "Every call: running, and finished within --keep-finished.",
            {"type": "object"},
            calls,
            {},
        ),
        "/rest-api/call/send_dtmf": _command(
            "Send DTMF digits to the callee.", _call_id_body(dtmf, ("dtmf",))
        ),
        "/rest-api/call/inject_stream": _command(
            "Play a file or stream toward the callee.", _call_id_body(inject)
        ),
        "/health": _get(
            "The server is up.",
            JSON,
            {
                "type": "object",
                "properties": {
                    "status": {"type": "string"},
                    "calls": {"type": "integer"},
                    "running": {"type": "integer"},
                    "maxCalls": {"type": "integer"},
                },
            },
        ),
        "/metrics": _get("Prometheus metrics.", "text/plain", {"type": "string"}),
        "/openapi.json": _get("This document.", JSON, {"type": "object"}),
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "sip2rtmp serve",
            "version": __version__,
            "description": "The reference system's REST API: each call is a"
            " `sip2rtmp call --json --control stdin` worker (docs/server.md).",
        },
        "servers": [{"url": "http://127.0.0.1:8081"}],
        "security": [{}, {"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Call": _call_object(),
                "Status": {"type": "string", "enum": list(STATUSES)},
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
                    "required": ["error"],
                },
            },
        },
    }


def main() -> None:
    print(json.dumps(document(), indent=2, sort_keys=False))


if __name__ == "__main__":
    main()
