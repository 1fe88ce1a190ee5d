"""`sip2rtmp`'s one place that turns how a command ended into a line on stderr and an exit
code: a run's outcome, a usage error, a lab error."""

from __future__ import annotations

import pytest

from sip2rtmp.cli import main
from sip2rtmp.config import ConfigError
from sip2rtmp.lab import LabError
from sip2rtmp.outcomes import Interrupted, Rejected, RunFailed


@pytest.mark.parametrize(
    ("raised", "code", "line"),
    [
        (ConfigError("missing --callee"), 2, "sip2rtmp: error: missing --callee"),
        (LabError("kamailio did not start"), 11, "sip2rtmp: error: kamailio did not start"),
        (
            RunFailed(Rejected("INVITE", 486, "Busy Here", "pbx.test")),
            5,
            "sip2rtmp: error: callee busy or declined (SIP 486 Busy Here) — try again later",
        ),
        (
            RunFailed(Rejected("INVITE", 403, "Forbidden", "pbx.test", authenticated=True)),
            12,
            "sip2rtmp: error: the server refused the call after authentication: caller ID or"
            " permissions (403) — check --caller-id and --asserted-identity, and that the"
            " account may call this callee",
        ),
        (
            RunFailed(Rejected("INVITE", 403, "Forbidden", "pbx.test")),
            3,
            "sip2rtmp: error: authentication failed (SIP 403) — check --sip-login,"
            " --sip-auth-name and the password",
        ),
        (
            RunFailed(Interrupted("SIGTERM")),
            130,
            "sip2rtmp: error: interrupted by SIGTERM before the call was established",
        ),
    ],
)
def test_the_command_line_prints_one_line_and_exits_with_the_code(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    raised: Exception,
    code: int,
    line: str,
) -> None:
    """`main.run` is the one place outcomes, usage errors and lab errors become exit codes."""

    def fail(**_: object) -> None:
        raise raised

    monkeypatch.setattr(main.cli, "main", fail)
    assert main.run([]) == code
    assert capsys.readouterr().err == line + "\n"
