"""sip2rtmp: take a phone call and put it on a live stream."""

__version__ = "0.1.0"
