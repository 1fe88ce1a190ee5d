"""The --dtmf script: `wait:SECONDS` pauses and digit groups, checked before the call starts."""

from __future__ import annotations

import pytest

from sip2rtmp.config import ConfigError
from sip2rtmp.relay.dtmf import DtmfScript, DtmfStep


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("", ()),
        (
            "wait:3 1234# wait:1.5 *9",
            (DtmfStep(wait=3), DtmfStep(digits="1234#"), DtmfStep(wait=1.5), DtmfStep(digits="*9")),
        ),
        ("  wait:12\t abcd\n", (DtmfStep(wait=12), DtmfStep(digits="ABCD"))),
        ("WAIT:0 Wait:3600", (DtmfStep(wait=0), DtmfStep(wait=3600))),
    ],
)
def test_script_steps(text: str, steps: tuple[DtmfStep, ...]) -> None:
    assert DtmfScript.parse(text) == DtmfScript(steps)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("wait:soon", r"^--dtmf: 'wait:soon' is not wait:SECONDS$"),
        ("1 wait:", r"^--dtmf: 'wait:' is not wait:SECONDS$"),
        ("wait:-1", r"^--dtmf: 'wait:-1' waits too long or negatively$"),
        ("wait:3600.5", r"^--dtmf: 'wait:3600.5' waits too long or negatively$"),
        ("wait:nan", r"^--dtmf: 'wait:nan' waits too long or negatively$"),
        ("12x", r"^--dtmf: 'X' are not DTMF digits \(0-9 \* # A-D\)$"),
        ("wait:1 1e2y", r"^--dtmf: 'EY' are not DTMF digits \(0-9 \* # A-D\)$"),
    ],
)
def test_bad_scripts_name_the_word_at_fault(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DtmfScript.parse(text)
