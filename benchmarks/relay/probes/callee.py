"""The lab callee's control port, which mutes the callee now and then to make tone onsets."""

from __future__ import annotations

import json
import re
import socket
import time

from benchmarks.relay.probes.process import sleep_until
from sip2rtmp.lab import SIP_HOST
from sip2rtmp.lab import account as lab_account

PROBE_PERIOD_S = 5.037
"""No multiple of sip2rtmp's 40 ms loop grid or 400 ms media tick: the eleven onsets of a
60 s call fall at phases spread over the whole tick (5.037 s is 237 ms past a tick), not at
one phase that luck picks per run."""
PROBE_MUTED_S = 1.0


class Callee:
    """The lab callee's baresip control port: mutes and unmutes to make tone onsets."""

    def __init__(self, user: str) -> None:
        port = lab_account(user).ctrl_port
        if port is None:
            raise ValueError(f"lab user {user} has no control port")
        self._port = port

    def command(self, command: str) -> str:
        body = json.dumps({"command": command, "params": "", "token": command}).encode()
        with socket.create_connection((SIP_HOST, self._port), timeout=5) as connection:
            connection.sendall(str(len(body)).encode() + b":" + body + b",")
            reply = b""
            while not reply.endswith(b","):
                chunk = connection.recv(65536)
                if not chunk:
                    break
                reply += chunk
        text = reply.split(b":", 1)[1][:-1] if b":" in reply else b"{}"
        return str(json.loads(text).get("data", ""))

    def active_calls(self) -> int:
        found = re.search(r"Active calls \((\d+)\)", self.command("listcalls"))
        return int(found.group(1)) if found else -1

    def probe(self, start: float, end: float) -> str:
        """Mute for a second every few seconds between `start` and `end` (monotonic).

        ``mute`` acts on the callee's current call, so a slot is skipped whenever the callee
        has any call besides ours.
        """
        probes = skipped = 0
        moment = start
        while moment + PROBE_MUTED_S + 1.0 < end:
            sleep_until(moment)
            moment += PROBE_PERIOD_S
            if self.active_calls() != 1:
                skipped += 1
                continue
            self.command("mute")
            try:
                time.sleep(PROBE_MUTED_S)
            finally:
                self.command("mute")
            probes += 1
        note = f"{probes} onsets"
        return note + (f", {skipped} skipped: the callee had other calls" if skipped else "")
