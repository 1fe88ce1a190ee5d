"""The body of `POST /rest-api/call/startup`, validated into what one worker needs.

The reference system's fields (callId, callee, rtmpUrl, rtmpStream or toStream, hasAudio,
hasVideo, sipLogin, sipAuthenticationName, sipPassword, sipDomain, sipOutboundProxy, sipPort,
sipRegisterRequired, appKey) plus sip2rtmp's own `call` flags under their long names
("srtp", "max-duration"). Every value is checked here, so a worker is only started for a body
its command line would take; no reason ever quotes a value (a password could be in it).
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from sip2rtmp.config import (
    ConfigError,
    RtmpTarget,
    Secret,
    callee_uri,
    parse_host_port,
    rtmp_target,
)

ExtraValue = str | int | float | bool | list[str]

MAX_TEXT = 1024
"""Longest string value taken (a URL, a SIP URI): far beyond any real one."""
MAX_CALL_ID = 256
REFERENCE_FIELDS = (
    "callId",
    "callee",
    "rtmpUrl",
    "rtmpStream",
    "toStream",
    "hasAudio",
    "hasVideo",
    "sipLogin",
    "sipAuthenticationName",
    "sipPassword",
    "sipDomain",
    "sipOutboundProxy",
    "sipPort",
    "sipRegisterRequired",
    "appKey",
)
"""The reference system's startup fields; `appKey` is taken and ignored."""
NOT_EXTRAS = frozenset(
    {
        # the reference fields above carry these
        "callee",
        "sip_login",
        "sip_auth_name",
        "sip_domain",
        "sip_outbound_proxy",
        "sip_port",
        "register",
        "rtmp_urls",
        "rtmp_streams",
        "audio",
        "video",
        "call_id",
        # secrets travel in sipPassword only, never as a flag, a file or a command to run
        "sip_password",
        "sip_password_file",
        "sip_password_command",
        # the server owns how a worker talks, logs and what it reads or writes on its own
        "as_json",
        "control",
        "profile",
        "config",
        "log_file",
        "record",
        "verbose",
        "quiet",
    }
)
"""`call` options a startup body may not set as extras."""


class BadRequest(Exception):
    """A startup body the server refuses (400): `field` names the body's key at fault."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class StartRequest:
    call_id: str
    callee: str
    rtmp_url: str
    rtmp_stream: str
    has_audio: bool
    has_video: bool
    sip_login: str | None
    sip_auth_name: str | None
    sip_password: Secret | None
    sip_domain: str | None
    sip_outbound_proxy: str | None
    sip_port: int | None
    sip_register_required: bool
    extras: Mapping[str, ExtraValue]
    """sip2rtmp's own `call` flags by their long names without dashes ("srtp", "max-duration")."""

    @property
    def target(self) -> RtmpTarget:
        """The output with its key: `.url` is where the stream goes, `.display` masks it."""
        return rtmp_target(self.rtmp_url, self.rtmp_stream)


@functools.cache
def extra_options() -> dict[str, click.Option]:
    """The `call` options a body may set, by long flag name without dashes."""
    from sip2rtmp.cli.call import call  # the command line's flags are the extras' schema

    options: dict[str, click.Option] = {}
    for param in call.params:
        if not isinstance(param, click.Option) or param.name in NOT_EXTRAS:
            continue
        names = [opt[2:] for opt in param.opts if opt.startswith("--")]
        if names:
            options[names[0]] = param
    return options


