"""One relay run on asyncio: the shell around the relay core.

`RelayCore` (`sip2rtmp.relay.core`) decides everything; this shell feeds it SIP events, media
facts, signals and time, carries out its actions (SIP commands, `CallMedia` steps) and hands
its events to the front end. A failed run raises `RunFailed` with the core's outcome.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from sip2rtmp.config import CallSettings
from sip2rtmp.net.grid import Grid
from sip2rtmp.net.sip_session import SipSession
from sip2rtmp.outcomes import InternalError, Outcome, RunFailed
from sip2rtmp.relay import actions
from sip2rtmp.relay.account import log_message, public_address, user_agent_config
from sip2rtmp.relay.control import RelayControl, carry_out
from sip2rtmp.relay.core import RelayCore, RelayPlan
from sip2rtmp.relay.events import Dtmf, EventSink, Failed, Finished, RelayEvent
from sip2rtmp.relay.options import GRID_STRIDES, MediaOptions
from sip2rtmp.sip.events import Event

if TYPE_CHECKING:
    from sip2rtmp.relay.media import CallMedia


def run_relay(
    settings: CallSettings,
    emit: EventSink,
    options: MediaOptions | None = None,
    control: RelayControl | None = None,
) -> None:
    """Run one relay to its end; a failure raises `RunFailed` carrying its outcome."""
    asyncio.run(Relay(settings, emit, options or MediaOptions(), control).run())


class Relay:
    def __init__(
        self,
        settings: CallSettings,
        emit: EventSink,
        options: MediaOptions,
        control: RelayControl | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.control = control or RelayControl()
        self._emit = emit
        plan = RelayPlan(int(time.time()), options.dtmf_script, options.stats_interval)
        self._core = RelayCore(settings, plan)
        self._ended = False
        self._sip: SipSession | None = None
        self._media: CallMedia | None = None
        self._done: asyncio.Future[Outcome | None] | None = None
        self._pumping = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._stop, signal.Signals(signum).name)
        try:
            outcome = await self._run()
        except RunFailed as failed:  # the SIP server could not be reached at all
            self._report(Failed(failed.outcome))
            raise
        except Exception as error:  # a bug: still exactly one terminal status for the script
            self._report(Failed(InternalError(type(error).__name__)))
            raise
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        if outcome is not None:
            raise RunFailed(outcome)

    async def _run(self) -> Outcome | None:
        done: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        self._done = done
        config = user_agent_config(self.settings)
        async with SipSession(config, message_log=log_message, on_event=self._on_sip) as sip:
            self._sip = sip
            try:
                self._core.start(self._now())
                loop = asyncio.get_running_loop()  # requests come from any thread:
                self.control.on_request(lambda: loop.call_soon_threadsafe(self._on_control))
                self._on_control()  # those made before the run began, then the core's start
                self._in_background(_load_media())
                return await done
            finally:
                Grid.of(asyncio.get_running_loop()).cancel(self._on_timer)
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                if self._media is not None:
                    await self._media.close()

    # ---- feeding the core -----------------------------------------------------------------

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _pump(self) -> None:
        """Carry out the core's actions and pass on its events until both queues are empty,
        then arm its one timer. Inputs that arrive meanwhile only queue more."""
        if self._pumping:
            return
        self._pumping = True
        core = self._core
        try:
            while True:
                if (action := core.next_action()) is not None:
                    self._execute(action)
                elif (event := core.next_event()) is not None:
                    self._report(event)
                else:
                    break
        finally:
            self._pumping = False
        # The core's timers (state polling twice a second, statistics, DTMF steps, the time
        # limit) run on the call's grid instants, up to a stride late, so that they share the
        # media's wake-ups of the loop instead of adding their own.
        grid = Grid.of(asyncio.get_running_loop())
        deadline = core.get_timer()
        if deadline is None or core.ended:
            grid.cancel(self._on_timer)
        else:
            grid.call_at(deadline, self._on_timer, GRID_STRIDES[self.options.latency])

    def _feed(self, step: Callable[[float], None]) -> None:
        step(self._now())
        self._pump()

    def _on_timer(self) -> None:
        self._feed(self._core.handle_timer)

    def _on_sip(self, event: Event) -> None:
        self._feed(lambda now: self._core.sip_event(event, now))

    def _stop(self, reason: str) -> None:
        self._feed(lambda now: self._core.stop(now, reason))

    def _on_control(self) -> None:
        for command, answer in self.control.take_commands():
            work = carry_out(self._core, command, answer, self._media, self._now())
            if work is not None:
                self._in_background(work)
        self._pump()

    def _report(self, event: RelayEvent) -> None:
        if isinstance(event, Finished | Failed):
            if self._ended:
                return
            self._ended = True
        self._emit(event)

    # ---- carrying out its actions ---------------------------------------------------------

    def _execute(self, action: actions.Action) -> None:
        core, media = self._core, self._media
        if isinstance(action, actions.Done):
            if self._done is not None and not self._done.done():
                self._done.set_result(action.outcome)
        elif isinstance(action, actions.SipAction):
            assert self._sip is not None
            self._sip.command(action.command)
        elif isinstance(action, actions.OpenMedia):
            self._in_background(self._open_media())
        elif media is None:
            return
        elif isinstance(action, actions.Observe):
            core.observed(self._now(), *media.observe())
        elif isinstance(action, actions.CollectStats):
            stats = media.stats(core.duration(self._now()))
            if stats is not None:
                core.report(stats)
        elif isinstance(action, actions.PrepareSlate):
            media.prepare_slate()
        else:
            self._in_background(self._media_step(media, action))

    async def _open_media(self) -> None:
        from sip2rtmp.relay.media import CallMedia, MediaListeners

        assert self._sip is not None
        listeners = MediaListeners(
            first_packet=lambda kind, remote: self._feed(
                lambda now: self._core.media_arrived(kind, remote, now)
            ),
            keyframe=lambda: self._feed(self._core.keyframe_ready),
            dtmf=lambda digit, method: self._feed(
                lambda now: self._core.report(Dtmf(digit, "received", method))
            ),
        )
        local_ip = self._sip.local_address[0]
        media = await CallMedia.open(local_ip, self.settings, self.options, listeners)
        media.send_info, self._media = self._sip.send_info, media
        self._core.media_opened(
            media.offer_address(local_ip, await public_address(self._sip, self.settings))
        )
        self._pump()

    async def _media_step(self, media: CallMedia, action: actions.Action) -> None:
        """The steps that take time: each reports back to the core when done."""
        core = self._core
        if isinstance(action, actions.ConnectEarlyAudio):
            await media.audio.connect(action.stream)
        elif isinstance(action, actions.ConnectLegs):
            await media.connect(action.audio, action.video)
            self._feed(core.legs_connected)
        elif isinstance(action, actions.StartOutputs):
            mode = await media.start_outputs(live=action.live)
            self._feed(lambda now: core.outputs_started(now, mode, media.outputs_opened()))
        elif isinstance(action, actions.AttachLiveVideo):
            await media.attach_live()
        elif isinstance(action, actions.RetargetLegs):
            await media.retarget(action.audio, action.video)
        elif isinstance(action, actions.StopOutputs):
            outputs, stats = await media.stop(core.duration(self._now()))
            self._feed(lambda now: core.outputs_stopped(now, outputs, stats))
        elif isinstance(action, actions.SendDtmf):
            method = await media.send_dtmf(action.digits, action.method)
            for digit in action.digits:
                core.report(Dtmf(digit, "sent", method))
            self._feed(core.dtmf_sent)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` alongside; an error in it ends the run as the bug it is."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        if self._done is not None and not self._done.done():
            self._done.set_exception(task.exception() or RuntimeError())


async def _load_media() -> None:
    """Load the call's media (PyAV, numpy, the outputs) in a worker thread while the first
    request is on the wire: the run's start never waits for them."""
    await asyncio.to_thread(importlib.import_module, "sip2rtmp.relay.media")
