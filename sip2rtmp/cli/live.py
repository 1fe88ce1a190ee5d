"""What a person watching a relay on a terminal sees: a live view drawn with rich.

An event sink (`RelayEvent` in, nothing out) that keeps no state the relay relies on; the
sinks for logs and pipes are in `sip2rtmp.cli.summary` and `sip2rtmp.cli.output`, which do not
import rich. Events arrive with their secrets already masked (an output's target is its display
form), and any SRTP key a quoted SDP could carry is masked as it is shown; every string from
one is shown terminal-safe, never parsed as markup.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sip2rtmp.cli.outcomes import explain
from sip2rtmp.cli.output import terminal_safe
from sip2rtmp.cli.summary import (
    FINAL_STATUSES,
    bitrate_text,
    clock_text,
    codec_text,
    rtp_parts,
    size_text,
    video_parts,
)
from sip2rtmp.relay.control import RelayControl
from sip2rtmp.relay.events import (
    AudioStats,
    CallStatus,
    Dtmf,
    Established,
    Failed,
    Finished,
    Held,
    MediaArrived,
    MediaChanged,
    NatAddress,
    OutputChanged,
    OutputStats,
    Progress,
    Registered,
    Registering,
    RegistrationRetry,
    RelayEvent,
    Resumed,
    SipReconnected,
    SipServerChanged,
    Stats,
    Trying,
    Unregistered,
    VideoMode,
    VideoStats,
)
from sip2rtmp.sip.sdes import mask_keys

DTMF_KEYS = frozenset("0123456789*#")
HANGUP_KEYS = frozenset("qQ")
METER_FLOOR_DBFS = -60.0
"""The meter's left end: quieter than this is silence on a phone line."""
METER_WIDTH = 30

_STATUS_STYLES = {
    CallStatus.TRYING: "yellow",
    CallStatus.RING: "yellow",
    CallStatus.RING_MEDIA: "yellow",
    CallStatus.SESSION_PROGRESS: "yellow",
    CallStatus.ESTABLISHED: "bold green",
    CallStatus.HOLD: "bold black on yellow",
    CallStatus.FINISH: "bold blue",
    CallStatus.FAILED: "bold red",
    CallStatus.BUSY: "bold red",
}
_OUTPUT_STYLES = {
    "connecting": "yellow",
    "live": "bold green",
    "reconnecting": "bold yellow",
    "failed": "bold red",
    "closed": "dim",
}


