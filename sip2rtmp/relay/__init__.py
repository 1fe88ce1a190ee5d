"""One relay run: the SIP call, its media legs, the outputs, and the events they report."""

from sip2rtmp.relay.runner import MediaOptions, Relay, run_relay

__all__ = ["MediaOptions", "Relay", "run_relay"]
