"""The shard engine: the one way dialogues are made. A shard's dialogues go through the stages in
waves; every stage runs for the whole wave before the next starts, so an LLM server and a TTS
model see whole batches instead of one dialogue's requests at a time.

    plan (in process) -> script -> render -> QA -> assemble (timeline, mix, augment, encode)

- script: with the HTTP backend, every dialogue of the wave writes at once from `llm.concurrency`
  threads, so turn k of every dialogue goes out together (the backend's asyncio loop keeps at most
  `llm.concurrency` requests in flight); with the embedded llama.cpp model, dialogue by dialogue
  in each of `run.processes` worker processes.
- render: one `synthesize_many` call per TTS backend with every render of the wave (padded GPU
  batches, a process pool or a TTS service, whichever the backend is), through the TTS cache.
- QA: one Whisper pass per channel of each dialogue (`factory.render.qa.check_together`), in the
  worker processes; pieces that fail are re-rendered slower in one more batch and checked alone.
- assemble: timeline, mix, augmentation, the FLAC encode and the audit gate row, in the workers.

A wave holds at most `run.wave_size` dialogues (null: the whole shard). "One at a time" is a wave
of one without a process pool (`run.wave_size=1 run.processes=1`), which is also how `regenerate`
remakes one sample: the same stage functions with the same inputs, so the same bytes whatever the
wave size or the number of processes (every draw is keyed by sample and stage). A dialogue that
fails any stage is re-drawn with its next attempt key in a later, smaller wave. CPU-bound stages
run in processes, not threads (`run.processes`; 1 = in this process).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from factory.asr import load_model
from factory.models import BackendName, Channel, Sample, Script, Utterance
from factory.render.base import SynthesisRequest
from factory.render.qa import QAResult
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
    """Wall time per stage, summed over waves (for the run summary and benchmarks)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


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


def _guarded(fn: Callable[..., T], sid: str, *args: Any) -> Outcome:
    try:
        return Outcome(value=fn(*args))
    except Exception as exc:  # noqa: BLE001 - one broken dialogue must not cost the shard
        return Outcome(reason=rejection_reason(exc, sid))


def _map(
    executor: Executor | None, fn: Callable[..., Outcome], jobs: list[tuple], costs: list[float] | None = None
) -> list[Outcome]:
    """`fn(*job)` for every job, results in job order. In a pool, the costliest jobs (`costs`,
    e.g. turns or seconds of audio) start first, so a stage does not end with one worker busy on
    a long dialogue while the others idle."""
    if executor is None or len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    order = sorted(range(len(jobs)), key=lambda i: -costs[i]) if costs else list(range(len(jobs)))
    futures = {i: executor.submit(fn, *jobs[i]) for i in order}
    return [futures[i].result() for i in range(len(jobs))]


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


# --------------------------------------------------------------------------- one wave
@dataclass
class Dialogue:
    """One attempt at one dialogue as it moves through the stages."""

    sid: str
    key: str  # its attempt key: the seed of every draw
    plan: Plan | None = None
    script: Script | None = None
    requests: dict[PieceKey, SynthesisRequest] = field(default_factory=dict)
    utts: dict[PieceKey, Utterance] = field(default_factory=dict)
    qa: dict[PieceKey, QAResult] = field(default_factory=dict)
    result: SampleResult | None = None
    reason: str | None = None

    @property
    def language(self) -> str:
        """The dialogue's language (its scenario's), once planned."""
        assert self.plan is not None
        return self.plan.scenario.language

    @property
    def audio_s(self) -> float:
        """Seconds of rendered speech: the cost of its QA and assembly."""
        return sum(len(u.audio) / u.sample_rate for u in self.utts.values())

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


def _alive(dialogues: Iterable[Dialogue]) -> list[Dialogue]:
    return [d for d in dialogues if d.alive]


