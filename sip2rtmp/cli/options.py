"""The flags `call` and `check` share, defined once so both read the same profiles and env vars.

`check` takes the call-only flags too, hidden: a profile written for `call` (with `callee` or
`max-duration` in it) must work unchanged for `check`, and a profile key needs a flag.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from sip2rtmp.cli.output import Redactor, configure_logging
from sip2rtmp.cli.profile import apply_profile
from sip2rtmp.config import (
    DEFAULT_KEEPALIVE,
    SRTP_MODES,
    CallSettings,
    ConfigError,
    SrtpMode,
    build_call_settings,
)
from sip2rtmp.media.packets import KEYFRAME_INTERVAL_S
from sip2rtmp.media.targets import redact as display
from sip2rtmp.relay.dtmf import DtmfScript
from sip2rtmp.relay.options import LATENCIES, MediaOptions

F = TypeVar("F", bound=Callable[..., Any])

CONTROL_SOURCES = ("none", "stdin")
"""Where `--control` reads commands from: nowhere, or standard input (one JSON object a line);
the live view's keys are separate."""
KEYFRAME_INTERVALS = (0.5, 10.0)
"""The --keyframe-interval range (s). Shorter, keyframes eat most of the bit rate; longer, a
viewer who joins waits that long for a picture, and ingests want a few seconds at most."""


