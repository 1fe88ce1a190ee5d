"""RFC 4733 telephone-events: send schedule and receive dedup."""

from __future__ import annotations

import struct

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from sip2rtmp.rtp.dtmf import (
    DtmfEvent,
    DtmfParseError,
    DtmfReceiver,
    dtmf_schedule,
    parse_event,
)
from tests.unit.rtp.mutations import fields, mutate


def decoded(payload: bytes) -> tuple[int, bool, int, int]:
    event, flags, duration = struct.unpack("!BBH", payload)
    return event, bool(flags & 0x80), flags & 0x3F, duration


def test_single_digit_like_rfc4733_section5() -> None:
    # 50 ms packets, a 200 ms tone at 8 kHz: updates every 400 units, end sent three times
    sends = dtmf_schedule("1", ptime=0.05, tone=0.2)
    assert [decoded(s.payload) for s in sends] == [
        (1, False, 10, 400),
        (1, False, 10, 800),
        (1, False, 10, 1200),
        (1, True, 10, 1600),
        (1, True, 10, 1600),
        (1, True, 10, 1600),
    ]
    assert [s.marker for s in sends] == [True] + [False] * 5
    assert {s.timestamp_offset for s in sends} == {0}
    assert [s.at for s in sends] == pytest.approx([0, 0.05, 0.1, 0.15, 0.2, 0.25])


def test_digit_string_uses_a_new_timestamp_per_event() -> None:
    sends = dtmf_schedule("9#", tone=0.1, gap=0.1)
    events = sorted({(s.timestamp_offset, decoded(s.payload)[0]) for s in sends})
    assert events == [(0, 9), (1920, 11)]  # last resend of 9 at 120 ms, then ptime + gap
    assert sum(s.marker for s in sends) == 2
    assert [s.at for s in sends] == sorted(s.at for s in sends)


def test_rejects_bad_digits() -> None:
    with pytest.raises(ValueError):
        dtmf_schedule("1x")


def test_receiver_reports_each_digit_once() -> None:
    receiver = DtmfReceiver()
    got = []
    for send in dtmf_schedule("12*", ptime=0.02, tone=0.08):
        got += receiver.feed(1000 + send.timestamp_offset, send.payload)
    assert "".join(e.digit for e in got) == "12*"
    assert all(e.end and e.duration == 640 for e in got)


def test_receiver_survives_lost_end_packets_and_late_retransmits() -> None:
    receiver = DtmfReceiver()
    start = struct.pack("!BBH", 5, 10, 160)
    end = struct.pack("!BBH", 5, 0x80 | 10, 800)
    assert receiver.feed(0, start) == []
    next_start = struct.pack("!BBH", 6, 10, 160)
    assert [e.digit for e in receiver.feed(2000, next_start)] == ["5"]
    assert receiver.feed(0, end) == []  # retransmitted end of the reported event
    assert [e.digit for e in receiver.feed(2000, struct.pack("!BBH", 6, 0x80, 400))] == ["6"]


def test_parse_flash_and_non_dtmf() -> None:
    assert parse_event(struct.pack("!BBH", 16, 0, 0)).digit == "!"
    assert parse_event(struct.pack("!BBH", 40, 0, 0)).digit == ""
    with pytest.raises(DtmfParseError):
        parse_event(b"\x01\x02")


def feed_all(packets: list[tuple[int, bytes]]) -> list[DtmfEvent]:
    """Feed a receiver and check every packet: a payload under the 4 bytes of RFC 4733 §2.3
    raises DtmfParseError, any other is read and reports only events it was fed, at most the
    one it ends and the one before it whose end was lost."""
    receiver = DtmfReceiver()
    fed: list[DtmfEvent] = []
    reported: list[DtmfEvent] = []
    for timestamp, payload in packets:
        if len(payload) < 4:
            with pytest.raises(DtmfParseError):
                receiver.feed(timestamp, payload)
            continue
        fed.append(parse_event(payload))
        events = receiver.feed(timestamp, payload)
        assert len(events) <= 2
        assert all(got in fed for got in events)
        assert all(0 <= got.volume <= 63 for got in events)
        reported += events
    event("parsed" if fed else "rejected: DtmfParseError")
    return reported


@pytest.mark.fuzz
@given(st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.binary(max_size=8)), max_size=30))
def test_receiver_arbitrary_input(packets: list[tuple[int, bytes]]) -> None:
    feed_all(packets)


DIGITS = st.text("0123456789*#ABCD", min_size=1, max_size=6)


@pytest.mark.fuzz
@given(DIGITS, st.integers(0, 0xFFFFFFFF))
def test_valid_schedules_are_received_digit_for_digit(digits: str, start: int) -> None:
    receiver = DtmfReceiver()
    got = []
    for send in dtmf_schedule(digits):
        got += receiver.feed((start + send.timestamp_offset) & 0xFFFFFFFF, send.payload)
    assert "".join(event.digit for event in got) == digits


@st.composite
def event_streams(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    """Telephone-event packets (RFC 4733 §2.3) from their fields, a few with redundant events
    after the first, over a handful of event timestamps."""
    f = draw(fields(1024))
    return [
        (
            f.int(0, 3),
            b"".join(
                struct.pack("!BBH", f.int(0, 255), f.int(0, 255), f.int(0, 0xFFFF))
                for _ in range(f.int(1, 3))
            ),
        )
        for _ in range(f.int(0, 8))
    ]


@st.composite
def damaged_event_streams(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    packets = draw(event_streams())
    f = draw(fields())
    for _ in range(f.int(0, 3) if packets else 0):
        index = f.int(0, len(packets) - 1)
        timestamp, payload = packets[index]
        packets[index] = (timestamp, mutate(payload, f))
    return packets


@pytest.mark.fuzz
@given(damaged_event_streams())
def test_mutated_events_raise_only_dtmf_parse_error(packets: list[tuple[int, bytes]]) -> None:
    reported = feed_all(packets)
    ended = {parse_event(p) for _, p in packets if len(p) >= 4 and parse_event(p).end}
    # an event whose end arrived is reported unless its timestamp was reported before
    assert not ended or reported, "end packets arrived and nothing was reported"
