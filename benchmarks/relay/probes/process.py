"""CPU (per thread and over a steady window), peak RSS and open sockets of a child process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path


def program_env(**extra: str) -> dict[str, str]:
    """The environment a measured sip2rtmp runs in: ours, plus `extra`, but with Python's
    bytecode cache allowed. A user's installed copy imports compiled modules; a run that
    compiled every module from source (``PYTHONDONTWRITEBYTECODE``, as some shells and CI
    set) would add about 0.07 CPU-s of compiling to every start."""
    env = dict(os.environ, **extra)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _stat_fields(path: Path) -> list[str]:
    """Fields of a /proc stat line after the command name (which may contain spaces)."""
    text = path.read_text()
    return text[text.rindex(")") + 2 :].split()


def process_cpu_s(pid: int) -> float:
    """user+sys of every thread of `pid`, plus children it has reaped."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return sum(int(value) for value in fields[11:15]) / _clock_ticks()


def thread_cpu_s(pid: int) -> dict[int, float]:
    """user+sys per thread id; threads come and go, so a vanished one is skipped."""
    result: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = _stat_fields(task / "stat")
            result[int(task.name)] = (int(fields[11]) + int(fields[12])) / _clock_ticks()
    return result


def socket_ports(pid: int) -> tuple[set[int], set[int]]:
    """Local UDP and TCP ports of the sockets `pid` holds open right now."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])

    def ports(table: str) -> set[int]:
        found = set()
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            columns = line.split()
            if columns[9] in inodes:
                found.add(int(columns[1].rsplit(":", 1)[1], 16))
        return found

    return ports("udp"), ports("tcp")


@dataclass
class Usage:
    """What one measured process cost."""

    cpu_s: float
    """user+sys over its whole life, start-up and shutdown included."""
    max_rss_kb: int
    steady_cpu_s: float
    steady_s: float
    threads: list[tuple[str, float]]
    """CPU seconds per thread over the steady window, busiest first."""

    @property
    def steady_cpu_per_min(self) -> float:
        return self.steady_cpu_s * 60.0 / self.steady_s if self.steady_s else 0.0


Sample = tuple[float, float, dict[int, float]]
"""(monotonic time, process CPU, CPU per thread id) at one edge of the steady window."""


def _steady(
    pid: int, window: list[Sample], names: dict[int, str]
) -> tuple[float, float, list[tuple[str, float]]]:
    """CPU and length of the steady window, and each thread's CPU in it, busiest first.

    sip2rtmp names its media threads for the OS (``s2r-media``, ``s2r-output``, ...: `names`,
    read while the process ran); the others keep the program's name and are numbered by
    thread id; the process's own id is its main thread (the asyncio loop).
    """
    if len(window) != 2:
        return 0.0, 0.0, []
    (t0, cpu0, threads0), (t1, cpu1, threads1) = window
    threads: list[tuple[str, float]] = []
    for rank, tid in enumerate(sorted(threads1)):
        name = "main" if tid == pid else names.get(tid, f"thread {rank}")
        threads.append((name, threads1[tid] - threads0.get(tid, 0.0)))
    threads.sort(key=lambda item: -item[1])
    return cpu1 - cpu0, t1 - t0, threads


def thread_names(pid: int) -> dict[int, str]:
    """The names threads of `pid` gave themselves in the kernel, by thread id; those that
    kept the program's name are left out."""
    names: dict[int, str] = {}
    with contextlib.suppress(OSError):
        program = Path(f"/proc/{pid}/comm").read_text().strip()
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                name = (task / "comm").read_text().strip()
                if name != program:
                    names[int(task.name)] = name
    return names


class Watched:
    """A child process whose sockets, thread CPU and steady-window CPU are sampled."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.udp_ports: set[int] = set()
        self.tcp_ports: set[int] = set()
        self._peak_rss_kb = 0
        self._window: list[Sample] = []
        self._names: dict[int, str] = {}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_sockets, daemon=True)
        self._sampler.start()

    def _sample_sockets(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(OSError):
                udp, tcp = socket_ports(self.process.pid)
                self.udp_ports |= udp
                self.tcp_ports |= tcp
                self._peak_rss_kb = max(self._peak_rss_kb, peak_rss_kb(self.process.pid))

    def mark(self) -> None:
        """One edge of the steady window (call twice)."""
        pid = self.process.pid
        self._window.append((time.monotonic(), process_cpu_s(pid), thread_cpu_s(pid)))
        self._names.update(thread_names(pid))

    def abandon(self, signum: int) -> None:
        """End the process without measuring it: its run failed before the call was up.

        Not through `wait4`: ``Popen.send_signal`` may already have reaped a child that
        exited on its own.
        """
        self.process.send_signal(signum)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._stop.set()
        self._sampler.join()

    def reap(self, timeout: float) -> Usage:
        """Wait for the exit (SIGKILL after `timeout`) and read the kernel's accounting.

        The peak RSS is the process's own high-water mark as last sampled (`peak_rss_kb`),
        not ``wait4``'s ``ru_maxrss``: Linux carries into a child's ``ru_maxrss`` the
        high-water mark of the memory it was forked with, which is this benchmark's own, so
        once the benchmark had read a large capture every later child "peaked" at its size."""
        pid = self.process.pid
        deadline = time.monotonic() + timeout
        while True:
            waited, status, rusage = os.wait4(pid, os.WNOHANG)
            if waited:
                break
            if time.monotonic() > deadline:
                self.process.kill()
                deadline = float("inf")
            time.sleep(0.05)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self._stop.set()
        self._sampler.join()
        steady_cpu, steady_s, threads = _steady(pid, self._window, self._names)
        return Usage(
            cpu_s=rusage.ru_utime + rusage.ru_stime,
            max_rss_kb=self._peak_rss_kb or rusage.ru_maxrss,
            steady_cpu_s=steady_cpu,
            steady_s=steady_s,
            threads=threads,
        )


def sleep_until(deadline: float) -> None:
    time.sleep(max(deadline - time.monotonic(), 0.0))


def own_cpu_s(pid: int) -> float:
    """user+sys of `pid`'s own threads, without the children it has reaped."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return sum(int(value) for value in fields[11:13]) / _clock_ticks()


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (from each process's parent id in /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int(_stat_fields(entry / "stat")[1]) == pid:
                    found.append(int(entry.name))
    return sorted(found)


def rss_kb(pid: int) -> int:
    """RSS of `pid` in KiB, from the kernel's counters: reading it does not disturb the process."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_rss_kb(pid: int) -> int:
    """The high-water mark of `pid`'s RSS in KiB (``VmHWM``): since its last exec, so of its
    own program only."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of `pid` in KiB. PSS splits each shared page between the processes that map
    it, so a sum of PSS over many processes of one program counts its libraries once.

    The kernel walks the process's page tables for it, holding its memory map's lock: a
    process that maps or unmaps memory meanwhile waits. Not for a process whose timing is
    being measured."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == "Rss":
            rss = int(value.split()[0])
        elif name == "Pss":
            pss = int(value.split()[0])
    return rss, pss


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, over all its CPUs."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    total = sum(fields[:8])  # guest time is already counted in user and nice
    return (total - idle) / _clock_ticks(), total / _clock_ticks()
