"""What `sip2rtmp serve` runs with, validated by the command line before the server starts."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sip2rtmp.config import ConfigError, Secret

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081
"""The reference system's REST port."""
DEFAULT_MAX_CALLS = 10
DEFAULT_KEEP_FINISHED = 600.0
MAX_BODY = 64 * 1024
"""Largest request body taken (413 beyond): a startup body is well under 2 KiB."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_calls: int = DEFAULT_MAX_CALLS
    keep_finished: float = DEFAULT_KEEP_FINISHED
    """Seconds a finished call stays findable with its outcome."""
    webhooks: tuple[str, ...] = ()
    token: Secret | None = None
    """The bearer token every request must carry; None on loopback without --token-file."""
    profile: str | None = None
    """Passed to every worker as --profile: its defaults fill what a startup body omits."""
    defaults: Mapping[str, object] = field(default_factory=dict)
    """The profile's values keyed like `call`'s parameters, read once at start."""
    media_dir: Path | None = None
    """`--media-dir`: the only place files a client names (announcements, slates, injected
    audio) may come from; None: no files over REST."""
    terminate_timeout: float = 10.0
    """How long a hung-up worker may take for its BYE before it is signalled."""


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `PORT` (on the loopback address)."""
    value = text.strip()
    host, colon, port_text = value.rpartition(":")
    if not colon:
        host, port_text = DEFAULT_HOST, value
    host = host.strip("[]") or DEFAULT_HOST
    if not port_text.isdecimal() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"--listen {text!r}: expected HOST:PORT with a port 1 to 65535")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Only a loopback address keeps the API to this machine; a name might not resolve so."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: Secret | None) -> None:
    """Listening beyond loopback lets anyone who reaches the port place calls: not without a
    token."""
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"--listen {host}: listening beyond loopback needs --token-file (a bearer token)"
        )