def relay_options(*, hide_call_flags: bool = False) -> Callable[[F], F]:
    """Every flag of `call`, in `call --help` order; `hide_call_flags` hides the call-only ones."""
    hidden = hide_call_flags
    decorators = [
        click.option(
            "--callee",
            metavar="URI",
            hidden=hidden,
            help="Who to call: an extension or number, user@host, or a sip:, sips: or tel: URI.",
        ),
        click.option(
            "--sip-login", metavar="USER", help="SIP account user (From and Contact user part)."
        ),
        click.option(
            "--sip-auth-name", metavar="NAME", help="Digest user name (default: --sip-login)."
        ),
        click.option(
            "--sip-password",
            metavar="PASSWORD",
            envvar="SIP2RTMP_SIP_PASSWORD",
            help="Digest password; better from $SIP2RTMP_SIP_PASSWORD. Prompted for on a terminal.",
        ),
        click.option(
            "--sip-password-file",
            type=click.Path(dir_okay=False, path_type=Path),
            metavar="FILE",
            help="Read the password from the first line of this file.",
        ),
        click.option(
            "--sip-password-command",
            metavar="COMMAND",
            help="Run this command (e.g. 'pass show sip/pbx'); its first line is the password.",
        ),
        click.option(
            "--sip-domain", metavar="DOMAIN", help="SIP domain (registrar and From host)."
        ),
        click.option(
            "--sip-outbound-proxy",
            metavar="HOST[:PORT]",
            help="Send every request through this proxy instead of the domain's server.",
        ),
        click.option(
            "--sip-port",
            type=click.IntRange(1, 65535),
            metavar="PORT",
            help="SIP server port when not given in the proxy/domain (default 5060; 5061 for TLS).",
        ),
        click.option(
            "--sip-transport",
            type=click.Choice(["udp", "tcp", "tls"], case_sensitive=False),
            default="udp",
            show_default=True,
        ),
        click.option(
            "--sip-tls-ca",
            type=click.Path(exists=True, dir_okay=False),
            metavar="FILE",
            help="Trust this CA file for the SIP server's TLS certificate (default: system CAs).",
        ),
        click.option(
            "--srtp",
            type=click.Choice(SRTP_MODES, case_sensitive=False),
            default="off",
            show_default=True,
            help="Encrypt the call's media (SDES-SRTP): required offers only SRTP; optional"
            " offers it so that a plain-RTP callee can still answer. Use with --sip-transport"
            " tls, which protects the keys.",
        ),
        click.option(
            "--nat",
            type=click.Choice(["auto", "off"], case_sensitive=False),
            default="auto",
            show_default=True,
            help="auto: advertise the public address a NAT maps us to (received/rport, --stun,"
            " --public-address); off: advertise the local address.",
        ),
        click.option(
            "--public-address",
            metavar="IP",
            help="The public IP of a static 1:1 NAT (a cloud VM's): put in Contact and the SDP.",
        ),
        click.option(
            "--stun",
            metavar="HOST[:PORT]",
            help="Ask this STUN server (port 3478 unless given) for the media sockets' public"
            " addresses and ports.",
        ),
        click.option(
            "--keepalive",
            type=float,
            default=DEFAULT_KEEPALIVE,
            show_default=True,
            metavar="SECONDS",
            hidden=hidden,
            help="Seconds between keep-alives that hold the SIP flow's NAT binding; 0: none.",
        ),
        click.option(
            "--register/--no-register",
            default=True,
            show_default=True,
            help="Register before calling, or call directly.",
        ),
        click.option(
            "--display-name",
            metavar="NAME",
            hidden=hidden,
            help='Display name in From, e.g. "Studio A".',
        ),
        click.option(
            "--caller-id",
            metavar="USER",
            hidden=hidden,
            help="From user part the callee sees, e.g. a number (default: --sip-login).",
        ),
        click.option(
            "--asserted-identity",
            metavar="URI",
            hidden=hidden,
            help="A sip:, sips: or tel: URI to send as the caller's identity (RFC 3325).",
        ),
        click.option(
            "--identity-header",
            type=click.Choice(["pai", "ppi"], case_sensitive=False),
            default="ppi",
            show_default=True,
            hidden=hidden,
            help="Send --asserted-identity as P-Asserted-Identity (pai) or"
            " P-Preferred-Identity (ppi).",
        ),
        click.option(
            "--rtmp-url",
            "rtmp_urls",
            multiple=True,
            envvar="SIP2RTMP_RTMP_URL",
            metavar="URL",
            help="rtmp:// or rtmps:// server URL; repeat for several outputs.",
        ),
        click.option(
            "--rtmp-stream",
            "rtmp_streams",
            multiple=True,
            envvar="SIP2RTMP_RTMP_STREAM",
            metavar="KEY",
            help="Stream key appended to the URL; one for all URLs or one per URL.",
        ),
        click.option(
            "--rtmps-ca",
            metavar="FILE",
            help="Verify rtmps:// servers against the CAs in this PEM file (default: system CAs).",
        ),
        click.option(
            "--rtmps-insecure",
            is_flag=True,
            help="Do not verify the certificates of rtmps:// servers (anyone on the path can"
            " then take the stream and its key).",
        ),
        click.option(
            "--audio-channels",
            type=click.IntRange(1, 2),
            default=1,
            show_default=True,
            hidden=hidden,
            help="AAC channels in the stream: 1 (mono) or 2 (stereo).",
        ),
        click.option(
            "--audio-codecs",
            metavar="LIST",
            hidden=hidden,
            help="Audio codecs to offer, the preferred first (default: opus,G722,PCMU,PCMA).",
        ),
        click.option(
            "--audio/--no-audio",
            default=True,
            show_default=True,
            hidden=hidden,
            help="Relay the call's audio.",
        ),
        click.option(
            "--video/--no-video",
            default=True,
            show_default=True,
            hidden=hidden,
            help="Offer and relay video (a slate is streamed when the call has none).",
        ),
        click.option(
            "--call-id",
            metavar="ID",
            hidden=hidden,
            help="An id for this relay in events (default: random).",
        ),
        click.option(
            "--max-duration",
            type=float,
            metavar="SECONDS",
            hidden=hidden,
            help="Hang up after this long once answered.",
        ),
        click.option(
            "--ring-timeout",
            type=float,
            default=60.0,
            show_default=True,
            metavar="SECONDS",
            hidden=hidden,
            help="Give up when the callee has not answered by then.",
        ),
        click.option(
            "--early-media",
            is_flag=True,
            hidden=hidden,
            help="Start the stream from a 180/183 with SDP, before the answer (IVR prompts,"
            " announcements).",
        ),
        click.option(
            "--media-timeout",
            type=float,
            default=15.0,
            show_default=True,
            metavar="SECONDS",
            hidden=hidden,
            help="Fail when no RTP arrives this long after the answer, or stops this long.",
        ),
        click.option(
            "--announce",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            metavar="FILE",
            hidden=hidden,
            help="Play this audio file to the callee once answered (any format FFmpeg reads).",
        ),
        click.option(
            "--announce-loop",
            is_flag=True,
            hidden=hidden,
            help="Repeat --announce until the call ends.",
        ),
        click.option(
            "--dtmf",
            "dtmf_script",
            metavar="SCRIPT",
            hidden=hidden,
            help='DTMF to send once answered, e.g. "wait:3 1234#" for a conference PIN.',
        ),
        click.option(
            "--record",
            type=click.Path(dir_okay=False, writable=True, path_type=Path),
            metavar="FILE",
            hidden=hidden,
            help="Also record the stream to this .flv or .mp4 file.",
        ),
        click.option(
            "--slate",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            metavar="IMAGE",
            hidden=hidden,
            help="Picture to stream as video when the call has none (default: a generated card).",
        ),
        click.option(
            "--transcode",
            is_flag=True,
            hidden=hidden,
            help="Re-encode the callee's H.264 too (VP8 always is): keyframes on time without"
            " the callee's help, or a stream for an ingest that rejects the callee's.",
        ),
        click.option(
            "--keyframe-interval",
            type=float,
            default=KEYFRAME_INTERVAL_S,
            show_default=True,
            metavar="SECONDS",
            hidden=hidden,
            help="Longest time between keyframes in the stream, 0.5 to 10"
            " (YouTube and Facebook want at most 2).",
        ),
        click.option(
            "--latency",
            type=click.Choice(LATENCIES),
            default="normal",
            show_default=True,
            hidden=hidden,
            help="low: the callee's audio leaves the moment it arrives, about 170 ms sooner,"
            " for more CPU (docs/performance.md).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print NDJSON events on stdout."),
        click.option(
            "--control",
            type=click.Choice(CONTROL_SOURCES),
            default="none",
            show_default=True,
            hidden=hidden,
            help="Take NDJSON commands (dtmf, hangup, inject) from stdin while the call runs;"
            " each is answered by a `command` event (docs/cli.md).",
        ),
        click.option(
            "--profile",
            metavar="NAME|PATH",
            is_eager=True,
            expose_value=False,
            callback=apply_profile,
            help="Take defaults from [profiles.NAME] of the config file, or from a .toml file.",
        ),
        click.option(
            "--config",
            type=click.Path(dir_okay=False, path_type=Path),
            is_eager=True,
            expose_value=False,
            callback=apply_profile,
            help="Config file holding [profiles.NAME] tables"
            " (default: $XDG_CONFIG_HOME/sip2rtmp/config.toml).",
        ),
        click.option(
            "--log-file",
            type=click.Path(dir_okay=False, writable=True, path_type=Path),
            help="Also write a debug log here.",
        ),
        click.option(
            "-v", "--verbose", count=True, help="More log output on stderr (-vv for debug)."
        ),
        click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr."),
    ]

    def apply(command: F) -> F:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


