"""Prefect flow: one task per shard. Orchestration only; the work is in `factory.run.shards`
and `factory.pipeline`.

Run it with `duplex-factory generate` (ephemeral Prefect, no server) or deploy it on a
schedule (see README "Scheduling"). Shard tasks run in a thread pool of `run.workers` threads:
the heavy parts (llama.cpp, onnxruntime, CTranslate2, FLAC) release the GIL. A re-run with the
same config resumes: finished shards are verified by checksum and skipped, broken or missing
ones are redone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from factory.config import RunConfig
from factory.pipeline import SampleResult, llm_for, preflight
from factory.run.shards import ShardResult, ShardSpec, finalize_run, generate_shard, plan_shards

OnSample = Callable[[SampleResult], None]


@task(name="generate-shard", cache_policy=NO_CACHE)
def shard_task(config: dict[str, Any], spec: ShardSpec, on_sample: OnSample | None = None) -> ShardResult:
    cfg = RunConfig.model_validate(config)
    result = generate_shard(cfg, spec, on_sample=on_sample)
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
    differ, and a re-run of the same night resumes instead of starting over."""
    cfg = RunConfig.model_validate(config)
    run = cfg.run.model_copy(update={"run_id": f"{cfg.run_id}-{day}", "seed": cfg.run.seed + int(day)})
    return cfg.model_copy(update={"run": run}).model_dump(mode="json")


@flow(name="duplex-generate", log_prints=True)
def generate(config: dict[str, Any], per_day: bool = False, on_sample: OnSample | None = None) -> dict[str, Any]:
    """Generate a run: plan shards, one task each, then collect the manifest and card.
    `per_day` (deployments): suffix the run id and offset the seed by the scheduled date.
    `on_sample` (in-process runs, e.g. the CLI's progress bar) is called after every sample."""
    if per_day:
        from prefect.runtime import flow_run

        config = dated(config, flow_run.scheduled_start_time.strftime("%Y%m%d"))
    cfg = RunConfig.model_validate(config)
    preflight(cfg)
    # The HTTP backend's retry/failure counters, as this run's delta (the backend outlives runs).
    llm_stats = getattr(llm_for(cfg), "stats", None)
    stats_before = llm_stats.snapshot() if llm_stats is not None else None
    specs = plan_shards(cfg)
    futures = [shard_task.submit(config, spec, on_sample) for spec in specs]
    results = [f.result() for f in futures]
    run_dir = finalize_run(cfg, results)
    return {
        "run_dir": str(run_dir),
        "shards": len(results),
        "skipped": sum(r.skipped for r in results),
        "ok": sum(r.n_ok for r in results),
        "rejected": sum(r.n_rejected for r in results),
        "llm_http": llm_stats.since(stats_before) if llm_stats is not None else None,
    }


def run_generate(cfg: RunConfig, on_sample: OnSample | None = None) -> dict[str, Any]:
    """Run the flow in-process with `cfg.run.workers` shard tasks at a time."""
    runner = generate.with_options(task_runner=ThreadPoolTaskRunner(max_workers=cfg.run.workers))
    return runner(cfg.model_dump(mode="json"), on_sample=on_sample)
