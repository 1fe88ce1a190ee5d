"""The outputs' one video track: the callee's video while it flows, the slate otherwise.

A call's video can stop at any moment (camera off, hold, a far end that stops sending), come
back at another size, or start later than the outputs could wait for. A connection carries one
video stream, so this source switches between the callee's video and the slate on the media
timeline:

- the callee's packets pass while they flow; after ``stall_s`` of media time without one the
  slate takes over, starting with its IDR, and sooner when the callee stopped long after its
  last keyframe: the stream's keyframe interval holds across the switch too;
- the slate gives way to the callee only at a keyframe of the callee's, since the frames
  before it reference pictures the outputs never got. The callee's frames may reach the
  switch after their decode time has passed (placed by capture time, RFC 3550 §6.4.1), so the
  slate keeps the same distance behind the output that they had, and that keyframe lands
  after the slate's last frame rather than on top of it;
- DTS strictly increase across switches (no source has B-frames, so pts == dts and a packet
  may be stamped a little later without breaking anything), and every keyframe carries its
  avcC record, so the outputs announce each change of source or size with a new AVC sequence
  header.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from sip2rtmp.media.packets import KEYFRAME_INTERVAL_S, EncodedPacket
from sip2rtmp.media.passthrough import VIDEO_CLOCK
from sip2rtmp.media.pipeline import VideoSource
from sip2rtmp.media.slate import SlateVideo

_STEP = VIDEO_CLOCK // 1000
"""How far a re-stamped packet moves past the previous one: a millisecond, FLV's timestamp
unit, so the two stay apart on the wire."""

STALL_S = 1.0
"""Media time without a frame from the callee before the slate takes over. Longer than the gaps
live video has without stopping: a few frames at a low frame rate, a keyframe requested after a
loss, frames placed by capture time that reach the outputs a few hundred ms late."""
QUIET_AT_INTERVAL_S = 0.25
"""Media time without a frame, beyond the callee's usual lag, after which the slate takes
over at once when the keyframe interval runs out: longer than the frame gap of live video at
any usable frame rate, so video that flows with a late keyframe is left alone (its keyframe
was asked for), while a callee that stopped long after its last keyframe does not stretch
the interval by ``stall_s``."""


class VideoSwitch:
    """A video source for the pipeline that puts the slate in wherever the callee's video stops.

    It opens on the callee's video (``live``) or on the slate. ``attach`` and ``take_slate``
    run on the event loop (the callee's first keyframe, or the slate, came after the outputs
    started), ``packets_until`` on the media thread; the live source's own queue is the only
    state they share.

    A switch that opens on the callee's video without a slate calls ``slate_wanted`` (from the
    media thread, once) when that video goes quiet: a call whose callee's video never stops
    never renders a slate for the stream, and one that stops has it well before ``stall_s``
    (rendering takes under a tenth of a second). Until ``take_slate`` a stall leaves a hole,
    and the slate then fills in from the stall on.
    """

    def __init__(
        self,
        *,
        slate: SlateVideo | None = None,
        live: VideoSource | None = None,
        stall_s: float = STALL_S,
        keyframe_interval_s: float = KEYFRAME_INTERVAL_S,
        slate_wanted: Callable[[], object] | None = None,
    ) -> None:
        opening = live or slate
        if opening is None:
            raise ValueError("the switch opens on the callee's video or on the slate")
        self.template: Any = opening.template
        """The callee's codec parameters when it is there from the start, else the slate's."""
        self.slate_switches = 0
        """How often the callee's video stopped and the slate took over."""
        self.frames = 0
        """The callee's frames the track carried: not those dropped while waiting for a
        keyframe, nor any stamped past the end of the call."""
        self.keyframes = 0
        """Keyframes among ``frames``."""
        self._slate = slate
        self._live = live
        self._on_live = live is not None
        self._stall = round(stall_s * VIDEO_CLOCK)
        self._interval = round(keyframe_interval_s * VIDEO_CLOCK)
        self._quiet = round(QUIET_AT_INTERVAL_S * VIDEO_CLOCK)
        self._last_live = 0
        self._last_key: int | None = None
        """The decode time of the callee's latest keyframe on the track."""
        self._last_dts = -1
        self._lag = 0
        """How far behind the output's horizon the callee's latest packets came (ticks)."""
        self._slate_wanted = slate_wanted

    @property
    def live(self) -> bool:
        """Whether the outputs carry the callee's video now, rather than the slate."""
        return self._on_live

    def attach(self, live: VideoSource) -> None:
        """Take the callee's video from ``live``, from its next keyframe on."""
        self._live = live

    def take_slate(self, slate: SlateVideo) -> None:
        """The slate to fall back on, for a switch that opened on the callee's video without
        one; until then a stall leaves a hole."""
        self._slate = slate

    def packets_until(self, seconds: float) -> list[EncodedPacket]:
        """The track's packets with decode time up to ``seconds``, from whichever source."""
        live, slate = self._live, self._slate
        horizon = round(seconds * VIDEO_CLOCK)
        incoming = live.packets_until(seconds) if live is not None else []
        if not self._on_live:
            assert slate is not None, "only a switch with a slate leaves the callee's video"
            return self._slate_until(slate, horizon, incoming)
        if incoming:
            self._lag = min(horizon - incoming[0].dts, self._stall)
        packets = self._pass(incoming)
        stalled_at = self._last_live + self._stall
        quiet_at = self._last_live + self._lag + self._quiet
        if self._last_key is not None:
            stalled_at = min(stalled_at, max(self._last_key + self._interval, quiet_at))
        if slate is None and horizon > quiet_at and self._slate_wanted is not None:
            wanted, self._slate_wanted = self._slate_wanted, None
            wanted()
        if slate is not None and horizon > stalled_at:
            self._on_live = False
            self.slate_switches += 1
            slate.restart(stalled_at)
            packets += self._stamp(slate.packets_until((horizon - self._lag) / VIDEO_CLOCK))
        return packets

    def _slate_until(
        self, slate: SlateVideo, horizon: int, incoming: list[EncodedPacket]
    ) -> list[EncodedPacket]:
        """Slate frames, up to the callee's first keyframe among ``incoming`` if there is one.

        The callee's frames before that keyframe cannot be decoded and are left out.
        """
        key = next((index for index, packet in enumerate(incoming) if packet.keyframe), None)
        if key is None:
            return self._stamp(slate.packets_until((horizon - self._lag) / VIDEO_CLOCK))
        # Every slate frame before the callee's keyframe goes out with it, also those the lag
        # still held back: one of them may be the slate's next IDR, and without it the
        # keyframe interval would stretch across the return.
        cut = incoming[key].dts
        frames = slate.packets_until(cut / VIDEO_CLOCK)
        self._on_live = True
        return self._stamp([frame for frame in frames if frame.dts < cut]) + self._pass(
            incoming[key:]
        )

    def _pass(self, packets: list[EncodedPacket]) -> list[EncodedPacket]:
        """The callee's packets, stamped; the stall is measured from the last of them."""
        if packets:
            self._stamp(packets)
            self._last_live = self._last_dts
            self.frames += len(packets)
            keys = [packet.dts for packet in packets if packet.keyframe]
            if keys:
                self._last_key = keys[-1]
                self.keyframes += len(keys)
        return packets

    def _stamp(self, packets: list[EncodedPacket]) -> list[EncodedPacket]:
        """Move any packet at or before the previous one just after it, in place.

        Only the first packets after a switch can need it: each source's own DTS increase.
        """
        last = self._last_dts
        for index, packet in enumerate(packets):
            if packet.dts <= last:
                dts = last + _STEP
                packet = packets[index] = dataclasses.replace(packet, pts=dts, dts=dts)
            last = packet.dts
        self._last_dts = last
        return packets
