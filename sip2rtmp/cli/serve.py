"""`sip2rtmp serve`: the reference system's REST API, each call a `sip2rtmp call` worker."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import click

from sip2rtmp.cli.options import RunState
from sip2rtmp.cli.output import configure_logging
from sip2rtmp.cli.profile import load_profile, profile_defaults
from sip2rtmp.config import ConfigError, Secret
from sip2rtmp.server.config import (
    DEFAULT_HOST,
    DEFAULT_KEEP_FINISHED,
    DEFAULT_MAX_CALLS,
    DEFAULT_PORT,
    ServerConfig,
    check_exposure,
    parse_listen,
)

log = logging.getLogger("sip2rtmp.serve")


@click.command(context_settings={"auto_envvar_prefix": "SIP2RTMP_SERVE"})
@click.option(
    "--listen",
    default=f"{DEFAULT_HOST}:{DEFAULT_PORT}",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to serve on; beyond loopback only with --token-file.",
)
@click.option(
    "--max-calls",
    type=click.IntRange(1, 10_000),
    default=DEFAULT_MAX_CALLS,
    show_default=True,
    help="Calls running at once; startup answers 503 beyond.",
)
@click.option(
    "--keep-finished",
    type=click.FloatRange(0),
    default=DEFAULT_KEEP_FINISHED,
    show_default=True,
    metavar="SECONDS",
    help="How long a finished call stays findable with its outcome.",
)
@click.option(
    "--webhook",
    "webhooks",
    multiple=True,
    metavar="URL",
    help="POST each status change of every call here as JSON; repeat for several.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Require `Authorization: Bearer TOKEN`, TOKEN the first line of this file.",
)
@click.option(
    "--profile",
    metavar="NAME|PATH",
    help="Defaults for every call (a client then need not send sipPassword).",
)
@click.option(
    "--media-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    metavar="DIR",
    help="Where files a client names (announce, slate, inject_stream) may come from;"
    " without it, files are refused and only http(s)/rtmp(s) URLs are injected.",
)
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.pass_context
def serve(
    ctx: click.Context,
    /,
    listen: str,
    max_calls: int,
    keep_finished: float,
    webhooks: tuple[str, ...],
    token_file: Path | None,
    profile: str | None,
    media_dir: Path | None,
    log_file: Path | None,
    verbose: int,
    quiet: bool,
) -> int:
    """Serve the REST API (/rest-api/call/startup, find, terminate, ...) on HOST:PORT."""
    state = ctx.obj if isinstance(ctx.obj, RunState) else RunState()
    host, port = parse_listen(listen)
    token = read_token(token_file) if token_file is not None else None
    check_exposure(host, token)
    for url in webhooks:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--webhook {url!r} is not an http:// or https:// URL")
    defaults: dict[str, object] = {}
    if profile:
        from sip2rtmp.cli.call import call

        path, table = load_profile(profile, None)
        defaults = profile_defaults(call, path, table)
        password = defaults.get("sip_password")
        state.redactor.add(password if isinstance(password, str) else "")
    configure_logging(max(verbose, 1) if not quiet else 0, quiet, log_file, state.redactor)
    config = ServerConfig(
        host=host,
        port=port,
        max_calls=max_calls,
        keep_finished=keep_finished,
        webhooks=webhooks,
        token=token,
        profile=profile,
        defaults=defaults,
        media_dir=media_dir,
    )
    from sip2rtmp.server.app import serve as run_server

    return run_server(config)


def read_token(path: Path) -> Secret:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ConfigError(f"cannot read --token-file {path}: {error.strerror}") from None
    token = lines[0].strip() if lines else ""
    if len(token) < 16:
        raise ConfigError(f"--token-file {path}: the token must be at least 16 characters")
    try:
        if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
            log.warning("%s is readable by other users: chmod 600 it", path)
    except OSError:
        pass
    return Secret(token)
