"""What one relay run needs to know, validated once, before anything touches the network.

The fields mirror the reference system's REST call (`/call/startup`): callee, sipLogin,
sipAuthenticationName, sipPassword, sipDomain, sipOutboundProxy, sipPort, sipRegisterRequired,
rtmpUrl, rtmpStream, hasAudio, hasVideo, callId. docs/cli.md has the mapping table.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from sip2rtmp.errors import UsageError
from sip2rtmp.sip.sdp import DEFAULT_AUDIO_CODECS, audio_codecs_named

Transport = Literal["udp", "tcp", "tls"]
TRANSPORTS: tuple[Transport, ...] = ("udp", "tcp", "tls")
DEFAULT_SIP_PORT = 5060
DEFAULT_SIPS_PORT = 5061


class Secret:
    """A string that never shows itself: repr/str/format print a mask, `reveal()` the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int | None = None

    def __str__(self) -> str:
        if self.port is None:
            return self.host
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class RtmpTarget:
    """One RTMP(S) destination: the server URL with the stream key already appended."""

    url: str
    stream_key: str = ""

    @property
    def display(self) -> str:
        """The URL with its stream key masked: a stream key is a credential."""
        if self.stream_key and self.url.endswith(self.stream_key):
            return self.url[: -len(self.stream_key)] + mask(self.stream_key)
        return self.url


@dataclass(frozen=True)
class CallSettings:
    callee_uri: str
    sip_domain: str
    sip_login: str
    sip_auth_name: str
    sip_password: Secret
    sip_transport: Transport
    sip_server: HostPort
    """Where requests go: the outbound proxy when given, else the domain; port always set."""
    sip_outbound_proxy: HostPort | None
    register: bool
    rtmp_targets: tuple[RtmpTarget, ...]
    audio: bool
    video: bool
    call_id: str
    max_duration: float | None = None
    sip_tls_ca: str | None = None
    """A CA file to trust for the SIP server's TLS certificate instead of the system store."""
    ring_timeout: float = 60.0
    media_timeout: float = 15.0
    audio_codecs: tuple[str, ...] = DEFAULT_AUDIO_CODECS
    """What the offer lists for audio, the preferred first."""
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """Every value that must never appear in any output (password, stream keys)."""


def mask(value: str) -> str:
    """Keep a hint of a credential's start so two keys can be told apart, hide the rest."""
    if len(value) <= 8:
        return "****"
    return value[:4] + "****"


def parse_host_port(text: str, what: str) -> HostPort:
    """`host`, `host:port`, `[v6]:port`, tolerating a `sip:` prefix users paste from phones."""
    value = text.strip()
    for prefix in ("sip:", "sips:"):
        if value.lower().startswith(prefix):
            value = value[len(prefix) :]
    value = value.split(";", 1)[0]
    if not value:
        raise UsageError(f"{what} is empty")
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise UsageError(f"{what} {text!r} is not HOST[:PORT]")
        port_text = rest[1:] if rest else ""
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    else:
        host, port_text = value, ""
    if not host or any(c in host for c in " /@"):
        raise UsageError(f"{what} {text!r} is not HOST[:PORT]")
    if not port_text:
        return HostPort(host)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"{what} {text!r} has an invalid port")
    return HostPort(host, int(port_text))


def callee_uri(callee: str, domain: str | None) -> str:
    """A SIP URI for the callee: `1001`, `1001@pbx.example` or a full `sip:`/`sips:` URI."""
    value = callee.strip()
    if not value:
        raise UsageError("--callee is empty")
    if value.lower().startswith(("sip:", "sips:")):
        return value
    if "@" in value:
        return f"sip:{value}"
    if not domain:
        raise UsageError(f"--callee {value!r} has no host: give --sip-domain or a full SIP URI")
    return f"sip:{value}@{domain}"


def rtmp_targets(urls: tuple[str, ...], streams: tuple[str, ...]) -> tuple[RtmpTarget, ...]:
    """Pair each --rtmp-url with its --rtmp-stream key (one key serves every URL)."""
    if len(streams) > 1 and len(streams) != len(urls):
        raise UsageError(
            f"{len(streams)} --rtmp-stream values for {len(urls)} --rtmp-url values: "
            "give one key for all, or one per URL"
        )
    targets = []
    for index, url in enumerate(urls):
        key = streams[index] if len(streams) > 1 else (streams[0] if streams else "")
        targets.append(rtmp_target(url, key))
    return tuple(targets)


