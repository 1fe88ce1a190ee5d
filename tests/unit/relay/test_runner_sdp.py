"""A callee's unusable SDP: ignored in a 183's early media, a clean failure in the answer."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from sip2rtmp.errors import CallFailed, ExitCode
from sip2rtmp.relay import runner
from sip2rtmp.relay.runner import MediaOptions, Relay
from sip2rtmp.sip.events import CallProgress
from sip2rtmp.sip.sdp import DEFAULT_AUDIO_CODECS, NegotiatedStream, build_offer
from sip2rtmp.status import RelayEvent

GOOD = (
    b"v=0\r\no=- 1 1 IN IP4 198.51.100.5\r\ns=-\r\nc=IN IP4 198.51.100.5\r\nt=0 0\r\n"
    b"m=audio 30000 RTP/AVP 0\r\n"
)
BAD = GOOD.replace(b"30000", b"9" * 4301)  # a plain ValueError from int() in the old parser


class Leg:
    port = 40000

    def __init__(self) -> None:
        self.connected: list[NegotiatedStream] = []

    async def connect(self, stream: NegotiatedStream) -> None:
        self.connected.append(stream)


def relay() -> tuple[Relay, Leg, list[RelayEvent]]:
    events: list[RelayEvent] = []
    settings: Any = SimpleNamespace(
        callee_uri="sip:callee@example.test", audio_codecs=DEFAULT_AUDIO_CODECS, ring_timeout=30
    )
    the_relay = Relay(settings, events.append, MediaOptions())
    leg = Leg()
    the_relay._leg = leg  # type: ignore[assignment]
    return the_relay, leg, events


def test_early_media_with_unusable_sdp_is_ignored_and_the_call_goes_on() -> None:
    the_relay, leg, events = relay()
    offer = build_offer("192.0.2.1", Leg.port, session_id=1)

    async def ringing() -> None:
        the_relay._on_progress(CallProgress(183, "Session Progress", BAD), offer)
        the_relay._on_progress(CallProgress(183, "Session Progress", GOOD), offer)
        await asyncio.sleep(0)

    asyncio.run(ringing())
    assert [stream.rtp_address for stream in leg.connected] == [("198.51.100.5", 30000)]
    assert [event.data.get("code") for event in events] == [183, 183]


def test_an_answer_with_unusable_sdp_is_a_clean_call_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    the_relay, leg, _ = relay()

    class Call:
        answer_sdp = BAD
        on_info = None

    class Sip:
        async def invite(self, *args: object, **kwargs: object) -> Call:
            return Call()

    def no_render(*args: object, **kwargs: object) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    monkeypatch.setattr(runner, "_render_in_background", no_render)
    with pytest.raises(CallFailed) as failure:
        asyncio.run(the_relay._call_and_relay(Sip(), "192.0.2.1"))  # type: ignore[arg-type]
    assert failure.value.exit_code == ExitCode.CALL_FAILED
    assert "SDP" in failure.value.describe() and len(failure.value.describe()) < 200
    assert leg.connected == []
