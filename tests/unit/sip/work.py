"""Deterministic measures of a parser's work, so cost tests never read a clock.

`watch(module)` counts the Python lines the module's own functions execute (a per-character
loop shows as lines per character) and what each of its compiled patterns is handed: the
characters from the start position to the end of the subject, per call. A parser that
rescans a growing buffer shows as a total far above the input's size. A pattern whose matches
have a bounded width costs a bounded number of steps per character searched; one of
unbounded width can cost steps per character *squared* (a run of blanks not followed by a
newline, for `[ \t]*\r?\n[ \t]+`), so `largest_unbounded` is the subject size to keep small.
"""

from __future__ import annotations

import re
import re._parser as sre_parse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType, ModuleType
from typing import Any

_SUBJECT_SECOND = frozenset({"sub", "subn"})
_POSITIONAL_POS = frozenset({"match", "fullmatch", "search", "findall", "finditer"})


@dataclass
class Work:
    lines: int = 0
    """Python lines executed in the watched modules' functions."""
    largest: dict[str, int] = field(default_factory=dict)
    """Per pattern name: the most characters it was handed in one call."""
    scanned: dict[str, int] = field(default_factory=dict)
    """Per pattern name: characters handed over all calls."""
    bounded: set[str] = field(default_factory=set)
    """Names of the patterns whose matches are at most `BOUNDED_WIDTH` characters wide."""

    def largest_unbounded(self) -> int:
        """The largest subject handed to a pattern of unbounded width."""
        return max((n for name, n in self.largest.items() if name not in self.bounded), default=0)


BOUNDED_WIDTH = 8


class _CountingPattern:
    def __init__(self, name: str, pattern: re.Pattern[Any], work: Work) -> None:
        self._name = name
        self._pattern = pattern
        self._work = work

    def __getattr__(self, method: str) -> Callable[..., Any]:
        real = getattr(self._pattern, method)

        def counted(*args: Any, **kwargs: Any) -> Any:
            subject = args[1] if method in _SUBJECT_SECOND else args[0]
            pos = kwargs.get("pos", 0)
            if method in _POSITIONAL_POS and len(args) > 1:
                pos = args[1]
            size = len(subject) - pos
            work = self._work
            work.largest[self._name] = max(work.largest.get(self._name, 0), size)
            work.scanned[self._name] = work.scanned.get(self._name, 0) + size
            return real(*args, **kwargs)

        return counted


def _patterns(module: ModuleType) -> Iterator[tuple[str, str | None, re.Pattern[Any]]]:
    for name, value in vars(module).items():
        if isinstance(value, re.Pattern):
            yield name, None, value
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, re.Pattern):
                    yield name, key, item


@contextmanager
def watch(*modules: ModuleType) -> Iterator[Work]:
    work = Work()
    saved: list[tuple[ModuleType, str, Any]] = []
    for module in modules:
        for name, key, pattern in list(_patterns(module)):
            label = name if key is None else f"{name}[{key!r}]"
            if sre_parse.parse(pattern.pattern, pattern.flags).getwidth()[1] <= BOUNDED_WIDTH:
                work.bounded.add(label)
            proxy = _CountingPattern(label, pattern, work)
            if key is None:
                saved.append((module, name, pattern))
                setattr(module, name, proxy)
            else:
                table = getattr(module, name)
                if not any(m is module and n == name for m, n, _ in saved):
                    saved.append((module, name, table))
                    table = dict(table)
                    setattr(module, name, table)
                table[key] = proxy
    files = {module.__file__ for module in modules}

    def local(frame: FrameType, event: str, arg: object) -> Callable[..., Any] | None:
        if event == "line":
            work.lines += 1
        return local

    def tracer(frame: FrameType, event: str, arg: object) -> Callable[..., Any] | None:
        return local if frame.f_code.co_filename in files else None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        yield work
    finally:
        sys.settrace(previous)
        for module, name, value in reversed(saved):
            setattr(module, name, value)
