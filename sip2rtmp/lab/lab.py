"""The local lab: kamailio, nginx-rtmp and baresip callees on loopback, started from Python.

Everything the lab writes (configs, logs, PIDs, certificates, recordings, received audio) lives in
one run directory, so several test runs and a developer's shell can share one running lab and
nothing touches the system's own configuration, logs or ports.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import wave
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sip2rtmp.lab.accounts import CALLEES, LAB_ACCOUNTS, LabAccount, Role, account
from sip2rtmp.outcomes import LabError

SIP_DOMAIN = "lab.sip2rtmp.test"
SIP_HOST = "127.0.0.1"
SIP_PORT = 5060
"""kamailio's UDP and TCP port."""
SIP_TLS_PORT = 5061

RTMP_HOST = "127.0.0.1"
RTMP_PORT = 1935
RTMP_APP = "live"
RTMP_URL = f"rtmp://{RTMP_HOST}:{RTMP_PORT}/{RTMP_APP}"
"""Append `/<stream key>`; publishing is allowed from 127.0.0.1 only, playing from anywhere."""
RTMPS_PORT = 1936
RTMPS_URL = f"rtmps://{RTMP_HOST}:{RTMPS_PORT}/{RTMP_APP}"
"""TLS with the lab certificate, terminated by nginx and proxied to RTMP_URL."""
RTMPS_SELF_SIGNED_PORT = 1937
RTMPS_SELF_SIGNED_URL = f"rtmps://{RTMP_HOST}:{RTMPS_SELF_SIGNED_PORT}/{RTMP_APP}"
"""Like RTMPS_URL, but the certificate signs itself: no CA vouches for it, the lab's neither."""
RTMPS_WRONG_HOST_PORT = 1938
RTMPS_WRONG_HOST_URL = f"rtmps://{RTMP_HOST}:{RTMPS_WRONG_HOST_PORT}/{RTMP_APP}"
"""Like RTMPS_URL, with a certificate the lab CA signed for evil.example only: trusted, but not
for the host it is served from (RFC 6125 §6)."""
WRONG_HOST_NAME = "evil.example"
RTMPS_URLS: dict[str, str] = {
    "verified": RTMPS_URL,
    "self-signed": RTMPS_SELF_SIGNED_URL,
    "wrong-host": RTMPS_WRONG_HOST_URL,
}
"""Every RTMPS endpoint of the lab by what its certificate is."""
STAT_PORT = 8088
STAT_URL = f"http://{RTMP_HOST}:{STAT_PORT}/stat"
"""nginx-rtmp's XML statistics: which streams are being published and played."""

RUN_DIR_ENV = "SIP2RTMP_LAB_DIR"
DEFAULT_RUN_DIR = Path("/tmp/sip2rtmp-lab")

TONE_SAMPLE_RATE = 8000
TONE_SECONDS = 600
"""baresip's aufile source plays its file once, so the tone is longer than any lab call."""
TONE_NOISE_DBFS = -60.0
"""The tone's noise floor, about a quiet room through a phone's microphone: a digitally pure
tone is no call's audio, and the AAC encoder's cost depends on what it is fed
(docs/performance.md)."""

KAMAILIO = "kamailio"
NGINX = "nginx"


def callee_program(user: str) -> str:
    """Name of the baresip program of a callee: its log is logs/<name>.log."""
    return f"baresip-{user}"


PROGRAMS: tuple[str, ...] = (KAMAILIO, NGINX, *(callee_program(a.user) for a in CALLEES))
"""Every program of the lab, in start order."""

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
"""baresip colours its warnings; error lines are shown to people without the colour codes."""
_START_MARK = "--- sip2rtmp lab start "
"""Begins the lines the lab writes into a log before each start of the program."""

_KAMAILIO_MODULE_DIRS = ("/usr/lib/*/kamailio/modules", "/usr/lib/kamailio/modules")
_NGINX_MODULE_DIR = Path("/usr/lib/nginx/modules")
_BARESIP_MODULE_DIR = Path("/usr/lib/baresip/modules")