log = logging.getLogger("sip2rtmp.options")

CLEAR_TEXT_KEYS_WARNING = (
    "SRTP keys travel in clear text over SIP/{transport}: use --sip-transport tls to protect them"
)
"""SDES carries the master keys in the SDP (RFC 4568 §8.3): only a protected signalling
path keeps them from whoever can read it."""
INSECURE_RTMPS_WARNING = (
    "--rtmps-insecure: the certificates of rtmps:// servers are not checked; anyone on the path"
    " can pose as the server and take the stream and its stream key"
)


@dataclass
class RunState:
    """What `sip2rtmp.cli.main.run` shares with the command it runs (as click's `obj`): the
    redactor every log line passes, which learns the secrets as the flags are read, and the
    call's SRTP mode once the flags are valid, on which the hint of a refused offer depends."""

    redactor: Redactor = field(default_factory=Redactor)
    srtp: SrtpMode | None = None


@dataclass(frozen=True)
class RelayRequest:
    """What the shared flags ask for: the call's settings and what to send and record."""

    settings: CallSettings
    media: MediaOptions
    redactor: Redactor
    as_json: bool


def relay_request(
    ctx: click.Context, flags: dict[str, Any], *, default_callee: str | None = None
) -> RelayRequest:
    """Validate the flags once, for every command that takes them; logging is set up here too.

    The password and every target's full URL are known to the log redactor before anything
    can log them.
    """
    state = ctx.obj if isinstance(ctx.obj, RunState) else RunState()
    redactor = state.redactor
    password = password_from(
        flags["sip_password"], flags["sip_password_file"], flags["sip_password_command"]
    )
    redactor.add(password or "")
    if flags["register"] and password is None and flags["sip_login"] and sys.stdin.isatty():
        password = click.prompt("SIP password", hide_input=True, err=True)
        redactor.add(password or "")
    record: Path | None = flags["record"]
    settings = build_call_settings(
        **{name: flags[name] for name in SETTINGS_FLAGS},
        callee=flags["callee"] or default_callee,
        sip_password=password,
        has_recording=record is not None,
    )
    for target in settings.rtmp_targets:
        redactor.add_url(target.url, display(target.url))
        redactor.add(urlsplit(target.url).password or "")
    configure_logging(flags["verbose"], flags["quiet"], flags["log_file"], redactor)
    state.srtp = settings.srtp
    for warning in encryption_warnings(settings):
        log.warning("%s", warning)
    if flags["dtmf_script"]:
        DtmfScript.parse(flags["dtmf_script"])
    if record is not None and record.suffix.lower() not in (".flv", ".mp4"):
        raise ConfigError(f"--record {record} must end in .flv or .mp4")
    interval: float = flags["keyframe_interval"]
    low, high = KEYFRAME_INTERVALS
    if not low <= interval <= high:
        raise ConfigError(
            f"--keyframe-interval must be {low:g} to {high:g} seconds, not {interval:g}"
        )
    media = MediaOptions(
        announce=flags["announce"],
        announce_loop=flags["announce_loop"],
        slate=flags["slate"],
        record=record,
        dtmf_script=flags["dtmf_script"],
        audio_channels=flags["audio_channels"],
        transcode=flags["transcode"],
        keyframe_interval=interval,
        latency=flags["latency"],
    )
    return RelayRequest(settings, media, redactor, flags["as_json"])


