"""Stage-batched shards: every stage runs for all of a shard's dialogues before the next starts,
so an LLM server and a TTS model see whole batches instead of one dialogue's requests at a time.

    plan (in process) -> script -> render -> QA -> assemble (timeline, mix, augment, encode)

- script: with the HTTP backend, every dialogue writes at once from `llm.concurrency` threads, so
  turn k of every dialogue goes out in one wave (the backend's asyncio loop keeps at most
  `llm.concurrency` requests in flight); with the embedded llama.cpp model, dialogue by dialogue
  in each of `run.processes` worker processes.
- render: one `synthesize_many` call per TTS backend with every render of the shard (padded GPU
  batches, a process pool or a TTS service, whichever the backend is), through the TTS cache.
- QA: one Whisper pass per channel of each dialogue (`factory.render.qa.check_together`), in the
  worker processes; pieces that fail are re-rendered slower in one more batch and checked alone.
- assemble: timeline, mix, augmentation and the FLAC encode of the manifest's checksum, in the
  worker processes.

Every stage calls the same functions with the same inputs as `factory.pipeline.build_sample`,
so a shard has the same bytes batched or one dialogue at a time (`run.batched`), with any number
of processes. A dialogue that fails any stage is re-drawn with its next attempt key in a later,
smaller wave, exactly as `generate_sample` re-draws it. CPU-bound stages run in processes, not
threads (`run.processes`; 1 = in this process).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, TypeVar

from factory.config import RunConfig
from factory.models import Channel, Script, Utterance
from factory.pipeline import (
    PieceKey,
    Plan,
    SampleResult,
    StageTimes,
    assemble,
    attempt_key,
    batch_stats,
    cache_key,
    finish_render,
    finished,
    llm_for,
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
    tts_backend,
)
from factory.render.base import SynthesisRequest, TTSError
from factory.render.qa import QAResult

log = logging.getLogger("duplex_factory")

T = TypeVar("T")


# --------------------------------------------------------------------------- worker processes
_POOLS: dict[int, ProcessPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def worker_pool(processes: int) -> ProcessPoolExecutor | None:
    """The process-wide pool of `processes` workers (None for 1: run in this process). Spawned,
    never forked: the caller has threads (Prefect, the LLM client's loop). Workers load their
    models once and keep them for every shard of the run."""
    if processes <= 1:
        return None
    if multiprocessing.current_process().daemon:
        # A daemonic process (a Dask worker's default) may not start children: run in process.
        log.warning("run.processes=%d ignored in a daemonic worker process; stages run in process", processes)
        return None
    with _POOLS_LOCK:
        pool = _POOLS.get(processes)
        if pool is None:
            pool = ProcessPoolExecutor(
                processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            )
            _POOLS[processes] = pool
        return pool


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: exit as soon as the process that started the pool is gone. A killed
    run must not leave its workers behind, and they would never see their task pipe close (the
    other workers hold it open too)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


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


def _warm_job(cfg: RunConfig) -> int:
    """Load what a worker's stages need (the embedded LLM, Whisper) ahead of the first shard."""
    if cfg.llm.backend == "embedded":
        llm_for(cfg)
    if cfg.tts.qa_wer_threshold is not None:
        from factory.asr import load_model

        load_model(1)
    return os.getpid()


def warm_up(cfg: RunConfig, voice_backends: Iterable[str] = ()) -> None:
    """Start the worker pool and let its workers load their models, and build the TTS backends
    (their own pools), without waiting for the workers: the CLI calls it while the run's Prefect
    server starts, so model loading overlaps that wait. Errors are left to `preflight`."""
    pool = worker_pool(cfg.run.worker_processes)
    if pool is not None:
        for _ in range(cfg.run.worker_processes):
            pool.submit(_warm_job, cfg)
    for name in voice_backends:
        try:
            tts_backend(name, cfg)
        except Exception:  # noqa: BLE001, S112 - preflight reports it with the run's error handling
            continue


# Module-level jobs (picklable for the worker processes); each returns an Outcome.
def _script_job(cfg: RunConfig, plan: Plan) -> Outcome:
    return _guarded(script_for, plan.sid, cfg, plan)


def _qa_job(cfg: RunConfig, sid: str, utts: list[Utterance], channels: list[Channel]) -> Outcome:
    return _guarded(qa_renders, sid, cfg, utts, channels)


def _qa_retry_job(cfg: RunConfig, sid: str, first: QAResult, utt: Utterance) -> Outcome:
    return _guarded(qa_retry, sid, cfg, first, utt)


def _assemble_job(
    cfg: RunConfig,
    plan: Plan,
    script: Script,
    parts: dict[PieceKey, tuple[SynthesisRequest, Utterance, QAResult | None, str | None]],
    shard: str,
) -> Outcome:
    def build() -> SampleResult:
        sources = {k: finish_render(cfg, *part) for k, part in parts.items()}
        return finished(assemble(cfg, plan, script, sources), shard, cfg)

    return _guarded(build, plan.sid)


# --------------------------------------------------------------------------- one wave
@dataclass
class Dialogue:
    """One attempt at one dialogue as it moves through the stages."""

    index: int
    attempt: int
    plan: Plan | None = None
    script: Script | None = None
    requests: dict[PieceKey, SynthesisRequest] = field(default_factory=dict)
    utts: dict[PieceKey, Utterance] = field(default_factory=dict)
    qa: dict[PieceKey, QAResult] = field(default_factory=dict)
    result: SampleResult | None = None
    reason: str | None = None

    @property
    def audio_s(self) -> float:
        """Seconds of rendered speech: the cost of its QA and assembly."""
        return sum(len(u.audio) / u.sample_rate for u in self.utts.values())

    @property
    def alive(self) -> bool:
        return self.reason is None

    def fail(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason


@dataclass
class ShardStats:
    """What a shard's stages cost and how full they ran, for the run summary and artifacts."""

    seconds: dict[str, float] = field(default_factory=dict)  # wall seconds per stage
    audio_s: float = 0.0  # seconds of dialogue produced
    llm_requests: int = 0
    llm_busy_s: float = 0.0  # request-seconds in flight (area under the in-flight curve)
    llm_max_in_flight: int = 0
    tts_calls: int = 0  # synthesize_many calls
    tts_renders: int = 0  # renders asked for in them
    # per TTS backend that batches: model batches run, renders in them, and their room
    tts_batches: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "audio_s": round(self.audio_s, 3),
            "llm_requests": self.llm_requests,
            "llm_busy_s": round(self.llm_busy_s, 3),
            "llm_max_in_flight": self.llm_max_in_flight,
            "tts_calls": self.tts_calls,
            "tts_renders": self.tts_renders,
            "tts_batches": self.tts_batches,
        }


def _alive(dialogues: Iterable[Dialogue]) -> list[Dialogue]:
    return [d for d in dialogues if d.alive]


def run_wave(
    cfg: RunConfig, dialogues: list[Dialogue], shard: str, pool: Executor | None, times: StageTimes, stats: ShardStats
) -> None:
    """One attempt of every dialogue in `dialogues`, stage by stage; each ends with a `result`
    or a `reason`."""
    for d in dialogues:
        sid = sample_id(cfg, d.index)
        outcome = _guarded(plan_sample, sid, cfg, sid, attempt_key(sid, d.attempt))
        d.plan, d.reason = outcome.value, outcome.reason

    with times("script"):
        _scripts(cfg, _alive(dialogues), pool, stats)

    with times("tts"):
        live = _alive(dialogues)
        for d in live:
            d.requests = render_requests(d.plan, d.script)
        _render_into(cfg, live, {d.index: list(d.requests) for d in live}, stats)

    if cfg.tts.qa_wer_threshold is not None:
        with times("qa"):
            _qa(cfg, _alive(dialogues), pool, stats)

    with times("assemble"):
        live = _alive(dialogues)
        jobs = []
        for d in live:
            parts = {k: (r, d.utts[k], d.qa.get(k), cache_key(cfg, r)) for k, r in d.requests.items()}
            jobs.append((cfg, d.plan, d.script, parts, shard))
        for d, outcome in zip(live, _map(pool, _assemble_job, jobs, [d.audio_s for d in live]), strict=True):
            d.result, d.reason = outcome.value, outcome.reason


def _scripts(cfg: RunConfig, live: list[Dialogue], pool: Executor | None, stats: ShardStats) -> None:
    before = _llm_snapshot(cfg)
    jobs = [(cfg, d.plan) for d in live]
    if cfg.llm.backend == "http":
        # I/O-bound: threads, each writing one dialogue turn by turn; the backend's loop holds
        # at most llm.concurrency requests in flight across all of them.
        with ThreadPoolExecutor(max(1, min(cfg.llm.concurrency, len(jobs))), thread_name_prefix="script") as ex:
            outcomes = list(ex.map(lambda job: _script_job(*job), jobs))
    else:
        outcomes = _map(pool, _script_job, jobs, [d.plan.scenario.n_turns for d in live])
    for d, outcome in zip(live, outcomes, strict=True):
        d.script, d.reason = outcome.value, outcome.reason
    _add_llm_stats(cfg, before, stats)


def _llm_snapshot(cfg: RunConfig):
    """The HTTP backend's counters now (None for a backend without them)."""
    http = getattr(llm_for(cfg), "stats", None)
    return http.snapshot() if http is not None else None


def _add_llm_stats(cfg: RunConfig, before, stats: ShardStats) -> None:
    """Add the LLM requests and request-seconds in flight since `before` to `stats`."""
    if before is None:
        return
    after = llm_for(cfg).stats.snapshot()
    stats.llm_requests += after.requests - before.requests
    stats.llm_busy_s += after.busy_s - before.busy_s
    stats.llm_max_in_flight = max(stats.llm_max_in_flight, after.max_in_flight)  # the backend's peak so far


def _render_into(
    cfg: RunConfig,
    live: list[Dialogue],
    keys: dict[int, list[PieceKey]],
    stats: ShardStats,
    requests: dict[tuple[int, PieceKey], SynthesisRequest] | None = None,
) -> None:
    """Render `keys` of each dialogue in one batch (per backend); a failed render fails its dialogue."""
    flat = [(d, k) for d in live for k in keys.get(d.index, [])]
    if not flat:
        return
    asked = [requests[(d.index, k)] if requests else d.requests[k] for d, k in flat]
    names = sorted({r.voice.backend for r in asked})
    stats.tts_calls += len(names)
    stats.tts_renders += len(asked)
    before = {n: _batch_counts(cfg, n) for n in names}
    rendered = render_batch(cfg, asked)
    for n in names:
        after = _batch_counts(cfg, n)
        if after is not None and before[n] is not None:
            total = stats.tts_batches.setdefault(n, {"batches": 0, "items": 0, "capacity": 0})
            for field_name, value in after.items():
                total[field_name] += value - before[n][field_name]
    for (d, k), utt in zip(flat, rendered, strict=True):
        if isinstance(utt, Exception):
            if d.alive:  # one reason per dialogue (a bug's traceback is logged once)
                d.fail(rejection_reason(utt, sample_id(cfg, d.index)))
        else:
            d.utts[k] = utt


def _batch_counts(cfg: RunConfig, name: str) -> dict[str, int] | None:
    try:
        stats = batch_stats(tts_backend(name, cfg))
    except TTSError:
        return None
    return None if stats is None else {"batches": stats.batches, "items": stats.items, "capacity": stats.capacity}


def _qa(cfg: RunConfig, live: list[Dialogue], pool: Executor | None, stats: ShardStats) -> None:
    jobs = []
    for d in live:
        keys = list(d.requests)
        jobs.append((cfg, d.plan.sid, [d.utts[k] for k in keys], [piece_channel(d.script, k) for k in keys]))
    for d, outcome in zip(live, _map(pool, _qa_job, jobs, [d.audio_s for d in live]), strict=True):
        if outcome.reason is not None:
            d.fail(outcome.reason)
        else:
            d.qa = dict(zip(d.requests, outcome.value, strict=True))
    # Pieces that failed their channel pass: re-render slower, all in one batch, then check alone.
    failed = {d.index: [k for k, r in d.qa.items() if not r.ok] for d in _alive(live)}
    slower = {(d.index, k): retry_request(cfg, d.requests[k]) for d in _alive(live) for k in failed.get(d.index, [])}
    if not slower:
        return
    retrying = [d for d in _alive(live) if failed.get(d.index)]
    _render_into(cfg, retrying, failed, stats, slower)
    flat = [(d, k) for d in _alive(retrying) for k in failed[d.index]]
    jobs = [(cfg, d.plan.sid, d.qa[k], d.utts[k]) for d, k in flat]  # utts[k] now holds the slower render
    for (d, k), outcome in zip(flat, _map(pool, _qa_retry_job, jobs), strict=True):
        if outcome.reason is not None:
            d.fail(outcome.reason)
        else:
            d.utts[k], d.qa[k] = outcome.value
            d.requests[k] = slower[(d.index, k)]


# --------------------------------------------------------------------------- a shard
def build_shard(
    cfg: RunConfig, indices: Iterable[int], shard: str, on_sample: Callable[[SampleResult], None] | None = None
) -> tuple[list[SampleResult], ShardStats]:
    """Every sample of a shard, stage-batched: one wave per attempt, the dialogues that failed
    re-drawn in the next. Returns the results in `indices` order and what the stages cost.
    `on_sample` is called as each sample is settled."""
    indices = list(indices)
    times, stats = StageTimes(), ShardStats()
    processes = cfg.run.worker_processes
    results: dict[int, SampleResult] = {}
    reasons: dict[int, str] = {}
    todo = indices
    try:
        for attempt in range(cfg.run.max_sample_attempts):
            if not todo:
                break
            wave = [Dialogue(index, attempt) for index in todo]
            run_wave(cfg, wave, shard, worker_pool(processes), times, stats)
            todo = []
            for d in wave:
                if d.result is not None:
                    results[d.index] = d.result
                    if on_sample:
                        on_sample(d.result)
                    continue
                sid = sample_id(cfg, d.index)
                log.warning("sample %s attempt %d rejected: %s", sid, attempt + 1, d.reason)
                reasons[d.index] = d.reason or "unknown"
                todo.append(d.index)
    except BrokenProcessPool:
        _drop_pool(processes)  # a worker died (killed, out of memory): a fresh pool for the retry
        raise
    for index in todo:
        results[index] = rejected_result(cfg, sample_id(cfg, index), shard, reasons[index])
        if on_sample:
            on_sample(results[index])
    stats.seconds = dict(times.seconds)
    stats.audio_s = sum(r.sample.timeline.duration for r in results.values() if r.sample is not None)
    return [results[i] for i in indices], stats


def build_shard_sequential(
    cfg: RunConfig, indices: Iterable[int], shard: str, on_sample: Callable[[SampleResult], None] | None = None
) -> tuple[list[SampleResult], ShardStats]:
    """The one-at-a-time path (`run.batched: false`): each dialogue through every stage before
    the next starts, in this process. The reference the batched path must match byte for byte."""
    from factory.pipeline import generate_sample

    times, stats, out = StageTimes(), ShardStats(), []
    before = _llm_snapshot(cfg)
    for index in indices:
        out.append(generate_sample(cfg, index, shard, times))
        if on_sample:
            on_sample(out[-1])
    _add_llm_stats(cfg, before, stats)
    stats.seconds = dict(times.seconds)
    stats.audio_s = sum(r.sample.timeline.duration for r in out if r.sample is not None)
    return out, stats


def utilisation(shard_stats: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    """The run summary's utilisation, from the `ShardStats.as_dict()` of the shards produced now:
    seconds per audio-minute per stage, LLM requests in flight (mean over the script stage, peak),
    TTS renders per call and batch fill."""
    stats = [s for s in shard_stats if s]
    seconds: dict[str, float] = {}
    for s in stats:
        for stage, value in s["seconds"].items():
            seconds[stage] = seconds.get(stage, 0.0) + value
    audio_min = sum(s["audio_s"] for s in stats) / 60
    per_min = {k: round(v / audio_min, 3) for k, v in seconds.items()} if audio_min else {}
    script_s = seconds.get("script", 0.0)
    busy = sum(s["llm_busy_s"] for s in stats)
    batches: dict[str, dict[str, float]] = {}
    for s in stats:
        for name, b in s.get("tts_batches", {}).items():
            total = batches.setdefault(name, {"batches": 0, "items": 0, "capacity": 0})
            for key in total:
                total[key] += b[key]
    for b in batches.values():
        b["fill"] = round(b["items"] / b["capacity"], 4) if b["capacity"] else 0.0
    calls = sum(s["tts_calls"] for s in stats)
    return {
        "audio_minutes": round(audio_min, 3),
        "stage_seconds": {k: round(v, 3) for k, v in seconds.items()},
        "seconds_per_audio_minute": per_min,
        "llm": {
            "requests": sum(s["llm_requests"] for s in stats),
            "mean_in_flight": round(busy / script_s, 3) if script_s else 0.0,
            "max_in_flight": max((s["llm_max_in_flight"] for s in stats), default=0),
        },
        "tts": {
            "calls": calls,
            "renders_per_call": round(sum(s["tts_renders"] for s in stats) / calls, 2) if calls else 0.0,
            "batches": batches,
        },
    }
