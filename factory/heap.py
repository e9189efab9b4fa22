"""Give the C heap's free memory back to the operating system after each shard.

A run's flow process (and, on Dask or Ray, each worker) makes and frees many mid-sized buffers
from many threads: renders, parsed scripts, HTTP bodies, parquet pages. glibc keeps what they free
inside its per-thread arenas for reuse and returns it to the system only from the top of each
heap, so the free memory between live blocks stays resident, and over a long run more arenas
reach their own high-water: the flow's peak RSS grew with the run's length although what it held
did not (`benchmarks/results/flow_memory_trim.md`: at 1,000 stand-in dialogues 233 MiB free inside
the arenas next to 89 MiB in use). `malloc_trim(0)` hands every free page of every arena back
(madvise), so what a process keeps between shards is what it uses. A no-op where the C library is
not glibc (musl, macOS): there the memory is only not given back early.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; musl has none
    except (OSError, AttributeError):
        return None


class _MallInfo2(ctypes.Structure):
    _fields_ = [  # glibc's struct mallinfo2 (2.33+), every field a size_t
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@cache
def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).mallinfo2  # glibc 2.33+
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return fn


def heap_usage() -> tuple[int, int] | None:
    """This process's C heap as (bytes in use, bytes free but kept inside the arenas), over every
    arena (glibc's `mallinfo2`); None off glibc. What the benchmarks read to tell a leak (in use
    grows) from memory kept for reuse (free grows); it walks every arena, so not per dialogue."""
    info = _mallinfo2()
    if info is None:
        return None
    m = info()
    return int(m.uordblks), int(m.fordblks)


def release_free_heap() -> bool:
    """Return the C heap's free pages to the system; True where glibc gave some back. Cheap
    (a walk over the arenas' free lists: milliseconds), so it runs once per shard."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
