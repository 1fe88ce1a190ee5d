"""RFC 4733 telephone-events at their boundaries: payload bits, schedule limits, receiver memory."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from sip2rtmp.rtp.dtmf import DtmfEvent, DtmfParseError, DtmfReceiver, dtmf_schedule, parse_event


def payload(event: int, flags: int, duration: int) -> bytes:
    """A telephone-event payload (RFC 4733 §2.3): event, E|R|volume, duration."""
    return struct.pack("!BBH", event, flags, duration)


@pytest.mark.parametrize(
    ("flags", "end", "volume"),
    [
        (0x00, False, 0),
        (0x01, False, 1),  # the volume's low bit is not the E bit
        (0x3F, False, 63),
        (0x40, False, 0),  # R is reserved: ignored on receipt
        (0x7F, False, 63),
        (0x80, True, 0),
        (0xFF, True, 63),
    ],
)
def test_flags_octet_is_end_bit_reserved_bit_and_six_bit_volume(
    flags: int, end: bool, volume: int
) -> None:
    assert parse_event(payload(11, flags, 0x1234)) == DtmfEvent(11, end, volume, 0x1234)


def test_a_payload_shorter_than_four_bytes_says_so() -> None:
    with pytest.raises(DtmfParseError, match=r"^telephone-event payload too short \(3 bytes\)"):
        parse_event(b"\x01\x80\x00")


def test_default_schedule_is_100_ms_tones_20_ms_apart_with_100_ms_gaps() -> None:
    """8 kHz clock, an update every 20 ms, a 100 ms tone (800 units) ended three times
    (RFC 4733 §2.5.1.4), then 100 ms of silence before the next event."""
    sends = dtmf_schedule("12")
    packets = [(0.0, 10, 160), (0.02, 10, 320), (0.04, 10, 480), (0.06, 10, 640)]
    packets += [(0.08, 0x8A, 800), (0.1, 0x8A, 800), (0.12, 0x8A, 800)]
    expected = [
        (start + at, offset, i == 0, payload(code, flags, duration))
        for code, start, offset in ((1, 0.0, 0), (2, 0.24, 1920))
        for i, (at, flags, duration) in enumerate(packets)
    ]
    assert [s.at for s in sends] == pytest.approx([e[0] for e in expected])
    assert [(s.timestamp_offset, s.marker, s.payload) for s in sends] == [e[1:] for e in expected]


def test_default_clock_is_8000_hz() -> None:
    """telephone-event's default rate (RFC 4733 §7.1.1): a one-second tone lasts 8000 units."""
    assert parse_event(dtmf_schedule("1", tone=1.0)[-1].payload).duration == 8000


def test_flash_is_event_16() -> None:
    sends = dtmf_schedule("!")
    assert {parse_event(s.payload).event for s in sends} == {16}


@pytest.mark.parametrize("digits", ["x", "1x", "!x"])
def test_a_bad_digit_is_named(digits: str) -> None:
    with pytest.raises(ValueError, match=r"^not a DTMF digit: 'x'$"):
        dtmf_schedule(digits)


@pytest.mark.parametrize(
    ("options", "duration"),
    [
        ({"ptime": 1 / 8000, "tone": 2 / 8000}, 2),  # one unit between updates
        ({"ptime": 0.05, "tone": 0.05}, 400),  # ptime == tone: the end packets only
        ({"tone": 65535 / 8000}, 0xFFFF),  # the longest duration a payload holds
        ({"volume": 0}, 800),
        ({"volume": 63}, 800),
    ],
)
def test_limits_that_are_accepted(options: dict[str, Any], duration: int) -> None:
    sends = dtmf_schedule("5", **options)
    last = parse_event(sends[-1].payload)
    assert (last.end, last.duration) == (True, duration)
    assert last.volume == options.get("volume", 10)


NEED = r"^need 0 < ptime <= tone and the tone shorter than 65535 units$"
VOLUME = r"^volume is 0-63 \(-dBm0\)$"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ptime": 0.05, "tone": 0.02}, NEED),  # tone shorter than one update
        ({"ptime": 0.0, "tone": 0.0}, NEED),
        ({"ptime": 0.0}, NEED),
        ({"tone": 65536 / 8000}, NEED),  # 16-bit duration (RFC 4733 §2.3) overflows
        ({"volume": -1}, VOLUME),
        ({"volume": 64}, VOLUME),  # 6 bits
    ],
)
def test_limits_that_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dtmf_schedule("", **options)


def test_receiver_remembers_the_last_eight_reported_events() -> None:
    """Events are told apart by their RTP timestamp (RFC 4733 §2.5.2.1). The receiver keeps the
    last eight reported, so a late retransmitted end is dropped, and then forgets: a timestamp
    met again after eight other events (a sender that restarted its timestamps) is a new key."""
    receiver = DtmfReceiver()

    def press(timestamp: int, event: int) -> str:
        return "".join(e.digit for e in receiver.feed(timestamp, payload(event, 0x8A, 800)))

    assert press(0, 1) == "1"
    assert "".join(press(1000 * n, 2) for n in range(1, 8)) == "2" * 7
    assert press(0, 1) == ""  # seven events later: a retransmission
    assert press(8000, 3) == "3"
    assert press(0, 1) == "1"  # eight events later: a new key press
