"""The SIP account of a run, as the user agent sees it, and the log of its messages."""

from __future__ import annotations

import contextlib
import ipaddress
import logging

from sip2rtmp.config import CallSettings
from sip2rtmp.net.sip_session import SipSession
from sip2rtmp.netaddr import Address
from sip2rtmp.outcomes import RunFailed
from sip2rtmp.sip.auth import Credentials
from sip2rtmp.sip.context import UserAgentConfig

wire_log = logging.getLogger("sip2rtmp.sip.wire")

ADDRESS_PROBE_TIMEOUT = 2.0
"""How long a call without registration waits for an OPTIONS answer that tells it its public
address before it offers media anyway."""


def user_agent_config(settings: CallSettings) -> UserAgentConfig:
    """Every request goes to `sip_server`: the outbound proxy when given, else the domain
    (located by RFC 3263 when it has no port)."""
    return UserAgentConfig(
        user=settings.sip_login or "sip2rtmp",
        domain=settings.sip_domain,
        credentials=Credentials(settings.sip_auth_name, settings.sip_password.reveal()),
        transport=settings.sip_transport,
        outbound_proxy=settings.sip_server.host,
        port=settings.sip_server.port,
        local_port=0,
        tls_ca_file=settings.sip_tls_ca,
        public_host=settings.public_address,
        learn_address=settings.nat != "off",
        keepalive=settings.keepalive,
        display_name=settings.display_name,
        caller_id=settings.caller_id,
        asserted_identity=settings.asserted_identity,
        identity_header=settings.identity_header,
    )


def log_message(direction: str, addr: Address, data: bytes) -> None:
    """Each SIP message in full at debug level (`-vv`, `--log-file`), where the log's own
    filter masks its digest credentials."""
    if wire_log.isEnabledFor(logging.DEBUG):
        text = data.decode("utf-8", "replace")
        wire_log.debug("%s %s:%d\n%s", direction, addr[0], addr[1], text)


async def public_address(sip: SipSession, settings: CallSettings) -> str | None:
    """The public IP the SIP server sees us at, for the SDP offer (RFC 3581).

    A REGISTER's answer has told it already. Without registration, a host on a private
    network asks with one OPTIONS first (any answer carries our Via's `received`), so that
    the offer of the very first INVITE is right; on a public address there is nothing to
    learn and nothing is sent.
    """
    if settings.nat == "off":
        return None
    if sip.public_address is None and not settings.register:
        local = ipaddress.ip_address(sip.local_address[0])
        asked = settings.public_address is not None or settings.stun_server is not None
        if local.is_private and not local.is_loopback and not asked:
            with contextlib.suppress(RunFailed):
                await sip.options(timeout=ADDRESS_PROBE_TIMEOUT)
    found = sip.public_address
    return None if found is None else found[0]
