"""The shared wake-up grid: one loop timer per instant, however many streams book it."""

from __future__ import annotations

import asyncio
import math

import pytest

from sip2rtmp.net.grid import GRID_S, Grid, Ticker, grid_sleep, grid_tick
from tests.support.virtual_clock import TimerCount, VirtualClockLoop, run_on_virtual_clock


def on_grid(when: float) -> bool:
    return abs(when / GRID_S - round(when / GRID_S)) < 1e-6


def test_grid_tick_rounds_up_and_keeps_exact_instants() -> None:
    assert grid_tick(0.0) == 0
    assert grid_tick(0.001) == 1
    assert grid_tick(3 * GRID_S) == 3
    assert grid_tick(3 * GRID_S + 1e-6) == 4


def test_a_stride_keeps_to_the_instants_it_divides() -> None:
    assert grid_tick(0.001, 2) == 2
    assert grid_tick(2 * GRID_S, 2) == 2
    assert grid_tick(3 * GRID_S, 2) == 4
    assert grid_tick(5 * GRID_S + 1e-6, 3) == 6


def test_callbacks_booked_for_one_instant_share_one_loop_timer() -> None:
    async def scenario() -> tuple[list[str], int, float]:
        loop = asyncio.get_running_loop()
        grid = Grid.of(loop)
        ran: list[str] = []
        timers = TimerCount(loop, lambda callback: getattr(callback, "__self__", None) is grid)
        target = (grid_tick(loop.time()) + 3) * GRID_S  # a grid instant: all three share it
        done = asyncio.Event()
        fired_at = 0.0

        def last() -> None:
            nonlocal fired_at
            fired_at = loop.time()
            ran.append("c")
            done.set()

        grid.call_at(target, lambda: ran.append("a"))
        grid.call_at(target - 0.001, lambda: ran.append("b"))
        grid.call_at(target, last)
        await asyncio.wait_for(done.wait(), 1.0)
        return ran, timers.count, fired_at - grid_tick(target) * GRID_S

    ran, timers, lateness = run_on_virtual_clock(scenario())
    assert sorted(ran) == ["a", "b", "c"]
    assert timers == 1
    assert lateness == pytest.approx(0.0, abs=1e-9)


def test_booking_again_moves_the_call_and_cancel_removes_it() -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        grid = Grid.of(loop)
        ran: list[str] = []

        def moved() -> None:
            ran.append("moved")

        def cancelled() -> None:
            ran.append("cancelled")

        grid.call_at(loop.time() + 0.2, moved)
        grid.call_at(loop.time() + 0.02, moved)
        grid.call_at(loop.time() + 0.02, cancelled)
        grid.cancel(cancelled)
        await asyncio.sleep(0.1)
        assert grid.scheduled(moved) is None
        return ran

    assert run_on_virtual_clock(scenario()) == ["moved"]


def test_a_callback_due_now_stays_booked_until_its_turn_in_the_same_wake_up() -> None:
    """A drain that pushes packets checks whether the playout of this instant is booked; it
    is, so the loop is not armed again for the instant just served. Before, the playout
    looked unbooked, was booked for the past instant and woke the loop a second time."""

    async def scenario() -> tuple[list[str], int, list[int | None], int]:
        loop = asyncio.get_running_loop()
        grid = Grid.of(loop)
        ran: list[str] = []
        timers = TimerCount(loop, lambda callback: getattr(callback, "__self__", None) is grid)
        instant = (grid_tick(loop.time()) + 2) * GRID_S

        def playout() -> None:
            ran.append("playout")

        def drain() -> None:
            ran.append("drain")
            booked = grid.scheduled(playout)
            seen_booked.append(booked)
            if booked is None:
                grid.call_at(instant - GRID_S / 2, playout)  # a deadline already past

        seen_booked: list[int | None] = []
        grid.call_at(instant, drain)
        grid.call_at(instant, playout)
        await asyncio.sleep(4 * GRID_S)
        return ran, timers.count, seen_booked, grid_tick(instant)

    ran, timers, seen, tick = run_on_virtual_clock(scenario())
    assert ran == ["drain", "playout"]
    assert seen == [tick]
    assert timers == 1


def test_a_callback_cancelled_or_moved_by_an_earlier_one_of_its_instant_does_not_run() -> None:
    async def scenario() -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        grid = Grid.of(loop)
        ran: list[tuple[str, int]] = []
        instant = (grid_tick(loop.time()) + 2) * GRID_S

        def at(name: str) -> None:
            ran.append((name, round(loop.time() / GRID_S)))

        def cancelled() -> None:
            at("cancelled")

        def moved() -> None:
            at("moved")

        def first() -> None:
            at("first")
            grid.cancel(cancelled)
            grid.call_at(instant + 2 * GRID_S, moved)

        grid.call_at(instant, first)
        grid.call_at(instant, cancelled)
        grid.call_at(instant, moved)
        await asyncio.sleep(6 * GRID_S)
        return ran

    ran = run_on_virtual_clock(scenario())
    tick = ran[0][1]
    assert ran == [("first", tick), ("moved", tick + 2)]


