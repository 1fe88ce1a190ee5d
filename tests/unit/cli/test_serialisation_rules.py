"""What the command line's two tables do with a value that is neither an outcome nor a relay
event: a bug upstream, named in the error rather than printed as something it is not."""

from __future__ import annotations

import pytest

from sip2rtmp.cli.events import record
from sip2rtmp.cli.outcomes import explain


def test_something_that_is_not_an_outcome_is_named_in_the_error() -> None:
    with pytest.raises(TypeError) as refused:
        explain("SIGINT")  # type: ignore[arg-type]
    assert str(refused.value) == "not an outcome: 'SIGINT'"


def test_something_that_is_not_a_relay_event_is_named_in_the_error() -> None:
    with pytest.raises(TypeError) as refused:
        record(("status", "TRYING"))  # type: ignore[arg-type]
    assert str(refused.value) == "not a relay event: ('status', 'TRYING')"
