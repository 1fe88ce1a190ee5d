"""`sip2rtmp lab demo`, the README's first command: a real call from the lab, relayed into the
lab's RTMP server.

It runs the same relay as `sip2rtmp call` and then reads back what nginx recorded, so what it
prints is measured, not assumed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from sip2rtmp.cli.summary import PlainSummary
from sip2rtmp.config import build_call_settings
from sip2rtmp.lab import RELAY_ACCOUNT, RTMP_URL, SIP_DOMAIN, SIP_HOST, Lab, account
from sip2rtmp.lab.recording import decode_audio, dominant_frequency, read_recording
from sip2rtmp.relay.runner import run_relay

DEMO_STREAM = "demo"


def run_demo(lab: Lab, *, callee: str, seconds: float, echo: Callable[[str], None]) -> None:
    """Call `callee`, relay for `seconds`, then summarise the recording."""
    the_callee = account(callee)
    settings = build_call_settings(
        callee=the_callee.user,
        sip_login=RELAY_ACCOUNT.user,
        sip_auth_name=None,
        sip_password=RELAY_ACCOUNT.password,
        sip_domain=SIP_DOMAIN,
        sip_outbound_proxy=SIP_HOST,
        sip_port=None,
        sip_transport="udp",
        register=True,
        rtmp_urls=(RTMP_URL,),
        rtmp_streams=(DEMO_STREAM,),
        audio=True,
        video=True,
        call_id="demo",
        max_duration=seconds,
        ring_timeout=20,
        media_timeout=10,
    )
    before = set(lab.recordings(DEMO_STREAM))
    echo("")
    echo(f"Calling {the_callee.user}@{SIP_DOMAIN} and relaying it for {seconds:g} s.")
    echo(f"Watch it live meanwhile:  ffplay -fflags nobuffer {RTMP_URL}/{DEMO_STREAM}")
    echo("")
    sink = PlainSummary(stream=sys.stdout, every=5.0)
    run_relay(settings, sink)
    recorded = [path for path in lab.recordings(DEMO_STREAM) if path not in before]
    echo("")
    if not recorded:
        echo("nginx recorded nothing")
        return
    for path in recorded:
        recording = read_recording(path)
        tone = dominant_frequency(decode_audio(path), 48000)
        echo(f"nginx recorded {path}:")
        echo(f"  {recording.describe()}")
        expected = f" (the callee sends {the_callee.tone_hz} Hz)" if the_callee.tone_hz else ""
        echo(f"  strongest audio frequency {tone:.0f} Hz{expected}")
    echo(f"Play it:  ffplay {recorded[-1]}")
