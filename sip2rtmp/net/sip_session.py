"""The asyncio face of the SIP user agent: sockets and timers around `sip.useragent`.

    async with SipSession(config, message_log=print_message) as sip:
        await sip.register()
        call = await sip.invite("sip:tone@lab.example", offer, ring_timeout=30)
        await call.send_info("application/dtmf-relay", b"Signal=1\\r\\nDuration=160\\r\\n")
        await call.hangup()

Every decision is the core's; this module only moves bytes, arms one timer and turns events
into awaited results and exceptions from `sip2rtmp.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from types import TracebackType
from typing import Any, TypeVar

from sip2rtmp.errors import Interrupted, Sip2RtmpError, SipUnreachable
from sip2rtmp.net.sip_transport import Addr, SipTransport, open_transport, resolve
from sip2rtmp.sip.events import (
    CallAnswered,
    CallAttemptFailed,
    CallEnded,
    CallProgress,
    Event,
    InfoAnswered,
    InfoReceived,
    MessageDropped,
    MessageLogged,
    Registered,
    RegistrationFailed,
    SessionModified,
    Unregistered,
)
from sip2rtmp.sip.transaction import TIMEOUT
from sip2rtmp.sip.useragent import UserAgent, UserAgentConfig

log = logging.getLogger(__name__)

MessageLog = Callable[[str, Addr, bytes], None]
"""Called with ("sent" | "received", peer address, the message bytes) for every message."""
ProgressCallback = Callable[[CallProgress], None]

T = TypeVar("T")

CANCEL_GRACE = 4.0
"""How long a cancelled invite() waits for the 487 before giving up (the core goes on)."""
GOODBYE_TIMEOUT = TIMEOUT + 2
"""Upper bound for BYE or un-REGISTER on the way out: a transaction times out by then."""


def default_port(transport: str) -> int:
    return 5061 if transport == "tls" else 5060


class SipCall:
    """An established call: INFO, hang-up, and `ended` once either side ends it."""

    def __init__(self, session: SipSession, answer_sdp: bytes) -> None:
        self._session = session
        self.answer_sdp = answer_sdp
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        self.ended_by_remote = False
        self.remote_sdp = answer_sdp
        """The peer's latest SDP: the answer, or a later re-INVITE/UPDATE offer."""
        self.on_info: Callable[[str, bytes], None] | None = None
        self._info_waiters: deque[asyncio.Future[int]] = deque()

    async def send_info(self, content_type: str, body: bytes) -> int:
        """Send INFO and return the peer's final status code."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._info_waiters.append(future)
        self._session._command(lambda ua, now: ua.send_info(now, content_type, body))
        return await future

    async def hangup(self) -> None:
        """BYE and wait for the answer (or the BYE transaction timeout)."""
        if not self.ended.is_set():
            self._session._command(lambda ua, now: ua.bye(now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ended.wait(), GOODBYE_TIMEOUT)

    async def wait_ended(self) -> str:
        await self.ended.wait()
        return self.end_reason or ""

    def _finish(self, reason: str, by_remote: bool) -> None:
        if not self.ended.is_set():
            self.end_reason = reason
            self.ended_by_remote = by_remote
            self.ended.set()
        while self._info_waiters:
            waiter = self._info_waiters.popleft()
            if not waiter.done():
                waiter.set_result(481)


class SipSession:
    """One SIP account on one transport to one server, with at most one call at a time."""

    def __init__(self, config: UserAgentConfig, *, message_log: MessageLog | None = None) -> None:
        self._config = config
        self._message_log = message_log
        self._server_name = config.outbound_proxy or config.domain
        self._port = config.port or default_port(config.transport)
        self._target = f"{self._server_name}:{self._port}"
        self._transport: SipTransport | None = None
        self._ua: UserAgent | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._register_waiter: asyncio.Future[int] | None = None
        self._unregister_waiter: asyncio.Future[bool] | None = None
        self._invite_waiter: asyncio.Future[bytes] | None = None
        self._on_progress: ProgressCallback | None = None
        self._call: SipCall | None = None
        self.registration_error: Sip2RtmpError | None = None
        """The last failed registration refresh, for a caller that wants to report it."""

    # ---- lifetime -------------------------------------------------------------------------

    async def __aenter__(self) -> SipSession:
        config = self._config
        try:
            server = await resolve(self._server_name, self._port, config.transport)
        except OSError as exc:
            raise SipUnreachable(self._target, f"cannot resolve: {exc.strerror or exc}") from None
        try:
            self._transport = await open_transport(
                config.transport,
                server,
                self._on_message,
                self._on_transport_error,
                local_port=config.local_port,
                server_hostname=self._server_name,
                tls_ca_file=config.tls_ca_file,
            )
        except (OSError, TimeoutError) as exc:
            detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise SipUnreachable(self._target, detail) from None
        local_host, local_port = self._transport.local_addr
        ua_config = replace(config, local_host=local_host, local_port=local_port)
        self._ua = UserAgent(ua_config, self._transport.remote_addr)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._call is not None and not self._call.ended.is_set():
                await self._call.hangup()
            if self._ua is not None and self._ua.registered:
                with contextlib.suppress(Sip2RtmpError):
                    await self.unregister()
        finally:
            self.close()

    @property
    def local_address(self) -> Addr:
        """Where our SIP socket is bound: the address the route to the server leaves from,
        which is also the address to offer for RTP."""
        if self._transport is None:
            raise RuntimeError("SipSession used outside 'async with'")
        return self._transport.local_addr

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # ---- commands ---------------------------------------------------------------------------

    async def register(self) -> int:
        """REGISTER (answering digest challenges); returns the granted expiry in seconds.
        Raises AuthenticationFailed, SipUnreachable or CallFailed."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._register_waiter = future
        self._command(lambda ua, now: ua.register(now))
        return await future

    async def unregister(self) -> None:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._unregister_waiter = future
        self._command(lambda ua, now: ua.unregister(now))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(future, GOODBYE_TIMEOUT)

    async def invite(
        self,
        target_uri: str,
        sdp_offer: bytes,
        *,
        on_progress: ProgressCallback | None = None,
        ring_timeout: float | None = None,
    ) -> SipCall:
        """Call and wait until answered; raises the typed outcome otherwise.

        Cancelling the awaiting task while it rings sends CANCEL and waits briefly for the
        487 before the cancellation goes on.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._invite_waiter = future
        self._on_progress = on_progress
        self._command(lambda ua, now: ua.invite(now, target_uri, sdp_offer, ring_timeout))
        try:
            answer = await future
        except asyncio.CancelledError:
            final: asyncio.Future[bytes] = loop.create_future()
            self._invite_waiter = final
            self._command(lambda ua, now: ua.cancel(now, Interrupted()))
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(final), CANCEL_GRACE)
            if self._invite_waiter is final:
                self._invite_waiter = None
            raise
        finally:
            self._on_progress = None
        self._call = SipCall(self, answer)
        return self._call

    # ---- driving the core ---------------------------------------------------------------

    def _command(self, action: Callable[[UserAgent, float], None]) -> None:
        if self._ua is None:
            raise RuntimeError("SipSession used outside 'async with'")
        action(self._ua, asyncio.get_running_loop().time())
        self._pump()

    def _on_message(self, data: bytes, addr: Addr) -> None:
        if self._ua is not None:
            self._ua.receive_data(data, addr, asyncio.get_running_loop().time())
            self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        if self._ua is not None:
            self._ua.handle_timer(asyncio.get_running_loop().time())
            self._pump()

    def _pump(self) -> None:
        """Send what the core queued, hand out its events, re-arm the one timer."""
        ua = self._ua
        if ua is None:
            return
        loop = asyncio.get_running_loop()
        if self._transport is not None:
            for data, addr in ua.data_to_send(loop.time()):
                self._transport.send(data, addr)
        while (event := ua.next_event()) is not None:
            self._dispatch(event)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = ua.get_timer()
        if deadline is not None:
            self._timer = loop.call_at(deadline, self._on_timer)

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, MessageLogged):
            if self._message_log is not None:
                self._message_log(event.direction, event.addr, event.data)
        elif isinstance(event, MessageDropped):
            host, port = event.addr
            log.debug("dropped a SIP message from %s:%s: %s", host, port, event.reason)
        elif isinstance(event, Registered):
            self.registration_error = None
            _resolve(self._register_waiter, event.expires)
        elif isinstance(event, RegistrationFailed):
            self.registration_error = event.outcome
            _fail(self._register_waiter, event.outcome)
        elif isinstance(event, Unregistered):
            _resolve(self._unregister_waiter, event.ok)
        elif isinstance(event, CallProgress):
            if self._on_progress is not None:
                self._on_progress(event)
        elif isinstance(event, CallAnswered):
            _resolve(self._invite_waiter, event.sdp)
        elif isinstance(event, CallAttemptFailed):
            _fail(self._invite_waiter, event.outcome)
        else:
            self._dispatch_call_event(event)

    def _dispatch_call_event(self, event: Event) -> None:
        call = self._call
        if call is None:
            return
        if isinstance(event, CallEnded):
            call._finish(event.reason, event.by_remote)
        elif isinstance(event, InfoReceived):
            if call.on_info is not None:
                call.on_info(event.content_type, event.body)
        elif isinstance(event, InfoAnswered):
            if call._info_waiters:
                _resolve(call._info_waiters.popleft(), event.status)
        elif isinstance(event, SessionModified):
            call.remote_sdp = event.sdp

    def _on_transport_error(self, exc: Exception) -> None:
        """ICMP unreachable, a refused or dropped connection: fail whatever is waiting."""
        detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        outcome = SipUnreachable(self._target, detail)
        _fail(self._register_waiter, outcome)
        _fail(self._invite_waiter, outcome)
        _resolve(self._unregister_waiter, False)
        if self._config.transport != "udp" and self._call is not None:
            self._call._finish(f"connection to the SIP server lost: {detail}", by_remote=True)


def _resolve(future: asyncio.Future[T] | None, value: T) -> None:
    if future is not None and not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any] | None, error: Sip2RtmpError) -> None:
    if future is not None and not future.done():
        future.set_exception(error)
