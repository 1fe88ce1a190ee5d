"""The callees, measured with a baresip caller: they answer, record what they hear, log DTMF."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sip2rtmp.lab import (
    RELAY_ACCOUNT,
    SIP_DOMAIN,
    SIP_HOST,
    SIP_PORT,
    TONE_SAMPLE_RATE,
    Lab,
    read_dump,
    write_tone,
)
from sip2rtmp.lab.recording import dominant_frequency

pytestmark = pytest.mark.lab

CALLER_TONE_HZ = 1000


def _free_port(span: int = 1) -> int:
    """A loopback port that, with the `span - 1` ports after it, is free for TCP and UDP."""
    while True:
        with socket.socket() as probe:
            probe.bind((SIP_HOST, 0))
            port: int = probe.getsockname()[1]
        try:
            for offset in range(span):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as check:
                        check.bind((SIP_HOST, port + offset))
        except OSError:
            continue
        return port


class Caller:
    """A baresip that calls from the relay account and is driven over ctrl_tcp."""

    def __init__(self, directory: Path) -> None:
        self.output = directory / "caller.log"
        self.ctrl_port = _free_port()
        tone = directory / "caller-tone.wav"
        write_tone(tone, CALLER_TONE_HZ, seconds=20)
        (directory / "config").write_text(
            # baresip listens for TLS on the port after its SIP port.
            f"sip_listen {SIP_HOST}:{_free_port(span=2)}\n"
            f"net_interface {SIP_HOST}\n"
            "dns_server 127.0.0.1:53\n"
            f"audio_source aufile,{tone}\n"
            "audio_player aubridge,nil\n"
            "ausrc_srate 8000\n"
            "module_path /usr/lib/baresip/modules\n"
            "module g711.so\nmodule aufile.so\nmodule aubridge.so\n"
            "module_tmp account.so\nmodule_app menu.so\nmodule_app ctrl_tcp.so\n"
            f"ctrl_tcp_listen {SIP_HOST}:{self.ctrl_port}\n"
        )
        (directory / "accounts").write_text(
            f"<sip:{RELAY_ACCOUNT.user}@{SIP_DOMAIN}>;auth_pass={RELAY_ACCOUNT.password};"
            f'outbound="sip:{SIP_HOST}:{SIP_PORT};transport=udp";audio_codecs=PCMU/8000/1\n'
        )
        (directory / "contacts").write_text("")
        with self.output.open("wb") as log:
            self.process = subprocess.Popen(
                ["stdbuf", "-oL", "baresip", "-f", str(directory)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_for("baresip is ready")
        self.ctrl = socket.create_connection((SIP_HOST, self.ctrl_port), timeout=5)

    def command(self, name: str, params: str = "") -> None:
        body = json.dumps({"command": name, "params": params, "token": name}).encode()
        self.ctrl.sendall(str(len(body)).encode() + b":" + body + b",")

    def call(self, user: str) -> None:
        self.command("dial", f"sip:{user}@{SIP_DOMAIN}")
        self._wait_for("Call established")

    def close(self) -> None:
        self.command("hangup")
        time.sleep(0.3)
        self.ctrl.close()
        self.process.terminate()
        self.process.wait(timeout=5)

    def _wait_for(self, text: str, seconds: float = 5.0) -> None:
        deadline = time.monotonic() + seconds
        while text not in self.output.read_text(errors="replace"):
            assert self.process.poll() is None, self.output.read_text(errors="replace")
            assert time.monotonic() < deadline, f"caller never logged {text!r}"
            time.sleep(0.05)


@pytest.fixture
def caller(lab: Lab, tmp_path: Path) -> Iterator[Caller]:
    endpoint = Caller(tmp_path)
    yield endpoint
    if endpoint.process.poll() is None:
        endpoint.process.kill()
        endpoint.process.wait()


def test_a_callee_records_what_it_hears_and_logs_dtmf(lab: Lab, caller: Caller) -> None:
    calls_before = set(lab.received_audio("tone"))
    log_before = len(lab.callee_log("tone"))

    caller.call("tone")
    time.sleep(1.0)
    for digit in "5#":
        caller.command("sndcode", digit)
        time.sleep(0.3)
    caller.close()

    log = lab.callee_log("tone")[log_before:]
    assert "received event: '5' (end=0)" in log
    assert "received event: '#' (end=1)" in log
    (heard,) = set(lab.received_audio("tone")) - calls_before
    samples, rate = read_dump(heard)
    assert rate == TONE_SAMPLE_RATE
    assert samples.size > rate
    frequency = dominant_frequency((samples / 32768).astype(np.float32), rate)
    assert frequency == pytest.approx(CALLER_TONE_HZ, abs=5)
