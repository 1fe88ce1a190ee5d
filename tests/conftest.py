"""Fixtures shared by every test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sip2rtmp.errors import LabError
from sip2rtmp.lab import Lab


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