@dataclass(frozen=True)
class ProgramStatus:
    """Whether one lab program is running, by the PID the lab recorded for it."""

    name: str
    pid: int | None
    running: bool


@dataclass(frozen=True)
class LabStatus:
    """A snapshot of the lab: its programs and the users kamailio has a contact for."""

    run_dir: Path
    programs: tuple[ProgramStatus, ...]
    registered: frozenset[str]

    @property
    def all_running(self) -> bool:
        """Whether every program of the lab is running."""
        return all(p.running for p in self.programs)

    @property
    def all_registered(self) -> bool:
        """Whether every callee has registered with kamailio."""
        return all(a.user in self.registered for a in CALLEES)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready view for `sip2rtmp lab status --json`."""
        return {
            "run_dir": str(self.run_dir),
            "up": self.all_running and self.all_registered,
            "programs": {p.name: {"running": p.running, "pid": p.pid} for p in self.programs},
            "registered": sorted(self.registered),
            "rtmp": RTMP_URL,
            "rtmps": dict(RTMPS_URLS),
        }


@dataclass(frozen=True)
class _Requirement:
    """Something the lab needs on disk and the Debian package that installs it."""

    what: str
    package: str
    found: bool


class Lab:
    """The lab rooted at one run directory; cheap to create, nothing starts until up()."""

    def __init__(self, run_dir: Path | str | None = None) -> None:
        chosen = run_dir if run_dir is not None else os.environ.get(RUN_DIR_ENV, DEFAULT_RUN_DIR)
        self.run_dir = Path(chosen).resolve()
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # Paths -------------------------------------------------------------------------------------

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.run_dir / "pids"

    @property
    def recordings_dir(self) -> Path:
        """Where nginx writes `<stream key>-<unixtime>.flv` for every publish."""
        return self.run_dir / "recordings"

    @property
    def tls_dir(self) -> Path:
        return self.run_dir / "tls"

    @property
    def tls_ca(self) -> Path:
        """The lab CA certificate (PEM): trust it to verify kamailio's TLS and nginx's RTMPS."""
        return self.tls_dir / "ca.pem"

    @property
    def tls_certificate(self) -> Path:
        """The server certificate (PEM) for lab.sip2rtmp.test and 127.0.0.1, signed by tls_ca."""
        return self.tls_dir / "server.pem"

    @property
    def tls_key(self) -> Path:
        return self.tls_dir / "server.key"

    @property
    def self_signed_certificate(self) -> Path:
        """RTMPS_SELF_SIGNED_URL's certificate (PEM): for 127.0.0.1, signed by its own key."""
        return self.tls_dir / "self-signed.pem"

    @property
    def wrong_host_certificate(self) -> Path:
        """RTMPS_WRONG_HOST_URL's certificate (PEM): signed by tls_ca, for evil.example only."""
        return self.tls_dir / "wrong-host.pem"

    @property
    def kamcmd_socket(self) -> Path:
        """kamailio's ctl socket: `kamcmd -s unix:<this> ...` talks to the lab's kamailio."""
        return self.run_dir / "kamailio" / "ctl.sock"

    def log_path(self, program: str) -> Path:
        return self.logs_dir / f"{program}.log"

    def pid_path(self, program: str) -> Path:
        return self.pids_dir / f"{program}.pid"

    def callee_log_path(self, user: str) -> Path:
        """The log of a callee's baresip: received DTMF and call events appear here."""
        return self.log_path(callee_program(account(user).user))

    def callee_log(self, user: str) -> str:
        """The text of a callee's log so far (empty before its first start)."""
        path = self.callee_log_path(user)
        return path.read_text(errors="replace") if path.exists() else ""

    def callee_command(self, user: str, command: str, params: str = "") -> None:
        """Drive a callee's baresip like its user would: e.g. `hangup`, or `dial` a URI."""
        port = account(user).ctrl_port
        if port is None:
            raise LabError(f"lab user {user} has no control port")
        baresip_command(port, command, params)

    def received_dir(self, user: str) -> Path:
        """Where a callee's baresip dumps the audio it sends and receives, one WAV pair a call."""
        return self.run_dir / "received" / account(user).user

    def received_audio(self, user: str) -> list[Path]:
        """WAV files of the audio a callee received (decoded), oldest first."""
        return sorted(self.received_dir(user).glob("dump-*-dec.wav"), key=_mtime)

    def recordings(self, stream_key: str | None = None) -> list[Path]:
        """nginx's FLV recordings, oldest first, optionally only those of one stream key."""
        pattern = f"{stream_key}-*.flv" if stream_key else "*.flv"
        return sorted(self.recordings_dir.glob(pattern), key=_mtime)

    def tone_path(self, hz: int) -> Path:
        return self.run_dir / "media" / f"tone-{hz}-floor{-TONE_NOISE_DBFS:g}.wav"

    # Lifecycle ---------------------------------------------------------------------------------

    def up(self, timeout: float = 20.0) -> LabStatus:
        """Start whatever is not running and wait until every callee is registered.

        Programs already running are left alone, except that callees are restarted when kamailio
        had to be started: kamailio keeps registrations in memory only.
        """
        self._check_requirements()
        for directory in (self.logs_dir, self.pids_dir, self.recordings_dir, self.tls_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._ensure_certificates()
        self._ensure_tones()
        deadline = time.monotonic() + timeout

        started_kamailio = False
        if not self._running(KAMAILIO):
            self._start_kamailio(deadline)
            started_kamailio = True
        if not self._running(NGINX):
            self._start_nginx(deadline)
        for callee in CALLEES:
            program = callee_program(callee.user)
            if started_kamailio and self._running(program):
                self._stop([program], timeout=5.0)
            if not self._running(program):
                self._start_baresip(callee)
        self._wait_registered(deadline)
        return self.status()

    def down(self, timeout: float = 5.0) -> None:
        """Stop exactly the programs whose PIDs the lab recorded.

        Callees go first, while kamailio can still answer their unregistration.
        """
        self._stop([callee_program(a.user) for a in CALLEES], timeout)
        self._stop([NGINX, KAMAILIO], timeout)

    def stop(self, *programs: str, timeout: float = 5.0) -> None:
        """Stop some of the lab's programs (fault tests stop nginx mid-call); `up()` restarts."""
        unknown = set(programs) - set(PROGRAMS)
        if unknown:
            raise LabError(f"no lab program named {', '.join(sorted(unknown))}")
        self._stop(programs, timeout)

    def status(self) -> LabStatus:
        """Which programs run and which users kamailio reports as registered."""
        programs = tuple(
            ProgramStatus(name, self._recorded_pid(name), self._running(name)) for name in PROGRAMS
        )
        kamailio_up = programs[0].running
        registered = self.registered_users() if kamailio_up else frozenset()
        return LabStatus(self.run_dir, programs, registered)

    def is_up(self) -> bool:
        """Whether every program of the lab is running."""
        return all(self._running(name) for name in PROGRAMS)

    # kamailio ----------------------------------------------------------------------------------

    def kamcmd(self, *args: str, timeout: float = 5.0) -> str:
        """Run one kamcmd command against the lab's kamailio and return its output."""
        argv = ["kamcmd", "-s", f"unix:{self.kamcmd_socket}", *args]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LabError(f"kamcmd {' '.join(args)} failed: {exc}") from exc
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise LabError(f"kamcmd {' '.join(args)} failed: {detail[-1] if detail else '?'}")
        return done.stdout

    def registered_users(self) -> frozenset[str]:
        """Users with at least one contact in kamailio's location table."""
        users: set[str] = set()
        for line in self.kamcmd("ul.dump", "brief").splitlines():
            key, _, value = line.strip().partition(":")
            if key == "AoR":
                users.add(value.strip().partition("@")[0])
        return frozenset(users)

    def _start_kamailio(self, deadline: float) -> None:
        self.kamcmd_socket.unlink(missing_ok=True)
        argv = write_kamailio_config(
            self.run_dir / "kamailio",
            ctl_socket=self.kamcmd_socket,
            tls_certificate=self.tls_certificate,
            tls_key=self.tls_key,
        )
        self._spawn(KAMAILIO, argv, (SIP_PORT, SIP_TLS_PORT))
        self._wait_until(KAMAILIO, deadline, self._kamailio_answers)

    def _kamailio_answers(self) -> bool:
        try:
            self.kamcmd("core.uptime", timeout=2.0)
        except LabError:
            return False
        return True

    def _wait_registered(self, deadline: float) -> None:
        missing: list[str] = []
        while True:
            for callee in CALLEES:
                self._check_alive(callee_program(callee.user))
            registered = self.registered_users()
            missing = [a.user for a in CALLEES if a.user not in registered]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if missing:
            first = callee_program(missing[0])
            raise LabError(
                f"callees not registered with kamailio in time: {', '.join(missing)} "
                f"(see {self.log_path(first)})"
            )

    # nginx -------------------------------------------------------------------------------------

    def _start_nginx(self, deadline: float) -> None:
        nginx_dir = self.run_dir / "nginx"
        temp_dir = nginx_dir / "temp"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (temp_dir / name).mkdir(parents=True, exist_ok=True)
        values = {
            "PID_FILE": str(nginx_dir / "nginx.pid"),
            "LOG_FILE": str(self.log_path(NGINX)),
            "MODULES_DIR": str(_NGINX_MODULE_DIR),
            "RTMP_HOST": RTMP_HOST,
            "RTMP_PORT": str(RTMP_PORT),
            "RTMPS_PORT": str(RTMPS_PORT),
            "RTMPS_SELF_SIGNED_PORT": str(RTMPS_SELF_SIGNED_PORT),
            "RTMPS_WRONG_HOST_PORT": str(RTMPS_WRONG_HOST_PORT),
            "STAT_PORT": str(STAT_PORT),
            "RTMP_APP": RTMP_APP,
            "RECORDINGS_DIR": str(self.recordings_dir),
            "TLS_CERT": str(self.tls_certificate),
            "TLS_KEY": str(self.tls_key),
            "SELF_SIGNED_CERT": str(self.self_signed_certificate),
            "SELF_SIGNED_KEY": str(self.self_signed_certificate.with_suffix(".key")),
            "WRONG_HOST_CERT": str(self.wrong_host_certificate),
            "WRONG_HOST_KEY": str(self.wrong_host_certificate.with_suffix(".key")),
            "TEMP_DIR": str(temp_dir),
        }
        config = _render("nginx.conf", nginx_dir / "nginx.conf", values)
        argv = [
            "nginx", "-p", f"{nginx_dir}/", "-c", str(config), "-e", str(self.log_path(NGINX)),
        ]  # fmt: skip
        ports = (RTMP_PORT, RTMPS_PORT, RTMPS_SELF_SIGNED_PORT, RTMPS_WRONG_HOST_PORT, STAT_PORT)
        self._spawn(NGINX, argv, ports)
        self._wait_until(NGINX, deadline, lambda: all(_listening(RTMP_HOST, p) for p in ports))

    # baresip -----------------------------------------------------------------------------------

    def _start_baresip(self, callee: LabAccount) -> None:
        assert callee.sip_port is not None and callee.ctrl_port is not None
        assert callee.rtp_ports is not None and callee.tone_hz is not None
        config_dir = self.run_dir / "baresip" / callee.user
        write_baresip_config(
            config_dir,
            sip_port=callee.sip_port,
            ctrl_port=callee.ctrl_port,
            rtp_ports=callee.rtp_ports,
            tone=self.tone_path(callee.tone_hz),
            received_dir=self.received_dir(callee.user),
            modules=callee_modules(callee),
            account_line=baresip_account(callee),
        )
        program = callee_program(callee.user)
        argv = ["stdbuf", "-oL", "-eL", "baresip", "-f", str(config_dir)]
        self._spawn(program, argv, (callee.sip_port, callee.sip_port + 1, callee.ctrl_port))

    # Processes ---------------------------------------------------------------------------------

    def _spawn(self, program: str, argv: Sequence[str], ports: Iterable[int]) -> None:
        """Start `program` in its own session, so it outlives this process and can be stopped
        as a group; a port already taken means another program holds it, which is reported."""
        taken = [port for port in ports if _listening(SIP_HOST, port)]
        if taken:
            raise LabError(
                f"{program} cannot start: 127.0.0.1:{taken[0]} is already in use by a program "
                "that this lab did not start (stop it, or the other lab, first)"
            )
        with self.log_path(program).open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"{_START_MARK}{stamp} {' '.join(argv)}\n".encode())
            log.flush()
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.run_dir,
                start_new_session=True,
            )
        self._children[program] = child
        self.pid_path(program).write_text(f"{child.pid}\n")

    def _wait_until(self, program: str, deadline: float, ready: Callable[[], bool]) -> None:
        while not ready():
            self._check_alive(program)
            if time.monotonic() > deadline:
                raise LabError(
                    f"{program} did not become ready in time (see {self.log_path(program)})"
                )
            time.sleep(0.05)

    def _check_alive(self, program: str) -> None:
        if not self._running(program):
            raise LabError(
                f"{program} exited at start: {_last_error(self.log_path(program))} "
                f"(see {self.log_path(program)})"
            )

    def _recorded_pid(self, program: str) -> int | None:
        try:
            return int(self.pid_path(program).read_text().strip())
        except (OSError, ValueError):
            return None

    def _running(self, program: str) -> bool:
        pid = self._recorded_pid(program)
        child = self._children.get(program)
        if child is not None and child.pid == pid:
            # Our own child: exact, and immune to the moment stdbuf execs baresip.
            return child.poll() is None
        return pid is not None and self._is_ours(pid, program)

    def _is_ours(self, pid: int, program: str) -> bool:
        """Whether `pid` is a live (not zombie) process of `program` from this run directory.

        The check guards against a stale PID file whose number now belongs to something else.
        """
        self._reap(pid)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return False
        if state in ("Z", "X"):
            return False
        # nginx rewrites its argv into one title ("nginx: master process nginx -p ..."), so the
        # words of every argument are compared, not the arguments themselves.
        words = {os.path.basename(word) for arg in cmdline for word in arg.split()}
        executable = program.partition("-")[0].encode()
        mentions_run_dir = any(str(self.run_dir).encode() in arg for arg in cmdline)
        return executable in words and mentions_run_dir

    def _reap(self, pid: int) -> None:
        """Collect a child that exited, so it does not linger as a zombie of this process."""
        child = next((c for c in self._children.values() if c.pid == pid), None)
        if child is not None:
            child.poll()

    def _stop(self, programs: Iterable[str], timeout: float) -> None:
        targets = {p: pid for p in programs if (pid := self._recorded_pid(p)) is not None}
        live = {p: pid for p, pid in targets.items() if self._is_ours(pid, p)}
        for pid in live.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        remaining = self._wait_gone(live, time.monotonic() + timeout)
        for pid in remaining.values():
            _kill_group(pid)
        still = self._wait_gone(remaining, time.monotonic() + timeout)
        if still:
            raise LabError(f"could not stop {', '.join(sorted(still))}")
        for program in targets:
            self.pid_path(program).unlink(missing_ok=True)
            self._children.pop(program, None)

    def _wait_gone(self, processes: dict[str, int], deadline: float) -> dict[str, int]:
        remaining = dict(processes)
        while remaining and time.monotonic() < deadline:
            remaining = {p: pid for p, pid in remaining.items() if self._is_ours(pid, p)}
            if remaining:
                time.sleep(0.05)
        return remaining

    # Files generated at up ---------------------------------------------------------------------

    def _check_requirements(self) -> None:
        kamailio_modules = [Path(d) for p in _KAMAILIO_MODULE_DIRS for d in glob.glob(p)]
        requirements = [
            _Requirement("kamailio", "kamailio", shutil.which("kamailio") is not None),
            _Requirement("kamcmd", "kamailio", shutil.which("kamcmd") is not None),
            _Requirement(
                "kamailio tls module",
                "kamailio-tls-modules",
                any((d / "tls.so").exists() for d in kamailio_modules),
            ),
            _Requirement("nginx", "nginx", shutil.which("nginx") is not None),
            _Requirement(
                "nginx rtmp module",
                "libnginx-mod-rtmp",
                (_NGINX_MODULE_DIR / "ngx_rtmp_module.so").exists(),
            ),
            _Requirement(
                "nginx stream module",
                "libnginx-mod-stream",
                (_NGINX_MODULE_DIR / "ngx_stream_module.so").exists(),
            ),
            _Requirement("baresip", "baresip-core", shutil.which("baresip") is not None),
            _Requirement(
                "baresip avcodec module",
                "baresip-ffmpeg",
                (_BARESIP_MODULE_DIR / "avcodec.so").exists(),
            ),
            _Requirement("openssl", "openssl", shutil.which("openssl") is not None),
            _Requirement("stdbuf", "coreutils", shutil.which("stdbuf") is not None),
        ]
        missing = [r for r in requirements if not r.found]
        if missing:
            parts = [
                f"{r.what} not found (install the Debian package {r.package})" for r in missing
            ]
            raise LabError("lab cannot start: " + "; ".join(parts))

    def _ensure_certificates(self) -> None:
        """Create the lab CA and each server certificate once; later runs reuse them, so trust
        in the CA persists and a certificate added later is signed by the same CA."""
        ca_key = self.tls_dir / "ca.key"
        if not (self.tls_ca.exists() and ca_key.exists()):
            _openssl(
                "req", "-x509", *_EC_KEY, "-keyout", str(ca_key), "-out", str(self.tls_ca),
                "-days", "3650", "-subj", "/CN=sip2rtmp lab CA",
            )  # fmt: skip
            self.tls_certificate.unlink(missing_ok=True)
            self.wrong_host_certificate.unlink(missing_ok=True)
        if not (self.tls_certificate.exists() and self.tls_key.exists()):
            self._issue(
                self.tls_certificate, self.tls_key, SIP_DOMAIN, f"DNS:{SIP_DOMAIN},IP:{SIP_HOST}"
            )
        wrong_host_key = self.wrong_host_certificate.with_suffix(".key")
        if not (self.wrong_host_certificate.exists() and wrong_host_key.exists()):
            self._issue(
                self.wrong_host_certificate,
                wrong_host_key,
                WRONG_HOST_NAME,
                f"DNS:{WRONG_HOST_NAME}",
            )
        self_signed_key = self.self_signed_certificate.with_suffix(".key")
        if not (self.self_signed_certificate.exists() and self_signed_key.exists()):
            _openssl(
                "req", "-x509", *_EC_KEY, "-keyout", str(self_signed_key),
                "-out", str(self.self_signed_certificate), "-days", "3650",
                "-subj", f"/CN={RTMP_HOST}", "-addext", f"subjectAltName=IP:{RTMP_HOST}",
            )  # fmt: skip

    def _issue(self, certificate: Path, key: Path, common_name: str, alt_names: str) -> None:
        """A server certificate for `alt_names` (RFC 5280 subjectAltName syntax), signed by the
        lab CA."""
        request = certificate.with_suffix(".csr")
        extensions = certificate.with_suffix(".ext")
        extensions.write_text(_server_extensions(alt_names))
        _openssl(
            "req", "-new", *_EC_KEY, "-keyout", str(key), "-out", str(request),
            "-subj", f"/CN={common_name}",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(request), "-CA", str(self.tls_ca),
            "-CAkey", str(self.tls_dir / "ca.key"), "-CAcreateserial", "-out", str(certificate),
            "-days", "3650", "-extfile", str(extensions),
        )  # fmt: skip

    def _ensure_tones(self) -> None:
        for hz in {a.tone_hz for a in CALLEES if a.tone_hz is not None}:
            path = self.tone_path(hz)
            if not path.exists():
                write_tone(path, hz)


