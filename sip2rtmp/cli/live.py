"""What a person watching a relay on a terminal sees: a live view drawn with rich.

An event sink (`RelayEvent` in, nothing out) that keeps no state the relay relies on; the
sinks for logs and pipes are in `sip2rtmp.cli.summary` and `sip2rtmp.cli.output`, which do not
import rich. Every string that comes from an event passes the Redactor before it is shown.
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
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sip2rtmp.cli.output import Redactor, terminal_safe
from sip2rtmp.cli.summary import (
    FINAL_STATUSES,
    bitrate_text,
    clock_text,
    codec_text,
    rtp_parts,
    size_text,
    video_parts,
)
from sip2rtmp.status import CallStatus, RelayControl, RelayEvent

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


class LiveView:
    """A rich live view of one relay: call, registration, media, RTP quality and outputs.

    Use it as the relay's event sink between `start()` and `stop()` (or as a context manager).
    With a `RelayControl`, keys 0-9 * # send DTMF toward the callee and q hangs up.
    """

    def __init__(
        self,
        redactor: Redactor,
        control: RelayControl | None = None,
        *,
        call_id: str = "",
        console: Console | None = None,
        key_stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        refresh_per_second: float = 4.0,
    ) -> None:
        self._redact = redactor
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
        self._established_at: float | None = None
        self._streaming_at: float | None = None
        self._ended_at: float | None = None
        self._codecs: dict[str, str] = {}
        self._media: list[str] = []
        self._level_dbfs: float | None = None
        self._rtp: dict[str, Any] = {}
        self._video_carries = ""
        """What the stream's video carries, from the latest `video` event."""
        self._video: dict[str, Any] = {}
        self._outputs: dict[str, dict[str, Any]] = {}
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
        data = self._redact.values(event.data)
        now = self._clock()
        name = event.event
        if event.status is not None:
            self._apply_status(event.status, data, now)
        elif name == "registering":
            where = f"{data.get('server', '')} ({data.get('transport', '')})"
            self._registration = f"registering at {where}"
        elif name == "registered":
            self._registration = f"registered, expires in {data.get('expires', '?')} s"
        elif name == "unregistered":
            self._registration = "unregistered"
        elif name == "output":
            self._apply_output(data, now)
        elif name == "media":
            self._media.append(f"{data.get('kind', '?')} from {data.get('remote', '?')}")
        elif name == "dtmf":
            direction = "received" if event.data.get("direction") == "received" else "sent"
            self._dtmf[direction] = (self._dtmf[direction] + str(data.get("digit", "")))[-16:]
            if direction == "sent":
                self._request = ""
        elif name == "video":
            self._video_carries = _video_carries(data)
        elif name == "stats":
            self._apply_stats(data, now)

    def _apply_status(self, status: CallStatus, data: Mapping[str, Any], now: float) -> None:
        self._status = status
        code, reason = data.get("code"), data.get("reason")
        if code is not None:
            self._sip = f"{code} {reason or ''}".strip()
        if status is CallStatus.ESTABLISHED:
            self._established_at = now
            for kind in ("audio", "video"):
                self._codecs[kind] = codec_text(data.get(kind))
        elif status in FINAL_STATUSES:
            self._ended_at = now
            self._end_reason = str(reason or "")
            self._request = ""

    def _apply_output(self, data: Mapping[str, Any], now: float) -> None:
        target = str(data.get("target", "?"))
        row = self._outputs.setdefault(target, {})
        row["state"] = data.get("state", "?")
        if "error" in data:
            row["error"] = data["error"]
        elif row["state"] in ("connecting", "live"):
            row.pop("error", None)
        if row["state"] == "live" and self._streaming_at is None:
            self._streaming_at = now

    def _apply_stats(self, data: Mapping[str, Any], now: float) -> None:
        level = data.get("level_dbfs")
        self._level_dbfs = float(level) if isinstance(level, (int, float)) else None
        rtp = data.get("rtp")
        if isinstance(rtp, dict):
            self._rtp = rtp
        video = data.get("video")
        if isinstance(video, dict):
            self._video = video
        for output in data.get("outputs") or []:
            self._apply_output(output, now)
            self._outputs[str(output.get("target", "?"))].update(output)

    # ---- output -----------------------------------------------------------------------------

    def render(self) -> RenderableType:
        """The current frame; called by rich's refresh thread and by tests."""
        with self._lock:
            return Group(self._summary(), self._output_table(), self._hint())

    def _text(self, value: object, style: str = "") -> Text:
        """Event-derived text (redacted as it arrived), terminal-safe, never parsed as markup."""
        return Text(terminal_safe(str(value)), style=style)

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
        if self._request:
            status.append_text(self._text(f"  ({self._request})", "italic"))
        grid.add_row("Call", status)
        grid.add_row("Registration", self._text(self._registration or "—"))
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
                "   → RTMP H.264 + AAC"
            ),
        )
        if self._media:
            grid.add_row("Media", self._text(", ".join(self._media)))
        grid.add_row("Level", _meter(self._level_dbfs))
        rtp = ", ".join(f"{label} {value}" for label, value in rtp_parts(self._rtp))
        grid.add_row("RTP", self._text(rtp or "—"))
        if self._video_carries or self._video:
            parts = ", ".join(f"{label} {value}" for label, value in video_parts(self._video))
            carries = self._video_carries or str(self._video.get("mode", ""))
            grid.add_row("Video", self._text(f"{carries}   {parts}".strip()))
        if self._dtmf["sent"] or self._dtmf["received"]:
            grid.add_row(
                "DTMF",
                self._text(
                    f"sent {self._dtmf['sent'] or '—'}   received {self._dtmf['received'] or '—'}"
                ),
            )
        title = f"sip2rtmp · {self._redact(self._call_id)}" if self._call_id else "sip2rtmp"
        return Panel(grid, title=self._text(title), title_align="left")

    def _output_table(self) -> Table:
        table = Table(title="Outputs", title_justify="left", expand=True)
        table.add_column("target", overflow="fold")
        table.add_column("state")
        table.add_column("bitrate", justify="right")
        table.add_column("sent", justify="right")
        table.add_column("reconnects", justify="right")
        for target, row in self._outputs.items():
            state = str(row.get("state", "?"))
            shown = f"{state}: {row['error']}" if row.get("error") else state
            table.add_row(
                self._text(target),
                self._text(shown, _OUTPUT_STYLES.get(state, "")),
                self._text(bitrate_text(row.get("bitrate"))),
                self._text(size_text(row.get("bytes"))),
                self._text(row.get("reconnects", 0)),
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


def _video_carries(data: Mapping[str, Any]) -> str:
    """A `video` event in words: ``passthrough 640x480``, ``slate (callee video stopped)``."""
    mode = str(data.get("mode", "?"))
    if "width" in data and "height" in data:
        return f"{mode} {data['width']}x{data['height']}"
    return f"{mode} ({data['reason']})" if data.get("reason") else mode


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