class KeyReader:
    """Single key presses from a terminal, read in cbreak mode on a daemon thread.

    cbreak (not raw) keeps Ctrl-C a signal, so the relay's SIGINT handling still works. The
    terminal's settings are restored by `stop()`; on anything but a terminal this does nothing.
    """

    def __init__(self, on_key: Callable[[str], None], stream: IO[str] | None = None) -> None:
        self._on_key = on_key
        self._stream = stream if stream is not None else sys.stdin
        self._fd: int | None = None
        self._saved: list[Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            return
        if not os.isatty(fd):
            return
        self._fd = fd
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        self._thread = threading.Thread(target=self._run, name="key reader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None
        if self._fd is not None and self._saved is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
        self._saved = None

    def _run(self) -> None:
        fd = self._fd
        assert fd is not None
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([fd], [], [], 0.1)
                data = os.read(fd, 32) if ready else b""
            except OSError:
                return
            if ready and not data:
                return
            for key in data.decode("utf-8", "ignore"):
                self._on_key(key)


@dataclass
class _OutputRow:
    """One output as the table shows it: its latest state, error and counters."""

    state: str
    error: str | None = None
    bitrate: int | None = None
    bytes: int | None = None
    reconnects: int = 0


class LiveView:
    """A rich live view of one relay: call, registration, media, RTP quality and outputs.

    Use it as the relay's event sink between `start()` and `stop()` (or as a context manager).
    With a `RelayControl`, keys 0-9 * # send DTMF toward the callee and q hangs up.
    """

    def __init__(
        self,
        control: RelayControl | None = None,
        *,
        call_id: str = "",
        console: Console | None = None,
        key_stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        refresh_per_second: float = 4.0,
    ) -> None:
        self._control = control
        self._call_id = call_id
        self._console = console or Console()
        self._clock = clock
        self._lock = threading.Lock()
        self._keys = KeyReader(self.handle_key, key_stream) if control is not None else None
        self._status: CallStatus | None = None
        self._sip = ""
        self._end_reason = ""
        self._registration = ""
        self._nat: dict[str, str] = {}
        """What we advertise, by kind (`sip`, `media`): the address and where it came from."""
        self._server = ""
        """The SIP server's latest change: a failover or a reopened connection."""
        self._established_at: float | None = None
        self._held_at: float | None = None
        self._held = ""
        """What the callee offered when it put the call on hold (`sendonly`, `inactive`)."""
        self._changes = 0
        self._changed = ""
        """The callee's media after its latest mid-call change, in words."""
        self._streaming_at: float | None = None
        self._ended_at: float | None = None
        self._codecs: dict[str, str] = {}
        self._srtp: str | None = None
        """The SRTP suite of the call's media, None for plain RTP."""
        self._media: list[str] = []
        self._level_dbfs: float | None = None
        self._rtp: AudioStats | None = None
        self._video_carries = ""
        """What the stream's video carries, from the latest `video` event."""
        self._video: VideoStats | None = None
        self._outputs: dict[str, _OutputRow] = {}
        self._dtmf = {"sent": "", "received": ""}
        self._request = ""
        self._live = Live(
            console=self._console,
            get_renderable=self.render,
            refresh_per_second=refresh_per_second,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    # ---- lifetime ---------------------------------------------------------------------------

    def start(self) -> None:
        self._live.start()
        if self._keys is not None:
            self._keys.start()

    def stop(self) -> None:
        """Restore the terminal and leave the final frame on screen."""
        if self._keys is not None:
            self._keys.stop()
        self._live.stop()

    def __enter__(self) -> LiveView:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- input ------------------------------------------------------------------------------

    def __call__(self, event: RelayEvent) -> None:
        with self._lock:
            self._apply(event)
        if self._live.is_started:
            self._live.refresh()

    def handle_key(self, key: str) -> None:
        """One key press: DTMF digits and q go to the relay, anything else is ignored."""
        control = self._control
        with self._lock:
            if control is None or self._status in FINAL_STATUSES:
                return
            if key in DTMF_KEYS:
                self._request = f"DTMF {key} requested"
            elif key in HANGUP_KEYS:
                self._request = "hang-up requested"
            else:
                return
        if key in DTMF_KEYS:
            control.send_dtmf(key)
        else:
            control.hangup()

    def _apply(self, event: RelayEvent) -> None:
        now = self._clock()
        if isinstance(event, (Trying, Progress, Established, Finished, Failed)):
            self._apply_status(event, now)
        elif isinstance(event, (Held, Resumed)):
            self._apply_hold(event, now)
        elif isinstance(event, MediaChanged):
            self._apply_media_change(event)
        elif isinstance(event, Registering):
            self._registration = f"registering at {event.server} ({event.transport})"
        elif isinstance(event, Registered):
            self._registration = f"registered, expires in {event.expires} s"
        elif isinstance(event, Unregistered):
            self._registration = "unregistered"
        elif isinstance(event, RegistrationRetry):
            reason = explain(event.outcome).message
            self._registration = f"refresh failed ({reason}), retrying in {event.retry_in:g} s"
        elif isinstance(event, NatAddress):
            self._nat[event.kind] = f"{event.address} ({event.source})"
        elif isinstance(event, SipServerChanged):
            self._server = f"{event.next}, after {event.failed}: {event.reason}"
        elif isinstance(event, SipReconnected):
            self._server = f"{event.server}, connection reopened"
        elif isinstance(event, OutputChanged):
            self._apply_output(event.target, event.state, event.error, now)
        elif isinstance(event, MediaArrived):
            self._media.append(f"{event.kind} from {event.remote}")
        elif isinstance(event, Dtmf):
            self._apply_dtmf(event)
        elif isinstance(event, VideoMode):
            self._video_carries = _video_carries(event)
        elif isinstance(event, Stats):
            self._apply_stats(event, now)

    def _apply_status(
        self, event: Trying | Progress | Established | Finished | Failed, now: float
    ) -> None:
        if isinstance(event, Trying):
            self._status = CallStatus.TRYING
        elif isinstance(event, Progress):
            self._status = event.status
            self._sip = f"{event.code} {event.reason}".strip()
        elif isinstance(event, Established):
            self._status = CallStatus.ESTABLISHED
            self._sip = f"{event.code} {event.reason}".strip()
            self._established_at = now
            self._codecs = {"audio": codec_text(event.audio), "video": codec_text(event.video)}
            self._srtp = event.srtp
        else:
            self._status = CallStatus.FINISH if isinstance(event, Finished) else event.status
            reason = event.reason if isinstance(event, Finished) else explain(event.outcome).message
            self._ended_at = now
            self._end_reason = reason
            self._request = ""
            self._held_at = None

    def _apply_hold(self, event: Held | Resumed, now: float) -> None:
        """HOLD while the callee holds the call, ESTABLISHED again once it takes it back; the
        call's timer goes on through both."""
        if isinstance(event, Held):
            self._status = CallStatus.HOLD
            self._held = event.direction
            if self._held_at is None:
                self._held_at = now
        else:
            self._status = CallStatus.ESTABLISHED
            self._held_at = None

    def _apply_media_change(self, event: MediaChanged) -> None:
        self._changes += 1
        self._codecs = {"audio": codec_text(event.audio), "video": codec_text(event.video)}
        moved = [
            f"{kind} {codec_text(codec)}" + (f" from {remote}" if remote else "")
            for kind, codec, remote in (
                ("audio", event.audio, event.remote_audio),
                ("video", event.video, event.remote_video),
            )
            if codec is not None
        ]
        self._changed = ", ".join(moved) or "no media"

    def _apply_dtmf(self, event: Dtmf) -> None:
        direction = event.direction
        self._dtmf[direction] = (self._dtmf[direction] + event.digit)[-16:]
        if direction == "sent":
            self._request = ""

    def _apply_output(self, target: str, state: str, error: str | None, now: float) -> _OutputRow:
        row = self._outputs.setdefault(target, _OutputRow(state))
        row.state = state
        if error is not None:
            row.error = error
        elif state in ("connecting", "live"):
            row.error = None
        if state == "live" and self._streaming_at is None:
            self._streaming_at = now
        return row

    def _apply_stats(self, stats: Stats, now: float) -> None:
        self._level_dbfs = stats.level_dbfs
        if stats.rtp is not None:
            self._rtp = stats.rtp
        if stats.video is not None:
            self._video = stats.video
        for output in stats.outputs:
            self._apply_counters(output, now)

    def _apply_counters(self, output: OutputStats, now: float) -> None:
        row = self._apply_output(output.target, output.state, None, now)
        row.bitrate, row.bytes, row.reconnects = output.bitrate, output.bytes, output.reconnects

    # ---- output -----------------------------------------------------------------------------

    def render(self) -> RenderableType:
        """The current frame; called by rich's refresh thread and by tests."""
        with self._lock:
            return Group(self._summary(), self._output_table(), self._hint())

    def _text(self, value: object, style: str = "") -> Text:
        """Event-derived text (masked where the relay made it, SRTP keys masked here),
        terminal-safe, never markup."""
        return Text(terminal_safe(mask_keys(str(value))), style=style)

    def _summary(self) -> Panel:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        if self._status is None:
            status = self._text("STARTING", "dim")
        else:
            status = self._text(self._status.value, _STATUS_STYLES[self._status])
        if self._sip:
            status.append_text(self._text(f"  SIP {self._sip}", "dim"))
        if self._end_reason and self._end_reason != self._sip:
            status.append_text(self._text(f"  {self._end_reason}"))
        if self._status is CallStatus.HOLD and self._held_at is not None:
            held = f"  on hold {self._elapsed(self._held_at)} ({self._held}):"
            status.append_text(self._text(f"{held} slate and silence on the stream", "yellow"))
        if self._request:
            status.append_text(self._text(f"  ({self._request})", "italic"))
        grid.add_row("Call", status)
        grid.add_row("Registration", self._text(self._registration or "—"))
        if self._server:
            grid.add_row("Server", self._text(self._server))
        if self._nat:
            labels = (("sip", "SIP"), ("media", "media"))
            shown = [f"{label} {self._nat[kind]}" for kind, label in labels if kind in self._nat]
            grid.add_row("Address", self._text("   ".join(shown)))
        grid.add_row(
            "Timers",
            self._text(
                f"call {self._elapsed(self._established_at)}"
                f"   stream {self._elapsed(self._streaming_at)}"
            ),
        )
        grid.add_row(
            "Codecs",
            self._text(
                f"audio {self._codecs.get('audio', '—')}   video {self._codecs.get('video', '—')}"
                + (f"   SRTP {self._srtp}" if self._srtp else "")
                + "   → RTMP H.264 + AAC"
            ),
        )
        if self._media:
            grid.add_row("Media", self._text(", ".join(self._media)))
        if self._changes:
            times = "once" if self._changes == 1 else f"{self._changes} times"
            grid.add_row("Changed", self._text(f"{times}, now {self._changed}"))
        grid.add_row("Level", _meter(self._level_dbfs))
        rtp = ", ".join(f"{label} {value}" for label, value in rtp_parts(self._rtp))
        grid.add_row("RTP", self._text(rtp or "—"))
        if self._video_carries or self._video is not None:
            parts = ", ".join(f"{label} {value}" for label, value in video_parts(self._video))
            carries = self._video_carries or (self._video.mode if self._video else "")
            grid.add_row("Video", self._text(f"{carries}   {parts}".strip()))
        if self._dtmf["sent"] or self._dtmf["received"]:
            grid.add_row(
                "DTMF",
                self._text(
                    f"sent {self._dtmf['sent'] or '—'}   received {self._dtmf['received'] or '—'}"
                ),
            )
        title = f"sip2rtmp · {self._call_id}" if self._call_id else "sip2rtmp"
        return Panel(grid, title=self._text(title), title_align="left")

    def _output_table(self) -> Table:
        table = Table(title="Outputs", title_justify="left", expand=True)
        table.add_column("target", overflow="fold")
        table.add_column("state")
        table.add_column("bitrate", justify="right")
        table.add_column("sent", justify="right")
        table.add_column("reconnects", justify="right")
        for target, row in self._outputs.items():
            shown = f"{row.state}: {row.error}" if row.error else row.state
            table.add_row(
                self._text(target),
                self._text(shown, _OUTPUT_STYLES.get(row.state, "")),
                self._text(bitrate_text(row.bitrate)),
                self._text(size_text(row.bytes)),
                self._text(row.reconnects),
            )
        return table

    def _hint(self) -> Text:
        if self._control is None or self._status in FINAL_STATUSES:
            return Text("")
        return Text("keys: 0-9 * # send DTMF   q hang up   Ctrl-C stop", style="dim")

    def _elapsed(self, since: float | None) -> str:
        if since is None:
            return "--:--"
        until = self._ended_at if self._ended_at is not None else self._clock()
        return clock_text(max(until - since, 0.0))


def _video_carries(event: VideoMode) -> str:
    """A `video` event in words: ``passthrough 640x480``, ``slate (callee video stopped)``."""
    if event.width is not None and event.height is not None:
        return f"{event.mode} {event.width}x{event.height}"
    return f"{event.mode} ({event.reason})" if event.reason else event.mode


def _meter(level_dbfs: float | None) -> Text:
    """A bar from -60 dBFS (empty) to 0 dBFS (full): green, yellow near -12, red near clipping."""
    if level_dbfs is None:
        return Text("░" * METER_WIDTH + "  no audio yet", style="dim")
    fraction = min(max((level_dbfs - METER_FLOOR_DBFS) / -METER_FLOOR_DBFS, 0.0), 1.0)
    filled = round(fraction * METER_WIDTH)
    style = "red" if level_dbfs > -3 else "yellow" if level_dbfs > -12 else "green"
    meter = Text("█" * filled, style=style)
    meter.append("░" * (METER_WIDTH - filled), style="dim")
    meter.append(f"  {level_dbfs:6.1f} dBFS")
    return meter
