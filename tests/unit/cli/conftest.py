"""Fixtures the CLI tests share."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The program's logger as it was before the test configured it (handlers closed)."""
    root = logging.getLogger("sip2rtmp")
    saved = (root.handlers[:], root.level, root.propagate)
    yield
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]