def parse_start_request(
    body: object, defaults: Mapping[str, object], media_dir: Path | None = None
) -> StartRequest:
    """Validate a startup body; `defaults` (a profile's values, keyed like `call`'s
    parameters: "callee", "rtmp_urls", "sip_domain") fill the fields the body omits. A file
    the body names (`announce`, `slate`, …) must lie in `media_dir`: see `media_file`."""
    if not isinstance(body, dict):
        raise BadRequest("body", "must be a JSON object")
    fields: dict[str, Any] = {k: v for k, v in body.items() if v is not None}
    extras = _extras(fields, media_dir)
    stream = _stream(fields, defaults)
    domain = _text(fields, "sipDomain", defaults.get("sip_domain"))
    if domain is not None:
        _config_check("sipDomain", lambda: parse_host_port(domain, "--sip-domain"))
    proxy = _text(fields, "sipOutboundProxy", defaults.get("sip_outbound_proxy"))
    if proxy is not None:
        _config_check("sipOutboundProxy", lambda: parse_host_port(proxy, "--sip-outbound-proxy"))
    callee = _required(fields, "callee", defaults.get("callee"))
    _config_check("callee", lambda: callee_uri(callee, domain))
    rtmp_url = _required(fields, "rtmpUrl", _first(defaults.get("rtmp_urls")))
    _config_check("rtmpUrl", lambda: rtmp_target(rtmp_url, stream))
    password = fields.get("sipPassword")
    if password is not None and not is_text(password):
        raise BadRequest("sipPassword", "must be a string without control characters")
    call_id = _text(fields, "callId", None, limit=MAX_CALL_ID) or str(uuid.uuid4())
    _text(fields, "appKey", None)
    return StartRequest(
        call_id=call_id,
        callee=callee,
        rtmp_url=rtmp_url,
        rtmp_stream=stream,
        has_audio=_bool(fields, "hasAudio", defaults.get("audio", True)),
        has_video=_bool(fields, "hasVideo", defaults.get("video", True)),
        sip_login=_text(fields, "sipLogin", defaults.get("sip_login")),
        sip_auth_name=_text(fields, "sipAuthenticationName", defaults.get("sip_auth_name")),
        sip_password=Secret(password) if password else None,
        sip_domain=domain,
        sip_outbound_proxy=proxy,
        sip_port=_port(fields, defaults.get("sip_port")),
        sip_register_required=_bool(fields, "sipRegisterRequired", defaults.get("register", True)),
        extras=extras,
    )


def media_file(field: str, value: object, media_dir: Path | None) -> str:
    """The file a client names, as an absolute path inside the server's `--media-dir`.

    A REST client is not the server's user: without this, `announce` or `inject_stream`
    would play any file the server can read to the callee, and a path would probe which
    files exist. Relative names are taken in `media_dir`; `..` and symbolic links that lead
    out of it are refused, as is every file when no `--media-dir` is set."""
    if not isinstance(value, str) or not is_text(value):
        raise BadRequest(field, "must be a file name (a string)")
    if media_dir is None:
        raise BadRequest(field, "files are not accepted: the server has no --media-dir")
    root = media_dir.resolve()
    path = (root / value).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise BadRequest(field, "no such file in the server's --media-dir")
    return str(path)


def _extras(fields: Mapping[str, Any], media_dir: Path | None) -> dict[str, ExtraValue]:
    options = extra_options()
    extras: dict[str, ExtraValue] = {}
    for name, value in fields.items():
        if name in REFERENCE_FIELDS:
            continue
        option = options.get(name)
        if option is None:
            secret = "password" in name.lower()
            raise BadRequest(_shown(name), "send it as sipPassword" if secret else "unknown field")
        if isinstance(option.type, click.Path):
            extras[name] = media_file(name, value, media_dir)
        else:
            extras[name] = _extra_value(name, option, value)
    return extras


def _extra_value(name: str, option: click.Option, value: Any) -> ExtraValue:
    if option.is_flag:
        return _boolean(name, value)
    if option.multiple:
        if not isinstance(value, list) or not all(is_text(item) for item in value):
            raise BadRequest(name, "must be a list of strings")
        for item in value:
            _convert(name, option, item)
        return list(value)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadRequest(name, f"must be {_described(option.type)}")
    if isinstance(value, str) and not is_text(value):
        raise BadRequest(name, "must be a string without control characters")
    converted = _convert(name, option, value)
    if isinstance(converted, float) and not math.isfinite(converted):
        raise BadRequest(name, "must be a finite number")
    if isinstance(converted, Path):
        return str(value)
    if isinstance(converted, str | int | float):
        return converted
    return str(value)


