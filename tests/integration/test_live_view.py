"""The live view in a real terminal (tmux): what a person watching the call sees and types."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sip2rtmp.lab import RELAY_ACCOUNT, RTMP_URL, SIP_DOMAIN, SIP_HOST, Lab
from tests.integration.conftest import SIP2RTMP

pytestmark = pytest.mark.lab


class Terminal:
    """One tmux session running one command, read with capture-pane, typed into with send-keys."""

    def __init__(self, command: str, width: int = 110, height: int = 40) -> None:
        assert shutil.which("tmux"), "tmux is needed (Debian package tmux)"
        self.name = f"s2r-{uuid.uuid4().hex[:8]}"
        subprocess.run(
            [
                "tmux",
                "new-session",
                "-d",
                "-s",
                self.name,
                "-x",
                str(width),
                "-y",
                str(height),
                command,
            ],
            check=True,
        )

    def screen(self) -> str:
        done = subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True
        )
        return done.stdout

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if re.search(pattern, screen):
                return screen
            time.sleep(0.2)
        pytest.fail(f"{pattern!r} never appeared; the screen:\n{self.screen()}")

    def press(self, key: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, key], check=True)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture
def terminal_call(lab: Lab, tmp_path: Path) -> Iterator[tuple[Terminal, Path]]:
    exit_file = tmp_path / "exit"
    command = " ".join(
        shlex.quote(word)
        for word in [
            SIP2RTMP,
            "call",
            "--callee",
            "pcmu",
            "--sip-login",
            RELAY_ACCOUNT.user,
            "--sip-domain",
            SIP_DOMAIN,
            "--sip-outbound-proxy",
            SIP_HOST,
            "--rtmp-url",
            RTMP_URL,
            "--rtmp-stream",
            f"tty{uuid.uuid4().hex[:8]}",
            "--no-video",
            "--max-duration",
            "30",
        ]
    )
    script = (
        f"SIP2RTMP_SIP_PASSWORD={shlex.quote(RELAY_ACCOUNT.password)} {command}; "
        f"echo $? > {shlex.quote(str(exit_file))}; sleep 30"
    )
    terminal = Terminal(f"bash -c {shlex.quote(script)}")
    yield terminal, exit_file
    terminal.close()


def test_live_view_shows_the_call_and_sends_keys_as_dtmf(
    terminal_call: tuple[Terminal, Path], lab: Lab
) -> None:
    terminal, exit_file = terminal_call
    screen = terminal.wait_for(r"ESTABLISHED", 20)
    assert "PCMU" in screen
    terminal.wait_for(r"call 00:0[3-9]", 10)
    screen = terminal.wait_for(r"Level\s+\S*█", 10)
    assert "live" in screen
    assert RELAY_ACCOUNT.password not in screen
    log_before = lab.callee_log("pcmu")
    terminal.press("7")
    deadline = time.monotonic() + 5
    while "received event: '7' (end=1)" not in lab.callee_log("pcmu")[len(log_before) :]:
        assert time.monotonic() < deadline, "the key never reached the callee as DTMF"
        time.sleep(0.1)
    terminal.press("q")
    deadline = time.monotonic() + 15
    while not exit_file.exists():
        assert time.monotonic() < deadline, terminal.screen()
        time.sleep(0.2)
    assert exit_file.read_text().strip() == "0"
    assert "FINISH" in terminal.screen()
