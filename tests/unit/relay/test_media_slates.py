"""Which slates a call renders when its media open: each costs a worker thread tens of
milliseconds of CPU at the call's start."""

from __future__ import annotations

import asyncio

import pytest

from sip2rtmp.media.slate import SlateVideo
from sip2rtmp.relay import media as relay_media
from tests.unit.relay.test_core import settings
from tests.unit.relay.test_media_offer import opened


@pytest.mark.parametrize(
    ("video", "rendered"),
    [
        (True, [relay_media.CALLEE_SLATE_SIZE]),  # the stream's once the callee's video stops
        (False, [(1280, 720)]),  # the stream's video from its first packet
    ],
)
def test_a_call_opens_with_only_the_slates_it_needs_at_once(
    monkeypatch: pytest.MonkeyPatch, video: bool, rendered: list[tuple[int, int]]
) -> None:
    render_slate = relay_media.render_slate
    sizes: list[tuple[int, int]] = []

    def recorded(*args: object) -> SlateVideo:
        slate = render_slate(*args)  # type: ignore[arg-type]
        sizes.append((slate.width, slate.height))
        return slate

    monkeypatch.setattr(relay_media, "render_slate", recorded)

    async def scenario() -> None:
        async with opened(settings(video=video)):
            await asyncio.sleep(0.5)

    asyncio.run(scenario())
    assert sizes == rendered
