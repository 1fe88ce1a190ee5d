"""The asyncio face of the SIP user agent: sockets and timers around `sip.useragent`.

    async with SipSession(config, message_log=print_message) as sip:
        await sip.register()
        call = await sip.invite("sip:tone@lab.example", offer, ring_timeout=30)
        await call.send_info("application/dtmf-relay", b"Signal=1\\r\\nDuration=160\\r\\n")
        await call.hangup()

Every decision is the core's; this module only moves bytes, arms one timer and turns events
into awaited results, or `RunFailed` carrying the core's `SipFailure`. A caller that drives the
core itself (the relay's) passes `on_event`, gets every event but the message log, and sends
commands with `command()`.
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

from sip2rtmp.net.locate import Located, LocateError, locate
from sip2rtmp.net.sip_transport import SipTransport, open_transport
from sip2rtmp.netaddr import Address
from sip2rtmp.outcomes import RunFailed, SipFailure, Unanswered, Unreachable
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
    OptionsAnswered,
    OptionsFailed,
    Registered,
    RegistrationFailed,
    RegistrationRetrying,
    Unregistered,
)
from sip2rtmp.sip.transaction import TIMEOUT
from sip2rtmp.sip.useragent import UserAgent, UserAgentConfig

log = logging.getLogger(__name__)

MessageLog = Callable[[str, Address, bytes], None]
"""Called with ("sent" | "received", peer address, the message bytes) for every message."""
EventListener = Callable[[Event], None]
"""Called with every core event but `MessageLogged` and `MessageDropped`."""
ProgressCallback = Callable[[CallProgress], None]
Command = Callable[[UserAgent, float], None]
"""A command for the core, given the core and the loop's time."""

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
        self.on_info: Callable[[str, bytes], None] | None = None

    async def send_info(self, content_type: str, body: bytes) -> int:
        """Send INFO and return the peer's final status code."""
        return await self._session.send_info(content_type, body)

    async def hangup(self) -> None:
        """BYE and wait for the answer (or the BYE transaction timeout)."""
        if not self.ended.is_set():
            await self._session.hang_up()

    async def wait_ended(self) -> str:
        await self.ended.wait()
        return self.end_reason or ""

    def _finish(self, reason: str, by_remote: bool) -> None:
        if not self.ended.is_set():
            self.end_reason = reason
            self.ended_by_remote = by_remote
            self.ended.set()


