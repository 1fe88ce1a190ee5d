"""DTMF as RTP telephone-events (RFC 4733 §2.3, §2.5): send schedule and receive parser.

Pure: the generator says what to send and when; the endpoint owns sequence numbers, SSRC
and the clock.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

__all__ = [
    "DTMF_EVENTS",
    "DtmfEvent",
    "DtmfParseError",
    "DtmfReceiver",
    "DtmfSend",
    "EventClock",
    "dtmf_schedule",
    "parse_event",
]

DTMF_EVENTS = "0123456789*#ABCD"  # event codes 0-15 (RFC 4733 §3.2); 16 is flash
_FLASH = 16
_PAYLOAD = struct.Struct("!BBH")
_WRAP = 1 << 32
_HALF_WRAP = 1 << 31


class DtmfParseError(ValueError):
    """A telephone-event payload that cannot be decoded."""


@dataclass(frozen=True, slots=True)
class DtmfSend:
    """One packet to send ``at`` seconds after the schedule starts.

    ``timestamp_offset`` is added to the audio stream's RTP timestamp at the start.
    """

    at: float
    payload: bytes
    marker: bool
    timestamp_offset: int


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """A decoded telephone-event payload (RFC 4733 §2.3)."""

    event: int
    end: bool
    volume: int
    duration: int

    @property
    def digit(self) -> str:
        """The key as a character; "!" for flash, "" for non-DTMF events."""
        if self.event < len(DTMF_EVENTS):
            return DTMF_EVENTS[self.event]
        return "!" if self.event == _FLASH else ""


def parse_event(payload: bytes) -> DtmfEvent:
    """Decode the first event of a payload (redundant trailing events are ignored)."""
    if len(payload) < 4:
        raise DtmfParseError(f"telephone-event payload too short ({len(payload)} bytes)")
    event, flags, duration = _PAYLOAD.unpack_from(payload)
    return DtmfEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def _event_code(digit: str) -> int:
    if digit == "!":
        return _FLASH
    index = DTMF_EVENTS.find(digit.upper())
    if index < 0 or not digit:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return index


def dtmf_schedule(
    digits: str,
    *,
    clock_rate: int = 8000,
    ptime: float = 0.02,
    tone: float = 0.1,
    gap: float = 0.1,
    volume: int = 10,
) -> list[DtmfSend]:
    """Packets for ``digits`` (0-9 * # A-D, "!" for flash), sorted by send time.

    Per RFC 4733 §2.5.1: every packet of an event carries the event's start timestamp; the
    first has the marker bit; updates every ``ptime`` carry the duration so far; the final
    duration goes out three times with the E bit (§2.5.1.4).
    """
    codes = [_event_code(d) for d in digits]
    step = round(ptime * clock_rate)
    tone_units = round(tone * clock_rate)
    if step <= 0 or tone_units < step or tone_units > 0xFFFF:
        raise ValueError("need 0 < ptime <= tone and the tone shorter than 65535 units")
    if not 0 <= volume <= 63:
        raise ValueError("volume is 0-63 (-dBm0)")
    sends: list[DtmfSend] = []
    start = 0.0
    for code in codes:
        ts = round(start * clock_rate)
        duration = step
        at = start
        first = True
        while duration < tone_units:
            sends.append(DtmfSend(at, _PAYLOAD.pack(code, volume, duration), first, ts))
            first = False
            duration += step
            at += ptime
        final = _PAYLOAD.pack(code, 0x80 | volume, tone_units)
        for _ in range(3):
            sends.append(DtmfSend(at, final, first, ts))
            first = False
            at += ptime
        start = at + gap
    return sends


class EventClock:
    """Timestamps for telephone-events sent in the audio stream's SSRC, on the events' clock.

    An event's timestamp is its start in the event clock's units (RFC 4733 §2.1, §2.5.1.1),
    which need not be the audio codec's: Opus runs at 48 kHz, and a callee may list only
    ``telephone-event/8000``. Events at another clock keep a timeline of their own, which
    starts at the audio timestamp of the first event and advances with the audio's elapsed
    time, converted, so that successive events are as far apart as the time between them
    (one SSRC with two clocks, as RFC 7160 describes legacy senders doing). At the audio's
    own clock it is the audio timestamp itself. A new pair of rates starts a new timeline.
    """

    def __init__(self) -> None:
        self._rates: tuple[int, int] | None = None
        self._origin = 0
        self._last_audio = 0
        self._elapsed = 0
        """Audio clock units since the origin, unwrapped."""

    def timestamp(self, audio_timestamp: int, audio_rate: int, event_rate: int) -> int:
        """The event clock's reading when the audio clock reads ``audio_timestamp``.

        Successive calls must be under 2**31 audio units apart (12 hours at 48 kHz): the
        audio timestamp wraps, and the distance between two readings is taken modulo 2**32.
        """
        if audio_rate <= 0 or event_rate <= 0:
            raise ValueError("clock rates are positive")
        if self._rates != (audio_rate, event_rate):
            self._rates = (audio_rate, event_rate)
            self._origin = self._last_audio = audio_timestamp
            self._elapsed = 0
        step = (audio_timestamp - self._last_audio + _HALF_WRAP) % _WRAP - _HALF_WRAP
        self._last_audio = audio_timestamp
        self._elapsed += step
        return (self._origin + self._elapsed * event_rate // audio_rate) % _WRAP


class DtmfReceiver:
    """Turns a stream of telephone-event packets into each key press, once.

    An event is identified by its RTP timestamp (RFC 4733 §2.5.2.1): the key is reported at
    its first end packet; if every end packet is lost, when the next event begins.
    """

    def __init__(self) -> None:
        self._current: int | None = None
        self._current_event: DtmfEvent | None = None
        self._reported: deque[int] = deque(maxlen=8)

    def feed(self, timestamp: int, payload: bytes) -> list[DtmfEvent]:
        """Events completed by this packet (usually none or one)."""
        event = parse_event(payload)
        reported = self._reported
        if timestamp != self._current and timestamp in reported:
            return []  # a retransmitted end packet of an event already reported
        done: list[DtmfEvent] = []
        if timestamp != self._current:
            previous, current = self._current_event, self._current
            if previous is not None and current is not None and current not in reported:
                reported.append(current)
                done.append(previous)
            self._current = timestamp
        self._current_event = event
        if event.end and timestamp not in reported:
            reported.append(timestamp)
            done.append(event)
        return done
