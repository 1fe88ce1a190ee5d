"""Session timers (RFC 4028): who refreshes an established call, how often, and when it ends
unrefreshed."""

from __future__ import annotations

from dataclasses import dataclass

from sip2rtmp.sip.context import MAX_DELTA_SECONDS, MAX_REFRESH_DELAY
from sip2rtmp.sip.message import Response, SipParseError, bounded_int, parse_params

SESSION_EXPIRY_MARGIN = 32.0
"""RFC 4028 §10: without a refresh, BYE this long (or a third of the interval) before expiry."""


@dataclass
class SessionTimer:
    """RFC 4028 state: who refreshes, how often, and the two deadlines that follow."""

    interval: int
    we_refresh: bool
    refresh_at: float | None = None
    expire_at: float | None = None

    def restart(self, now: float) -> None:
        if self.we_refresh:
            self.refresh_at = now + min(self.interval / 2, MAX_REFRESH_DELAY)
            self.expire_at = None
        else:
            self.refresh_at = None
            margin = min(SESSION_EXPIRY_MARGIN, self.interval / 3)
            self.expire_at = now + self.interval - margin


def session_expires(value: str | None) -> tuple[int, str | None] | None:
    """Interval and refresher of a Session-Expires value (RFC 4028 §4); None if unusable."""
    if not value:
        return None
    number, _, rest = value.partition(";")
    interval = bounded_int(number, MAX_DELTA_SECONDS)
    if not interval:
        return None
    try:
        params = parse_params(";" + rest, what="Session-Expires") if rest else {}
    except SipParseError:
        return None
    return interval, params.get("refresher")


def timer_from_2xx(response: Response) -> SessionTimer | None:
    """The session timer a 2xx to our INVITE or UPDATE sets (RFC 4028 §7.2): we refresh when
    it names the UAC."""
    parsed = session_expires(response.headers.get("Session-Expires"))
    if parsed is None:
        return None
    interval, refresher = parsed
    return SessionTimer(interval=interval, we_refresh=refresher == "uac")
