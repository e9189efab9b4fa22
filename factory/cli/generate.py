"""Commands that make dialogues: `generate` (a run, through the Prefect flow), `deploy` (the flow
as a scheduled deployment) and `tts-serve` (the TTS service that batches for many workers)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from factory.cli import present
from factory.cli.app import ConfigOpt, SetOpt, console, load
from factory.cli.runs import show_run
from factory.config import ConfigError, RunConfig
from factory.llm.base import LLMUnavailable
from factory.progress import track
from factory.render.base import BackendUnavailable
from factory.render.registry import backend_for
from factory.render.voices import VoiceBankError
from factory.run.records import failed_shards
from factory.script.scenario import ScenarioBankError

ALL_REJECTED = 4  # exit code of a generate run in which no sample came out (2: bad config, 3: missing backend)
SHARD_FAILED = 5  # a shard task kept failing after its retries (the others were written; --retry-failed)


def generate(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    samples: Annotated[int | None, typer.Option("--samples", "-n", help="run.n_samples")] = None,
    seed: Annotated[int | None, typer.Option(help="run.seed")] = None,
    run_id: Annotated[str | None, typer.Option(help="run.run_id")] = None,
    out: Annotated[Path | None, typer.Option(help="run.output_dir")] = None,
    workers: Annotated[int | None, typer.Option(help="run.workers")] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="rerun only the shards recorded as failed, then finalize")
    ] = False,
    summary_json: Annotated[
        Path | None,
        typer.Option(
            "--summary-json",
            help="also write the run summary (counts, failed shards, LLM HTTP stats, utilisation per stage) "
            "as JSON to this file: timings live here, not in the run folder, whose bytes depend only on the config",
        ),
    ] = None,
) -> None:
    """Generate dialogues into OUT/RUN_ID/ (parquet shards, manifest, config, card)."""
    cfg = load(config, set_, n_samples=samples, seed=seed, run_id=run_id, output_dir=out, workers=workers)
    # lazy: the runtime pulls in the stage packages (the warm-up below imports them too).
    from factory.runtime import runtime_for

    try:  # config errors found before anything starts (no worker, pool or server is started for them)
        if any(s.kind == "dataset" for s in cfg.dialogue.sources):
            _ = runtime_for(cfg).dialogue_sets  # a dataset source's path, column or role mapping
        # what a language lacks: voices (and voices their backend can speak it with), lexicon,
        # scenario bank, the LLM's prompts and a model that writes it
        runtime_for(cfg).check_languages()
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    except ValueError:
        pass  # a missing or malformed bank file: check_paths below names it with the other paths (exit 3)
    # Worker processes and TTS pools start and load their models while this process imports
    # Prefect and starts the run's Prefect server (~10 s on 2 cores).
    threading.Thread(target=_warm_up, args=(cfg,), name="warm-up", daemon=True).start()
    _quiet_prefect()
    # lazy: Prefect, datasets and the shard engine take seconds to import: here, after the warm-up started.
    from datasets.utils.logging import disable_progress_bar

    from factory.run.store import run_store
    from flows import generate as flow_module
    from flows.server import run_server

    only = None
    if retry_failed:
        only = sorted(failed_shards(run_store(cfg)))
        if not only:
            console.print(f"no failed shards recorded for {cfg.run_id}: nothing to retry")
            return
        console.print(f"retrying {len(only)} failed shard(s): {', '.join(only)}")
    try:
        # The cheap checks of `doctor` (paths, banks, the LLM, the destination): a typo costs no
        # Prefect server start (exit 3; what a language lacks was found above, exit 2).
        runtime_for(cfg).check_paths()
    except (LLMUnavailable, BackendUnavailable, VoiceBankError, ScenarioBankError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(3) from None
    disable_progress_bar()
    console.print(f"run [bold]{cfg.run_id}[/bold]: {cfg.run.n_samples} dialogues -> {cfg.run_dir}")
    # A bar in a terminal; a plain line every run.progress_every_s without one (factory.progress).
    with track(
        console, "generate", cfg.run.n_samples, unit="dialogues", every_s=cfg.run.progress_every_s, counts=True
    ) as progress:
        per_sample = cfg.run.task_runner == "thread"
        if not per_sample:
            console.print(
                f"{cfg.run.task_runner} runner: progress advances as each shard finishes (a per-sample "
                "callback cannot reach worker processes)"
            )

        def on_sample(result) -> None:
            progress.sample_done(result)

        def on_shard(result) -> None:
            if result.skipped or not per_sample:  # else its samples were counted one by one
                progress.shard_done(result)

        try:
            # A Prefect server of this run's own that the kernel kills with it (flows.server).
            with run_server():
                summary = flow_module.run_generate(cfg, on_sample=on_sample, only=only, on_shard=on_shard)
        except (LLMUnavailable, BackendUnavailable, VoiceBankError, ScenarioBankError, ValueError) as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(3) from None
    present.print_run_done(console, summary)
    if summary_json is not None:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(summary.model_dump_json(indent=2) + "\n")
    show_run(summary.run_dir, cfg.run.storage_options)
    if summary.failed:  # the other shards are written; a scheduler must still see the failure
        present.print_shard_errors(console, summary.failed)
        raise typer.Exit(SHARD_FAILED)
    if summary.ok == 0:  # a run that produced nothing must not look like a success to a scheduler
        console.print("[red]every sample was rejected[/red]")
        raise typer.Exit(ALL_REJECTED)


def _quiet_prefect() -> None:
    # Ephemeral Prefect: no server, no telemetry, only warnings on the console.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")


def _warm_up(cfg: RunConfig) -> None:
    # lazy: the engine pulls in the stage packages, and `generate` starts warming up the
    # models before Prefect is imported; other commands need neither.
    from factory.engine import warm_up
    from factory.run.records import shard_files
    from factory.run.shards import plan_shards
    from factory.run.store import run_store
    from factory.runtime import runtime_for

    try:
        store = run_store(cfg)
        if all(store.exists(shard_files(spec.name)["record"]) for spec in plan_shards(cfg)):
            # Every shard has its record: resuming a finished run loads no models (the flow still
            # verifies each shard; one found incomplete is redone, without this head start).
            return
        warm_up(runtime_for(cfg))
    except Exception:  # noqa: BLE001 - a head start only; preflight reports every problem
        return


def deploy(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    cron: Annotated[str, typer.Option(help="schedule (cron, in --timezone)")] = "0 2 * * *",
    name: Annotated[str, typer.Option(help="deployment name")] = "nightly",
    pool: Annotated[str, typer.Option(help="process work pool (created if missing)")] = "duplex-factory",
    timezone: Annotated[str, typer.Option(help="time zone of the cron schedule")] = "UTC",
) -> None:
    """Register the generate flow with this config as a scheduled deployment on the Prefect
    server at PREFECT_API_URL; a worker of POOL runs it (README "Scheduling")."""
    cfg = load(config, set_)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # lazy: Prefect takes seconds to import, and reads its settings on import: after the line above.
    from prefect.settings import PREFECT_API_URL

    if not (os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()):
        console.print("[red]PREFECT_API_URL is not set: start a server (prefect server start) and point it there[/red]")
        raise typer.Exit(2)
    # lazy: the flow and its deployment pull in the engine: only once a server is known.
    from flows.deploy import build_deployment
    from flows.deploy import deploy as apply

    deployment = build_deployment(config, name, cron, set_, timezone)
    deployment_id = apply(deployment, pool)
    console.print(
        f"deployment [bold]duplex-generate/{name}[/bold] ({deployment_id}): {cfg.run.n_samples} dialogues, "
        f"cron {cron!r} {timezone}, pool {pool}; start a worker: prefect worker start --pool {pool}",
        highlight=False,
    )


def tts_serve(
    backends: Annotated[str, typer.Option(help="comma-separated backends to host, e.g. coqui,espeak")] = "coqui",
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8020,
    batch_size: Annotated[int, typer.Option(help="most renders per synthesize_many call")] = 16,
    max_wait_ms: Annotated[float, typer.Option(help="how long a batch waits for more requests")] = 20.0,
    processes: Annotated[int, typer.Option(help="worker processes per CPU backend (piper, kokoro, espeak)")] = 1,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Serve TTS backends over HTTP for many factory workers, batching across them (set
    tts.service_url on the workers; README "TTS batching")."""
    cfg = load(config, set_)
    # lazy: the HTTP server (aiohttp) is for this command only: imported when it runs, never for --help.
    from factory.render.service import TTSService, serve

    names = [n.strip() for n in backends.split(",") if n.strip()]
    # keyed by any name typed here: an unknown one is refused by backend_for, saying which are known
    options: dict[str, dict[str, Any]] = {**cfg.tts.backend_options}
    try:
        hosted = {n: backend_for(n, options.get(n), processes=processes) for n in names}
        service = TTSService(hosted, batch_size=batch_size, max_wait_ms=max_wait_ms)
    except (BackendUnavailable, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(3) from None
    where = f"http://{host}:{port}"
    console.print(f"TTS service: {', '.join(names)} on {where} (batch {batch_size}, wait {max_wait_ms} ms)")
    serve(service, host, port)
