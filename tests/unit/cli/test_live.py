"""The live view and the plain summary, fed scripted relay events and fake keys."""

from __future__ import annotations

import dataclasses
import io
import os
import termios
import threading
import time
from typing import Any

import pytest
from rich.console import Console, RenderableType

from sip2rtmp.cli.live import KeyReader, LiveView
from sip2rtmp.cli.summary import PlainSummary, summary_line
from sip2rtmp.outcomes import MediaTimedOut, Rejected
from sip2rtmp.relay.control import RelayControl
from sip2rtmp.relay.events import (
    AudioStats,
    CallStatus,
    Codec,
    Established,
    Failed,
    Finished,
    Held,
    MediaArrived,
    MediaChanged,
    OutputChanged,
    OutputStats,
    Progress,
    Registered,
    Registering,
    RelayEvent,
    Resumed,
    Stats,
    Trying,
    VideoMode,
    VideoStats,
)
from sip2rtmp.rtp.source import SourceStats

TARGET = "rtmp://a.rtmp.youtube.com/live2/***"
NO_DROPS = SourceStats(0, 0, 0, 0, 0, 0, 0, 0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingControl(RelayControl):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []

    def send_dtmf(self, digits: str) -> None:
        self.requests.append(digits)
        super().send_dtmf(digits)

    def hangup(self) -> None:
        self.requests.append("hangup")
        super().hangup()


def stats(
    level: float, *, duration: float = 65.0, state: str = "live", target: str = TARGET
) -> Stats:
    return Stats(
        duration=duration,
        level_dbfs=level,
        outputs=(OutputStats(target, state, 2_512_000, 12_345_678, 1),),
        rtp=AudioStats(3250, 3, 1, 0, 0, 4.2, 60.0, 0.09, 0, NO_DROPS),
    )


def call_until_established(clock: FakeClock) -> list[tuple[float, RelayEvent]]:
    """(time to advance before the event, event) for a call from REGISTER to ESTABLISHED."""
    return [
        (0, Registering("pbx.example.com:5060", "udp")),
        (0.1, Registered(600)),
        (0.1, Trying("sip:1001@pbx.example.com")),
        (0.5, Progress(CallStatus.RING, 180, "Ringing")),
        (4.0, Established(200, "OK", Codec("PCMU", 8000), Codec("H264", 90000))),
        (0.2, MediaArrived("audio", "192.0.2.7:40000")),
        (0.3, OutputChanged(TARGET, "connecting")),
        (0.5, OutputChanged(TARGET, "live")),
    ]


def feed(
    view: LiveView | PlainSummary, clock: FakeClock, script: list[tuple[float, RelayEvent]]
) -> None:
    for advance, event in script:
        clock.now += advance
        view(event)


def rendered(view: LiveView, width: int = 100) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(view.render())
    return console.export_text()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_call_in_progress_shows_status_timers_codecs_level_and_outputs(clock: FakeClock) -> None:
    view = LiveView(RecordingControl(), call_id="weekly-42", clock=clock)
    feed(view, clock, call_until_established(clock))
    clock.now += 64.0
    view(stats(-20.0))
    text = rendered(view)
    assert "weekly-42" in text
    assert "ESTABLISHED" in text
    assert "SIP 200 OK" in text
    assert "registered, expires in 600 s" in text
    # 65 s since the answer, 64 s since the output went live 1 s later.
    assert "call 01:05" in text
    assert "stream 01:04" in text
    assert "audio PCMU/8000" in text
    assert "video H264/90000" in text
    assert "audio from 192.0.2.7:40000" in text
    assert "loss 0.1%" in text
    assert "jitter 4.2 ms" in text
    assert "buffer 60.0 ms" in text
    assert TARGET in text
    assert "live" in text
    assert "2.51 Mbit/s" in text
    assert "12.3 MB" in text
    assert "q hang up" in text


VIDEO_STATS = VideoStats(
    mode="passthrough",
    slate_switches=0,
    frames=1500,
    keyframes=30,
    dropped=0,
    keyframe_requests=31,
    sent=300,
    received=9000,
    lost=12,
    jitter_ms=1.1,
    depth_ms=40.0,
    av_skew_ms=287,
    source=NO_DROPS,
)


def video_stats() -> Stats:
    return dataclasses.replace(stats(-20.0), video=VIDEO_STATS)


def test_a_video_call_shows_what_the_stream_carries(clock: FakeClock) -> None:
    view = LiveView(RecordingControl(), call_id="weekly-42", clock=clock)
    feed(view, clock, call_until_established(clock))
    assert "Video" not in rendered(view), "no row before anything is known of the video"
    view(VideoMode("slate", reason="no keyframe from the callee"))
    assert "Video         slate (no keyframe from the callee)" in rendered(view)
    view(VideoMode("passthrough", width=640, height=480))
    view(video_stats())
    assert (
        "passthrough 640x480   frames 1500, keyframes 30, lost 12, requests 31, skew 287 ms"
        in rendered(view)
    )


def test_an_audio_only_call_has_no_video_row(clock: FakeClock) -> None:
    view = LiveView(RecordingControl(), call_id="weekly-42", clock=clock)
    feed(view, clock, call_until_established(clock))
    view(stats(-20.0))
    assert "Video" not in rendered(view)


def test_level_meter_grows_with_the_level(clock: FakeClock) -> None:
    view = LiveView(clock=clock)
    assert "no audio yet" in rendered(view)
    view(stats(-45.0))
    quiet = rendered(view)
    view(stats(-6.0))
    loud = rendered(view)
    assert "-45.0 dBFS" in quiet
    assert "-6.0 dBFS" in loud
    bars = [next(line for line in t.splitlines() if "dBFS" in line) for t in (quiet, loud)]
    assert bars[0].count("█") == 8
    assert bars[1].count("█") == 27


def test_ringing_shows_the_last_sip_status_and_no_timers(clock: FakeClock) -> None:
    view = LiveView(clock=clock)
    feed(view, clock, call_until_established(clock)[:4])
    text = rendered(view)
    assert "RING" in text
    assert "SIP 180 Ringing" in text
    assert "call --:--" in text
    assert "stream --:--" in text


def test_timers_stop_when_the_call_ends(clock: FakeClock) -> None:
    control = RecordingControl()
    view = LiveView(control, clock=clock)
    feed(view, clock, call_until_established(clock))
    clock.now += 30.0
    view(Finished("hangup by callee", 31.0))
    clock.now += 100.0
    view(OutputChanged(TARGET, "closed"))
    text = rendered(view)
    assert "FINISH" in text
    assert "hangup by callee" in text
    assert "call 00:31" in text
    assert "closed" in text
    assert "q hang up" not in text
    view.handle_key("5")
    view.handle_key("q")
    assert control.requests == []


def call_row(text: str) -> str:
    return next(line for line in text.splitlines() if "Call " in line)


def test_hold_is_shown_with_how_long_and_what_the_stream_carries(clock: FakeClock) -> None:
    """HOLD while the callee holds (docs/usage.md: slate and silence on the stream); the
    call's timer goes on; back to ESTABLISHED on resume, the hold note gone."""
    control = RecordingControl()
    view = LiveView(control, clock=clock)
    feed(view, clock, call_until_established(clock))
    clock.now += 9.0
    view(Held("sendonly"))
    clock.now += 3.0
    view(Held("inactive"))
    clock.now += 2.0
    held = rendered(view)
    assert "HOLD" in call_row(held)
    assert "on hold 00:05 (inactive): slate and silence on the stream" in held
    assert "call 00:15" in held
    assert "q hang up" in held, "the keys still work while on hold"
    clock.now += 5.0
    view(Resumed())
    resumed = rendered(view)
    assert "ESTABLISHED" in call_row(resumed)
    assert "HOLD" not in resumed and "on hold" not in resumed
    assert "call 00:20" in resumed


def test_hold_stands_out_from_every_other_status(clock: FakeClock) -> None:
    """HOLD is drawn in a style of its own: black on yellow."""
    view = LiveView(clock=clock)
    view(Held("sendonly"))
    console = Console(record=True, width=100, file=io.StringIO(), force_terminal=True)
    console.print(view.render())
    styled = console.export_text(styles=True)
    assert "\x1b[1;30;43mHOLD" in styled
    view(Resumed())
    console.print(view.render())
    assert "\x1b[1;32mESTABLISHED" in console.export_text(styles=True)


def test_a_call_that_ends_on_hold_shows_its_end_not_the_hold(clock: FakeClock) -> None:
    view = LiveView(clock=clock)
    feed(view, clock, call_until_established(clock))
    view(Held("sendonly"))
    view(Finished("hangup by callee", 12.0))
    text = rendered(view)
    assert "FINISH" in call_row(text) and "on hold" not in text


def test_a_media_change_shows_the_new_codecs_and_where_the_media_comes_from(
    clock: FakeClock,
) -> None:
    view = LiveView(clock=clock)
    feed(view, clock, call_until_established(clock))
    assert "Changed" not in rendered(view)
    view(MediaChanged(Codec("PCMA", 8000), None, "198.51.100.40:40000", ""))
    text = rendered(view)
    assert "audio PCMA/8000   video none" in text
    assert "Changed       once, now audio PCMA/8000 from 198.51.100.40:40000" in text
    view(MediaChanged(Codec("PCMU", 8000), Codec("H264", 90000), "", "198.51.100.40:40002"))
    text = rendered(view)
    assert "audio PCMU/8000   video H264/90000" in text
    assert "2 times, now audio PCMU/8000, video H264/90000 from 198.51.100.40:40002" in text


def test_a_failed_output_shows_its_error(clock: FakeClock) -> None:
    view = LiveView(clock=clock)
    view(OutputChanged(TARGET, "failed", "refused"))
    view(Failed(MediaTimedOut(15.0)))
    text = rendered(view)
    assert "FAILED" in text
    assert "no media from the callee within 15 s" in text
    assert "failed: refused" in text


def test_a_rejected_call_shows_the_status_line_the_outcome_explains(clock: FakeClock) -> None:
    view = LiveView(clock=clock)
    view(Failed(Rejected("INVITE", 486, "Busy Here", "pbx.test")))
    text = rendered(view)
    assert "BUSY" in text and "callee busy or declined (SIP 486 Busy Here)" in text


def test_markup_in_event_text_is_shown_literally(clock: FakeClock) -> None:
    view = LiveView(clock=clock)
    view(Failed(Rejected("INVITE", 500, "[bold]Nope[/bold]", "pbx.test")))
    assert "[bold]Nope[/bold]" in rendered(view)


def test_keys_map_to_dtmf_and_hangup() -> None:
    control = RecordingControl()
    view = LiveView(control)
    for key in "12x*#0 q":
        view.handle_key(key)
    assert control.requests == ["1", "2", "*", "#", "0", "hangup"]
    assert control.take_dtmf() == ["1", "2", "*", "#", "0"]
    assert control.hangup_requested
    assert "hang-up requested" in rendered(view)


def test_without_control_keys_do_nothing_and_no_hint() -> None:
    view = LiveView()
    view.handle_key("1")
    assert "hang up" not in rendered(view)


def test_key_reader_reads_a_terminal_in_cbreak_mode_and_restores_it() -> None:
    leader, follower = os.openpty()
    keys: list[str] = []
    got_all = threading.Event()

    def on_key(key: str) -> None:
        keys.append(key)
        if len(keys) == 3:
            got_all.set()

    with os.fdopen(follower, "r", closefd=True) as terminal:
        before = termios.tcgetattr(follower)
        reader = KeyReader(on_key, terminal)
        reader.start()
        during = termios.tcgetattr(follower)
        assert not during[3] & termios.ICANON
        assert during[3] & termios.ISIG, "Ctrl-C must stay a signal"
        os.write(leader, b"7#q")
        assert got_all.wait(5)
        reader.stop()
        assert termios.tcgetattr(follower) == before
    os.close(leader)
    assert keys == ["7", "#", "q"]


def test_key_reader_is_a_no_op_off_a_terminal() -> None:
    """Piped input (a script feeding stdin) is not the user's keyboard: nothing is read from
    it and no key reaches the relay."""
    read, write = os.pipe()
    keys: list[str] = []
    os.write(write, b"12q")
    with os.fdopen(read, "rb", buffering=0) as pipe:
        reader = KeyReader(keys.append, pipe)  # type: ignore[arg-type]
        reader.start()
        started = reader._thread is not None
        time.sleep(0.3)
        reader.stop()
        os.close(write)
        left = pipe.read()
    assert not started, "a reader thread was started on a pipe"
    assert keys == []
    assert left == b"12q", "the reader consumed input that was not typed"


def test_start_and_stop_leave_the_final_frame(clock: FakeClock) -> None:
    console = Console(record=True, width=100, file=io.StringIO())
    with LiveView(RecordingControl(), console=console, clock=clock) as view:
        feed(view, clock, call_until_established(clock))
        view(Finished("max duration reached", 12.0))
    assert "max duration reached" in console.export_text()


def test_plain_summary_throttles_stats_and_flushes_the_last_before_the_end(
    clock: FakeClock,
) -> None:
    stream = io.StringIO()
    summary = PlainSummary(stream=stream, every=10.0, clock=clock)
    feed(summary, clock, call_until_established(clock))
    for second in range(1, 26):
        clock.now += 1.0
        if second % 2 == 0:
            summary(stats(-20.0 - second, duration=second))
    summary(Finished("hangup by callee", 24.0))
    lines = stream.getvalue().splitlines()
    stat_lines = [line for line in lines if " stats " in line]
    # Stats at 2..24 s: printed at 2, 12 and 22 s, and the one at 24 s before FINISH.
    assert [line.split("duration=")[1].split()[0] for line in stat_lines] == [
        "00:02",
        "00:12",
        "00:22",
        "00:24",
    ]
    assert lines[-2] == stat_lines[-1]
    assert " FINISH " in lines[-1]
    assert any(" ESTABLISHED " in line for line in lines)


def test_summary_line_is_compact() -> None:
    line = summary_line(stats(-23.4))
    words = line.split(" ")
    assert words[1:] == [
        "stats",
        "duration=01:05",
        "rtp=loss:0.1%,jitter:4.2ms,buffer:60.0ms,received:3250,lost:3,late:1",
        "level=-23.4dBFS",
        f"output={TARGET},live,2.51Mbit/s,12.3MB,reconnects:1",
    ]


def test_summary_line_of_a_video_call_says_what_the_video_carries() -> None:
    words = summary_line(video_stats()).split(" ")
    assert "video=passthrough,frames:1500,keyframes:30,lost:12,requests:31,skew:287ms" in words
    without_skew = dataclasses.replace(VIDEO_STATS, av_skew_ms=None)
    event = dataclasses.replace(stats(-20.0), video=without_skew)
    assert "video=passthrough,frames:1500,keyframes:30,lost:12,requests:31" in summary_line(
        event
    ).split(" ")


class CountingView(LiveView):
    """A live view that notes which threads drew frames and whether drawing ever failed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.drawn_by: list[str] = []
        self.errors: list[BaseException] = []
        super().__init__(*args, **kwargs)

    def render(self) -> RenderableType:
        self.drawn_by.append(threading.current_thread().name)
        try:
            frame = super().render()
            # draw it now, as rich does, so a frame torn by a concurrent update shows here
            Console(width=100, file=io.StringIO()).print(frame)
        except BaseException as error:
            self.errors.append(error)
            raise
        return frame


def refreshed_elsewhere(view: CountingView) -> list[str]:
    """The frames drawn by a thread other than the one sending events."""
    return [name for name in view.drawn_by if name != threading.current_thread().name]


def test_refresh_from_another_thread_is_safe() -> None:
    """Events arrive on the relay's thread while rich redraws on its own: every frame drawn
    concurrently is whole, and the last one shows the last event."""
    console = Console(record=True, width=100, file=io.StringIO(), force_terminal=True)
    view = CountingView(console=console, refresh_per_second=50)
    crashed: list[BaseException | None] = []
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: crashed.append(args.exc_value)
    view.start()
    try:
        deadline = time.monotonic() + 10.0  # a loaded machine draws late, not never
        level = -60.0
        while time.monotonic() < deadline and len(refreshed_elsewhere(view)) < 5:
            view(stats(level))
            view(OutputChanged(f"rtmp://h/app/{level}/***", "live"))
            level = -60.0 if level > -1 else level + 1
        view(stats(-7.5))
    finally:
        view.stop()
        threading.excepthook = previous_hook
    assert len(refreshed_elsewhere(view)) >= 5, "rich's refresh thread drew no frames meanwhile"
    assert view.errors == [] and crashed == []
    assert "-7.5 dBFS" in rendered(view)