class SipSession:
    """One SIP account on one transport to one server, with at most one call at a time."""

    def __init__(
        self,
        config: UserAgentConfig,
        *,
        message_log: MessageLog | None = None,
        on_event: EventListener | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self._config = config
        self._message_log = message_log
        self._on_event = on_event
        self._connect_timeout = connect_timeout
        self._server_name = config.outbound_proxy or config.domain
        port = config.port
        self._target = self._server_name if port is None else f"{self._server_name}:{port}"
        self._transport: SipTransport | None = None
        self._local: Address | None = None
        self._backlog: list[tuple[Address, bytes]] = []
        """What the core sent to a target whose transport is being opened."""
        self._opening: asyncio.Task[None] | None = None
        self.located: Located | None = None
        """Where RFC 3263 server location found the server, once entered."""
        self._ua: UserAgent | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._register_waiter: asyncio.Future[int] | None = None
        self._unregister_waiter: asyncio.Future[bool] | None = None
        self._invite_waiter: asyncio.Future[bytes] | None = None
        self._options_waiter: asyncio.Future[OptionsAnswered] | None = None
        self._on_progress: ProgressCallback | None = None
        self._call: SipCall | None = None
        self._info_waiters: deque[asyncio.Future[int]] = deque()
        self._call_over = asyncio.Event()
        """Set whenever the core has no call (none yet, or it ended)."""
        self._call_over.set()
        self.registration_error: SipFailure | None = None
        """The last failed registration refresh, for a caller that wants to report it."""

    # ---- lifetime -------------------------------------------------------------------------

    async def __aenter__(self) -> SipSession:
        """Locate the server (RFC 3263) and open the transport to the first target that
        takes a connection; `RunFailed(Unreachable)` when none does."""
        config = self._config
        try:
            self.located = await locate(self._server_name, config.port, config.transport)
        except LocateError as exc:
            lookups = str(exc).removeprefix(f"{self._server_name}: ")
            raise RunFailed(Unreachable(self._target, f"cannot resolve: {lookups}")) from None
        targets = [target.address for target in self.located.targets]
        failures: list[str] = []
        for index, server in enumerate(targets):
            try:
                self._transport = await self._open(server, config.local_port)
            except OSError as exc:
                failures.append(f"{server[0]}:{server[1]}: {_os_detail(exc)}")
                continue
            self._local = self._transport.local_addr
            local_host, local_port = self._local
            ua_config = replace(config, local_host=local_host, local_port=local_port)
            self._ua = UserAgent(ua_config, targets[index:])
            self.command(lambda ua, now: ua.connection_made(now, self._local or ("", 0)))
            return self
        detail = failures[0] if len(failures) == 1 else "; ".join(failures)
        if len(failures) == 1:
            detail = detail.split(": ", 1)[1]
        raise RunFailed(Unreachable(self._target, detail))

    async def _open(self, server: Address, local_port: int) -> SipTransport:
        """A transport to `server`; OSError (TimeoutError included) when it cannot be had."""
        config = self._config
        try:
            return await open_transport(
                config.transport,
                server,
                self._on_message,
                self._on_transport_error,
                local_port=local_port,
                server_hostname=self._server_name,
                tls_ca_file=config.tls_ca_file,
                connect_timeout=self._connect_timeout,
            )
        except TimeoutError:
            raise TimeoutError(f"no connection within {self._connect_timeout:g} s") from None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._ua is not None and self._ua.in_call:
                await self.hang_up()
            if self._ua is not None and self._ua.registered:
                await self.unregister()
        finally:
            self.close()

    @property
    def local_address(self) -> Address:
        """Where our SIP socket is bound: the address the route to the server leaves from,
        which is also the address to offer for RTP."""
        if self._local is None:
            raise RuntimeError("SipSession used outside 'async with'")
        return self._local

    @property
    def public_address(self) -> Address | None:
        """Our address as the server saw it (Via received/rport), or the configured public
        one, when it differs from the socket's own; None before any answer."""
        return None if self._ua is None else self._ua.public_address

    @property
    def server(self) -> Address | None:
        """The server target requests go to now."""
        return None if self._ua is None else self._ua.server

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._opening is not None:
            self._opening.cancel()
            self._opening = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # ---- commands ---------------------------------------------------------------------------

    async def register(self) -> int:
        """REGISTER (answering digest challenges); returns the granted expiry in seconds.
        Raises `RunFailed` with `Rejected`, `Unanswered` or `Unreachable`."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._register_waiter = future
        self.command(lambda ua, now: ua.register(now))
        return await future

    async def unregister(self) -> None:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._unregister_waiter = future
        self.command(lambda ua, now: ua.unregister(now))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(future, GOODBYE_TIMEOUT)

    async def options(
        self, target_uri: str | None = None, *, timeout: float | None = None
    ) -> OptionsAnswered:
        """OPTIONS outside any dialog (RFC 3261 §11), by default to the domain; returns the
        final answer whatever its status. Raises `RunFailed` with `Unanswered` when none comes
        within the transaction timeout or `timeout`, `Unreachable` when the transport fails.
        One query at a time."""
        if self._options_waiter is not None and not self._options_waiter.done():
            raise RuntimeError("an OPTIONS query is already waiting")
        future: asyncio.Future[OptionsAnswered] = asyncio.get_running_loop().create_future()
        self._options_waiter = future
        self.command(lambda ua, now: ua.options(now, target_uri))
        if timeout is None:
            return await future
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RunFailed(Unanswered("OPTIONS", self._server_name, timeout)) from None

    async def invite(
        self,
        target_uri: str,
        sdp_offer: bytes,
        *,
        on_progress: ProgressCallback | None = None,
        ring_timeout: float | None = None,
    ) -> SipCall:
        """Call and wait until answered; raises `RunFailed` with the core's outcome otherwise.

        Cancelling the awaiting task while it rings sends CANCEL and waits briefly for the
        487 before the cancellation goes on.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._invite_waiter = future
        self._on_progress = on_progress
        self.command(lambda ua, now: ua.invite(now, target_uri, sdp_offer, ring_timeout))
        try:
            answer = await future
        except asyncio.CancelledError:
            final: asyncio.Future[bytes] = loop.create_future()
            self._invite_waiter = final
            self.command(lambda ua, now: ua.cancel(now))
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(final), CANCEL_GRACE)
            if self._invite_waiter is final:
                self._invite_waiter = None
            raise
        finally:
            self._on_progress = None
        self._call = SipCall(self, answer)
        return self._call

    async def send_info(self, content_type: str, body: bytes) -> int:
        """INFO in the call's dialog; the peer's final status (481 once there is no call)."""
        if self._ua is None or not self._ua.in_call:
            return 481
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._info_waiters.append(future)
        try:
            self.command(lambda ua, now: ua.send_info(now, content_type, body))
        except RuntimeError:  # the call is not established (yet, or any more)
            self._info_waiters.remove(future)
            return 481
        return await future

    async def hang_up(self) -> None:
        """BYE (or CANCEL while it rings) and wait until the call is over, at most until its
        transaction times out."""
        self._call_over.clear()
        self.command(lambda ua, now: ua.bye(now))
        if self._ua is not None and not self._ua.in_call:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._call_over.wait(), GOODBYE_TIMEOUT)

    # ---- driving the core ---------------------------------------------------------------

    def command(self, action: Command) -> None:
        """Run `action` on the core at the loop's time, then send and dispatch what it made."""
        if self._ua is None:
            raise RuntimeError("SipSession used outside 'async with'")
        action(self._ua, asyncio.get_running_loop().time())
        self._pump()

    def _on_message(self, data: bytes, addr: Address) -> None:
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
        for data, addr in ua.data_to_send(loop.time()):
            self._send(data, addr)
        while (event := ua.next_event()) is not None:
            self._dispatch(event)
            if self._on_event is not None and not isinstance(
                event, (MessageLogged, MessageDropped)
            ):
                self._on_event(event)
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
        elif isinstance(event, RegistrationRetrying):
            self.registration_error = event.outcome
        elif isinstance(event, Unregistered):
            _resolve(self._unregister_waiter, event.ok)
        elif isinstance(event, OptionsAnswered):
            _resolve(self._options_waiter, event)
        elif isinstance(event, OptionsFailed):
            _fail(self._options_waiter, event.outcome)
        else:
            self._dispatch_call_event(event)

    def _dispatch_call_event(self, event: Event) -> None:
        if isinstance(event, CallEnded | CallAttemptFailed):
            self._call_over.set()
            while self._info_waiters:
                _resolve(self._info_waiters.popleft(), 481)
        elif isinstance(event, InfoAnswered) and self._info_waiters:
            _resolve(self._info_waiters.popleft(), event.status)
        if isinstance(event, CallProgress):
            if self._on_progress is not None:
                self._on_progress(event)
        elif isinstance(event, CallAnswered):
            _resolve(self._invite_waiter, event.sdp)
        elif isinstance(event, CallAttemptFailed):
            _fail(self._invite_waiter, event.outcome)
        call = self._call
        if call is None:
            return
        if isinstance(event, CallEnded):
            call._finish(event.reason, event.by_remote)
        elif isinstance(event, InfoReceived) and call.on_info is not None:
            call.on_info(event.content_type, event.body)

    def _on_transport_error(self, exc: Exception) -> None:
        """ICMP unreachable, a refused or dropped connection: the core decides what fails,
        and what to send again (which opens a new connection)."""
        if self._transport is not None and self._config.transport != "udp":
            self._transport.close()
            self._transport = None
        detail = _os_detail(exc)
        self.command(lambda ua, now: ua.connection_lost(now, detail))

    # ---- transports on demand -------------------------------------------------------------

    def _send(self, data: bytes, addr: Address) -> None:
        """Send over the open transport when it leads to `addr`; otherwise keep the data and
        open one that does (the core moved to another target, or the connection dropped)."""
        transport = self._transport
        if transport is not None and transport.remote_addr == addr and self._opening is None:
            transport.send(data, addr)
            return
        self._backlog.append((addr, data))
        if self._opening is None:
            self._opening = asyncio.get_running_loop().create_task(self._reopen(addr))

    async def _reopen(self, server: Address) -> None:
        """Open a transport to `server` from the same local port when it is free (Contact
        and the NAT mapping stay), else from any; tell the core how it went."""
        old, self._transport = self._transport, None
        if old is not None:
            old.close()
            await old.wait_closed()
        port = self._local[1] if self._local is not None else 0
        try:
            try:
                transport = await self._open(server, port)
            except OSError:
                if not port or self._config.transport == "udp":
                    raise
                transport = await self._open(server, 0)
        except OSError as exc:
            detail = _os_detail(exc)
            self._opening = None
            self._backlog = [item for item in self._backlog if item[0] != server]
            self.command(lambda ua, now: ua.connection_lost(now, detail))
            self._flush()
            return
        self._opening = None
        self._transport = transport
        self._local = transport.local_addr
        self.command(lambda ua, now: ua.connection_made(now, transport.local_addr))
        self._flush()

    def _flush(self) -> None:
        backlog, self._backlog = self._backlog, []
        for addr, data in backlog:
            self._send(data, addr)


def _os_detail(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _resolve(future: asyncio.Future[T] | None, value: T) -> None:
    if future is not None and not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any] | None, outcome: SipFailure) -> None:
    if future is not None and not future.done():
        future.set_exception(RunFailed(outcome))
