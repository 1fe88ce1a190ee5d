"""The SIP account of a run, as the user agent sees it, and the log of its messages."""

from __future__ import annotations

import logging

from sip2rtmp.config import CallSettings
from sip2rtmp.netaddr import Address
from sip2rtmp.sip.auth import Credentials
from sip2rtmp.sip.context import UserAgentConfig

wire_log = logging.getLogger("sip2rtmp.sip.wire")


def user_agent_config(settings: CallSettings) -> UserAgentConfig:
    """Every request goes to `sip_server`: the outbound proxy when given, else the domain."""
    return UserAgentConfig(
        user=settings.sip_login or "sip2rtmp",
        domain=settings.sip_domain,
        credentials=Credentials(settings.sip_auth_name, settings.sip_password.reveal()),
        transport=settings.sip_transport,
        outbound_proxy=settings.sip_server.host,
        port=settings.sip_server.port,
        local_port=0,
        tls_ca_file=settings.sip_tls_ca,
    )


def log_message(direction: str, addr: Address, data: bytes) -> None:
    """Each SIP message in full at debug level (`-vv`, `--log-file`), where the log's own
    filter masks its digest credentials."""
    if wire_log.isEnabledFor(logging.DEBUG):
        text = data.decode("utf-8", "replace")
        wire_log.debug("%s %s:%d\n%s", direction, addr[0], addr[1], text)
