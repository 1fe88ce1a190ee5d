"""Which slates a call renders when its media open: each costs a worker thread tens of
milliseconds of CPU at the call's start."""

from __future__ import annotations

import asyncio

import pytest

from sip2rtmp.media.slate import SlateVideo
from sip2rtmp.media.switch import VideoSwitch
from sip2rtmp.relay import media as relay_media
from tests.unit.relay.test_core import settings
from tests.unit.relay.test_media_offer import opened


@pytest.mark.parametrize(
    ("video", "ringing", "rendered"),
    [
        (True, False, [relay_media.CALLEE_SLATE_SIZE]),  # the stream's when it needs it
        (True, True, [relay_media.CALLEE_SLATE_SIZE, (1280, 720)]),  # the callee rang a while
        (False, False, [(1280, 720)]),  # the stream's video from its first packet
        (False, True, [(1280, 720)]),  # rendered once
    ],
)
def test_a_call_renders_the_slates_it_needs_and_the_streams_once_the_callee_rang(
    monkeypatch: pytest.MonkeyPatch, video: bool, ringing: bool, rendered: list[tuple[int, int]]
) -> None:
    render_slate = relay_media.render_slate
    sizes: list[tuple[int, int]] = []

    def recorded(*args: object) -> SlateVideo:
        slate = render_slate(*args)  # type: ignore[arg-type]
        sizes.append((slate.width, slate.height))
        return slate

    monkeypatch.setattr(relay_media, "render_slate", recorded)

    async def scenario() -> None:
        async with opened(settings(video=video)) as media:
            await asyncio.sleep(0.5)
            if ringing:
                media.prepare_slate()
                await asyncio.sleep(0.5)

    asyncio.run(scenario())
    assert sorted(sizes) == sorted(rendered)


class _CalleeVideo:
    """A live source that never has a frame: the switch opens on it."""

    template = "the callee's template"

    def packets_until(self, seconds: float) -> list[object]:
        return []


@pytest.mark.parametrize("rang", [True, False])
def test_a_stream_opening_on_the_callees_video_takes_a_slate_rendered_while_it_rang(
    monkeypatch: pytest.MonkeyPatch, rang: bool
) -> None:
    """The slate rendered while the callee rang goes to the switch at once; without one, the
    switch has none until the callee's video goes quiet."""

    async def live_source(leg: object) -> _CalleeVideo:
        return _CalleeVideo()

    async def scenario() -> tuple[bool, bool]:
        async with opened(settings(video=True)) as media:
            monkeypatch.setattr(media, "_live_source", live_source)
            if rang:
                media.prepare_slate()
            switch = await media._video_source(live=True)
            await asyncio.sleep(1.0)
            assert isinstance(switch, VideoSwitch)
            return switch._slate is not None, switch.live

    has_slate, live = asyncio.run(scenario())
    assert (has_slate, live) == (rang, True)
