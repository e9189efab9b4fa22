"""factory.heap: the C heap's free memory goes back to the system when a shard ends. Measured from
the kernel's resident set size of a fresh process, not from anything the module reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A thread (its own glibc arena) makes ~190 MiB of 64 KiB blocks, under the mmap threshold so they
# live in the heap, keeps every 16th so nothing can be trimmed from a heap's top alone, and frees
# the rest: the freed memory stays resident until someone gives it back.
_PROGRAM = """
import sys, threading
import psutil
from factory.heap import heap_usage, release_free_heap

def work(keep):
    blocks = [b"\\x01" * (64 * 1024) for _ in range(3000)]
    keep.extend(blocks[::16])

keep = []
thread = threading.Thread(target=work, args=(keep,))
thread.start()
thread.join()
before = psutil.Process().memory_info().rss
in_use, free = heap_usage()
released = release_free_heap() if sys.argv[1] == "release" else None
after = psutil.Process().memory_info().rss
print(before // 2**20, after // 2**20, released, in_use // 2**20, free // 2**20)
"""


def _run(mode: str) -> tuple[int, int, str, int, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROGRAM, mode], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), int(out[1]), out[2], int(out[3]), int(out[4])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim: Linux only")
def test_free_heap_memory_goes_back_to_the_system() -> None:
    before, after, released, _, _ = _run("release")
    assert before > 150, f"the program did not hold its blocks ({before} MiB)"
    assert released == "True"
    assert before - after > 120, f"RSS {before} -> {after} MiB: the freed blocks stayed resident"
    # the control: without the release the same freed memory stays resident
    kept_before, kept_after, _, _, _ = _run("keep")
    assert kept_after > 150 and kept_before - kept_after < 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallinfo2: Linux only")
def test_heap_usage_tells_memory_in_use_from_memory_kept_free() -> None:
    # ~12 MiB of blocks kept (every 16th of ~190 MiB), the rest freed but kept inside the arena
    _, _, _, in_use, free = _run("keep")
    assert 8 <= in_use < 60, f"in use {in_use} MiB: the kept blocks are 12 MiB"
    assert free > 150, f"free in the arenas {free} MiB: about 175 MiB were freed"
