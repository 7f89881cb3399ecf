"""Deterministic work counts for "linear time" claims, so no unit test reads a clock.

A timed assertion (`elapsed < 3 s`) fails on a loaded CI machine and passes a quadratic algorithm on a fast one.
Instead `work(fn, *args, modules=...)` counts the steps `fn` takes inside the given modules: every Python line
executed there (`sys.settrace`, other modules are not traced) plus every call of a module-level compiled regex
and every match it yields (the patterns are swapped for counting proxies while `fn` runs). The count is the
same on any machine, and `assert_linear` compares it on an input and on one `scale` times larger: a linear
algorithm grows about `scale` times, a quadratic one about `scale**2` times.

What it cannot see is work inside one regex call (backtracking in C): the patterns are written without
overlapping quantifiers for that reason, and benchmarks/parser_speed.py times the same inputs at two sizes.
Speed itself (seconds) is measured there, never here.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from types import FrameType, ModuleType
from typing import Any


class _CountingPattern:
    """A stand-in for a compiled pattern that adds one to `counter[0]` per call and per match yielded."""

    def __init__(self, pattern: re.Pattern[str], counter: list[int]) -> None:
        self._p, self._n = pattern, counter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._p, name)

    def _iter(self, it: Iterator[re.Match[str]]) -> Iterator[re.Match[str]]:
        for m in it:
            self._n[0] += 1
            yield m

    def finditer(self, *a: Any, **kw: Any) -> Iterator[re.Match[str]]:
        self._n[0] += 1
        return self._iter(self._p.finditer(*a, **kw))

    def findall(self, *a: Any, **kw: Any) -> list[Any]:
        out = self._p.findall(*a, **kw)
        self._n[0] += 1 + len(out)
        return out

    def sub(self, *a: Any, **kw: Any) -> str:
        out, k = self._p.subn(*a, **kw)
        self._n[0] += 1 + k
        return out

    def subn(self, *a: Any, **kw: Any) -> tuple[str, int]:
        out, k = self._p.subn(*a, **kw)
        self._n[0] += 1 + k
        return out, k

    def split(self, *a: Any, **kw: Any) -> list[str]:
        out = self._p.split(*a, **kw)
        self._n[0] += len(out)
        return out

    def match(self, *a: Any, **kw: Any) -> re.Match[str] | None:
        self._n[0] += 1
        return self._p.match(*a, **kw)

    def fullmatch(self, *a: Any, **kw: Any) -> re.Match[str] | None:
        self._n[0] += 1
        return self._p.fullmatch(*a, **kw)

    def search(self, *a: Any, **kw: Any) -> re.Match[str] | None:
        self._n[0] += 1
        return self._p.search(*a, **kw)


def work(fn: Callable[..., Any], *args: Any, modules: tuple[ModuleType, ...]) -> int:
    """Steps `fn(*args)` takes inside `modules`: Python lines executed plus regex calls and matches."""
    files = {m.__file__ for m in modules}
    counter = [0]

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            counter[0] += 1
        return local

    def start(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename in files else None

    swapped = [(m, name, p) for m in modules for name, p in vars(m).items() if isinstance(p, re.Pattern)]
    previous = sys.gettrace()
    for m, name, p in swapped:
        setattr(m, name, _CountingPattern(p, counter))
    sys.settrace(start)
    try:
        fn(*args)
    finally:
        sys.settrace(previous)
        for m, name, p in swapped:
            setattr(m, name, p)
    return counter[0]


def assert_linear(
    make: Callable[[int], Any], fn: Callable[..., Any], n: int, *, modules: tuple[ModuleType, ...], scale: int = 8
) -> tuple[int, int]:
    """`fn(make(scale * n))` takes at most 1.5 * `scale` times the steps of `fn(make(n))` (quadratic work would
    take about `scale` times more than that). Returns both counts."""
    small = work(fn, make(n), modules=modules)
    large = work(fn, make(scale * n), modules=modules)
    assert small > 0, "nothing was counted: is `fn` in `modules`?"
    assert large <= 1.5 * scale * small, f"work grew {large / small:.1f}x for a {scale}x larger input ({small} -> {large})"
    return small, large
