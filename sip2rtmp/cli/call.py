"""`sip2rtmp call`: the flags of the reference system's /call/startup, as a command."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from typing import Any

import click

from sip2rtmp.cli.control import CommandReader, ControlOutput
from sip2rtmp.cli.options import relay_options, relay_request
from sip2rtmp.cli.outcomes import ExitCode
from sip2rtmp.cli.output import EventPrinter
from sip2rtmp.cli.summary import PlainSummary
from sip2rtmp.relay.control import RelayControl
from sip2rtmp.relay.events import EventSink
from sip2rtmp.relay.runner import run_relay

LIVE_STATS_INTERVAL = 0.25
"""A level meter and counters that move: four updates a second for the live view."""


@click.command(context_settings={"auto_envvar_prefix": "SIP2RTMP"})
@relay_options()
@click.pass_context
def call(ctx: click.Context, /, **flags: Any) -> int:
    """Call someone and relay the call to RTMP(S) until hangup, Ctrl-C or --max-duration."""
    request = relay_request(ctx, flags)
    settings = request.settings
    control = RelayControl()
    from_stdin = flags["control"] == "stdin"
    sink: EventSink
    media = request.media
    with contextlib.ExitStack() as stack:
        if request.as_json:
            sink = EventPrinter(settings.call_id, as_json=True, stream=sys.stdout)
        elif sys.stdout.isatty() and not from_stdin:  # the live view reads keys from stdin
            from sip2rtmp.cli.live import LiveView  # rich loads only for a terminal

            sink = stack.enter_context(LiveView(control, call_id=settings.call_id))
            media = dataclasses.replace(media, stats_interval=LIVE_STATS_INTERVAL)
        else:
            sink = PlainSummary(stream=sys.stdout)
        if from_stdin:
            output = ControlOutput(
                sink, call_id=settings.call_id, as_json=request.as_json, stream=sys.stdout
            )
            CommandReader(sys.stdin.fileno(), control, output).start()
            sink = output
        run_relay(settings, sink, media, control)
    return ExitCode.OK
