"""Prefect flow: one task per shard. Orchestration only; the work is in `factory.run.shards`
and the shard engine (`factory.engine`).

Run it with `duplex-factory generate` (a Prefect server of its own that dies with it, see
`flows.server`), or deploy it (`duplex-factory deploy`, `prefect.yaml`; README "Scheduling").
Shard tasks run where `run.task_runner` says: a thread pool of `run.workers` threads (the heavy
parts, llama.cpp, onnxruntime, CTranslate2, FLAC, release the GIL), or a Dask or Ray cluster
(an existing one at `run.cluster_address`, else a local one of `run.workers` processes). A task
that raises is retried `run.shard_retries` times with exponential backoff; one that keeps
failing is recorded (`failures/<shard>.json`, its error) and the run goes on. A re-run with the
same config resumes: shards complete at the store are verified and skipped, others are redone.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_client, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from factory.config import RunConfig
from factory.heap import release_free_heap
from factory.progress import Snapshot, Tracker
from factory.run.records import FailureRecord, LLMHttp, RunSummary, failed_shards, utilisation
from factory.run.shards import (
    ShardResult,
    ShardSpec,
    finalize_run,
    generate_shard,
    plan_shards,
    record_failure,
    skipped_result,
    verify_shard,
)
from factory.run.store import run_store
from factory.runtime import runtime_for
from factory.seeding import derive_seed
from factory.stages import SampleResult

OnSample = Callable[[SampleResult], None]
OnShard = Callable[[ShardResult], None]


@task(name="generate-shard", cache_policy=NO_CACHE)
def shard_task(config: dict[str, Any], spec: ShardSpec, on_sample: OnSample | None = None) -> ShardResult:
    rt = runtime_for(RunConfig.model_validate(config))  # one per config and worker process
    start = time.perf_counter()
    result = generate_shard(rt, spec, on_sample=on_sample)
    result.seconds = round(time.perf_counter() - start, 3)
    release_free_heap()  # what the shard freed goes back to the system, so a long run does not grow
    get_run_logger().info(
        "%s: %s, %d ok, %d rejected",
        spec.name,
        "skipped (complete)" if result.skipped else "written",
        result.n_ok,
        result.n_rejected,
    )
    return result


def dated(config: dict[str, Any], day: str) -> dict[str, Any]:
    """A scheduled run's config: its own folder and seed per scheduled day (YYYYMMDD), so nights
    differ, and a re-run of the same night resumes instead of starting over. The seed is hashed
    from (run seed, day) like every other derived seed: `seed + YYYYMMDD` would make seed s on
    day d+1 collide with seed s+1 on day d."""
    cfg = RunConfig.model_validate(config)
    seed = derive_seed(cfg.run.seed, day, "schedule")
    run = cfg.run.model_copy(update={"run_id": f"{cfg.run_id}-{day}", "seed": seed})
    return cfg.model_copy(update={"run": run}).model_dump(mode="json")


def task_runner_for(cfg: RunConfig) -> TaskRunner[Any]:
    """The Prefect task runner `run.task_runner` names, on `run.cluster_address` or a local cluster."""
    kind, address, workers = cfg.run.task_runner, cfg.run.cluster_address, cfg.run.workers
    if kind == "thread":
        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        from prefect_dask.task_runners import (
            DaskTaskRunner,  # lazy: the Dask runner (and distributed) only when asked for
        )

        if address:
            return DaskTaskRunner(address=address)
        # One single-threaded worker process per shard at a time: models load once per worker.
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True},
        )
    from prefect_ray import RayTaskRunner  # lazy: Ray is heavy to import; only when asked for

    if address:
        return RayTaskRunner(address=address)
    # Ray >= 2.60 turns on token auth; a local cluster on 127.0.0.1 for one run does not need it.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    return RayTaskRunner(init_kwargs={"num_cpus": workers, "include_dashboard": False, "log_to_driver": False})


def _retrying(cfg: RunConfig):
    retries = cfg.run.shard_retries
    delays = exponential_backoff(backoff_factor=cfg.run.retry_delay_s)(retries) if retries else 0
    return shard_task.with_options(retries=retries, retry_delay_seconds=delays)


def _attempts(future, default: int) -> int:
    """How many times Prefect ran the task (its run_count), read back from the API."""
    try:
        with get_client(sync_client=True) as client:
            return client.read_task_run(future.task_run_id).run_count or default
    except Exception:  # noqa: BLE001 - the count is informative only
        return default


def _from_store(cfg: RunConfig, spec: ShardSpec, failures: dict[str, FailureRecord]) -> ShardResult:
    """A shard not run this time (`only`): complete at the store, or still failed."""
    store = run_store(cfg)
    why = verify_shard(store, spec.name)
    if why is None:
        return skipped_result(store, spec.name)
    failure = failures.get(spec.name)
    error = failure.error if failure else f"not produced ({why})"
    return ShardResult(spec.name, "", 0, 0, error=error, attempts=failure.attempts if failure else 0)


def _outcome(cfg: RunConfig, spec: ShardSpec, future) -> ShardResult:
    """A finished shard task's result, or its failure recorded at the store."""
    future.wait()  # as_completed can yield before the future's cached state is final
    if future.state.is_completed():
        return future.result()
    try:
        future.result()
        error = f"task ended {future.state.type.value}"
    except BaseException as exc:  # noqa: BLE001 - any failure of one shard is recorded, the run goes on
        error = f"{type(exc).__name__}: {exc}"
    attempts = _attempts(future, cfg.run.shard_retries + 1)
    get_run_logger().error("%s failed after %d attempts: %s", spec.name, attempts, error)
    record_failure(cfg, spec.name, error, attempts)
    return ShardResult(spec.name, "", 0, 0, error=error, attempts=attempts)


