"""`sip2rtmp lab`: start, stop and inspect the local lab the tests and the demo use."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import click

from sip2rtmp.errors import Sip2RtmpError
from sip2rtmp.lab import (
    CALLEES,
    RTMP_URL,
    RTMPS_URL,
    RUN_DIR_ENV,
    SIP_DOMAIN,
    SIP_HOST,
    SIP_PORT,
    SIP_TLS_PORT,
    STAT_URL,
    Lab,
    LabStatus,
    callee_program,
)

P = ParamSpec("P")
R = TypeVar("R")


def _one_line_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn an expected failure into one line on stderr and its documented exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except Sip2RtmpError as exc:
            click.echo(f"error: {exc.describe()}", err=True)
            raise SystemExit(int(exc.exit_code)) from None

    return wrapper


@click.group(name="lab")
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=RUN_DIR_ENV,
    default=None,
    help=f"Where the lab keeps configs, logs, PIDs and recordings [env {RUN_DIR_ENV}; "
    "default /tmp/sip2rtmp-lab].",
)
@click.pass_context
def lab(ctx: click.Context, run_dir: Path | None) -> None:
    """Local lab on loopback: kamailio (SIP), nginx-rtmp and baresip callees."""
    ctx.obj = Lab(run_dir)


@lab.command()
@click.option("--timeout", default=20.0, show_default=True, help="Seconds to wait for the lab.")
@click.pass_obj
@_one_line_errors
def up(the_lab: Lab, timeout: float) -> None:
    """Start the lab (programs already running are left alone)."""
    click.echo(_table(the_lab.up(timeout=timeout)))


@lab.command()
@click.pass_obj
@_one_line_errors
def down(the_lab: Lab) -> None:
    """Stop every program the lab started."""
    the_lab.down()
    click.echo(f"lab stopped ({the_lab.run_dir})")


@lab.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
@_one_line_errors
def status(the_lab: Lab, as_json: bool) -> None:
    """Show which lab programs run and which callees are registered."""
    current = the_lab.status()
    if as_json:
        click.echo(json.dumps(current.to_json()))
    else:
        click.echo(_table(current))


def _table(current: LabStatus) -> str:
    """A human summary: one row per program, then the addresses to use."""
    registered = {callee_program(a.user): a.user in current.registered for a in CALLEES}
    rows = [f"{'PROGRAM':<18} {'STATE':<9} {'PID':>7}  REGISTERED"]
    for program in current.programs:
        state = "running" if program.running else "stopped"
        pid = str(program.pid) if program.running and program.pid else "-"
        mark = "" if program.name not in registered else "yes" if registered[program.name] else "no"
        rows.append(f"{program.name:<18} {state:<9} {pid:>7}  {mark}")
    rows += [
        "",
        f"run dir   {current.run_dir}",
        f"SIP       {SIP_DOMAIN}: udp/tcp {SIP_HOST}:{SIP_PORT}, tls {SIP_HOST}:{SIP_TLS_PORT}",
        f"RTMP      {RTMP_URL}/<key>   RTMPS {RTMPS_URL}/<key>",
        f"stats     {STAT_URL}",
    ]
    return "\n".join(rows)
