"""The one process pool: spawned worker processes that exit with the process that started them;
and `tied_to_parent`, the same guarantee for a server started as a child program.

Used by the shard engine (`factory.engine`: embedded LLM, Whisper QA, assembly and encoding) and by
the CPU TTS backends' pool (`factory.render.pool`). Spawned, never forked: the callers run threads
(Prefect, the LLM client's event loop, the TTS service) and a forked child would inherit their
locks. Not forkserver either: its server process outlived SIGKILLed runs. A killed run must not
leave its workers behind, and they would never see their task pipe close (the other workers hold
it open too), so each worker watches its parent and exits when it is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

# Runs in a child before its real program: ask the kernel to SIGKILL it when its parent dies
# (PR_SET_PDEATHSIG, Linux), and exit if the parent is already gone (the race between fork and
# prctl). Then exec the program, so the child keeps its pid and the flag.
_TIED_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def tied_to_parent(argv: list[str]) -> list[str]:
    """The command line that runs `argv` as a child the kernel kills when this process dies,
    however it dies (a server a SIGKILLed run or test session would otherwise leave behind). A
    launcher rather than a `preexec_fn`: the callers run threads, and code between fork and exec
    in a threaded process can deadlock."""
    return [sys.executable, "-c", _TIED_LAUNCHER, str(os.getpid()), *argv]


def can_spawn() -> bool:
    """False in a daemonic process (a Dask worker's default), which may not start children."""
    return not multiprocessing.current_process().daemon


def spawn_pool(
    processes: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
) -> ProcessPoolExecutor:
    """A pool of `processes` spawned workers; each runs `initializer(*initargs)` once after it has
    started watching its parent."""
    return ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer, initargs),
    )


def kill_pool(pool: ProcessPoolExecutor) -> None:
    """Kill a broken or stuck pool's workers at once (a hung worker would block a waiting shutdown)."""
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _start_worker(parent: int, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
    if initializer is not None:
        initializer(*initargs)