@flow(name="duplex-generate", log_prints=True)
def generate(
    config: dict[str, Any],
    per_day: bool = False,
    on_sample: OnSample | None = None,
    only: list[str] | None = None,
    on_shard: OnShard | None = None,
) -> RunSummary:
    """Generate a run: plan shards, one task each, then collect the manifest and card.
    `per_day` (deployments): own folder and hashed seed per scheduled date. `on_sample`
    (in-process runs on the thread runner, e.g. the CLI's progress bar) is called after every
    sample; it cannot cross to Dask or Ray worker processes, so `on_shard` is called here, in the
    flow's process, as each shard run now finishes (made, skipped as complete, or failed), on
    every runner. `only` (`--retry-failed`): run just these shards; the others are taken as they
    are at the store."""
    if per_day:
        config = dated(config, flow_run.scheduled_start_time.strftime("%Y%m%d"))
    cfg = RunConfig.model_validate(config)
    rt = runtime_for(cfg)
    rt.preflight()
    # The HTTP backend's retry/failure counters, as this run's delta (the backend outlives runs).
    llm_stats = getattr(rt.llm, "stats", None) if cfg.uses_llm else None
    stats_before = llm_stats.snapshot() if llm_stats is not None else None
    specs = plan_shards(cfg)
    failures = failed_shards(run_store(cfg)) if only is not None else {}
    todo = [s for s in specs if only is None or s.name in only]
    per_sample = cfg.run.task_runner == "thread"  # a callback cannot cross to worker processes
    progress = _progress(cfg, sum(len(s.sample_indices) for s in todo))

    def sample_done(result: SampleResult) -> None:
        progress.sample_done(result)
        if on_sample:
            on_sample(result)

    shard = _retrying(cfg)
    # Bounded submission: at most run.shards_in_flight tasks submitted, the next as one finishes.
    waiting = iter(todo)
    in_flight: dict[Any, tuple[ShardSpec, Any]] = {}  # task run id: (spec, future)
    finished: dict[str, ShardResult] = {}
    try:
        while True:
            while len(in_flight) < cfg.run.shards_in_flight and (spec := next(waiting, None)) is not None:
                future = shard.submit(config, spec, sample_done if per_sample else None)
                in_flight[future.task_run_id] = (spec, future)
            if not in_flight:
                break
            future = next(as_completed([f for _, f in in_flight.values()]))  # in the order they finish
            spec, _ = in_flight.pop(future.task_run_id)
            finished[spec.name] = _outcome(cfg, spec, future)
            if finished[spec.name].skipped or not per_sample:  # else its samples were counted one by one
                progress.shard_done(finished[spec.name])
            if on_shard:
                on_shard(finished[spec.name])
    finally:
        progress.close()
    results = [finished[s.name] if s.name in finished else _from_store(cfg, s, failures) for s in specs]
    run_url = finalize_run(cfg, results)
    summary = RunSummary(
        run_dir=run_url,
        shards=len(results),
        skipped=sum(r.skipped for r in results),
        ok=sum(r.n_ok for r in results),
        rejected=sum(r.n_rejected for r in results),
        failed={r.name: r.error for r in results if r.error is not None},
        llm_http=LLMHttp.model_validate(llm_stats.since(stats_before)) if llm_stats is not None else None,
        utilisation=utilisation(r.stats for r in results),
    )
    _artifacts(cfg, results, summary)
    return summary


