"""Progress of long tokenization (`factory.progress`: a bar in a terminal, plain lines without
one), silent for a handful of items."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from rich import get_console

from factory.progress import track

T = TypeVar("T")
R = TypeVar("R")

# Below this many items the work takes seconds: a bar would only add noise to logs and tests.
SHOW_FROM = 16


def progress_map(fn: Callable[[T], R], items: Sequence[T], label: str, batch: int = 1) -> list[R]:
    """[fn(item) for item in items] with a progress bar (advanced by `batch` per call) when the
    work is long enough to want one. `fn` gets one item, or a list of `batch` items when batch > 1."""
    chunks: list = list(items) if batch == 1 else [list(items[i : i + batch]) for i in range(0, len(items), batch)]
    if len(items) < SHOW_FROM:
        return [fn(c) for c in chunks]
    out: list[R] = []
    with track(get_console(), label, len(items), transient=True) as progress:
        for c in chunks:
            out.append(fn(c))
            progress.advance(len(c) if batch > 1 else 1)
    return out
