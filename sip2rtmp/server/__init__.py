"""`sip2rtmp serve`: the reference system's REST API over many `sip2rtmp call` workers.

A layer beside `sip2rtmp.cli`: it may import config, outcomes and the relay's event names;
nothing below it imports it.
"""