def _artifact_key(cfg: RunConfig) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", cfg.run_id.lower()).strip("-") or "run"


def _progress(cfg: RunConfig, total: int) -> Tracker:
    """The run's progress in the flow's log (a line every `run.progress_every_s`) and in a progress
    artifact that each line updates (percent done, the line as its description)."""
    logger = get_run_logger()
    artifact = cast(  # a sync flow: the id itself, not a coroutine
        UUID,
        create_progress_artifact(
            progress=0.0, key=f"{_artifact_key(cfg)}-progress", description=f"{cfg.run_id}: 0/{total} dialogues"
        ),
    )

    def show(snapshot: Snapshot) -> None:
        logger.info(snapshot.line())
        percent = 100.0 * snapshot.done / total if total else 100.0
        try:
            update_progress_artifact(artifact_id=artifact, progress=percent, description=snapshot.line())
        except Exception as exc:  # noqa: BLE001 - progress is informative: an API hiccup must not stop the run
            logger.warning("progress artifact not updated: %s", exc)

    return Tracker("generate", total, unit="dialogues", every_s=cfg.run.progress_every_s, on_line=show, counts=True)


def _artifacts(cfg: RunConfig, results: list[ShardResult], summary: RunSummary) -> None:
    """Per-shard statistics (table) and the run summary (markdown), shown in the Prefect UI."""
    key = _artifact_key(cfg)
    rows = [
        {
            "shard": r.name,
            "status": "failed" if r.failed else ("skipped (complete)" if r.skipped else "written"),
            "ok": r.n_ok,
            "rejected": r.n_rejected,
            "seconds": r.seconds,
            "attempts": r.attempts,
            "sha256": r.sha256[:16],
            "error": r.error or "",
        }
        for r in results
    ]
    create_table_artifact(table=rows, key=f"{key}-shards", description=f"{cfg.run_id}: one row per shard")
    lines = [
        f"# {cfg.run_id}",
        "",
        f"- destination: `{summary.run_dir}`",
        f"- seed {cfg.run.seed}, {cfg.run.n_samples} samples in {summary.shards} shards "
        f"({summary.skipped} already complete)",
        f"- **{summary.ok} dialogues**, {summary.rejected} rejected",
        f"- failed shards: {len(summary.failed)}",
    ]
    lines += [f"  - `{name}`: {error}" for name, error in summary.failed.items()]
    use = summary.utilisation
    if use.audio_minutes:
        lines += [
            "",
            f"## Utilisation ({use.audio_minutes} audio minutes made now)",
            "",
            "| stage | wall s | s per audio minute |",
            "|---|---|---|",
        ]
        lines += [
            f"| {stage} | {seconds} | {use.seconds_per_audio_minute.get(stage, '')} |"
            for stage, seconds in use.stage_seconds.items()
        ]
        llm, tts = use.llm, use.tts
        lines += [
            "",
            f"- LLM: {llm.requests} requests, {llm.mean_in_flight} in flight on average during the script "
            f"stage, at most {llm.max_in_flight}",
            f"- TTS: {tts.renders_per_call} renders per batch call; "
            + (
                ", ".join(f"{name} batch fill {b.fill:.0%} over {b.batches} batches" for name, b in tts.batches.items())
                or "no backend batches on a model (one render at a time)"
            ),
        ]
    create_markdown_artifact(markdown="\n".join(lines), key=f"{key}-summary", description=f"{cfg.run_id} summary")


def run_generate(
    cfg: RunConfig,
    on_sample: OnSample | None = None,
    only: list[str] | None = None,
    on_shard: OnShard | None = None,
) -> RunSummary:
    """Run the flow in this process with the task runner the config names."""
    runner = generate.with_options(task_runner=task_runner_for(cfg))
    return runner(cfg.model_dump(mode="json"), on_sample=on_sample, only=only, on_shard=on_shard)