_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _server_extensions(alt_names: str) -> str:
    """X.509 v3 extensions of a TLS server certificate (RFC 5280 §4.2) for `alt_names`."""
    return (
        f"subjectAltName={alt_names}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise LabError(f"openssl could not create a lab certificate: {lines[-1:]}")


def write_tone(path: Path, hz: float, seconds: float = TONE_SECONDS) -> None:
    """Write a mono 16-bit sine WAV at TONE_SAMPLE_RATE over a TONE_NOISE_DBFS white noise
    floor (the same noise for every file of a frequency), atomically (callees may be
    reading)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * TONE_SAMPLE_RATE)) / TONE_SAMPLE_RATE
    noise = np.random.default_rng(int(hz)).standard_normal(t.size) * 10 ** (TONE_NOISE_DBFS / 20)
    samples = ((0.3 * np.sin(2 * math.pi * hz * t) + noise) * 32767).astype("<i2")
    partial = path.with_suffix(".partial")
    with wave.open(str(partial), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(TONE_SAMPLE_RATE)
        out.writeframes(samples.tobytes())
    partial.replace(path)


def write_kamailio_config(
    kamailio_dir: Path,
    *,
    ctl_socket: Path,
    tls_certificate: Path,
    tls_key: Path,
    domain: str = SIP_DOMAIN,
    host: str = SIP_HOST,
) -> list[str]:
    """Write the lab's kamailio configuration and subscriber table for `domain`, listening on
    `host` (SIP_PORT for UDP and TCP, SIP_TLS_PORT for TLS); returns the command line that runs
    it in the foreground."""
    db_dir = kamailio_dir / "db"
    db_dir.mkdir(parents=True, exist_ok=True)
    rows = [
        "id(int,auto) username(string) domain(string) password(string) "
        "ha1(string,null) ha1b(string,null)"
    ]
    rows += [f"{i}:{a.user}:{domain}:{a.password}::" for i, a in enumerate(LAB_ACCOUNTS, 1)]
    (db_dir / "subscriber").write_text("\n".join(rows) + "\n")
    version = ["id(int,auto) table_name(string) table_version(int)", "1:subscriber:7"]
    (db_dir / "version").write_text("\n".join(version) + "\n")
    values = {
        "SIP_DOMAIN": domain,
        "SIP_HOST": host,
        "SIP_PORT": str(SIP_PORT),
        "SIP_TLS_PORT": str(SIP_TLS_PORT),
        "CTL_SOCKET": str(ctl_socket),
        "AUTH_SECRET": "sip2rtmp-lab-nonce-secret",
        "DB_DIR": str(db_dir),
        "TLS_CONFIG": str(kamailio_dir / "tls.cfg"),
        "TLS_CERT": str(tls_certificate),
        "TLS_KEY": str(tls_key),
    }
    _render("tls.cfg", kamailio_dir / "tls.cfg", values)
    config = _render("kamailio.cfg", kamailio_dir / "kamailio.cfg", values)
    return [
        "kamailio", "-f", str(config), "-DD", "-E", "-m", "64", "-M", "8",
        "-Y", str(kamailio_dir), "-w", str(kamailio_dir),
    ]  # fmt: skip


def callee_modules(callee: LabAccount) -> list[str]:
    """The baresip modules a lab callee loads: its codecs, the tone source, the dump of what it
    hears, the encoder of its video codec, and SDES-SRTP for a callee that encrypts."""
    modules = ["g711.so", "g722.so", "opus.so", "aufile.so", "aubridge.so", "sndfile.so"]
    if callee.video_codec == "H264":
        modules += ["avcodec.so", "fakevideo.so"]
    elif callee.video_codec == "VP8":
        modules += ["vp8.so", "fakevideo.so"]
    if callee.media_encryption in ("srtp", "srtp-mand"):
        modules.append("srtp.so")
    return modules


def write_baresip_config(
    config_dir: Path,
    *,
    sip_port: int,
    ctrl_port: int,
    rtp_ports: tuple[int, int],
    tone: Path,
    received_dir: Path,
    modules: Sequence[str],
    account_line: str,
    sip_host: str = SIP_HOST,
) -> None:
    """Write a self-contained baresip config directory (`baresip -f config_dir`).

    baresip binds SIP on `sip_host`:`sip_port` (and TLS on the port after it), plays `tone` (an
    8 kHz mono WAV), dumps what it hears into `received_dir` when sndfile.so is among `modules`,
    and takes netstring JSON commands on 127.0.0.1:`ctrl_port`.
    """
    config_dir.mkdir(parents=True, exist_ok=True)
    received_dir.mkdir(parents=True, exist_ok=True)
    values = {
        "SIP_LISTEN": f"{sip_host}:{sip_port}",
        "LOCAL_ADDRESS": sip_host,
        "AUDIO_DIR": str(tone.parent),
        "TONE_FILE": str(tone),
        "RTP_PORTS": f"{rtp_ports[0]}-{rtp_ports[1]}",
        "MODULE_PATH": str(_BARESIP_MODULE_DIR),
        "MODULES": "\n".join(f"module\t\t\t{m}" for m in modules),
        "CTRL_LISTEN": f"{SIP_HOST}:{ctrl_port}",
        "RECEIVED_DIR": str(received_dir),
    }
    _render("baresip.config", config_dir / "config", values)
    (config_dir / "accounts").write_text(account_line + "\n")
    (config_dir / "contacts").write_text("")


def read_dump(path: Path) -> tuple[npt.NDArray[np.int16], int]:
    """Samples and sample rate of a baresip sndfile dump (mono 16-bit WAV).

    baresip writes the WAV sizes only when the call ends, so while a call runs the header says
    "no data": everything after the header is taken as samples instead.
    """
    data = path.read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise LabError(f"{path} is not a WAV file")
    offset, rate = 12, 0
    while offset + 8 <= len(data):
        chunk = data[offset : offset + 4]
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        body = offset + 8
        if chunk == b"fmt ":
            rate = int.from_bytes(data[body + 4 : body + 8], "little")
        elif chunk == b"data":
            end = body + size if size else len(data)
            payload = data[body : end - (end - body) % 2]
            return np.frombuffer(payload, dtype="<i2").astype(np.int16), rate
        offset = body + size + size % 2
    raise LabError(f"{path} has no audio data")


def baresip_account(
    callee: LabAccount, domain: str = SIP_DOMAIN, proxy: str = f"{SIP_HOST}:{SIP_PORT}"
) -> str:
    """One baresip account line: register through the proxy by IP so no name is ever resolved."""
    params = [
        f"auth_pass={callee.password}",
        f'outbound="sip:{proxy};transport=udp"',
        "answermode=manual" if callee.role is Role.NO_ANSWER else "answermode=auto",
        "regint=600",
    ]
    if callee.audio_codecs:
        params.append("audio_codecs=" + ",".join(callee.audio_codecs))
    if callee.video_codec:
        params.append(f"video_codecs={callee.video_codec}")
    if callee.media_encryption:
        params.append(f"mediaenc={callee.media_encryption}")
    return f"<sip:{callee.user}@{domain};transport=udp>;" + ";".join(params)


def _render(template: str, target: Path, values: dict[str, str]) -> Path:
    """Fill `@NAME@` placeholders; a placeholder left unfilled is a bug, so it raises."""
    text = resources.files("sip2rtmp.lab").joinpath("templates", template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    leftover = [part for part in text.split("@")[1::2] if part.isupper() and " " not in part]
    if leftover:
        raise LabError(f"template {template} has unfilled placeholders: {', '.join(leftover)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def _kill_group(pid: int) -> None:
    """SIGKILL the process and, when it leads its own group (as the lab starts it), its children."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


def _last_error(log: Path) -> str:
    """The most telling line of a log: the last one mentioning an error, else the last one."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "no log"
    last_start = text.rpartition(_START_MARK)[2]
    lines = [line.strip() for line in last_start.splitlines()[1:] if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "failed" in line.lower()]
    picked = errors[-1] if errors else (lines[-1] if lines else "empty log")
    return _ANSI_ESCAPE.sub("", picked)[:300]


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def baresip_command(port: int, command: str, params: str = "") -> None:
    """Send one command to a baresip's ctrl_tcp port (netstring-framed JSON)."""
    body = json.dumps({"command": command, "params": params, "token": command}).encode()
    try:
        with socket.create_connection((SIP_HOST, port), timeout=5) as connection:
            connection.sendall(str(len(body)).encode() + b":" + body + b",")
            connection.recv(4096)
    except OSError as error:
        raise LabError(
            f"baresip on control port {port} did not take {command!r}: {error}"
        ) from None
