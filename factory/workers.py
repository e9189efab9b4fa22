"""The one process pool: spawned worker processes that exit with the process that started them.

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
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any


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
