"""The same call through `sip2rtmp serve`: what one call costs a server that is already up.

A worker forks from the server's zygote, which has loaded the call's code once, so the
worker's whole life is the call itself. Its CPU is what the zygote reaped of it (the zygote's
children's CPU before and after); its peak RSS is sampled from /proc while it runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from benchmarks.relay.calls import Options, forget_recordings, stamp
from benchmarks.relay.probes.process import own_cpu_s, process_cpu_s, rss_kb
from benchmarks.serve.runner import FINAL, Server, workers, zygotes
from sip2rtmp.lab import RTMP_URL

LOADED_S = 0.5
"""The zygote counts as loaded once its CPU has not moved for this long."""
LOAD_TIMEOUT_S = 20.0
POLL_S = 0.5


@dataclass
class Served:
    label: str
    call_s: float
    cpu_s: float
    """The worker's whole life."""
    max_rss_kb: int
    zygote_cpu_s: float
    """The zygote's own: loading the call's code, once per server."""
    reason: str

    @property
    def cpu_per_min(self) -> float:
        return self.cpu_s * 60.0 / self.call_s


def run_served(options: Options) -> Served:
    """One call of ``options`` started over the REST API of a fresh, loaded server."""
    work_dir = options.work_dir / "serve"
    work_dir.mkdir(parents=True, exist_ok=True)
    key = f"bench-served-{stamp()}"
    server = Server(work_dir, 1)
    try:
        server.wait_ready()
        zygote = _loaded_zygote(server)
        before = process_cpu_s(zygote) - own_cpu_s(zygote)
        status, answer = server.request("/call/startup", _startup(options, key))
        if status != 200:
            raise RuntimeError(f"serve refused the call: {status} {answer}")
        peak, call = 0, {}
        deadline = time.monotonic() + options.duration + 60
        while time.monotonic() < deadline:
            running = workers(server)
            for pid in running:
                peak = max(peak, _rss(pid))
            call = server.calls().get(key, {})
            if call.get("status") in FINAL and not running:
                break
            time.sleep(POLL_S)
        else:
            raise RuntimeError(f"the served call did not end: {call}")
        cpu = process_cpu_s(zygote) - own_cpu_s(zygote) - before
        return Served(
            label="sip2rtmp serve",
            call_s=options.duration,
            cpu_s=cpu,
            max_rss_kb=peak,
            zygote_cpu_s=own_cpu_s(zygote),
            reason=str(call.get("reason")),
        )
    finally:
        server.stop()
        forget_recordings(key)


def _loaded_zygote(server: Server) -> int:
    """The server's zygote once it has loaded the call's code, as a server up for a while has."""
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    last, still_since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        found = zygotes(server)
        if found:
            cpu = own_cpu_s(found[0])
            if cpu != last:
                last, still_since = cpu, time.monotonic()
            elif time.monotonic() - still_since >= LOADED_S:
                return found[0]
        time.sleep(0.1)
    raise RuntimeError("the server's zygote did not load in time")


def _rss(pid: int) -> int:
    try:
        return rss_kb(pid)
    except OSError:
        return 0


def _startup(options: Options, key: str) -> dict[str, Any]:
    """The reference's startup body with sip2rtmp's own flags for what the case sets."""
    body: dict[str, Any] = {
        "callId": key,
        "callee": options.callee,
        "rtmpUrl": RTMP_URL,
        "rtmpStream": key,
        "hasAudio": True,
        "hasVideo": options.video_codec is not None,
        "max-duration": round(options.duration),
    }
    if options.audio_codec:
        body["audio-codecs"] = options.audio_codec
    if options.latency != "normal":
        body["latency"] = options.latency
    if options.srtp:
        body["srtp"] = "required"
    return body