def run_wave(
    rt: Runtime, dialogues: list[Dialogue], shard: str, pool: Executor | None, times: StageTimes, stats: ShardStats
) -> None:
    """One attempt of every dialogue in `dialogues`, stage by stage; each ends with a `result`
    or a `reason`."""
    for d in dialogues:
        outcome = _guarded(plan_sample, d.sid, rt, d.sid, d.key)
        d.plan, d.reason = outcome.value, outcome.reason

    with times("script"):
        _scripts(rt, _alive(dialogues), pool, stats)

    with times("tts"):
        live = _alive(dialogues)
        for d in live:
            d.requests = render_requests(d.planned, d.scripted, rt.cfg.run.seed)
        _render_into(rt, live, {d.sid: list(d.requests) for d in live}, stats)

    with times("qa"):
        if rt.cfg.tts.qa_wer_threshold is not None:
            _qa(rt, _alive(dialogues), pool, stats)

    with times("assemble"):
        live = _alive(dialogues)
        jobs = []
        for d in live:
            parts = {k: (r, d.utts[k], d.qa.get(k), cache_key(rt, r)) for k, r in d.requests.items()}
            jobs.append((rt, d.planned, d.scripted, parts, shard))
        for d, outcome in zip(live, _map(pool, _assemble_job, jobs, [d.audio_s for d in live]), strict=True):
            d.result, d.reason = outcome.value, outcome.reason


def _scripts(rt: Runtime, live: list[Dialogue], pool: Executor | None, stats: ShardStats) -> None:
    before = _llm_snapshot(rt)
    jobs = [(rt, d.planned) for d in live]
    if rt.cfg.llm.backend == "http":
        # I/O-bound: threads, each writing one dialogue turn by turn; the backend's loop holds
        # at most llm.concurrency requests in flight across all of them.
        with ThreadPoolExecutor(max(1, min(rt.cfg.llm.concurrency, len(jobs))), thread_name_prefix="script") as ex:
            outcomes = list(ex.map(lambda job: _script_job(*job), jobs))
    else:
        outcomes = _map(pool, _script_job, jobs, [d.planned.scenario.n_turns for d in live])
    for d, outcome in zip(live, outcomes, strict=True):
        d.script, d.reason = outcome.value, outcome.reason
    _add_llm_stats(rt, before, stats)


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


def _render_into(
    rt: Runtime,
    live: list[Dialogue],
    keys: dict[str, list[PieceKey]],
    stats: ShardStats,
    requests: dict[tuple[str, PieceKey], SynthesisRequest] | None = None,
) -> None:
    """Render `keys` of each dialogue in one batch (per backend); a failed render fails its dialogue."""
    flat = [(d, k) for d in live for k in keys.get(d.sid, [])]
    if not flat:
        return
    asked = [requests[(d.sid, k)] if requests else d.requests[k] for d, k in flat]
    names: list[BackendName] = sorted({r.voice.backend for r in asked})
    stats.tts_calls += len(names)
    stats.tts_renders += len(asked)
    before = {n: _batch_counts(rt, n) for n in names}
    rendered = render_batch(rt, asked)
    for n in names:
        after, was = _batch_counts(rt, n), before[n]
        if after is not None and was is not None:
            total = stats.tts_batches.setdefault(n, {"batches": 0, "items": 0, "capacity": 0})
            for field_name, value in after.items():
                total[field_name] += value - was[field_name]
    for (d, k), utt in zip(flat, rendered, strict=True):
        if isinstance(utt, Exception):
            if d.alive:  # one reason per dialogue (a bug's traceback is logged once)
                d.fail(rejection_reason(utt, d.sid))
        else:
            d.utts[k] = utt


def _dialogue_pieces(d: Dialogue) -> list[PieceKey]:
    """The pieces QA hears together per channel: all but the voice prompt, which is not in the
    dialogue, and the events the agent must not answer (another voice, or the user turned away)."""
    return [k for k in d.requests if k != VOICE_PROMPT and k[0] != "event"]


def _batch_counts(rt: Runtime, name: BackendName) -> dict[str, int] | None:
    stats = rt.tts_batch_stats(name)
    return None if stats is None else {"batches": stats.batches, "items": stats.items, "capacity": stats.capacity}


