"""`sip2rtmp call`: the flags of the reference system's /call/startup, as a command."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import click

from sip2rtmp.cli.live import LiveView, PlainSummary
from sip2rtmp.cli.options import relay_options
from sip2rtmp.cli.output import EventPrinter, RedactingFilter, Redactor
from sip2rtmp.config import build_call_settings
from sip2rtmp.errors import ExitCode, UsageError
from sip2rtmp.relay import MediaOptions, run_relay
from sip2rtmp.relay.dtmf import DtmfScript
from sip2rtmp.status import EventSink, RelayControl


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
@relay_options()
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
    sip_tls_ca: str | None,
    register: bool,
    rtmp_urls: tuple[str, ...],
    rtmp_streams: tuple[str, ...],
    audio: bool,
    video: bool,
    call_id: str | None,
    max_duration: float | None,
    ring_timeout: float,
    media_timeout: float,
    announce: Path | None,
    announce_loop: bool,
    dtmf_script: str | None,
    record: Path | None,
    slate: Path | None,
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
        sip_tls_ca=sip_tls_ca,
        register=register,
        rtmp_urls=rtmp_urls,
        rtmp_streams=rtmp_streams,
        audio=audio,
        video=video,
        call_id=call_id,
        max_duration=max_duration,
        ring_timeout=ring_timeout,
        media_timeout=media_timeout,
        has_recording=record is not None,
    )
    redactor.add(*settings.secrets)
    configure_logging(verbose, quiet, log_file, redactor)
    if dtmf_script:
        DtmfScript.parse(dtmf_script)
    if record is not None and record.suffix.lower() not in (".flv", ".mp4"):
        raise UsageError(f"--record {record} must end in .flv or .mp4")
    options = MediaOptions(
        announce=announce,
        announce_loop=announce_loop,
        slate=slate,
        record=record,
        dtmf_script=dtmf_script,
    )
    control = RelayControl()
    sink: EventSink
    if as_json:
        sink = EventPrinter(settings.call_id, redactor, as_json=True, stream=sys.stdout)
    elif sys.stdout.isatty():
        sink = LiveView(redactor, control, call_id=settings.call_id)
    else:
        sink = PlainSummary(redactor, stream=sys.stdout)
    with contextlib.ExitStack() as stack:
        if isinstance(sink, LiveView):
            stack.enter_context(sink)
        run_relay(settings, sink, options, control)
    return ExitCode.OK