def rtmp_target(url: str, stream_key: str) -> RtmpTarget:
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("rtmp", "rtmps") or not parts.hostname:
        raise UsageError(f"--rtmp-url {redact_url(url)!r} is not an rtmp:// or rtmps:// URL")
    try:
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        raise UsageError(f"--rtmp-url {redact_url(url)!r} has an invalid port") from None
    base = url.strip()
    if stream_key:
        return RtmpTarget(url=base.rstrip("/") + "/" + stream_key.strip("/"), stream_key=stream_key)
    path_parts = [p for p in parts.path.split("/") if p]
    return RtmpTarget(url=base, stream_key=path_parts[-1] if len(path_parts) > 1 else "")


def redact_url(url: str) -> str:
    """An RTMP URL for an error message: the last path element may be a stream key."""
    parts = urlsplit(url.strip())
    path_parts = parts.path.split("/")
    if len(path_parts) > 2 and path_parts[-1]:
        path_parts[-1] = mask(path_parts[-1])
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return f"{parts.scheme}://{netloc}{'/'.join(path_parts)}"


def parse_audio_codecs(text: str) -> tuple[str, ...]:
    """``--audio-codecs``: a comma-separated list such as ``PCMU,PCMA``, the preferred first."""
    names = [name for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError(f"--audio-codecs needs at least one of {', '.join(DEFAULT_AUDIO_CODECS)}")
    try:
        return audio_codecs_named(names)
    except ValueError as error:
        raise UsageError(
            f"--audio-codecs: {error}; choose from {', '.join(DEFAULT_AUDIO_CODECS)}"
        ) from None


def build_call_settings(
    *,
    callee: str | None,
    sip_login: str | None,
    sip_auth_name: str | None,
    sip_password: str | None,
    sip_domain: str | None,
    sip_outbound_proxy: str | None,
    sip_port: int | None,
    sip_transport: str,
    register: bool,
    rtmp_urls: tuple[str, ...],
    rtmp_streams: tuple[str, ...],
    audio: bool,
    video: bool,
    call_id: str | None,
    max_duration: float | None,
    ring_timeout: float,
    media_timeout: float,
    has_recording: bool = False,
    sip_tls_ca: str | None = None,
    audio_codecs: str | None = None,
) -> CallSettings:
    """Check every value and derive the rest; raises UsageError with one line."""
    if not callee:
        raise UsageError("missing --callee (an extension, user@host or a SIP URI)")
    transport = sip_transport.lower()
    if transport not in TRANSPORTS:
        raise UsageError(f"--sip-transport must be one of {', '.join(TRANSPORTS)}")
    if register and not sip_login:
        raise UsageError("missing --sip-login (or use --no-register to call without registering)")
    if register and not sip_domain:
        raise UsageError("missing --sip-domain (needed to register)")
    if not audio and not video:
        raise UsageError("--no-audio and --no-video together leave nothing to relay")
    for name, value in (
        ("--max-duration", max_duration),
        ("--ring-timeout", ring_timeout),
        ("--media-timeout", media_timeout),
    ):
        if value is not None and value <= 0:
            raise UsageError(f"{name} must be a positive number of seconds")
    offered_audio = parse_audio_codecs(audio_codecs) if audio_codecs else DEFAULT_AUDIO_CODECS
    uri = callee_uri(callee, sip_domain)
    default_port = DEFAULT_SIPS_PORT if transport == "tls" else DEFAULT_SIP_PORT
    proxy = (
        parse_host_port(sip_outbound_proxy, "--sip-outbound-proxy") if sip_outbound_proxy else None
    )
    if proxy is not None:
        server = HostPort(proxy.host, proxy.port or sip_port or default_port)
    else:
        host = sip_domain or _uri_host(uri)
        domain_hp = parse_host_port(host, "--sip-domain")
        server = HostPort(domain_hp.host, domain_hp.port or sip_port or default_port)
    targets = rtmp_targets(rtmp_urls, rtmp_streams)
    if not targets and not has_recording:
        raise UsageError("missing --rtmp-url (rtmp://HOST/APP or rtmps://HOST/APP) or --record")
    secrets = tuple(s for s in [sip_password or "", *(t.stream_key for t in targets)] if s)
    login = sip_login or ""
    return CallSettings(
        callee_uri=uri,
        sip_domain=sip_domain or server.host,
        sip_login=login,
        sip_auth_name=sip_auth_name or login,
        sip_password=Secret(sip_password or ""),
        sip_transport=transport,
        sip_server=server,
        sip_outbound_proxy=proxy,
        register=register,
        rtmp_targets=targets,
        audio=audio,
        video=video,
        audio_codecs=offered_audio,
        call_id=call_id or str(uuid.uuid4()),
        max_duration=max_duration,
        sip_tls_ca=sip_tls_ca,
        ring_timeout=ring_timeout,
        media_timeout=media_timeout,
        secrets=secrets,
    )


def _uri_host(uri: str) -> str:
    rest = uri.split(":", 1)[1]
    host = rest.split("@", 1)[-1]
    return host.split(";", 1)[0].split("?", 1)[0]
