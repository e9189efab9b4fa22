"""CPU TTS backends (piper, kokoro, espeak) rendered in a pool of worker processes.

Processes, not threads: piper/kokoro hold the GIL for their Python glue and espeak forks a
fresh helper per render, so threads do not add cores. Each worker builds the registry backend
once (the pool's initializer) and keeps it for its life; `synthesize_many` maps the requests
over the workers and hands results back in request order.

The workers come from the project's one process pool (`factory.workers`: spawned, and they exit
when the process that started them is gone).
A render's `TTSError` comes back in its slot; a worker that dies (segfault, OOM kill) or
stops answering for `timeout_s` fails the requests it had with a TTSError saying so, and the
pool is rebuilt for the next batch, so nothing hangs and the batch's other slots survive.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from factory.models import Utterance, Voice
from factory.render.base import BatchStats, SynthesisRequest, TTSError, synthesize_one
from factory.workers import kill_pool, spawn_pool

DEFAULT_TIMEOUT_S = 300.0

# --------------------------------------------------------------------------- worker side
_WORKER: dict[str, Any] = {}


def _init(build: Callable[[str, dict[str, Any]], Any], name: str, options_json: str) -> None:
    """Build the backend once per worker; a failure is kept and raised by every task, so the
    caller sees the backend's own message (e.g. what to install), not a broken pool."""
    try:
        _WORKER["backend"] = build(name, json.loads(options_json))
    except Exception as exc:  # noqa: BLE001 — relayed as-is by _render/_identity
        _WORKER["error"] = exc if isinstance(exc, TTSError) else TTSError(f"{type(exc).__name__}: {exc}")


def _backend() -> Any:
    if "error" in _WORKER:
        raise _WORKER["error"]
    return _WORKER["backend"]


def _identity() -> str:
    return _backend().cache_identity()


def _render(text: str, voice: Voice, rate: float) -> Utterance | TTSError:
    try:
        return _backend().synthesize(text, voice, rate=rate)
    except TTSError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 — a bug in one render must not look like a dead worker
        return TTSError(f"{_WORKER.get('backend', '?')!r} failed: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- caller side
class PooledBackend:
    """A registry backend rendered by `processes` worker processes. Same audio bytes and words
    as the backend in-process (each worker is an ordinary instance), same `cache_identity()`,
    so a cache filled either way serves both. `build(name, options)` makes the backend in each
    worker (the registry's `get_backend`: a module-level function, so it travels by name)."""

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        build: Callable[[str, dict[str, Any]], Any],
        processes: int = 2,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.name = name
        self.processes = processes
        self.timeout_s = timeout_s
        self.batch_stats = BatchStats()
        self._build = build
        self._options_json = json.dumps(dict(options or {}), sort_keys=True)
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._identity: str | None = None

    def __repr__(self) -> str:
        return f"PooledBackend({self.name!r}, processes={self.processes})"

    # ------------------------------------------------------------------ pool life
    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = spawn_pool(self.processes, _init, (self._build, self.name, self._options_json))
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Kill a broken or stuck pool's workers; the next batch starts a fresh pool."""
        with self._lock:
            if self._pool is pool:
                self._pool = None
        kill_pool(pool)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __del__(self) -> None:  # best effort; workers also exit with the parent
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ protocol
    def cache_identity(self) -> str:
        """The wrapped backend's identity, asked of a worker (which also proves it builds)."""
        if self._identity is None:
            pool = self._executor()
            try:
                self._identity = pool.submit(_identity).result(timeout=self.timeout_s)
            except (BrokenProcessPool, FutureTimeout) as exc:
                self._discard(pool)
                raise TTSError(f"{self!r}: a worker died or hung while building {self.name}: {exc!r}") from exc
        return self._identity

    def synthesize(self, text: str, voice: Voice, *, rate: float = 1.0) -> Utterance:
        return synthesize_one(self, SynthesisRequest(text, voice, rate))

    def synthesize_many(self, requests: Sequence[SynthesisRequest]) -> list[Utterance | TTSError]:
        if not requests:
            return []
        pool = self._executor()
        # Longest texts first, so the batch does not end with one worker rendering a long turn
        # while the others idle; results are read back in request order.
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i].text))

        def submit_all() -> list[Future]:
            submitted: dict[int, Future] = {}
            for i in order:
                r = requests[i]
                submitted[i] = pool.submit(_render, r.text, r.voice, r.rate)
            return [submitted[i] for i in range(len(requests))]

        try:
            futures: list[Future] = submit_all()
        except BrokenProcessPool:  # broken since the last batch: start over once
            self._discard(pool)
            pool = self._executor()
            futures = submit_all()
        out: list[Utterance | TTSError] = []
        lost: str | None = None  # why the pool was given up, once it was
        for r, fut in zip(requests, futures, strict=True):
            try:
                out.append(fut.result(timeout=self.timeout_s))
                continue
            except TTSError as exc:  # the worker's backend could not be built
                out.append(exc)
                continue
            except FutureTimeout:
                lost = lost or f"no answer within {self.timeout_s:.0f} s (a worker hung)"
            except (BrokenProcessPool, CancelledError):
                lost = lost or "a worker process died (killed, out of memory or crashed)"
            self._discard(pool)  # kills the rest at once: no second wait of timeout_s
            out.append(
                TTSError(
                    f"{self!r}: {lost} while rendering {r.text[:40]!r} (voice {r.voice.id}); "
                    "the pool is restarted for the next batch"
                )
            )
        self.batch_stats.add(len(requests), max(len(requests), self.processes))
        return out
