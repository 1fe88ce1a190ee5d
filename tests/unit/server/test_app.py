"""`serve()` end to end with fake worker programs: calls started over HTTP, one worker killed
without touching the other, then SIGTERM hangs up the rest, the webhooks get every status
change, and serve returns 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sip2rtmp.config import ConfigError
from sip2rtmp.server.api import EventHandler
from sip2rtmp.server.app import serve
from sip2rtmp.server.calls import CallRecord
from sip2rtmp.server.config import ServerConfig
from sip2rtmp.server.request import StartRequest
from sip2rtmp.server.worker import Worker
from sip2rtmp.server.zygote import Zygote
from tests.unit.server.api_support import startup_body
from tests.unit.server.worker_support import fake_command

Bodies = list[dict[str, Any]]


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, Bodies]]:
    received: Bodies = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_address[1]}/hook", received
    finally:
        http.shutdown()
        http.server_close()


def post(base: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def get(base: str, path: str) -> str:
    with urllib.request.urlopen(base + path, timeout=10) as reply:
        text: str = reply.read().decode()
        return text


def find(base: str, call_id: str) -> dict[str, Any]:
    calls = post(base, "/rest-api/call/find", {"callId": call_id})
    assert len(calls) == 1
    found: dict[str, Any] = calls[0]
    return found


def until(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_sigterm_hangs_up_every_running_call_and_serve_returns_0() -> None:
    workers: dict[str, Worker] = {}
    seen: dict[str, Any] = {}
    addresses: list[Any] = []
    zygote = Zygote(preload=())

    def factory(request: StartRequest, record: CallRecord, on_event: EventHandler) -> Worker:
        worker = Worker(
            request, record, on_event, profile=None, zygote=zygote, command=fake_command("call")
        )
        workers[request.call_id] = worker
        return worker

    def client() -> None:
        """Drives the server from another thread, as a REST client would; SIGTERM at the end."""
        try:
            until(lambda: bool(addresses))
            host, port = addresses[0][:2]
            base = f"http://{host}:{port}"
            for call_id in ("kept", "killed", "ended"):
                post(base, "/rest-api/call/startup", startup_body(call_id, rtmpStream=call_id))
            for call_id in ("kept", "killed", "ended"):
                until(lambda c=call_id: find(base, c)["status"] == "ESTABLISHED")
            post(base, "/rest-api/call/terminate", {"callId": "ended"})
            until(lambda: find(base, "ended")["status"] == "FINISH")
            pid = workers["killed"].pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            until(lambda: find(base, "killed")["status"] == "FAILED")
            seen["killed"] = find(base, "killed")
            seen["kept"] = find(base, "kept")
            seen["metrics"] = get(base, "/metrics")
        except BaseException as error:  # reported by the test thread
            seen["error"] = error
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    with webhook_receiver() as (url, hooks):
        config = ServerConfig(host="127.0.0.1", port=0, webhooks=(url,), terminate_timeout=5)
        thread = threading.Thread(target=client)
        thread.start()
        code = serve(config, worker_factory=factory, ready=addresses.extend)
        zygote.stop()
        thread.join(30)

    assert "error" not in seen, seen.get("error")
    assert code == 0
    assert seen["killed"]["reason"] == "worker killed by signal 9 (SIGKILL)"
    assert seen["kept"]["status"] == "ESTABLISHED"
    assert 'sip2rtmp_calls{status="ESTABLISHED"} 1.0' in seen["metrics"]
    assert 'sip2rtmp_calls{status="FAILED"} 1.0' in seen["metrics"]
    assert 'sip2rtmp_calls{status="FINISH"} 1.0' in seen["metrics"]
    # The SIGTERM hung the last running call up: the worker was asked, and ended with FINISH.
    assert workers["kept"].record.status == "FINISH"
    assert not any(worker.running for worker in workers.values())
    changes = {
        call_id: [hook["status"] for hook in hooks if hook["callId"] == call_id]
        for call_id in workers
    }
    assert changes == {
        "kept": ["TRYING", "RING", "ESTABLISHED", "FINISH"],
        "killed": ["TRYING", "RING", "ESTABLISHED", "FAILED"],
        "ended": ["TRYING", "RING", "ESTABLISHED", "FINISH"],
    }
    assert not [hook for hook in hooks if "sipPassword" in hook or "s3cret" in json.dumps(hook)]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_port_in_use_is_a_configuration_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            serve(ServerConfig(host="127.0.0.1", port=port))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