def encryption_warnings(settings: CallSettings) -> list[str]:
    """What the settings leave unprotected although encryption was asked for, or turned off."""
    warnings = []
    if settings.srtp != "off" and settings.sip_transport != "tls":
        warnings.append(CLEAR_TEXT_KEYS_WARNING.format(transport=settings.sip_transport.upper()))
    rtmps = any(urlsplit(t.url).scheme.lower() == "rtmps" for t in settings.rtmp_targets)
    if settings.rtmps_insecure and rtmps:
        warnings.append(INSECURE_RTMPS_WARNING)
    return warnings


PASSWORD_COMMAND_TIMEOUT = 10.0


def password_from(given: str | None, file: Path | None, command: str | None) -> str | None:
    """The password from exactly one source: the flag (or env/profile), a file, or a command.

    Errors name the source, never the password or the command's output.
    """
    sources = [name for name, value in (("--sip-password", given), ("--sip-password-file", file),
               ("--sip-password-command", command)) if value]  # fmt: skip
    if len(sources) > 1:
        raise ConfigError(f"give only one of {', '.join(sources)}")
    if file is not None:
        try:
            return (file.read_text(encoding="utf-8").splitlines() or [""])[0]
        except OSError as error:
            raise ConfigError(f"cannot read --sip-password-file {file}: {error.strerror}") from None
    if command:
        try:
            done = subprocess.run(
                shlex.split(command),
                capture_output=True,
                text=True,
                timeout=PASSWORD_COMMAND_TIMEOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, ValueError, subprocess.TimeoutExpired) as error:
            reason = "timed out" if isinstance(error, subprocess.TimeoutExpired) else "cannot run"
            raise ConfigError(f"--sip-password-command {reason}") from None
        if done.returncode != 0 or not done.stdout.strip():
            raise ConfigError(
                f"--sip-password-command exited with {done.returncode} and gave no password"
            )
        return done.stdout.splitlines()[0]
    return given


SETTINGS_FLAGS = (
    "sip_login",
    "sip_auth_name",
    "sip_domain",
    "sip_outbound_proxy",
    "sip_port",
    "sip_transport",
    "sip_tls_ca",
    "register",
    "rtmp_urls",
    "rtmp_streams",
    "audio",
    "video",
    "call_id",
    "max_duration",
    "ring_timeout",
    "media_timeout",
    "audio_codecs",
    "nat",
    "public_address",
    "stun",
    "keepalive",
    "early_media",
    "display_name",
    "caller_id",
    "asserted_identity",
    "identity_header",
    "srtp",
    "rtmps_ca",
    "rtmps_insecure",
)
"""Flags passed to `build_call_settings` as they are."""
