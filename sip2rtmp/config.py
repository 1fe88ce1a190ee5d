"""What one relay run needs to know, validated once, before anything touches the network.

The fields mirror the reference system's REST call (`/call/startup`): callee, sipLogin,
sipAuthenticationName, sipPassword, sipDomain, sipOutboundProxy, sipPort, sipRegisterRequired,
rtmpUrl, rtmpStream, hasAudio, hasVideo, callId. docs/cli.md has the mapping table.
"""

from __future__ import annotations

import ipaddress
import math
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from sip2rtmp.nat.policy import NatMode
from sip2rtmp.nat.stun import STUN_PORT
from sip2rtmp.netaddr import Transport
from sip2rtmp.sip import address
from sip2rtmp.sip.address import AddressError, MissingDomainError
from sip2rtmp.sip.message import parse_uri
from sip2rtmp.sip.sdp import DEFAULT_AUDIO_CODECS, audio_codecs_named

TRANSPORTS: tuple[Transport, ...] = ("udp", "tcp", "tls")
DEFAULT_SIP_PORT = 5060
DEFAULT_SIPS_PORT = 5061
DEFAULT_KEEPALIVE = 25.0
"""Seconds between keep-alives: below the 30 s UDP timeout of many routers and cloud NATs."""
NAT_MODES: tuple[NatMode, ...] = ("auto", "off")
IdentityHeader = Literal["P-Asserted-Identity", "P-Preferred-Identity"]
SrtpMode = Literal["off", "optional", "required"]
SRTP_MODES: tuple[SrtpMode, ...] = ("off", "optional", "required")
IDENTITY_HEADERS: dict[str, IdentityHeader] = {
    "pai": "P-Asserted-Identity",
    "ppi": "P-Preferred-Identity",
}
"""`--identity-header` values. A user agent outside the trust domain prefers an identity
(RFC 3325 §9.2), so `ppi` is the default; a trunk that takes the asserted one wants `pai`."""
T = TypeVar("T")
MIN_MEDIA_TIMEOUT = 1.0
"""Shortest --media-timeout: the relay learns of arriving media every half second, so a
shorter one could end a healthy call."""


