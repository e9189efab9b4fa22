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
from functools import cache
from typing import Any


@cache
def _glibc(name: str) -> Any | None:
    """glibc's function `name`, or None off glibc (another OS, musl, or a glibc too old for it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
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


def heap_usage() -> tuple[int, int] | None:
    """This process's C heap as (bytes in use, bytes free but kept inside the arenas), over every
    arena (glibc's `mallinfo2`); None off glibc. What the benchmarks read to tell a leak (in use
    grows) from memory kept for reuse (free grows); it walks every arena, so not per dialogue."""
    mallinfo2 = _glibc("mallinfo2")  # glibc 2.33+
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _MallInfo2
    m = mallinfo2()
    return int(m.uordblks), int(m.fordblks)


def release_free_heap() -> bool:
    """Return the C heap's free pages to the system; True where glibc gave some back. Cheap
    (a walk over the arenas' free lists: milliseconds), so it runs once per shard."""
    malloc_trim = _glibc("malloc_trim")
    return bool(malloc_trim(0)) if malloc_trim is not None else False
