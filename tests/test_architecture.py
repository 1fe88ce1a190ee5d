"""The layering docs/architecture.md describes, checked on the source: imports run one way,
the cores stay free of I/O, and the relay's functions stay short enough to read.

    cli, server → relay → net / media → sip / rtp   (netaddr, outcomes, config: shared by all)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sip2rtmp"

LAYER_RANK = {
    "sip": 0,
    "rtp": 0,
    "nat": 0,
    "net": 1,
    "media": 1,
    "relay": 2,
    "lab": 2,
    "cli": 3,
    "server": 3,
}
"""A package may import from its own rank and below, never from above; `lab` stands beside
the relay (the command line drives both), and the REST server beside the command line (each
call is a `call` worker process; `serve` starts the server)."""
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


@cache
def imports_of(name: str) -> frozenset[str]:
    """Every module `name` imports anywhere in its body, as written."""
    tree = ast.parse(modules()[name].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(found)


def own_imports(name: str) -> Iterator[str]:
    """The sip2rtmp modules `name` imports."""
    known = modules()
    return (target for target in imports_of(name) if target in known and target != name)


def reachable(start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in own_imports(todo.pop()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYER_RANK else None


def test_imports_run_one_way() -> None:
    upward = [
        f"{name} imports {target}"
        for name in modules()
        if (own := layer(name)) is not None
        for target in own_imports(name)
        if (other := layer(target)) is not None and LAYER_RANK[other] > LAYER_RANK[own]
    ]
    assert upward == []


@pytest.mark.parametrize("package", ["sip", "rtp", "media", "net", "relay", "lab"])
def test_nothing_below_the_command_line_reaches_it(package: str) -> None:
    """Exit codes, wording for users and flag names live in `cli`: the cores report facts."""
    below = [name for name in modules() if layer(name) == package]
    reached = {target for name in below for target in reachable(name)}
    assert sorted(name for name in reached if layer(name) == "cli") == []


def test_the_relay_core_does_no_io() -> None:
    """The relay's decisions import neither asyncio nor sockets, threads or PyAV, however
    indirectly: its tests run on a fake clock."""
    forbidden = {"asyncio", "socket", "threading", "av", "time", "subprocess"}
    used = {
        f"{name}: {target}"
        for name in reachable("sip2rtmp.relay.core")
        for target in imports_of(name)
        if target.split(".")[0] in forbidden
    }
    assert sorted(used) == []


@pytest.mark.parametrize("package", ["sip", "rtp", "nat", "media", "net", "relay", "lab"])
def test_nothing_below_the_server_reaches_it(package: str) -> None:
    """The server drives calls from outside, as worker processes: no core may depend on it."""
    below = [name for name in modules() if layer(name) == package]
    reached = {target for name in below for target in reachable(name)}
    assert sorted(name for name in reached if layer(name) == "server") == []


def long_functions(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                yield f"{path.name}:{node.lineno} {node.name} ({length} lines)"


def test_no_relay_function_is_longer_than_a_screen() -> None:
    relay = sorted((PACKAGE / "relay").glob("*.py"))
    assert [found for path in relay for found in long_functions(path)] == []


def test_the_relay_shell_stays_thin() -> None:
    """The asyncio shell only moves bytes and carries out the core's actions."""
    lines = (PACKAGE / "relay" / "runner.py").read_text(encoding="utf-8").count("\n")
    assert lines < 250


def test_an_address_is_defined_once() -> None:
    definitions = [
        f"{name}: {target.id}"
        for name, path in modules().items()
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
        and target.id in ("Addr", "Address", "Transport")
        and name != "sip2rtmp.netaddr"
    ]
    assert definitions == []


HEAVY_AT_START = (
    "av",
    "numpy",
    "numpy.random",
    "dns",
    "pylibsrtp",
    "tomllib",
    "sip2rtmp.lab",
    "sip2rtmp.relay.media",
)
"""What a call's first request must not wait for: the media stack, DNS, SRTP, the profile
reader and the lab load when the run needs them (docs/performance.md, "Start-up")."""


def test_the_command_line_loads_no_media_stack_before_the_first_request() -> None:
    """Importing the command and the relay shell, all a run has before its first REGISTER,
    loads none of the heavy modules; they do load once asked for, so the check can fail."""
    probe = (
        "import sys\n"
        "import sip2rtmp.cli.main, sip2rtmp.relay.runner\n"
        f"heavy = {HEAVY_AT_START!r}\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
        "import sip2rtmp.relay.media\n"
        "from sip2rtmp.media.audio import AacEncoder, AudioDecoder\n"
        "AudioDecoder('opus'), AudioDecoder('PCMU'), AacEncoder()\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    before, after = result.stdout.splitlines()
    assert before == "", f"loaded before the first request: {before}"
    assert {"av", "numpy", "sip2rtmp.relay.media"} <= set(after.split(","))
    assert "pylibsrtp" not in after, "libsrtp loads only for an SRTP call"
    assert "numpy.random" not in after, "numpy.random loads only for comfort noise"
    assert "tomllib" not in after, "the profile reader loads only for a profile"
