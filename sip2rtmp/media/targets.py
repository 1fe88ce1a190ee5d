"""Output targets as people see them: a URL's stream key is a secret, never shown.

Light on purpose: the command line shows targets long before any output loads PyAV.
"""

from __future__ import annotations

from urllib.parse import urlsplit

NETWORK_SCHEMES = ("rtmp", "rtmps")
"""Targets reached over the network; anything else is a file path."""


def redact(target: str) -> str:
    """The target without its stream key or credentials, fit for logs and stats."""
    parts = urlsplit(target)
    if parts.scheme not in NETWORK_SCHEMES:
        return target
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    app = parts.path.rsplit("/", 1)[0]
    return f"{parts.scheme}://{host}{app}/***"
