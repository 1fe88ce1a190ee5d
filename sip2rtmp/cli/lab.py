"""`sip2rtmp lab`: start, stop and inspect the local lab the tests and the demo use."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sip2rtmp.cli.demo import run_demo
from sip2rtmp.lab import (
    CALLEES,
    RTMP_URL,
    RTMPS_SELF_SIGNED_URL,
    RTMPS_URL,
    RTMPS_WRONG_HOST_URL,
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
def up(the_lab: Lab, timeout: float) -> None:
    """Start the lab (programs already running are left alone)."""
    click.echo(_table(the_lab.up(timeout=timeout)))


@lab.command()
@click.pass_obj
def down(the_lab: Lab) -> None:
    """Stop every program the lab started."""
    the_lab.down()
    click.echo(f"lab stopped ({the_lab.run_dir})")


@lab.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
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
        f"refused   {RTMPS_SELF_SIGNED_URL}/<key> (self-signed), "
        f"{RTMPS_WRONG_HOST_URL}/<key> (wrong host)",
        f"stats     {STAT_URL}",
    ]
    return "\n".join(rows)


@lab.command()
@click.option(
    "--seconds",
    type=click.FloatRange(3, 3600),
    default=20.0,
    show_default=True,
    help="How long to relay.",
)
@click.option("--callee", default="video", show_default=True, help="Which lab callee to call.")
@click.pass_obj
def demo(the_lab: Lab, seconds: float, callee: str) -> None:
    """Bring the lab up, relay a real call into its RTMP server, and show what it recorded."""
    click.echo(_table(the_lab.up()))
    run_demo(the_lab, callee=callee, seconds=seconds, echo=click.echo)
