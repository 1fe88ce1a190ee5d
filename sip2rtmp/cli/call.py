"""`sip2rtmp call`: the flags of the reference system's /call/startup, as a command."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from sip2rtmp.cli.output import EventPrinter, RedactingFilter, Redactor
from sip2rtmp.cli.profile import apply_profile
from sip2rtmp.config import build_call_settings
from sip2rtmp.errors import ExitCode

ENV_PREFIX = "SIP2RTMP_"


def configure_logging(verbose: int, quiet: bool, log_file: Path | None, redactor: Redactor) -> None:
    """Logs go to stderr (and --log-file), never to stdout where events are; always redacted."""
    level = (
        logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    )
    root = logging.getLogger("sip2rtmp")
    root.setLevel(logging.DEBUG if log_file else level)
    root.handlers.clear()
    root.propagate = False
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    handlers[0].setLevel(level)
    if log_file is not None:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setLevel(logging.DEBUG)
        handlers.append(file_handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RedactingFilter(redactor))
        root.addHandler(handler)


@click.command(context_settings={"auto_envvar_prefix": "SIP2RTMP"})
@click.option("--callee", metavar="URI", help="Who to call: an extension, user@host or a SIP URI.")
@click.option("--sip-login", metavar="USER", help="SIP account user (From and Contact user part).")
@click.option("--sip-auth-name", metavar="NAME", help="Digest user name (default: --sip-login).")
@click.option(
    "--sip-password",
    metavar="PASSWORD",
    envvar="SIP2RTMP_SIP_PASSWORD",
    help="Digest password; better from $SIP2RTMP_SIP_PASSWORD. Prompted for on a terminal.",
)
@click.option("--sip-domain", metavar="DOMAIN", help="SIP domain (registrar and From host).")
@click.option(
    "--sip-outbound-proxy",
    metavar="HOST[:PORT]",
    help="Send every request through this proxy instead of the domain's server.",
)
@click.option(
    "--sip-port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="SIP server port when not given in the proxy/domain (default 5060; 5061 for TLS).",
)
@click.option(
    "--sip-transport",
    type=click.Choice(["udp", "tcp", "tls"], case_sensitive=False),
    default="udp",
    show_default=True,
)
@click.option(
    "--register/--no-register",
    default=True,
    show_default=True,
    help="Register before calling, or call directly.",
)
@click.option(
    "--rtmp-url",
    "rtmp_urls",
    multiple=True,
    metavar="URL",
    help="rtmp:// or rtmps:// server URL; repeat for several outputs.",
)
@click.option(
    "--rtmp-stream",
    "rtmp_streams",
    multiple=True,
    metavar="KEY",
    help="Stream key appended to the URL; one for all URLs or one per URL.",
)
@click.option("--audio/--no-audio", default=True, show_default=True, help="Relay the call's audio.")
@click.option(
    "--video/--no-video",
    default=True,
    show_default=True,
    help="Offer and relay video (a slate is streamed when the call has none).",
)
@click.option("--call-id", metavar="ID", help="An id for this relay in events (default: random).")
@click.option(
    "--max-duration",
    type=float,
    metavar="SECONDS",
    help="Hang up after this long once answered.",
)
@click.option(
    "--ring-timeout",
    type=float,
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="Give up when the callee has not answered by then.",
)
@click.option(
    "--media-timeout",
    type=float,
    default=15.0,
    show_default=True,
    metavar="SECONDS",
    help="Fail when no RTP arrives this long after the answer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print NDJSON events on stdout.")
@click.option(
    "--profile",
    metavar="NAME|PATH",
    is_eager=True,
    expose_value=False,
    callback=apply_profile,
    help="Take defaults from [profiles.NAME] of the config file, or from a .toml file.",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    is_eager=True,
    expose_value=False,
    callback=apply_profile,
    help="Config file holding [profiles.NAME] tables"
    " (default: $XDG_CONFIG_HOME/sip2rtmp/config.toml).",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write a debug log here.",
)
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.pass_context
def call(
    ctx: click.Context,
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
    as_json: bool,
    log_file: Path | None,
    verbose: int,
    quiet: bool,
) -> int:
    """Call someone and relay the call to RTMP(S) until hangup, Ctrl-C or --max-duration."""
    redactor: Redactor = ctx.obj if isinstance(ctx.obj, Redactor) else Redactor()
    redactor.add(sip_password or "", *rtmp_streams)
    if register and sip_password is None and sip_login and sys.stdin.isatty():
        sip_password = click.prompt("SIP password", hide_input=True, err=True)
        redactor.add(sip_password or "")
    settings = build_call_settings(
        callee=callee,
        sip_login=sip_login,
        sip_auth_name=sip_auth_name,
        sip_password=sip_password,
        sip_domain=sip_domain,
        sip_outbound_proxy=sip_outbound_proxy,
        sip_port=sip_port,
        sip_transport=sip_transport,
        register=register,
        rtmp_urls=rtmp_urls,
        rtmp_streams=rtmp_streams,
        audio=audio,
        video=video,
        call_id=call_id,
        max_duration=max_duration,
        ring_timeout=ring_timeout,
        media_timeout=media_timeout,
    )
    redactor.add(*settings.secrets)
    configure_logging(verbose, quiet, log_file, redactor)
    printer = EventPrinter(settings.call_id, redactor, as_json=as_json, stream=sys.stdout)
    from sip2rtmp.relay import run_relay

    run_relay(settings, printer)
    return ExitCode.OK