class ConfigError(Exception):
    """A usage or configuration error: the one-line message names the flag or file at fault
    and never holds a secret (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
    """A server to connect to: `host` as a resolver takes it (an IPv6 address unbracketed)."""

    host: str
    port: int | None = None

    @property
    def uri_host(self) -> str:
        """The host as a SIP URI writes it (RFC 3261 §25.1 `IPv6reference` in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def __str__(self) -> str:
        return address.format_hostport(self.uri_host, self.port)


@dataclass(frozen=True)
class RtmpTarget:
    """One RTMP(S) destination: the server URL with the stream key already appended."""

    url: str
    stream_key: str = ""

    @property
    def display(self) -> str:
        """The URL with its credentials masked: stream key, password and query values."""
        return redact_url(self.url, self.stream_key)

    @property
    def secrets(self) -> tuple[str, ...]:
        """What the URL holds that must never be shown: the key, a password, query values."""
        parts = urlsplit(self.url)
        items = (item.partition("=") for item in parts.query.split("&"))
        query = [value if equals else name for name, equals, value in items]
        found = (self.stream_key, parts.password or "", *query)
        return tuple(value for value in found if value)


@dataclass(frozen=True)
class CallSettings:
    callee_uri: str
    sip_domain: str
    sip_login: str
    sip_auth_name: str
    sip_password: Secret
    sip_transport: Transport
    sip_server: HostPort
    """Where requests go: the outbound proxy when given, else the domain. Its port is None
    for a host name given without one: that server is located by RFC 3263 (NAPTR, SRV,
    A/AAAA); an IP literal without a port has the transport's default port."""
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
    nat: NatMode = "auto"
    """`auto` advertises the public side of a NAT where one is known; `off` the local address."""
    public_address: str | None = None
    """`--public-address`: the IP a static 1:1 NAT maps this machine to."""
    stun_server: HostPort | None = None
    """`--stun`: where the media sockets ask for their public mapping (RFC 5389); port set."""
    keepalive: float | None = DEFAULT_KEEPALIVE
    """Seconds between keep-alives that hold the NAT binding of the SIP flow; None: off."""
    early_media: bool = False
    """`--early-media`: start the stream from a 180/183 with SDP, so announcements and IVR
    prompts before the answer reach it."""
    display_name: str | None = None
    """The display name of From (RFC 3261 §20.20), free of anything a quoted-string cannot
    hold."""
    caller_id: str | None = None
    """The From user part when it is not the login (escaped); None: the login."""
    asserted_identity: str | None = None
    """A sip:, sips: or tel: URI sent in `identity_header` (RFC 3325 §9)."""
    identity_header: IdentityHeader = "P-Preferred-Identity"
    srtp: SrtpMode = "off"
    """`--srtp`: `required` offers RTP/SAVP only, `optional` RTP/AVP with a=crypto (and
    RTP/SAVP after a 488), `off` plain RTP (RFC 4568, RFC 3711)."""
    rtmps_ca: str | None = None
    """`--rtmps-ca`: a PEM file of CAs that RTMPS servers' certificates must chain to, in
    place of the system's."""
    rtmps_insecure: bool = False
    """`--rtmps-insecure`: RTMPS without checking the server's certificate or name."""
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """Every value that must never appear in any output (password, stream keys, the passwords
    and query values of RTMP URLs)."""


def mask(value: str) -> str:
    """Keep a hint of a credential's start so two keys can be told apart, hide the rest."""
    if len(value) <= 8:
        return "****"
    return value[:4] + "****"


def checked(flag: str, parse: Callable[[str], T], text: str) -> T:
    """`parse(text)`, its AddressError turned into the one-line ConfigError naming `flag`."""
    try:
        return parse(text)
    except AddressError as error:
        raise ConfigError(f"{flag}: {error}") from None


def parse_host_port(text: str, what: str) -> HostPort:
    """`host`, `host:port`, `[v6]:port` (RFC 3261 §25.1 `hostport`), tolerating the `sip:`
    prefix and `;lr`-style parameters of a proxy URI users paste from phones."""
    value = checked(what, address.check_printable, text)
    for prefix in ("sip:", "sips:"):
        if value.lower().startswith(prefix):
            value = value[len(prefix) :]
    host, port = checked(what, address.parse_hostport, value.split(";", 1)[0])
    return HostPort(host.strip("[]"), port)


def callee_uri(callee: str, domain: str | None) -> str:
    """The SIP or tel URI to call (see `sip2rtmp.sip.address.callee_uri` for the forms);
    `domain` is a checked host[:port]."""
    try:
        return address.callee_uri(callee, domain)
    except MissingDomainError as error:
        raise ConfigError(
            f"--callee: {error}: give --sip-domain, user@host or a full SIP URI"
        ) from None
    except AddressError as error:
        raise ConfigError(f"--callee: {error}") from None


def rtmp_targets(urls: tuple[str, ...], streams: tuple[str, ...]) -> tuple[RtmpTarget, ...]:
    """Pair each --rtmp-url with its --rtmp-stream key (one key serves every URL)."""
    if len(streams) > 1 and len(streams) != len(urls):
        raise ConfigError(
            f"{len(streams)} --rtmp-stream values for {len(urls)} --rtmp-url values: "
            "give one key for all, or one per URL"
        )
    targets = []
    for index, url in enumerate(urls):
        key = streams[index] if len(streams) > 1 else (streams[0] if streams else "")
        targets.append(rtmp_target(url, key))
    return tuple(targets)


def rtmp_target(url: str, stream_key: str) -> RtmpTarget:
    checked("--rtmp-url", address.check_printable, url)
    checked("--rtmp-stream", address.check_printable, stream_key)
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("rtmp", "rtmps") or not parts.hostname:
        raise ConfigError(f"--rtmp-url {redact_url(url)!r} is not an rtmp:// or rtmps:// URL")
    try:
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        raise ConfigError(f"--rtmp-url {redact_url(url)!r} has an invalid port") from None
    base = url.strip()
    key = stream_key.strip("/")
    if key:
        head, question, query = base.partition("?")
        return RtmpTarget(url=f"{head.rstrip('/')}/{key}{question}{query}", stream_key=key)
    path_parts = [p for p in parts.path.split("/") if p]
    return RtmpTarget(url=base, stream_key=path_parts[-1] if len(path_parts) > 1 else "")


def redact_url(url: str, stream_key: str = "") -> str:
    """An RTMP URL fit to show: a userinfo password and every query value masked, and the
    stream key (`stream_key`, else a last path element after the application's) that ends
    the path."""
    parts = urlsplit(url.strip())
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        hostport = f"{user}{':***' if colon else ''}@{hostport}"
    path = trimmed = parts.path.rstrip("/")
    segments = trimmed.split("/")
    key = stream_key or (segments[-1] if len(segments) > 2 else "")
    if key and trimmed.endswith(key):
        path = trimmed[: -len(key)] + mask(key)
    path += parts.path[len(trimmed) :]
    query = "&".join(_masked_query_item(item) for item in parts.query.split("&") if item)
    return urlunsplit((parts.scheme, hostport, path, query, ""))


def _masked_query_item(item: str) -> str:
    """`token=abc` → `token=****`: the name says what it is, the value may be a credential."""
    name, equals, value = item.partition("=")
    return f"{name}={mask(value)}" if equals else mask(name)


def parse_audio_codecs(text: str) -> tuple[str, ...]:
    """``--audio-codecs``: a comma-separated list such as ``PCMU,PCMA``, the preferred first."""
    names = [name for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"--audio-codecs needs at least one of {', '.join(DEFAULT_AUDIO_CODECS)}")
    try:
        return audio_codecs_named(names)
    except ValueError as error:
        raise ConfigError(
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
    nat: str = "auto",
    public_address: str | None = None,
    stun: str | None = None,
    keepalive: float | None = DEFAULT_KEEPALIVE,
    early_media: bool = False,
    display_name: str | None = None,
    caller_id: str | None = None,
    asserted_identity: str | None = None,
    identity_header: str = "ppi",
    srtp: str = "off",
    rtmps_ca: str | None = None,
    rtmps_insecure: bool = False,
) -> CallSettings:
    """Check every value and derive the rest; raises ConfigError with one line."""
    if not callee:
        raise ConfigError("missing --callee (an extension, user@host or a SIP URI)")
    transport = sip_transport.lower()
    if transport not in TRANSPORTS:
        raise ConfigError(f"--sip-transport must be one of {', '.join(TRANSPORTS)}")
    if register and not sip_login:
        raise ConfigError("missing --sip-login (or use --no-register to call without registering)")
    if register and not sip_domain:
        raise ConfigError("missing --sip-domain (needed to register)")
    if not audio and not video:
        raise ConfigError("--no-audio and --no-video together leave nothing to relay")
    for name, value in (
        ("--max-duration", max_duration),
        ("--ring-timeout", ring_timeout),
        ("--media-timeout", media_timeout),
    ):
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be a positive number of seconds")
    if media_timeout < MIN_MEDIA_TIMEOUT:
        raise ConfigError(f"--media-timeout must be at least {MIN_MEDIA_TIMEOUT:g} s")
    nat_mode, public, stun_server = nat_settings(nat, public_address, stun)
    offered_audio = parse_audio_codecs(audio_codecs) if audio_codecs else DEFAULT_AUDIO_CODECS
    login = checked("--sip-login", address.escape_user, sip_login) if sip_login else ""
    auth_name = (
        checked("--sip-auth-name", address.check_printable, sip_auth_name)
        if sip_auth_name
        else sip_login or ""
    )
    domain = parse_host_port(sip_domain, "--sip-domain") if sip_domain else None
    proxy = (
        parse_host_port(sip_outbound_proxy, "--sip-outbound-proxy") if sip_outbound_proxy else None
    )
    domain_text = str(domain) if domain else None
    uri = callee_uri(callee, domain_text)
    default_port = DEFAULT_SIPS_PORT if transport == "tls" else DEFAULT_SIP_PORT
    where = proxy or domain or _callee_server(uri)
    port = where.port or sip_port or (default_port if _is_ip(where.host) else None)
    server = HostPort(where.host, port)
    targets = rtmp_targets(rtmp_urls, rtmp_streams)
    srtp_mode = srtp_mode_named(srtp)
    ca_file = rtmps_trust(rtmps_ca, rtmps_insecure)
    if not targets and not has_recording:
        raise ConfigError("missing --rtmp-url (rtmp://HOST/APP or rtmps://HOST/APP) or --record")
    secrets = tuple(filter(None, [sip_password, *(s for t in targets for s in t.secrets)]))
    return CallSettings(
        callee_uri=uri,
        sip_domain=domain_text or server.uri_host,
        sip_login=login,
        sip_auth_name=auth_name,
        sip_password=Secret(sip_password or ""),
        sip_transport=transport,
        sip_server=server,
        sip_outbound_proxy=proxy,
        register=register,
        rtmp_targets=targets,
        audio=audio,
        video=video,
        audio_codecs=offered_audio,
        call_id=checked("--call-id", address.check_printable, call_id or str(uuid.uuid4())),
        max_duration=max_duration,
        sip_tls_ca=sip_tls_ca,
        ring_timeout=ring_timeout,
        media_timeout=media_timeout,
        nat=nat_mode,
        public_address=public,
        stun_server=stun_server,
        keepalive=keepalive_interval(keepalive),
        early_media=early_media,
        display_name=checked("--display-name", quotable, display_name) if display_name else None,
        caller_id=checked("--caller-id", address.escape_user, caller_id) if caller_id else None,
        asserted_identity=identity_uri(asserted_identity) if asserted_identity else None,
        identity_header=identity_header_named(identity_header),
        srtp=srtp_mode,
        rtmps_ca=ca_file,
        rtmps_insecure=rtmps_insecure,
        secrets=secrets,
    )


def nat_settings(
    nat: str, public_address: str | None, stun: str | None
) -> tuple[NatMode, str | None, HostPort | None]:
    """`--nat`, `--public-address` and `--stun`, checked together: with `--nat off` nothing
    is discovered or advertised, so either of the others contradicts it."""
    mode = next((mode for mode in NAT_MODES if mode == nat.lower()), None)
    if mode is None:
        raise ConfigError(f"--nat must be one of {', '.join(NAT_MODES)}")
    if mode == "off" and (public_address or stun):
        given = "--public-address" if public_address else "--stun"
        raise ConfigError(f"--nat off advertises the local address: {given} contradicts it")
    public = None
    if public_address:
        public = public_address.strip().removeprefix("[").removesuffix("]")
        if not _is_ip(public):
            raise ConfigError(f"--public-address {public_address!r} is not an IP address")
        parsed = ipaddress.ip_address(public)
        if parsed.is_unspecified or parsed.is_multicast:
            raise ConfigError(f"--public-address {public} is not a unicast address")
    server = None
    if stun:
        given_server = parse_host_port(stun, "--stun")
        server = HostPort(given_server.host, given_server.port or STUN_PORT)
    return mode, public, server


def quotable(text: str) -> str:
    """A display name a quoted-string can carry (RFC 3261 §25.1 `qdtext`, `quoted-pair`): no
    control characters (CR and LF cannot even be escaped) and nothing that is not UTF-8."""
    address.check_printable(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise AddressError("is not valid UTF-8") from None
    return text


def identity_uri(text: str) -> str:
    """`--asserted-identity`: the sip:, sips: or tel: URI of a P-Asserted-Identity or
    P-Preferred-Identity header (RFC 3325 §9.1), checked like a callee's URI."""
    scheme = text.partition(":")[0].lower()
    if scheme in ("sip", "sips"):
        return checked("--asserted-identity", address.sip_uri, text)
    if scheme == "tel":
        return checked("--asserted-identity", address.tel_uri, text)
    checked("--asserted-identity", address.check_text, text)
    raise ConfigError(f"--asserted-identity {text[:64]!r} is not a sip:, sips: or tel: URI")


def identity_header_named(value: str) -> IdentityHeader:
    """`--identity-header pai|ppi` as the header's name."""
    header = IDENTITY_HEADERS.get(value.lower())
    if header is None:
        raise ConfigError(f"--identity-header must be one of {', '.join(IDENTITY_HEADERS)}")
    return header


def srtp_mode_named(value: str) -> SrtpMode:
    """`--srtp off|optional|required`, in any case."""
    mode = next((mode for mode in SRTP_MODES if mode == value.lower()), None)
    if mode is None:
        raise ConfigError(f"--srtp must be one of {', '.join(SRTP_MODES)}")
    return mode


def rtmps_trust(ca_file: str | None, insecure: bool) -> str | None:
    """`--rtmps-ca` and `--rtmps-insecure`, checked together: a CA to verify against
    contradicts verifying nothing. The CA file is loaded once here, so a missing, unreadable
    or non-PEM file is a usage error before the call rather than a failed output during it."""
    if ca_file is None:
        return None
    if insecure:
        raise ConfigError("--rtmps-insecure checks no certificate: --rtmps-ca contradicts it")
    try:
        ssl.create_default_context(cafile=ca_file)
    except FileNotFoundError:
        raise ConfigError(f"--rtmps-ca {ca_file}: no such file") from None
    except ssl.SSLError:
        raise ConfigError(f"--rtmps-ca {ca_file}: holds no PEM certificate") from None
    except OSError as error:
        raise ConfigError(f"--rtmps-ca {ca_file}: cannot read it ({error.strerror})") from None
    return ca_file


def keepalive_interval(seconds: float | None) -> float | None:
    """`--keepalive`: 0 (or None) turns keep-alives off; a negative or non-finite number is
    a usage error."""
    if seconds is None or seconds == 0:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError("--keepalive must be a number of seconds, or 0 for none")
    return float(seconds)


def _is_ip(host: str) -> bool:
    """Whether `host` (unbracketed) is an IPv4 or IPv6 address rather than a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _callee_server(uri: str) -> HostPort:
    """With neither proxy nor domain, requests go to the host of the callee's SIP URI."""
    if not uri.startswith(("sip:", "sips:")):
        raise ConfigError("--callee: a tel: URI names no server: give --sip-domain")
    callee = parse_uri(uri)
    return HostPort(callee.host.strip("[]"), callee.port)
