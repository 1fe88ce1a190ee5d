"""Starting and stopping the lab: idempotent up, a down that leaves nothing behind, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sip2rtmp.cli.lab import lab as lab_command
from sip2rtmp.errors import ExitCode, LabError
from sip2rtmp.lab import CALLEES, PROGRAMS, Lab


def _live_processes(groups: set[int]) -> set[int]:
    """PIDs of live (not zombie) processes whose process group is one of `groups`."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        state, pgid = fields[0], int(fields[2])
        if pgid in groups and state not in ("Z", "X"):
            found.add(int(stat.parent.name))
    return found


@pytest.mark.lab
def test_up_again_leaves_the_running_programs_alone(lab: Lab) -> None:
    before = lab.status()

    after = lab.up()

    assert [p.pid for p in after.programs] == [p.pid for p in before.programs]
    assert after.all_running
    assert after.all_registered


@pytest.mark.lab
def test_down_leaves_no_process_of_the_lab_running(lab: Lab) -> None:
    pids = {p.pid for p in lab.status().programs if p.pid is not None}
    assert len(pids) == len(PROGRAMS)
    # Each program leads its own process group: kamailio's children and nginx's workers too.
    assert _live_processes(pids) >= pids

    lab.down()
    try:
        assert _live_processes(pids) == set()
        assert not lab.is_up()
        assert not any(p.running for p in lab.status().programs)
    finally:
        lab.up()
    assert lab.is_up()


def test_a_missing_program_is_named_with_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))

    with pytest.raises(LabError) as raised:
        Lab(tmp_path / "run").up()

    message = str(raised.value)
    assert "kamailio not found (install the Debian package kamailio)" in message
    assert "baresip not found (install the Debian package baresip-core)" in message
    assert "\n" not in message


def test_cli_reports_a_lab_error_in_one_line_with_its_exit_code(tmp_path: Path) -> None:
    sip2rtmp = Path(sys.executable).with_name("sip2rtmp")
    env = {**os.environ, "PATH": str(tmp_path / "nothing-here")}
    result = subprocess.run(
        [str(sip2rtmp), "lab", "--run-dir", str(tmp_path / "run"), "up"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )

    assert result.returncode == int(ExitCode.LAB_FAILED) == 11
    assert result.stderr.count("\n") == 1
    assert "kamailio not found" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.lab
def test_cli_status_json_is_one_object(lab: Lab) -> None:
    result = CliRunner().invoke(lab_command, ["--run-dir", str(lab.run_dir), "status", "--json"])

    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["up"] is True
    assert set(status["programs"]) == set(PROGRAMS)
    assert {a.user for a in CALLEES} <= set(status["registered"])


@pytest.mark.lab
def test_cli_status_prints_a_table(lab: Lab) -> None:
    result = CliRunner().invoke(lab_command, ["--run-dir", str(lab.run_dir), "status"])

    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line}
    assert all(rows[program][0] == "running" for program in PROGRAMS)