def _convert(name: str, option: click.Option, value: Any) -> object:
    try:
        return option.type.convert(value, option, None)
    except click.BadParameter as error:
        if isinstance(option.type, click.Choice):
            choices = ", ".join(str(choice) for choice in option.type.choices)
            raise BadRequest(name, f"must be one of {choices}") from None
        if isinstance(option.type, click.Path):
            raise BadRequest(name, "must name an existing file") from None
        raise BadRequest(name, f"must be {_described(option.type)}") from error


def _described(kind: click.ParamType[Any]) -> str:
    if isinstance(kind, click.IntRange | click.FloatRange):
        number = "an integer" if isinstance(kind, click.IntRange) else "a number"
        return f"{number} from {kind.min} to {kind.max}"
    if kind == click.INT:
        return "an integer"
    if kind == click.FLOAT:
        return "a number"
    return "a string"


def _stream(fields: Mapping[str, Any], defaults: Mapping[str, object]) -> str:
    stream = _text(fields, "rtmpStream", None, allow_empty=True)
    alias = _text(fields, "toStream", None, allow_empty=True)
    if stream is not None and alias is not None and stream != alias:
        raise BadRequest("toStream", "differs from rtmpStream (give one of them)")
    given = stream if stream is not None else alias
    if given is None:
        given = _first(defaults.get("rtmp_streams")) or ""
    return given


def _first(value: object) -> str | None:
    if isinstance(value, list | tuple) and value and isinstance(value[0], str):
        return value[0]
    return value if isinstance(value, str) else None


def is_text(value: object) -> bool:
    """A string a command line and a log line can carry: no control characters, valid UTF-8
    (a lone surrogate from a JSON `\\ud800` escape cannot be encoded)."""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        return False
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(
    fields: Mapping[str, Any],
    name: str,
    default: object,
    *,
    limit: int = MAX_TEXT,
    allow_empty: bool = False,
) -> str | None:
    value = fields.get(name)
    if value is None:
        return default if isinstance(default, str) and default else None
    if not is_text(value) or len(value) > limit:
        raise BadRequest(name, f"must be a string of at most {limit} printable characters")
    if not value.strip() and not allow_empty:
        raise BadRequest(name, "must not be empty")
    return str(value).strip()


def _required(fields: Mapping[str, Any], name: str, default: object) -> str:
    value = _text(fields, name, default)
    if value is None:
        raise BadRequest(name, "is required")
    return value


def _boolean(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise BadRequest(name, 'must be true or false (or the strings "true", "false")')


def _bool(fields: Mapping[str, Any], name: str, default: object) -> bool:
    if name not in fields:
        return default if isinstance(default, bool) else True
    return _boolean(name, fields[name])


def _port(fields: Mapping[str, Any], default: object) -> int | None:
    value = fields.get("sipPort")
    if value is None:
        return default if isinstance(default, int) and not isinstance(default, bool) else None
    if isinstance(value, str) and value.strip().isdecimal() and len(value) < 8:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise BadRequest("sipPort", "must be a port number, 1 to 65535")
    return value


def _config_check(name: str, check: Callable[[], object]) -> None:
    """Run one of config's validators; its one-line message names a flag, the body a field."""
    try:
        check()
    except ConfigError as error:
        message = error.message
        if message.startswith("--"):
            message = message.split(" ", 1)[-1].lstrip(": ").strip()
        raise BadRequest(name, message.replace("--sip-domain", "sipDomain")) from None


def _shown(name: str) -> str:
    """An unknown key as an error may quote it: cut short."""
    return name if len(name) <= 64 else name[:61] + "..."