def _qa(rt: Runtime, live: list[Dialogue], pool: Executor | None, stats: ShardStats) -> None:
    jobs = []
    for d in live:
        keys = _dialogue_pieces(d)
        channels = [piece_channel(d.scripted, k) for k in keys]
        jobs.append((rt, d.sid, [d.utts[k] for k in keys], channels, d.language))
    for d, outcome in zip(live, _map(pool, _qa_job, jobs, [d.audio_s for d in live]), strict=True):
        if outcome.reason is not None:
            d.fail(outcome.reason)
        else:
            d.qa = dict(zip(_dialogue_pieces(d), outcome.value, strict=True))
    # Pieces that failed their channel pass: re-render slower, all in one batch, then check alone.
    failed = {d.sid: [k for k, r in d.qa.items() if not r.ok] for d in _alive(live)}
    slower = {(d.sid, k): retry_request(rt.cfg, d.requests[k]) for d in _alive(live) for k in failed.get(d.sid, [])}
    if not slower:
        return
    retrying = [d for d in _alive(live) if failed.get(d.sid)]
    _render_into(rt, retrying, failed, stats, slower)
    flat = [(d, k) for d in _alive(retrying) for k in failed[d.sid]]
    jobs = [(rt, d.sid, d.qa[k], d.utts[k], d.language) for d, k in flat]  # utts[k] now holds the slower render
    for (d, k), outcome in zip(flat, _map(pool, _qa_retry_job, jobs), strict=True):
        if outcome.reason is not None:
            d.fail(outcome.reason)
        else:
            d.utts[k], d.qa[k] = outcome.value
            d.requests[k] = slower[(d.sid, k)]


# --------------------------------------------------------------------------- a shard
def build_shard(
    rt: Runtime, indices: Iterable[int], shard: str, on_sample: Callable[[SampleResult], None] | None = None
) -> tuple[list[SampleResult], ShardStats]:
    """Every sample of a shard, in waves of at most `run.wave_size` dialogues: each wave runs one
    attempt of its dialogues, and those that failed are re-drawn in the next, smaller wave.
    Returns the results in `indices` order and what the stages cost. `on_sample` is called as
    each sample is settled."""
    cfg = rt.cfg
    indices = list(indices)
    times, stats = StageTimes(), ShardStats()
    processes = cfg.run.worker_processes
    pool = worker_pool(processes)
    size = cfg.run.wave_size or max(1, len(indices))
    results: dict[int, SampleResult] = {}
    try:
        for start in range(0, len(indices), size):
            chunk = {sample_id(cfg, i): i for i in indices[start : start + size]}
            for sid, result in _attempts(rt, list(chunk), shard, pool, times, stats):
                results[chunk[sid]] = result
                if on_sample:
                    on_sample(result)
    except BrokenProcessPool:
        _drop_pool(processes)  # a worker died (killed, out of memory): a fresh pool for the retry
        raise
    stats.seconds = {stage: times.seconds.get(stage, 0.0) for stage in STAGES}
    stats.audio_s = sum(r.sample.timeline.duration for r in results.values() if r.sample is not None)
    return [results[i] for i in indices], stats


def _attempts(
    rt: Runtime, sids: list[str], shard: str, pool: Executor | None, times: StageTimes, stats: ShardStats
) -> Iterator[tuple[str, SampleResult]]:
    """Up to `run.max_sample_attempts` waves over `sids`: each dialogue's result, made or rejected."""
    reasons: dict[str, str] = {}
    todo = sids
    for attempt in range(rt.cfg.run.max_sample_attempts):
        if not todo:
            return
        wave = [Dialogue(sid, attempt_key(sid, attempt)) for sid in todo]
        run_wave(rt, wave, shard, pool, times, stats)
        todo = []
        for d in wave:
            if d.result is not None:
                yield d.sid, d.result
                continue
            log.warning("sample %s attempt %d rejected: %s", d.sid, attempt + 1, d.reason)
            reasons[d.sid] = d.reason or "unknown"
            todo.append(d.sid)
    for sid in todo:
        yield sid, rejected_result(rt.cfg, sid, shard, reasons[sid])


def build_one(rt: Runtime, sid: str, key: str) -> Sample:
    """One dialogue from its attempt key, as a wave of one in this process (what `regenerate`
    does); raises SampleRejected with the manifest's reason when it fails."""
    d = Dialogue(sid, key)
    run_wave(rt, [d], "one", None, StageTimes(), ShardStats())
    if d.result is None or d.result.sample is None:
        raise SampleRejected(d.reason or "unknown")
    return d.result.sample
