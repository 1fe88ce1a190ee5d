"""The switch between the callee's video and the slate, pulled tick by tick like the pipeline.

The callee's packets are marked so each one in the output can be told from the slate's; they
wait in a ``ReadyPackets`` queue, which hands them out once their decode time comes, as the
live sources do.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from sip2rtmp.media.packets import EncodedPacket, Track
from sip2rtmp.media.passthrough import VIDEO_CLOCK, ReadyPackets
from sip2rtmp.media.slate import SlateVideo
from sip2rtmp.media.switch import VideoSwitch

FRAME = 3600
TICK_S = 0.02
LIVE_CONFIG = b"live avcC"


class Live:
    """The callee's video: 25 fps frames queued ahead, released ``lag_s`` after they are due."""

    template = "the callee's template"

    def __init__(self, lag_s: float = 0.0) -> None:
        self._ready = ReadyPackets()
        self._lag_s = lag_s

    def send(self, start_s: float, end_s: float, keyframes_s: tuple[float, ...] = ()) -> None:
        """Frames from ``start_s`` up to ``end_s`` (excluded), keyframes at ``keyframes_s``."""
        keys = {round(key * VIDEO_CLOCK) for key in keyframes_s}
        for dts in range(round(start_s * VIDEO_CLOCK), round(end_s * VIDEO_CLOCK), FRAME):
            key = dts in keys
            data = b"live %d" % dts
            self._ready.put(
                EncodedPacket(Track.VIDEO, data, dts, dts, key, LIVE_CONFIG if key else None)
            )

    def packets_until(self, seconds: float) -> list[EncodedPacket]:
        return self._ready.until(seconds - self._lag_s)


@pytest.fixture
def slate() -> SlateVideo:
    return SlateVideo.text("callee", width=64, height=64)


def pull(
    switch: VideoSwitch, until_s: float, events: dict[float, Callable[[], None]] | None = None
) -> list[EncodedPacket]:
    """Everything the switch emits, ticking like the pipeline; ``events`` run at their tick."""
    pending = dict(events or {})
    packets = []
    for tick in range(round(until_s / TICK_S) + 1):
        now = tick * TICK_S
        for when in [when for when in pending if when <= now + 1e-9]:
            pending.pop(when)()
        packets += switch.packets_until(now)
    return packets


def runs(packets: list[EncodedPacket]) -> list[tuple[str, int]]:
    """Which source each stretch of packets came from, and how many."""
    kinds = ("live" if p.data.startswith(b"live") else "slate" for p in packets)
    return [(kind, len(list(group))) for kind, group in itertools.groupby(kinds)]


def seconds(packets: list[EncodedPacket]) -> list[float]:
    return [round(p.dts / VIDEO_CLOCK, 4) for p in packets]


def strictly_increasing(packets: list[EncodedPacket]) -> bool:
    return all(a.dts < b.dts for a, b in itertools.pairwise(packets)) and all(
        p.pts == p.dts for p in packets
    )


def test_a_stall_brings_the_slate_and_a_keyframe_brings_the_callee_back(
    slate: SlateVideo,
) -> None:
    live = Live()
    live.send(0.0, 2.0, keyframes_s=(0.0, 1.0))
    live.send(5.0, 7.0, keyframes_s=(5.52,))  # resumes with P-frames, the keyframe later
    switch = VideoSwitch(slate=slate, live=live)
    assert switch.template == live.template
    packets = pull(switch, 7.0)

    assert strictly_increasing(packets)
    assert runs(packets) == [("live", 50), ("slate", 26), ("live", 37)]
    to_slate, back = packets[50], packets[76]
    assert seconds([packets[49], to_slate, packets[75], back]) == [1.96, 2.96, 5.46, 5.52]
    assert to_slate.keyframe and to_slate.config == slate.config, "the slate opens on its IDR"
    assert back.keyframe and back.config == LIVE_CONFIG, "no callee frame before its keyframe"
    assert seconds([p for p in packets[50:76] if p.keyframe]) == [2.96, 4.96]
    assert switch.live and switch.slate_switches == 1
    assert (switch.frames, switch.keyframes) == (87, 3), "the callee's frames that went out"


@pytest.mark.parametrize(
    ("interval", "last_frame", "slate_frames"), [(2.0, 1.56, 11), (1.5, 1.16, 16)]
)
def test_a_callee_that_stops_long_after_its_keyframe_gets_the_slate_within_the_interval(
    slate: SlateVideo, interval: float, last_frame: float, slate_frames: int
) -> None:
    """Its last keyframe at 0 s, its last frame 0.44 s before the interval (2 s, or
    `--keyframe-interval`) ends: the slate's IDR comes at the end of the interval, not a whole
    stall after the last frame."""
    live = Live()
    live.send(0.0, last_frame + 0.04, keyframes_s=(0.0,))
    switch = VideoSwitch(slate=slate, live=live, keyframe_interval_s=interval)
    packets = pull(switch, 3.0)

    frames = round(last_frame / 0.04) + 1
    assert runs(packets) == [("live", frames), ("slate", slate_frames)]
    assert seconds(packets[frames - 1 : frames + 1]) == [last_frame, interval]
    assert packets[frames].keyframe and strictly_increasing(packets)


def test_video_that_flows_with_a_late_keyframe_is_not_cut_for_the_slate(
    slate: SlateVideo,
) -> None:
    """The interval ran out at 2 s but frames keep coming: the keyframe asked for (here at
    2.4 s) is the callee's to send, and the slate stays out."""
    live = Live(lag_s=0.15)
    live.send(0.0, 3.0, keyframes_s=(0.0, 2.4))
    switch = VideoSwitch(slate=slate, live=live)
    assert runs(pull(switch, 3.1)) == [("live", 74)]
    assert switch.slate_switches == 0


