"""`sip2rtmp serve` as a subprocess on a free loopback port, a client for its REST API, and a
webhook receiver that keeps what the server posts."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sip2rtmp.lab import RELAY_ACCOUNT, SIP_DOMAIN

SIP2RTMP = str(Path(sys.executable).with_name("sip2rtmp"))
TERMINAL = frozenset({"FINISH", "FAILED", "BUSY"})
"""The reference's statuses after which a call changes no more."""


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A loopback port nothing listens on right now (TCP, or UDP with `SOCK_DGRAM`)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_profile(path: Path, values: Mapping[str, str | int | bool]) -> Path:
    """A profile file (`--profile FILE.toml`: the flags at the top level), readable by its
    owner only since it may hold a password."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def offline_profile(path: Path) -> Path:
    """A profile for the lab's relay account whose outbound proxy is a closed loopback port:
    a call a server starts with it reaches no SIP server."""
    values = {
        "sip-login": RELAY_ACCOUNT.user,
        "sip-domain": SIP_DOMAIN,
        "sip-outbound-proxy": f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
    }
    return write_profile(path, values)


@dataclass
class Reply:
    """One HTTP response: status, body text and the body parsed as JSON (None if it is not)."""

    status: int
    text: str
    content_type: str

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.status} {self.text[:500]}"


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _children(pid: int) -> list[int]:
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [child for child in pids if _ppid(child) == pid]


def _read_proc(pid: int, name: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


class ServeProcess:
    """A running `sip2rtmp serve --listen 127.0.0.1:PORT ARGS`; stdout and stderr go to files
    under `root` so that a test can read everything the server printed."""

    def __init__(self, root: Path, args: Sequence[str], env: Mapping[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = root / f"serve-{self.port}.out"
        self.stderr_path = root / f"serve-{self.port}.err"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SIP2RTMP_")}
        environment.update(env or {})
        self.replies: list[Reply] = []
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [SIP2RTMP, "serve", "--listen", f"127.0.0.1:{self.port}", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=environment,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(
            errors="replace"
        )

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Until `GET /health` answers 200; an AssertionError with the server's output if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (
                f"sip2rtmp serve exited with {self.process.returncode}:\n{self.output[-3000:]}"
            )
            with contextlib.suppress(OSError):
                if self.get("/health").status == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"no 200 from /health within {timeout} s:\n{self.output[-3000:]}")

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        """One request; `body` is sent as JSON, `raw` as it is. Every reply is kept in
        `replies`, so a test can look through all of them afterwards."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        sent_headers = {"Content-Type": "application/json"} if data is not None else {}
        sent_headers.update(headers or {})
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers=sent_headers
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                reply = Reply(
                    response.status,
                    response.read().decode(errors="replace"),
                    response.headers.get("Content-Type", ""),
                )
        except urllib.error.HTTPError as error:
            reply = Reply(
                error.code,
                error.read().decode(errors="replace"),
                error.headers.get("Content-Type", ""),
            )
        self.replies.append(reply)
        return reply

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, body: object) -> Reply:
        return self.request("POST", path, body)

    def find(self, call_id: str) -> dict[str, Any]:
        """The call object `/call/find` returns for `call_id`."""
        reply = self.post("/rest-api/call/find", {"callId": call_id})
        assert reply.status == 200, f"find {call_id}: {reply}"
        calls = reply.json
        assert isinstance(calls, list) and len(calls) == 1, f"find {call_id}: {reply}"
        call = calls[0]
        assert isinstance(call, dict) and call.get("callId") == call_id, f"find: {reply}"
        return call

    def wait_for(
        self, call_id: str, statuses: Sequence[str], timeout: float, poll: float = 0.05
    ) -> tuple[dict[str, Any], list[str]]:
        """Poll `find` until the call's status is one of `statuses`; returns the last call
        object and each status seen, in order, repeats left out."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            call = self.find(call_id)
            if not seen or seen[-1] != call.get("status"):
                seen.append(str(call.get("status")))
            if call.get("status") in statuses:
                return call, seen
            assert call.get("status") not in TERMINAL, f"{call_id} ended: {call}, saw {seen}"
            assert time.monotonic() < deadline, (
                f"{call_id} not {'/'.join(statuses)} within {timeout} s: {call}, saw {seen}"
            )
            time.sleep(poll)

    def workers(self) -> list[int]:
        """The PIDs of the server's workers: the children of its zygote, its one child."""
        return [pid for zygote in _children(self.pid) for pid in _children(zygote)]

    def processes(self) -> list[int]:
        """The server's zygote and workers."""
        return [*_children(self.pid), *self.workers()]

    def worker_of(self, call_id: str) -> int:
        """The worker of `call_id`, from the server's log line that started it."""
        found = re.findall(rf"call {re.escape(call_id)}: worker (\d+) started", self.output)
        assert found, f"the server {self.pid} logged no worker for {call_id}"
        return int(found[-1])

    @staticmethod
    def comm(pid: int) -> str:
        return Path(f"/proc/{pid}/comm").read_text().strip()

    @staticmethod
    def cmdline(pid: int) -> list[str]:
        return [word for word in _read_proc(pid, "cmdline") if word]

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as systemd stops it; the exit code (killed and failed after `timeout`)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"sip2rtmp serve still running {timeout} s after SIGTERM:\n{self.output[-3000:]}"
            ) from None


@contextlib.contextmanager
def serving(
    root: Path, args: Sequence[str], env: Mapping[str, str] | None = None
) -> Iterator[ServeProcess]:
    """A ready server; stopped with SIGTERM at the end if a test has not stopped it."""
    server = ServeProcess(root, args, env)
    try:
        server.wait_ready()
        yield server
    finally:
        if server.process.poll() is None:
            with contextlib.suppress(AssertionError):
                server.stop()


class WebhookSink:
    """An HTTP server on loopback that answers every POST 200 and keeps its JSON body."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                try:
                    received.append(json.loads(data))
                except ValueError:
                    received.append(data.decode(errors="replace"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: what arrived is in `bodies`."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def statuses(self, call_id: str) -> list[str]:
        """The statuses posted for `call_id`, in the order they arrived."""
        return [
            str(body.get("status"))
            for body in list(self.bodies)
            if isinstance(body, dict) and body.get("callId") == call_id
        ]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
