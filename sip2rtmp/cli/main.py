"""The `sip2rtmp` command: sub-commands, and the one place that turns outcomes into exit codes."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from typing import ClassVar, NoReturn

import click

from sip2rtmp import __version__
from sip2rtmp.cli.call import call
from sip2rtmp.cli.options import RunState
from sip2rtmp.cli.outcomes import EXIT_CODE_MEANINGS, ExitCode, explain
from sip2rtmp.cli.output import print_error
from sip2rtmp.config import ConfigError
from sip2rtmp.outcomes import LabError, RunFailed

log = logging.getLogger("sip2rtmp")


def exit_code_table() -> str:
    rows = [f"  {int(code):>3}  {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items()]
    return "Exit codes:\n\n\b\n" + "\n".join(rows)


class Commands(click.Group):
    """The sub-commands, each loaded when it runs or is listed: a call never loads the
    checks' probes, the lab or the server (their imports cost a call's start-up)."""

    LAZY: ClassVar[dict[str, str]] = {
        "check": "sip2rtmp.cli.check",
        "lab": "sip2rtmp.cli.lab",
        "serve": "sip2rtmp.cli.serve",
    }
    """Sub-command name -> the module that defines it under that name."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = self.LAZY.get(cmd_name)
        if module is None:
            return super().get_command(ctx, cmd_name)
        command = getattr(importlib.import_module(module), cmd_name)
        assert isinstance(command, click.Command)
        return command


@click.group(
    cls=Commands,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=exit_code_table(),
)
@click.version_option(__version__, prog_name="sip2rtmp")
def cli() -> None:
    """Take a phone call and put it on a live stream.

    Registers to a SIP server, calls the callee, and relays the call into one or more
    RTMP/RTMPS servers as H.264 + AAC until hangup, Ctrl-C or --max-duration.
    """


cli.add_command(call)


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI; every expected failure becomes one line on stderr and its exit code."""
    # numpy's OpenBLAS starts a thread per CPU when it loads, costing about 0.05 CPU-s, for
    # linear algebra sip2rtmp never does. Set before numpy loads; an explicit setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    _finish(run(argv))


def run(argv: list[str] | None = None) -> int:
    """The CLI's exit code for ``argv``: every outcome is mapped here, and only here."""
    state = RunState()
    try:
        result = cli.main(args=argv, prog_name="sip2rtmp", standalone_mode=False, obj=state)
    except click.exceptions.Abort:
        sys.stderr.write("sip2rtmp: interrupted\n")
        return ExitCode.INTERRUPTED
    except click.exceptions.ClickException as error:
        print_error(error.format_message(), "see --help")
        return ExitCode.USAGE
    except click.exceptions.Exit as done:
        return done.exit_code
    except RunFailed as failed:
        explained = explain(failed.outcome, srtp=state.srtp)
        print_error(explained.message, explained.hint)
        return explained.exit_code
    except ConfigError as error:
        print_error(error.message)
        return ExitCode.USAGE
    except LabError as error:
        print_error(error.message)
        return ExitCode.LAB_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("sip2rtmp: interrupted\n")
        return ExitCode.INTERRUPTED
    except Exception as error:  # a bug: one line here, the traceback only in the debug log
        log.debug("internal error", exc_info=True)
        # An unexpected exception's text is free text: the known full secrets are masked.
        message = state.redactor(f"internal error: {type(error).__name__}: {error}")
        print_error(message, "run with -v for details")
        return ExitCode.INTERNAL
    return result if isinstance(result, int) else ExitCode.OK


def _finish(code: int) -> NoReturn:
    """Flush what was written and end the process without the interpreter's teardown.

    A finished command has closed its call, outputs and files. What the teardown would still
    do is free PyAV's and numpy's objects one by one (about 0.1 CPU-s, as much as four seconds
    of a relayed call) and join worker threads, one of which may sit in a resolver lookup that
    would hold the exit until it times out.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream
            stream.flush()
    os._exit(code)
