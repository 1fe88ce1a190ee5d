"""DTMF as users write it and as SIP INFO carries it.

A script like ``"wait:3 1234# wait:1.5 *9"`` enters a conference PIN after the answer: digits
are sent as RFC 4733 events when negotiated, otherwise as SIP INFO.
"""

from __future__ import annotations

from dataclasses import dataclass

from sip2rtmp.config import ConfigError
from sip2rtmp.rtp.dtmf import DTMF_EVENTS

DTMF_DIGITS = frozenset("0123456789*#ABCD")
MAX_INFO_BODY = 1024
"""Largest application/dtmf-relay body read: a real one (`Signal=5\r\nDuration=160\r\n`) is
under 40 bytes, and a larger one is not worth a scan on the event loop."""


@dataclass(frozen=True)
class DtmfStep:
    wait: float = 0.0
    digits: str = ""


@dataclass(frozen=True)
class DtmfScript:
    steps: tuple[DtmfStep, ...]

    @classmethod
    def parse(cls, text: str) -> DtmfScript:
        """Space-separated words: `wait:SECONDS` pauses, anything else is digits to send."""
        steps: list[DtmfStep] = []
        for word in text.split():
            if word.lower().startswith("wait:"):
                try:
                    seconds = float(word[5:])
                except ValueError:
                    raise ConfigError(f"--dtmf: {word!r} is not wait:SECONDS") from None
                if not 0 <= seconds <= 3600:
                    raise ConfigError(f"--dtmf: {word!r} waits too long or negatively")
                steps.append(DtmfStep(wait=seconds))
                continue
            digits = word.upper()
            bad = sorted(set(digits) - DTMF_DIGITS)
            if bad:
                raise ConfigError(f"--dtmf: {''.join(bad)!r} are not DTMF digits (0-9 * # A-D)")
            steps.append(DtmfStep(digits=digits))
        return cls(tuple(steps))


def parse_info_dtmf(content_type: str, body: bytes) -> str | None:
    """The digit of an `application/dtmf-relay` INFO body (`Signal=5`), if it is one.

    The body comes from the network: it is read line by line, once, and one over
    `MAX_INFO_BODY` bytes is not read at all.
    """
    if content_type.partition(";")[0].strip().lower() != "application/dtmf-relay":
        return None
    if len(body) > MAX_INFO_BODY:
        return None
    for line in body.splitlines():
        name, sep, value = line.partition(b"=")
        if sep and name.strip().lower() == b"signal":
            return _signal_digit(value.strip())
    return None


def _signal_digit(value: bytes) -> str | None:
    """A `Signal` value as a key: the key itself (`5`, `#`, `a`) or, as some senders write it
    and PBXes read it, its RFC 4733 §3.2 event code (`11` is `#`, not `1`); flash (16) and
    other codes are no key."""
    number = value[: len(value) - len(value.lstrip(b"0123456789"))]
    if number:
        code = int(number)
        return DTMF_EVENTS[code] if code < len(DTMF_EVENTS) else None
    digit = value[:1].decode("ascii", "replace").upper()
    return digit if digit in DTMF_DIGITS else None