def test_a_failing_callback_is_reported_and_the_others_still_run() -> None:
    async def scenario() -> tuple[list[str], list[BaseException]]:
        loop = asyncio.get_running_loop()
        errors: list[BaseException] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context["exception"]))
        grid = Grid.of(loop)
        ran: list[str] = []

        def broken() -> None:
            raise RuntimeError("bug in one stream")

        when = loop.time() + 0.02
        grid.call_at(when, broken)
        grid.call_at(when, lambda: ran.append("other"))
        grid.call_at(when + 0.04, lambda: ran.append("later"))
        await asyncio.sleep(0.15)
        return ran, errors

    ran, errors = run_on_virtual_clock(scenario())
    assert ran == ["other", "later"]
    assert [str(error) for error in errors] == ["bug in one stream"]


@pytest.mark.parametrize(
    ("period", "stride"),
    [(GRID_S, 1), (GRID_S / 2, 1), (0.1, 1), (GRID_S / 2, 2), (2 * GRID_S, 2), (0.1, 2)],
)
def test_ticker_keeps_an_absolute_schedule_on_the_grid(period: float, stride: int) -> None:
    """Never late, early by less than the step between the instants it uses (``stride`` grid
    steps): a period shorter than that runs several ticks per wake-up instead of waking the
    loop more often."""
    step = stride * GRID_S

    async def scenario() -> tuple[float, list[tuple[int, float]]]:
        loop = asyncio.get_running_loop()
        ticks: list[tuple[int, float]] = []
        created = loop.time()
        ticker = Ticker(period, lambda index: ticks.append((index, loop.time())), stride)
        await asyncio.sleep(period * 10 + step)
        ticker.stop()
        count = len(ticks)
        await asyncio.sleep(period * 3)
        assert len(ticks) == count, "no tick after stop()"
        return created, ticks

    created, ticks = run_on_virtual_clock(scenario())
    assert [index for index, _ in ticks] == list(range(len(ticks)))
    assert len(ticks) >= 10
    # The schedule's origin is the first instant of its stride at or after the ticker was
    # made, and every tick runs at the last such instant at or before it is due: never late,
    # early by less than one step.
    origin = grid_tick(created, stride) * GRID_S
    assert 0.0 < origin - created < step
    for index, at in ticks:
        due = origin + index * period
        woken = math.floor(due / step + 1e-9) * step
        assert on_grid(at) and round(at / GRID_S) % stride == 0
        assert at == pytest.approx(woken, abs=1e-9), f"tick {index} ran {at - due:+.4f} s from due"
    if period < step:
        wake_ups = {round(at / step) for _, at in ticks}
        assert len(wake_ups) <= math.ceil(len(ticks) * period / step) + 1, (
            "ticks due before the next instant share its wake-up"
        )


def test_a_stalled_loop_runs_the_late_ticks_at_once_and_keeps_the_schedule() -> None:
    """A loop blocked for 0.2 s (a slow callback elsewhere) skips no tick: the ticks that fell due
    meanwhile run together at the next wake-up, and the schedule after it is the original one."""

    async def scenario() -> list[tuple[int, float]]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualClockLoop)
        ticks: list[tuple[int, float]] = []

        def tick(index: int) -> None:
            ticks.append((index, loop.time()))
            if index == 2:
                loop.now += 0.2  # this callback blocked the loop for 0.2 s

        ticker = Ticker(GRID_S, tick)
        await asyncio.sleep(0.5)
        ticker.stop()
        return ticks

    ticks = run_on_virtual_clock(scenario())
    assert [index for index, _ in ticks] == list(range(len(ticks)))
    origin = ticks[0][1]
    late = [index for index, at in ticks if at > origin + index * GRID_S + 1e-9]
    assert late == [3, 4, 5, 6]  # due during the stall: none skipped
    assert len({at for index, at in ticks if 3 <= index <= 7}) == 1  # run at once, with tick 7
    after = [(index, at) for index, at in ticks if index > 7]
    assert after and all(at == pytest.approx(origin + index * GRID_S) for index, at in after)


def test_grid_sleep_ends_on_a_grid_instant_and_a_cancelled_one_leaves_no_booking() -> None:
    async def scenario() -> tuple[float, float, int]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await grid_sleep(0.05)
        woke = loop.time()
        sleeper = asyncio.ensure_future(grid_sleep(10.0))
        await asyncio.sleep(0)
        booked = len(Grid.of(loop)._due)
        sleeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeper
        return woke - started, woke, booked - len(Grid.of(loop)._due)

    slept, woke, released = run_on_virtual_clock(scenario())
    assert on_grid(woke), "woke between grid instants"
    assert 0.05 <= slept < 0.05 + GRID_S  # the first instant at least 0.05 s away
    assert released == 1
