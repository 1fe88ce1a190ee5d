"""DTMF in SIP INFO bodies (application/dtmf-relay): a network parser, bounded and linear."""

from __future__ import annotations

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from sip2rtmp.relay.dtmf import DTMF_DIGITS, MAX_INFO_BODY, parse_info_dtmf

RELAY = "application/dtmf-relay"


@pytest.mark.parametrize(
    ("content_type", "body", "digit"),
    [
        (RELAY, b"Signal=5\r\nDuration=160\r\n", "5"),
        ("Application/DTMF-Relay; charset=x", b"signal = #\r\n", "#"),
        (RELAY, b"Duration=160\nSIGNAL= a\n", "A"),
        (RELAY, b"  Signal=*", "*"),
        (RELAY, b"Signal=E\r\n", None),
        (RELAY, b"Signal=\r\n", None),
        (RELAY, b"Signal=\xff\r\n", None),
        (RELAY, b"Duration=160\r\n", None),
        ("application/dtmf", b"Signal=5\r\n", None),
    ],
)
def test_info_bodies(content_type: str, body: bytes, digit: str | None) -> None:
    assert parse_info_dtmf(content_type, body) == digit


@pytest.mark.parametrize(
    "body",
    [b"\n" * 65_536 + b"Signal=1", b" " * 65_536 + b"\nSignal=1", b"\r\n" * 32_768 + b"Signal=1"],
    ids=["newlines", "spaces", "CRLFs"],
)
def test_a_64_kb_body_is_not_read(body: bytes) -> None:
    """The old regex (`^\\s*signal...`, multiline) backtracked over every line start: 64 KB of
    newlines held the loop for 12 s. A body this size is now refused before any scan."""
    assert parse_info_dtmf(RELAY, body) is None


def test_a_body_at_the_cap_is_read() -> None:
    body = b"\r\n" * ((MAX_INFO_BODY - 10) // 2) + b"Signal=9"
    assert len(body) <= MAX_INFO_BODY
    assert parse_info_dtmf(RELAY, body) == "9"


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    """A dtmf-relay body from its fields: Signal and Duration lines, any case, spacing, order."""
    digit = draw(st.sampled_from(sorted(DTMF_DIGITS)))
    shape = draw(st.integers(0, 2**16 - 1))  # case, spacing, line ends, order and duration
    name = ("Signal", "signal", "SIGNAL", "sIgNaL")[shape & 3]
    space = ("", " ", "\t", "  ")[shape >> 2 & 3]
    newline = "\n" if shape & 0x10 else "\r\n"
    lines = [f"{name}{space}={space}{digit.lower() if shape & 0x20 else digit}"]
    lines.insert(shape >> 6 & 1, f"Duration={shape >> 7}")
    return (newline.join(lines) + newline).encode(), digit


@pytest.mark.fuzz
@given(bodies())
def test_valid_bodies_give_their_digit(case: tuple[bytes, str]) -> None:
    body, digit = case
    assert parse_info_dtmf(RELAY, body) == digit


def with_junk(body: bytes, inserts: list[tuple[int, bytes]], repeat: int) -> bytes:
    """``body`` with runs of junk inserted, then repeated (to the size cap and past it)."""
    for at, junk in inserts:
        body = body[:at] + junk + body[at:]
    return body * repeat


MUTATED_BODIES = st.builds(
    with_junk,
    bodies().map(lambda case: case[0]),
    st.lists(st.tuples(st.integers(0, 64), st.binary(max_size=6)), max_size=4),
    st.sampled_from((1, 1, 1, 40, 2000)),
)


@pytest.mark.fuzz
@given(MUTATED_BODIES)
def test_mutated_bodies_never_raise(body: bytes) -> None:
    digit = parse_info_dtmf(RELAY, body)
    event("parsed: a digit" if digit is not None else "rejected: no digit")
    assert digit is None or digit in DTMF_DIGITS


@pytest.mark.parametrize(
    ("extra", "digit"),
    [(0, "7"), (1, None)],
    ids=["at the cap", "one byte over"],
)
def test_the_cap_is_inclusive(extra: int, digit: str | None) -> None:
    body = b"Signal=7\r\n".ljust(MAX_INFO_BODY + extra, b" ")
    assert len(body) == MAX_INFO_BODY + extra
    assert parse_info_dtmf(RELAY, body) == digit


@pytest.mark.parametrize(
    ("value", "digit"),
    [
        (b"0", "0"),
        (b"9", "9"),
        (b"10", "*"),
        (b"11", "#"),
        (b"12", "A"),
        (b"15", "D"),
        (b"015", "D"),
        (b"16", None),  # flash is not a key
        (b"99", None),
        (b"5 ", "5"),
        (b"1=2", "1"),
        (b"d", "D"),
        (b"#1", "#"),
        (b"X", None),
        (b"\xff", None),
    ],
)
def test_signal_is_a_key_or_its_event_code(value: bytes, digit: str | None) -> None:
    """`Signal=11` is `#`, not `1`: senders write the key or its RFC 4733 §3.2 event code;
    the name ends at the first `=`."""
    assert parse_info_dtmf(RELAY, b"Signal=" + value + b"\r\nDuration=250\r\n") == digit
