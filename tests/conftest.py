"""Fixtures shared by every test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from sip2rtmp.lab import Lab, LabError

FUZZ_EXAMPLES = 10_000
"""Examples per parser in the `fuzz` profile, which CI runs on the tests marked `fuzz`."""

settings.register_profile("sip2rtmp", deadline=None, max_examples=200)
settings.register_profile(
    "fuzz",
    deadline=None,
    max_examples=FUZZ_EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "mutation", deadline=None, max_examples=50, suppress_health_check=[HealthCheck.too_slow]
)
"""Fewer examples for each of mutmut's many runs of the fast tests (docs/testing.md)."""
settings.load_profile("sip2rtmp")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The local lab, up for the whole session.

    A lab that was already up (`sip2rtmp lab up`, or another test run) is shared and left up;
    one this session started is stopped at the end. A lab that cannot start fails the test.
    """
    the_lab = Lab()
    was_up = the_lab.is_up()
    try:
        the_lab.up()
    except LabError as exc:
        if not was_up:
            the_lab.down()
        pytest.fail(f"the lab could not start: {exc}", pytrace=False)
    yield the_lab
    if not was_up:
        the_lab.down()
