"""The shard engine: the one way dialogues are made. A shard's dialogues stream through the
stages as a pipeline, so while the TTS renders some dialogues the LLM already writes the next and
the worker processes check and assemble others: neither an LLM server nor a TTS model waits for
the other stage to finish a whole shard.

    plan (in process) -> script -> render -> QA -> assemble (timeline, mix, augment, encode)

- script: with the HTTP backend, 2 x `llm.concurrency` dialogues write at once from threads, a new
  one starting as soon as one is done (the backend's asyncio loop keeps at most `llm.concurrency`
  requests in flight, across every shard of the process; the other writers' next requests wait
  for a slot, so the server stays full while a thread prepares its dialogue's next turn). The
  writers' slots are the process's, the earliest shard's dialogues first, so the shards of a run
  finish writing one after another, not together. With the embedded llama.cpp model,
  `run.processes` dialogues at once in the worker processes.
- render: the renders of scripted dialogues go out in one `synthesize_many` call per TTS backend
  once they fill the backend's batch (or nothing more is being written): padded GPU batches, a
  process pool or a TTS service (two calls out, so the next one queues at the service while one
  renders), through the TTS cache.
- QA: one Whisper pass per channel of each dialogue (`factory.render.qa.check_together`), in the
  worker processes; pieces that fail go back to the render stage slower and are checked alone.
- assemble: timeline, mix, augmentation, the FLAC encode and the audit gate row, in the workers.

At most `run.wave_size` dialogues are in a shard's pipeline at once (null: 4 x the script stage's
slots, at least 16), from admission until their result has left in `indices` order: a dialogue
that finishes early waits in a reorder buffer inside that window, so what a shard holds is
bounded by the window, not by the shard's size (`build_shard`'s `sink` streams the results to the
shard's parquet writer). "One
at a time" is a pipeline of one without a process pool (`run.wave_size=1 run.processes=1`), which
is also how `regenerate` remakes one sample: the same stage functions with the same inputs, so the
same bytes whatever the timing, the window or the number of processes (every draw is keyed by
sample and stage). A dialogue that fails any stage re-enters the pipeline with its next attempt
key. CPU-bound stages run in processes, not threads (`run.processes`; 1 = a thread of this
process). The stage timers are busy seconds: the time at least one job of the stage ran.
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from factory.asr import load_model
from factory.models import BackendName, Channel, Sample, Script, Utterance
from factory.render.base import SynthesisRequest, TTSError
from factory.render.cache import CachedBackend
from factory.render.qa import QAResult
from factory.render.service_backend import ServiceBackend
from factory.run.records import ShardStats
from factory.runtime import Runtime
from factory.stages import (
    VOICE_PROMPT,
    PieceKey,
    Plan,
    SampleRejected,
    SampleResult,
    assemble,
    attempt_key,
    cache_key,
    finish_render,
    finished,
    piece_channel,
    plan_sample,
    qa_renders,
    qa_retry,
    rejected_result,
    rejection_reason,
    render_batch,
    render_requests,
    retry_request,
    sample_id,
    script_for,
)
from factory.workers import can_spawn, spawn_pool

log = logging.getLogger("duplex_factory")

T = TypeVar("T")


# --------------------------------------------------------------------------- worker processes
_POOLS: dict[int, ProcessPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


STAGES = ("script", "tts", "qa", "assemble")  # the stage timers, whatever the wave size


class StageTimes:
    """Seconds per stage. `add` records the span a stage's job ran (jobs of one stage overlap in a
    pipeline, and stages overlap each other); `busy` is the union of a stage's spans, the time at
    least one of its jobs ran. Used as `with times("stage"):` it sums wall time in `seconds`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.spans: dict[str, list[tuple[float, float]]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def add(self, stage: str, start: float, end: float) -> None:
        with self._lock:
            self.spans.setdefault(stage, []).append((start, end))

    def busy(self) -> dict[str, float]:
        """Per stage, the seconds covered by at least one of its spans."""
        out = {}
        with self._lock:
            spans = {k: sorted(v) for k, v in self.spans.items()}
        for stage, items in spans.items():
            total, (lo, hi) = 0.0, items[0]
            for start, end in items[1:]:
                if start > hi:
                    total, lo, hi = total + hi - lo, start, end
                else:
                    hi = max(hi, end)
            out[stage] = total + hi - lo
        return out


def worker_pool(processes: int) -> ProcessPoolExecutor | None:
    """The process-wide pool of `processes` workers (None for 1: run in this process). Workers
    load their models once and keep them for every shard of the run."""
    if processes <= 1:
        return None
    if not can_spawn():
        log.warning("run.processes=%d ignored in a daemonic worker process; stages run in process", processes)
        return None
    with _POOLS_LOCK:
        pool = _POOLS.get(processes)
        if pool is None:
            pool = _POOLS[processes] = spawn_pool(processes)
        return pool


def _drop_pool(processes: int) -> None:
    with _POOLS_LOCK:
        pool = _POOLS.pop(processes, None)
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


@atexit.register
def shutdown_pools() -> None:
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class Outcome:
    """A job's value, or why its dialogue failed (the manifest reason), across a process boundary."""

    value: Any = None
    reason: str | None = None
    # when the job ran, on the monotonic clock (CLOCK_MONOTONIC: one clock for every process of
    # the machine on Linux), for the stage's busy time
    span: tuple[float, float] | None = None


def _guarded(fn: Callable[..., T], sid: str, *args: Any) -> Outcome:
    start = time.monotonic()
    try:
        outcome = Outcome(value=fn(*args))
    except Exception as exc:  # noqa: BLE001 - one broken dialogue must not cost the shard
        outcome = Outcome(reason=rejection_reason(exc, sid))
    outcome.span = (start, time.monotonic())
    return outcome


def _warm_job(rt: Runtime) -> int:
    """Load what a worker's stages need (the embedded LLM, Whisper) ahead of the first shard."""
    if rt.cfg.llm.backend == "embedded" and rt.cfg.uses_llm:
        _ = rt.llm
    if rt.cfg.tts.qa_wer_threshold is not None:
        load_model(1)
    return os.getpid()


def warm_up(rt: Runtime) -> None:
    """Start the worker pool and let its workers load their models, and build the TTS backends
    (their own pools), without waiting for the workers: the CLI calls it while the run's Prefect
    server starts, so model loading overlaps that wait. Errors are left to `Runtime.preflight`."""
    processes = rt.cfg.run.worker_processes
    pool = worker_pool(processes)
    if pool is not None:
        for _ in range(processes):
            pool.submit(_warm_job, rt)
    try:
        backends = rt.voice_backends()
    except Exception:  # noqa: BLE001 - preflight reports it with the run's error handling
        return
    for name in backends:
        try:
            rt.tts(name)
        except Exception:  # noqa: BLE001, S112 - preflight reports it with the run's error handling
            continue


# Module-level jobs (picklable for the worker processes: the Runtime travels as its config and the
# worker rebuilds its own); each returns an Outcome.
def _script_job(rt: Runtime, plan: Plan) -> Outcome:
    return _guarded(script_for, plan.sid, rt, plan)


class _WriterGate:
    """Process-wide slots for dialogues writing through the HTTP LLM, handed out earliest shard
    first (then earliest dialogue). The shards of one process (the flow's thread runner) share
    the LLM server; served evenly, they would all finish writing together and leave the server
    idle while they render, assemble and write their files and the next shards start. Served
    in order, one shard finishes writing early and moves on while the others keep the server
    full, and the next shard starts while they still write."""

    def __init__(self, slots: int) -> None:
        self.slots, self.used = slots, 0
        self.waiting: list[tuple[int, int]] = []
        self.cond = threading.Condition()

    @contextmanager
    def slot(self, priority: tuple[int, int]) -> Iterator[None]:
        with self.cond:
            heapq.heappush(self.waiting, priority)
            while self.used >= self.slots or self.waiting[0] != priority:
                self.cond.wait()
            heapq.heappop(self.waiting)
            self.used += 1
            self.cond.notify_all()  # the next in line may take a slot left
        try:
            yield
        finally:
            with self.cond:
                self.used -= 1
                self.cond.notify_all()


_GATES: dict[int, _WriterGate] = {}
_SHARDS = itertools.count()  # the order shards started in this process: their turn at the gate


def _writer_gate(slots: int) -> _WriterGate:
    with _POOLS_LOCK:
        return _GATES.setdefault(slots, _WriterGate(slots))


def _gated_script_job(rt: Runtime, plan: Plan, gate: _WriterGate, priority: tuple[int, int]) -> Outcome:
    with gate.slot(priority):
        return _script_job(rt, plan)


def _qa_job(rt: Runtime, sid: str, utts: list[Utterance], channels: list[Channel], language: str) -> Outcome:
    return _guarded(qa_renders, sid, rt.cfg, utts, channels, language)


def _qa_retry_job(rt: Runtime, sid: str, first: QAResult, utt: Utterance, language: str) -> Outcome:
    return _guarded(qa_retry, sid, rt.cfg, first, utt, language)


def _assemble_job(
    rt: Runtime,
    plan: Plan,
    script: Script,
    parts: dict[PieceKey, tuple[SynthesisRequest, Utterance, QAResult | None, str | None]],
    shard: str,
) -> Outcome:
    def build() -> SampleResult:
        cfg = rt.cfg
        sources = {k: finish_render(cfg, *part) for k, part in parts.items()}
        return finished(assemble(cfg, plan, script, sources), shard, cfg)

    return _guarded(build, plan.sid)


# --------------------------------------------------------------------------- one dialogue
@dataclass
class Dialogue:
    """One attempt at one dialogue as it moves through the stages. One stage holds it at a time
    (the coordinator, a script job, a render call, a QA or assemble job), so it needs no lock."""

    sid: str
    key: str  # its attempt key: the seed of every draw
    attempt: int = 0
    plan: Plan | None = None
    script: Script | None = None
    requests: dict[PieceKey, SynthesisRequest] = field(default_factory=dict)
    utts: dict[PieceKey, Utterance] = field(default_factory=dict)
    qa: dict[PieceKey, QAResult] = field(default_factory=dict)
    result: SampleResult | None = None
    reason: str | None = None
    rendering: int = 0  # parts of its renders waiting for or in a TTS call
    retrying: int = 0  # QA re-checks of slower re-renders still out

    @property
    def language(self) -> str:
        """The dialogue's language (its scenario's), once planned."""
        assert self.plan is not None
        return self.plan.scenario.language

    @property
    def alive(self) -> bool:
        return self.reason is None

    # A dialogue alive after the plan (script) stage has its plan (script): said once, here.
    @property
    def planned(self) -> Plan:
        assert self.plan is not None, f"{self.sid}: alive without a plan"
        return self.plan

    @property
    def scripted(self) -> Script:
        assert self.script is not None, f"{self.sid}: alive without a script"
        return self.script

    def fail(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason


@dataclass
class _Renders:
    """Renders of one dialogue waiting for the TTS stage: its first renders (`slower` None), or
    the pieces that failed their channel's QA pass, re-rendered slower."""

    d: Dialogue
    keys: list[PieceKey]
    slower: dict[PieceKey, SynthesisRequest] | None = None

    def request(self, k: PieceKey) -> SynthesisRequest:
        return self.slower[k] if self.slower is not None else self.d.requests[k]


def _render_into(rt: Runtime, jobs: list[_Renders]) -> tuple[float, float]:
    """Render every job's pieces in one call per backend (`render_batch`); a failed render fails
    its dialogue. Runs on a TTS-stage thread; returns the call's span."""
    start = time.monotonic()
    flat = [(job, k) for job in jobs for k in job.keys]
    rendered = render_batch(rt, [job.request(k) for job, k in flat])
    for (job, k), utt in zip(flat, rendered, strict=True):
        d = job.d
        if isinstance(utt, Exception):
            if d.alive:  # one reason per dialogue (a bug's traceback is logged once)
                d.fail(rejection_reason(utt, d.sid))
        else:
            d.utts[k] = utt  # a QA retry's slower render replaces the first
    return start, time.monotonic()


def _dialogue_pieces(d: Dialogue) -> list[PieceKey]:
    """The pieces QA hears together per channel: all but the voice prompt, which is not in the
    dialogue, and the events the agent must not answer (another voice, or the user turned away)."""
    return [k for k in d.requests if k != VOICE_PROMPT and k[0] != "event"]


def _batch_counts(rt: Runtime, name: BackendName) -> dict[str, int] | None:
    stats = rt.tts_batch_stats(name)
    return None if stats is None else {"batches": stats.batches, "items": stats.items, "capacity": stats.capacity}


def _tts_batch_size(rt: Runtime, name: BackendName) -> int:
    """Renders that fill one model batch of backend `name`: a GPU backend's `batch_size`, the TTS
    service's (its /health), else 1 (a backend that renders one at a time or in a process pool
    gains nothing by waiting for more)."""
    try:
        backend = rt.tts(name)
    except TTSError:
        return 1
    inner = backend.backend if isinstance(backend, CachedBackend) else backend
    size = getattr(inner, "batch_size", None)
    if size is None and isinstance(inner, ServiceBackend):
        size = inner.health().get("batch_size")
    return max(1, int(size)) if isinstance(size, int | float) else 1


def _llm_snapshot(rt: Runtime):
    """The HTTP backend's counters now (None for a backend without them, or a run without an LLM)."""
    http = getattr(rt.llm, "stats", None) if rt.cfg.uses_llm else None
    return http.snapshot() if http is not None else None


def _add_llm_stats(rt: Runtime, before, stats: ShardStats) -> None:
    """Add the LLM requests and request-seconds in flight since `before` to `stats`."""
    after = _llm_snapshot(rt)
    if before is None or after is None:
        return
    stats.llm_requests += after.requests - before.requests
    stats.llm_busy_s += after.busy_s - before.busy_s
    stats.llm_max_in_flight = max(stats.llm_max_in_flight, after.max_in_flight)  # the backend's peak so far


# --------------------------------------------------------------------------- the pipeline
class _Pipeline:
    """A shard's dialogues streaming through the stages. One coordinator (the calling thread)
    owns every decision and reacts to finished jobs, which come back as events; the stages run
    beside it, each with the concurrency its device wants:

    - plan: in the coordinator, as a dialogue is admitted (at most `window` in the pipeline);
    - script: 2 x `llm.concurrency` dialogues writing at once on threads (HTTP: the backend's
      loop keeps `llm.concurrency` requests in flight across every shard of the process, and the
      other writers' next requests wait for a slot; the writers' slots are the process's, the
      earliest shard's dialogues first: `_WriterGate`), or the embedded model in the worker
      processes (`run.processes` at once) or, without them, one at a time on a thread;
    - render: the renders of scripted dialogues go to the TTS backend once they fill its batch
      (or nothing more is being written), on one thread (a model is not called concurrently), or
      two for a TTS service, so the next call queues there while one renders;
    - QA and assemble: submitted to the worker processes (or one thread) as dialogues arrive.

    A dialogue that fails a stage re-enters with its next attempt key, up to `attempts`. The
    order in which things finish changes nothing in the bytes: every draw is keyed by sample and
    stage."""

    def __init__(
        self,
        rt: Runtime,
        dialogues: list[Dialogue],
        shard: str,
        pool: Executor | None,
        stats: ShardStats,
        *,
        window: int | None,
        attempts: int,
        on_result: Callable[[SampleResult], None],
        on_settled: Callable[[SampleResult], None] | None = None,
    ) -> None:
        cfg = rt.cfg
        self.rt, self.cfg, self.shard, self.stats = rt, cfg, shard, stats
        self.attempts, self.on_result, self.on_settled = attempts, on_result, on_settled
        self.waiting: deque[Dialogue] = deque(dialogues)
        self.open = len(dialogues)  # dialogues not settled yet
        # admitted and not yet out (in a stage, or settled and waiting for an earlier one): the window
        self.in_pipeline = 0
        self.position = {d.sid: i for i, d in enumerate(dialogues)}
        self.settled: dict[int, SampleResult] = {}  # the reorder buffer, by position
        self.next_out = 0
        self.scripting = 0
        self.ready: list[_Renders] = []
        self.rendering = 0  # TTS calls out
        self.times = StageTimes()
        self.events: queue.SimpleQueue[tuple[Callable[..., None], tuple]] = queue.SimpleQueue()
        self.owned: list[Executor] = []
        self.tts_before: dict[BackendName, dict[str, int] | None] = {}
        self.batch_sizes: dict[BackendName, int] = {}

        self.gate: _WriterGate | None = None
        self.order = (next(_SHARDS), itertools.count())
        if cfg.llm.backend == "http":
            # Twice as many writers as requests the backend lets out: while a dialogue's thread
            # reads an answer and prepares its next turn, another's request waits for the slot.
            self.script_slots = 2 * cfg.llm.concurrency
            self.script_ex: Executor = self._threads(min(self.script_slots, window or self.script_slots), "script")
            self.gate = _writer_gate(self.script_slots)  # the same slots across the process's shards
        elif pool is not None:
            self.script_slots, self.script_ex = cfg.run.worker_processes, pool
        else:
            self.script_slots, self.script_ex = 1, self._threads(1, "script")
        # the default window: enough dialogues to keep every writer busy while others render, are
        # checked, assembled or wait for an earlier one to leave; never more than the shard
        default = max(MIN_WINDOW, WINDOW_PER_SCRIPT_SLOT * self.script_slots)
        self.window = max(1, min(window or default, max(1, len(dialogues))))
        self.tts_streams = 2 if cfg.tts.service_url else 1
        self.tts_ex = self._threads(self.tts_streams, "tts")
        self.cpu_ex = pool if pool is not None else self._threads(1, "cpu")

    def _threads(self, n: int, name: str) -> ThreadPoolExecutor:
        ex = ThreadPoolExecutor(max(1, n), thread_name_prefix=f"{self.shard}-{name}")
        self.owned.append(ex)
        return ex

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        try:
            self._schedule()
            while self.open:
                then, args = self.events.get()
                then(*args)
                self._schedule()
        finally:
            for ex in self.owned:  # jobs still out (a failed shard) are abandoned, not waited for
                ex.shutdown(wait=False, cancel_futures=True)

    def _submit(self, executor: Executor, fn: Callable[..., Any], args: tuple, then: Callable[..., None], *ctx) -> None:
        future = executor.submit(fn, *args)
        future.add_done_callback(lambda f: self.events.put((then, (*ctx, f))))

    def _schedule(self) -> None:
        while self.waiting and self.in_pipeline < self.window and self.scripting < self.script_slots:
            self._admit(self.waiting.popleft())
        while self.ready and self.rendering < self.tts_streams:
            asked = [job.request(k) for job in self.ready for k in job.keys]
            names: set[BackendName] = {r.voice.backend for r in asked}
            fill = max(self._batch_size(n) for n in names)
            if len(asked) < fill and self.scripting:
                break  # more renders are being written: wait for a full batch
            # Whole batches while more is being written (a dialogue's renders may span two calls),
            # everything once nothing is.
            jobs = self._take(len(asked) - len(asked) % fill if self.scripting else len(asked))
            asked = [job.request(k) for job in jobs for k in job.keys]
            names = {r.voice.backend for r in asked}
            for n in names:  # the backend's batch counters before this shard first used it
                if n not in self.tts_before:
                    self.tts_before[n] = _batch_counts(self.rt, n)
            self.stats.tts_calls += len(names)
            self.stats.tts_renders += len(asked)
            self.rendering += 1
            self._submit(self.tts_ex, _render_into, (self.rt, jobs), self._rendered, jobs)

    def _take(self, n: int) -> list[_Renders]:
        """The first `n` renders waiting, splitting a dialogue's job at the cut."""
        jobs: list[_Renders] = []
        while n and self.ready:
            job = self.ready.pop(0)
            if len(job.keys) > n:
                self.ready.insert(0, _Renders(job.d, job.keys[n:], job.slower))
                job = _Renders(job.d, job.keys[:n], job.slower)
                job.d.rendering += 1  # one more part to come back
            jobs.append(job)
            n -= len(job.keys)
        return jobs

    def _batch_size(self, name: BackendName) -> int:
        if name not in self.batch_sizes:
            self.batch_sizes[name] = _tts_batch_size(self.rt, name)
        return self.batch_sizes[name]

    # ------------------------------------------------------------------ stage by stage
    def _admit(self, d: Dialogue) -> None:
        self.in_pipeline += 1
        outcome = _guarded(plan_sample, d.sid, self.rt, d.sid, d.key)
        d.plan, d.reason = outcome.value, outcome.reason
        if not d.alive:
            self._failed(d)
            return
        self.scripting += 1
        if self.gate is not None:
            priority = (self.order[0], next(self.order[1]))
            args = (self.rt, d.planned, self.gate, priority)
            self._submit(self.script_ex, _gated_script_job, args, self._scripted, d)
        else:
            self._submit(self.script_ex, _script_job, (self.rt, d.planned), self._scripted, d)

    def _scripted(self, d: Dialogue, future: Future[Outcome]) -> None:
        self.scripting -= 1
        outcome = self._outcome("script", future)
        d.script, d.reason = outcome.value, outcome.reason
        if not d.alive:
            self._failed(d)
            return
        d.requests = render_requests(d.planned, d.scripted, self.cfg.run.seed, self.cfg.tts.hold_fall_share)
        self._wait_for_tts(_Renders(d, list(d.requests)))

    def _wait_for_tts(self, job: _Renders) -> None:
        job.d.rendering += 1
        self.ready.append(job)

    def _rendered(self, jobs: list[_Renders], future: Future[tuple[float, float]]) -> None:
        self.rendering -= 1
        self.times.add("tts", *future.result())
        for job in jobs:
            d = job.d
            d.rendering -= 1
            if d.rendering:
                continue  # the rest of its renders are in another call
            if not d.alive:
                self._failed(d)
            elif job.slower is not None:  # re-rendered slower: each piece checked alone
                d.retrying = len(job.slower)
                for k in job.slower:
                    args = (self.rt, d.sid, d.qa[k], d.utts[k], d.language)
                    self._submit(self.cpu_ex, _qa_retry_job, args, self._rechecked, d, k, job.slower[k])
            elif self.cfg.tts.qa_wer_threshold is not None:
                keys = _dialogue_pieces(d)
                channels = [piece_channel(d.scripted, k) for k in keys]
                args = (self.rt, d.sid, [d.utts[k] for k in keys], channels, d.language)
                self._submit(self.cpu_ex, _qa_job, args, self._checked, d)
            else:
                self._assemble(d)

    def _checked(self, d: Dialogue, future: Future[Outcome]) -> None:
        outcome = self._outcome("qa", future)
        if outcome.reason is not None:
            d.fail(outcome.reason)
            self._failed(d)
            return
        d.qa = dict(zip(_dialogue_pieces(d), outcome.value, strict=True))
        failed = [k for k, r in d.qa.items() if not r.ok]
        if failed:  # pieces that failed their channel pass: rendered again slower, then checked alone
            self._wait_for_tts(_Renders(d, failed, {k: retry_request(self.cfg, d.requests[k]) for k in failed}))
        else:
            self._assemble(d)

    def _rechecked(self, d: Dialogue, k: PieceKey, slower: SynthesisRequest, future: Future[Outcome]) -> None:
        d.retrying -= 1
        outcome = self._outcome("qa", future)
        if outcome.reason is not None:
            d.fail(outcome.reason)
        elif d.alive:
            d.utts[k], d.qa[k] = outcome.value
            d.requests[k] = slower
        if d.retrying:
            return
        if d.alive:
            self._assemble(d)
        else:
            self._failed(d)

    def _assemble(self, d: Dialogue) -> None:
        parts = {k: (r, d.utts[k], d.qa.get(k), cache_key(self.rt, r)) for k, r in d.requests.items()}
        args = (self.rt, d.planned, d.scripted, parts, self.shard)
        self._submit(self.cpu_ex, _assemble_job, args, self._assembled, d)

    def _assembled(self, d: Dialogue, future: Future[Outcome]) -> None:
        outcome = self._outcome("assemble", future)
        d.result, d.reason = outcome.value, outcome.reason
        if d.result is None:
            self._failed(d)
            return
        self._settle(d.sid, d.result)

    def _outcome(self, stage: str, future: Future[Outcome]) -> Outcome:
        outcome = future.result()  # a dead worker process raises BrokenProcessPool here
        if outcome.span is not None:
            self.times.add(stage, *outcome.span)
        return outcome

    def _failed(self, d: Dialogue) -> None:
        """`d` failed a stage: its next attempt waits at the front (its place in the window freed:
        it takes one again when admitted, so a retry never waits behind results it must precede),
        or it is rejected for good."""
        log.warning("sample %s attempt %d rejected: %s", d.sid, d.attempt + 1, d.reason)
        if d.attempt + 1 < self.attempts:
            self.in_pipeline -= 1
            nxt = d.attempt + 1
            self.waiting.appendleft(Dialogue(d.sid, attempt_key(d.sid, nxt), nxt))
        else:
            self._settle(d.sid, rejected_result(self.cfg, d.sid, self.shard, d.reason or "unknown"))

    def _settle(self, sid: str, result: SampleResult) -> None:
        """`sid` is done; results leave in the shard's order, each as soon as every earlier one
        has, and only then free their place in the window."""
        self.open -= 1
        if self.on_settled is not None:
            self.on_settled(result)
        self.settled[self.position[sid]] = result
        while self.next_out in self.settled:
            out = self.settled.pop(self.next_out)
            self.next_out += 1
            self.in_pipeline -= 1
            self.on_result(out)

    def add_tts_stats(self) -> None:
        """The batches each TTS backend ran since this shard first called it."""
        for name, was in self.tts_before.items():
            after = _batch_counts(self.rt, name)
            if after is None or was is None:
                continue
            total = self.stats.tts_batches.setdefault(name, {"batches": 0, "items": 0, "capacity": 0})
            for field_name, value in after.items():
                total[field_name] += value - was[field_name]


# --------------------------------------------------------------------------- a shard
MIN_WINDOW = 16
WINDOW_PER_SCRIPT_SLOT = 4


def build_shard(
    rt: Runtime,
    indices: Iterable[int],
    shard: str,
    on_sample: Callable[[SampleResult], None] | None = None,
    sink: Callable[[SampleResult], None] | None = None,
) -> tuple[list[SampleResult], ShardStats]:
    """Every sample of a shard, streamed through the stages with at most `run.wave_size`
    dialogues in the pipeline at once (null: 4 x the script stage's slots, at least 16); a
    dialogue that fails is re-drawn with its next attempt key, up to `run.max_sample_attempts`.
    Results leave in `indices` order, each as soon as it and every earlier one are settled: to
    `sink` when given (the shard's writer; the returned list is then empty, so nothing of a
    written sample stays), else into the returned list. Also returns what the stages cost (busy
    seconds per stage). `on_sample` is called as each sample is settled, in any order."""
    cfg = rt.cfg
    indices = list(indices)
    stats = ShardStats()
    processes = cfg.run.worker_processes
    results: list[SampleResult] = []

    def out(result: SampleResult) -> None:
        if result.sample is not None:
            stats.audio_s += result.sample.timeline.duration
        if sink is not None:
            sink(result)
        else:
            results.append(result)

    pipeline = _Pipeline(
        rt,
        [Dialogue(sid, attempt_key(sid, 0)) for sid in (sample_id(cfg, i) for i in indices)],
        shard,
        worker_pool(processes),
        stats,
        window=cfg.run.wave_size,
        attempts=cfg.run.max_sample_attempts,
        on_result=out,
        on_settled=on_sample,
    )
    before = _llm_snapshot(rt)
    try:
        pipeline.run()
    except BrokenProcessPool:
        _drop_pool(processes)  # a worker died (killed, out of memory): a fresh pool for the retry
        raise
    _add_llm_stats(rt, before, stats)
    pipeline.add_tts_stats()
    busy = pipeline.times.busy()
    stats.seconds = {stage: busy.get(stage, 0.0) for stage in STAGES}
    return results, stats


def build_one(rt: Runtime, sid: str, key: str) -> Sample:
    """One dialogue from its attempt key, as a pipeline of one in this process (what `regenerate`
    does); raises SampleRejected with the manifest's reason when it fails."""
    done: list[SampleResult] = []
    pipeline = _Pipeline(
        rt, [Dialogue(sid, key)], "one", None, ShardStats(), window=1, attempts=1, on_result=done.append
    )
    pipeline.run()
    result = done[0]
    if result.sample is None:
        raise SampleRejected(result.manifest.reason or "unknown")
    return result.sample
