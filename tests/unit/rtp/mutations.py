"""Hostile edits of well-formed packets, for the property tests of the RTP-side parsers.

Random bytes almost never get past a parser's first check; a valid packet with one to three
edits does, and reaches the deep branches where untyped exceptions hide.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import TypeVar

from hypothesis import strategies as st

from sip2rtmp.rtp.jitterbuffer import Lost
from sip2rtmp.rtp.packet import RtpPacket

T = TypeVar("T")
EDITS = ("flip", "set", "insert", "repeat", "extend", "truncate")
BOUNDARY_BYTES = (0x00, 0x01, 0x03, 0x7F, 0x80, 0xFF)


def mutate(data: bytes, f: Fields) -> bytes:
    """``data`` with one to three edits: cut short, a byte flipped or set to a boundary value
    (lengths and counts become 0 or 255), a run inserted, repeated or added."""
    out = bytearray(data)
    for _ in range(f.int(1, 3)):
        edit = f.pick(EDITS)
        at = f.int(0, len(out))
        if edit == "truncate":
            del out[at:]
        elif edit == "insert":
            out[at:at] = f.bytes(1, 8)
        elif edit == "repeat":
            out[at:at] = out[at : at + f.int(1, 16)] * f.int(1, 4)
        elif edit == "extend":
            out += f.bytes(1, 32)
        elif out:
            index = min(at, len(out) - 1)
            if edit == "flip":
                out[index] ^= 1 << f.int(0, 7)
            else:
                out[index] = f.pick(BOUNDARY_BYTES)
    return bytes(out)


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A value of ``valid`` after `mutate`."""
    return mutate(draw(valid), draw(fields()))


class Fields:
    """Field values cut from one drawn integer.

    A strategy that draws every field on its own pays hypothesis's cost per draw dozens of
    times per example; one wide draw cut into fields keeps 10,000 examples fast, and it still
    shrinks: toward zero, which is every field's smallest value.
    """

    def __init__(self, value: int) -> None:
        self._value = value

    def int(self, low: int, high: int) -> int:
        span = high - low + 1
        self._value, offset = divmod(self._value, span)
        return low + offset

    def flag(self) -> bool:
        return bool(self.int(0, 1))

    def pick(self, options: Sequence[T]) -> T:
        return options[self.int(0, len(options) - 1)]

    def bytes(self, min_size: builtins.int = 0, max_size: builtins.int = 64) -> builtins.bytes:
        """Bytes of a chosen length repeating a short pattern: what a payload holds matters
        less to a depacketizer than how long it is."""
        size = self.int(min_size, max_size)
        pattern = self.int(0, 0xFFFFFFFF).to_bytes(4, "big")
        return (pattern * (size // 4 + 1))[:size]


def fields(bits: int = 512) -> st.SearchStrategy[Fields]:
    """Drawn as bytes, which hypothesis fills evenly: a drawn integer would mostly be small,
    and leave every field but the first at zero."""
    size = bits // 8
    return st.binary(min_size=size, max_size=size).map(
        lambda data: Fields(int.from_bytes(data, "little"))
    )


ACTIONS = ("lose", "mutate", "unmark")


@st.composite
def damaged(draw: st.DrawFn, packets: list[RtpPacket]) -> list[RtpPacket | Lost]:
    """``packets`` with a few of them lost (as the jitter buffer reports it), their payload
    mutated, or their marker bit cleared."""
    items: list[RtpPacket | Lost] = list(packets)
    f = draw(fields(1024))
    for _ in range(f.int(0, 4) if packets else 0):
        index = f.int(0, len(packets) - 1)
        action = f.pick(ACTIONS)
        packet = packets[index]
        seq, ts = packet.sequence_number, packet.timestamp
        if action == "lose":
            items[index] = Lost(seq, ts)
            continue
        payload = mutate(packet.payload, f) if action == "mutate" else packet.payload
        marker = packet.marker and action != "unmark"
        items[index] = RtpPacket(packet.payload_type, seq, ts, packet.ssrc, payload, marker=marker)
    return items