def test_the_slate_keeps_the_lag_of_the_callees_video_so_its_keyframe_lands_after_it(
    slate: SlateVideo,
) -> None:
    """The callee's frames come 0.15 s after their decode time (placed by capture time): the
    slate runs as far behind, and the callee's keyframe keeps its own time when it returns."""
    live = Live(lag_s=0.15)
    live.send(0.0, 2.0, keyframes_s=(0.0, 1.0))
    live.send(5.0, 7.0, keyframes_s=(5.0,))
    switch = VideoSwitch(slate=slate, live=live)
    packets = pull(switch, 7.5)

    assert strictly_increasing(packets)
    assert runs(packets) == [("live", 50), ("slate", 21), ("live", 50)]
    assert seconds(packets[50:71:20]) == [2.96, 4.96]
    assert seconds(packets[71:]) == [round(5.0 + index * 0.04, 4) for index in range(50)]


def test_a_late_first_keyframe_moves_the_stream_from_the_slate(slate: SlateVideo) -> None:
    live = Live()
    live.send(1.40, 3.0, keyframes_s=(1.48, 2.48))
    switch = VideoSwitch(slate=slate)
    assert switch.template is slate.template
    packets = pull(switch, 3.0, {1.5: lambda: switch.attach(live)})

    assert strictly_increasing(packets)
    assert runs(packets) == [("slate", 15), ("live", 38)]
    assert seconds(packets[14:16]) == [1.4, 1.48]
    assert packets[15].keyframe
    assert switch.live and switch.slate_switches == 0


def test_a_callee_keyframe_stamped_before_the_slate_ends_moves_after_it(
    slate: SlateVideo,
) -> None:
    """The callee's video lags the output (placed by capture time): its first frames are
    moved just after the last slate frame, a millisecond apart, and DTS keep increasing."""
    live = Live()
    live.send(1.84, 3.0, keyframes_s=(1.84,))
    switch = VideoSwitch(slate=slate)
    packets = pull(switch, 3.0, {1.92: lambda: switch.attach(live)})

    assert strictly_increasing(packets)
    assert runs(packets) == [("slate", 20), ("live", 29)]
    last_slate = packets[19].dts
    assert last_slate == round(1.9 * VIDEO_CLOCK)
    assert [p.dts - last_slate for p in packets[20:23]] == [90, 180, round(0.02 * VIDEO_CLOCK)]
    assert packets[20].keyframe


def test_the_slates_frames_up_to_the_callees_return_all_go_out_so_keyframes_stay_2s_apart(
    slate: SlateVideo,
) -> None:
    """The callee's video came 0.3 s late before it stopped; its keyframe on return (5.0 s)
    comes at once. The slate's IDR at 4.96 s, which the old lag still held back when that
    keyframe came, goes out before it: no keyframe gap over the 2 s interval."""
    live = Live(lag_s=0.3)
    live.send(0.0, 2.0, keyframes_s=(0.0, 1.0))
    live.send(5.0, 6.0, keyframes_s=(5.0,))
    switch = VideoSwitch(slate=slate, live=live)
    packets = pull(switch, 6.5, {4.0: lambda: setattr(live, "_lag_s", 0.0)})

    assert strictly_increasing(packets)
    keys = seconds([packet for packet in packets if packet.keyframe])
    assert keys == [0.0, 1.0, 2.96, 4.96, 5.0]
    assert max(b - a for a, b in itertools.pairwise(keys)) <= 2.0


def test_a_callee_that_never_sends_gets_the_slate_after_the_stall(slate: SlateVideo) -> None:
    switch = VideoSwitch(slate=slate, live=Live(), stall_s=0.5)
    packets = pull(switch, 1.0)
    assert runs(packets) == [("slate", 6)]
    assert seconds(packets)[0] == 0.5 and packets[0].keyframe
    assert not switch.live and switch.slate_switches == 1


def test_a_switch_opened_on_the_callee_falls_back_once_it_has_the_slate(
    slate: SlateVideo,
) -> None:
    """The outputs did not wait for the slate to be rendered: until it is, a stall leaves a
    hole, then the slate fills in from the stall on."""
    live = Live()
    live.send(0.0, 0.4, keyframes_s=(0.0,))
    switch = VideoSwitch(live=live)
    assert switch.template == live.template
    packets = pull(switch, 1.5, {1.5: lambda: switch.take_slate(slate)})

    assert runs(packets) == [("live", 10), ("slate", 2)]
    assert seconds(packets[10:]) == [1.36, 1.46]
    assert strictly_increasing(packets) and switch.slate_switches == 1


def test_a_switch_without_a_slate_asks_for_one_once_when_the_callees_video_goes_quiet(
    slate: SlateVideo,
) -> None:
    """Video that flows never asks (a passthrough call renders no slate for the stream); its
    last frame at 1.56 s, it asks once 0.25 s later, and the slate handed over then covers
    the stall from its start (2.56 s)."""
    live = Live()
    live.send(0.0, 1.6, keyframes_s=(0.0, 1.0))
    ticks = [round(tick * TICK_S, 4) for tick in range(151)]
    asked: list[float] = []
    switch = VideoSwitch(live=live, slate_wanted=lambda: asked.append(now))
    packets = []
    for now in ticks:
        packets += switch.packets_until(now)
        if now == 2.0:
            assert asked == [1.82], "asked at the first tick past 0.25 s of quiet"
            assert runs(packets) == [("live", 40)]
            switch.take_slate(slate)

    assert asked == [1.82], "and only once"
    assert runs(packets) == [("live", 40), ("slate", 5)]
    assert seconds(packets[40:42]) == [2.56, 2.66] and packets[40].keyframe
    assert strictly_increasing(packets) and switch.slate_switches == 1
