"""Network namespaces with nftables rules: packet loss without touching the host's network.

This kernel has no netem, so loss comes from an nftables `numgen random` drop rule; inside a
namespace of its own the rule cannot hit any traffic but the test's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class NetnsUnavailable(RuntimeError):
    """This environment cannot create namespaces or load nftables rules (not root, no tools)."""


@dataclass(frozen=True)
class RuleCounter:
    """Packets counted by one nftables rule, identified by its comment."""

    comment: str
    packets: int


class NetworkNamespace:
    """A fresh namespace with only `lo` up; `delete()` removes it and every rule in it."""

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def create(cls, prefix: str = "s2r") -> NetworkNamespace:
        """A uniquely named namespace, so parallel runs and leftovers never collide."""
        if os.geteuid() != 0:
            raise NetnsUnavailable("network namespace tests need root (ip netns, nft)")
        for tool in ("ip", "nft"):
            if shutil.which(tool) is None:
                raise NetnsUnavailable(f"{tool} not found (install iproute2 and nftables)")
        namespace = cls(f"{prefix}-{uuid.uuid4().hex[:8]}")
        _run(["ip", "netns", "add", namespace.name])
        try:
            _run(["ip", "-n", namespace.name, "link", "set", "lo", "up"])
        except NetnsUnavailable:
            namespace.delete()
            raise
        return namespace

    @property
    def prefix(self) -> list[str]:
        """Put before a command to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def nft(self, ruleset: str) -> None:
        """Load an nftables ruleset (the text of `nft -f`) into the namespace."""
        _run([*self.prefix, "nft", "-f", "-"], stdin=ruleset)

    def rule_counters(self, family: str, table: str) -> list[RuleCounter]:
        """Every rule of `table` that has both a comment and a counter, in rule order."""
        listing = json.loads(_run([*self.prefix, "nft", "-j", "list", "table", family, table]))
        counters: list[RuleCounter] = []
        for entry in listing["nftables"]:
            rule: dict[str, Any] | None = entry.get("rule")
            if rule is None or "comment" not in rule:
                continue
            for expr in rule["expr"]:
                if "counter" in expr:
                    counters.append(RuleCounter(rule["comment"], int(expr["counter"]["packets"])))
        return counters

    def delete(self) -> None:
        """Kill what still runs inside (only the test's own processes can) and remove it.

        Removing a namespace does not end its processes; a leftover callee would keep the
        namespace alive and keep its ports.
        """
        listed = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False
        )
        for pid in listed.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, check=False)

    def exists(self) -> bool:
        return self.name in _run(["ip", "netns", "list"]).split()


def _run(argv: Sequence[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsUnavailable(f"{' '.join(argv)} failed: {exc}") from exc
    if done.returncode != 0:
        raise NetnsUnavailable(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout
