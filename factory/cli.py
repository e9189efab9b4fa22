"""`duplex-factory` command line."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from factory.config import ConfigError, RunConfig, load_config
from factory.run.records import LLMHttp, Utilisation

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Synthesise two-channel conversational speech.")
console = Console()

ALL_REJECTED = 4  # exit code of a generate run in which no sample came out (2: bad config, 3: missing backend)
SHARD_FAILED = 5  # a shard task kept failing after its retries (the others were written; --retry-failed)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override, e.g. --set run.seed=7")]
# Every command that reads a run takes RUN as a folder or an fsspec URL, and this one option for
# the URL's filesystem (credentials stay in the environment, e.g. AWS_ACCESS_KEY_ID).
RunArg = Annotated[str, typer.Argument(help="run folder or fsspec URL (s3://bucket/runs/<id>)")]
StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage-options",
        envvar="DUPLEX_STORAGE_OPTIONS",
        help='fsspec options of a run URL as JSON, e.g. \'{"endpoint_url": "http://minio:9000"}\' (no secrets)',
    ),
]


def _storage(value: str | None) -> dict | None:
    if not value:
        return None
    try:
        options = json.loads(value)
    except ValueError as exc:
        console.print(f"[red]--storage-options is not JSON: {exc}[/red]")
        raise typer.Exit(2) from None
    if not isinstance(options, dict):
        console.print("[red]--storage-options must be a JSON object[/red]")
        raise typer.Exit(2)
    return options


def _quiet_prefect() -> None:
    # Ephemeral Prefect: no server, no telemetry, only warnings on the console.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")


def _load(config: Path | None, overrides: list[str] | None, **shortcuts: object) -> RunConfig:
    extra = [f"run.{k}={v}" for k, v in shortcuts.items() if v is not None]
    try:
        return load_config(config, [*(overrides or []), *extra])
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@app.command()
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
    cfg = _load(config, set_, n_samples=samples, seed=seed, run_id=run_id, output_dir=out, workers=workers)
    # Worker processes and TTS pools start and load their models while this process imports
    # Prefect and starts the run's Prefect server (~10 s on 2 cores).
    threading.Thread(target=_warm_up, args=(cfg,), name="warm-up", daemon=True).start()
    _quiet_prefect()
    from datasets.utils.logging import disable_progress_bar

    from factory.llm.base import LLMUnavailable
    from factory.render.base import BackendUnavailable
    from factory.render.voices import VoiceBankError
    from factory.run.records import failed_shards
    from factory.run.shards import run_store
    from factory.script.scenario import ScenarioBankError
    from flows import generate as flow_module
    from flows.server import run_server

    only = None
    if retry_failed:
        only = sorted(failed_shards(run_store(cfg)))
        if not only:
            console.print(f"no failed shards recorded for {cfg.run_id}: nothing to retry")
            return
        console.print(f"retrying {len(only)} failed shard(s): {', '.join(only)}")
    disable_progress_bar()
    console.print(f"run [bold]{cfg.run_id}[/bold]: {cfg.run.n_samples} dialogues -> {cfg.run_dir}")
    lock = threading.Lock()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("dialogues", total=cfg.run.n_samples, status="")
        counts = {"ok": 0, "rejected": 0}
        per_sample = cfg.run.task_runner == "thread"
        if not per_sample:
            console.print(
                f"{cfg.run.task_runner} runner: progress advances as each shard finishes (a per-sample "
                "callback cannot reach worker processes)"
            )

        def advance(ok: int, rejected: int) -> None:
            with lock:
                counts["ok"] += ok
                counts["rejected"] += rejected
                progress.update(bar, advance=ok + rejected, status=f"{counts['ok']} ok, {counts['rejected']} rejected")

        def on_sample(result) -> None:
            ok = result.manifest.status.value == "ok"
            advance(int(ok), int(not ok))

        def on_shard(result) -> None:
            if result.skipped or not per_sample:  # else its samples were counted one by one
                advance(result.n_ok, result.n_rejected)

        try:
            # A Prefect server of this run's own that the kernel kills with it (flows.server).
            with run_server():
                summary = flow_module.run_generate(cfg, on_sample=on_sample, only=only, on_shard=on_shard)
        except (LLMUnavailable, BackendUnavailable, VoiceBankError, ScenarioBankError) as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(3) from None
        progress.update(bar, completed=cfg.run.n_samples)
    console.print(
        f"[green]done[/green]: {summary.ok} dialogues, {summary.rejected} rejected, "
        f"{summary.skipped}/{summary.shards} shards already complete -> {summary.run_dir}"
        + _llm_http_note(summary.llm_http)
    )
    _print_utilisation(summary.utilisation)
    if summary_json is not None:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(summary.model_dump_json(indent=2) + "\n")
    _print_summary(summary.run_dir, cfg.run.storage_options)
    if summary.failed:  # the other shards are written; a scheduler must still see the failure
        for name, error in summary.failed.items():
            console.print(f"[red]shard {name} failed: {error}[/red]", highlight=False)
        console.print(f"[red]{len(summary.failed)} shard(s) failed: rerun with --retry-failed[/red]")
        raise typer.Exit(SHARD_FAILED)
    if summary.ok == 0:  # a run that produced nothing must not look like a success to a scheduler
        console.print("[red]every sample was rejected[/red]")
        raise typer.Exit(ALL_REJECTED)


@app.command("config")
def show_config(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved run config (defaults <- file <- overrides) as YAML."""
    console.print(_load(config, set_).to_yaml(), highlight=False)


@app.command()
def schemas(out: Annotated[Path, typer.Option(help="folder to write")] = Path("schemas")) -> None:
    """Regenerate the JSON Schemas from the models."""
    from factory.schemas import write_all

    for path in write_all(out):
        console.print(str(path))


@app.command()
def summary(run_dir: RunArg, storage_options: StorageOpt = None) -> None:
    """Summarise a run from its manifest and shard records (failed shards, audit gate problems)."""
    _print_summary(run_dir, _storage(storage_options))


@app.command()
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
    cfg = _load(config, set_)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_API_URL

    if not (os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()):
        console.print("[red]PREFECT_API_URL is not set: start a server (prefect server start) and point it there[/red]")
        raise typer.Exit(2)
    from flows.deploy import build_deployment
    from flows.deploy import deploy as apply

    deployment = build_deployment(config, name, cron, set_, timezone)
    deployment_id = apply(deployment, pool)
    console.print(
        f"deployment [bold]duplex-generate/{name}[/bold] ({deployment_id}): {cfg.run.n_samples} dialogues, "
        f"cron {cron!r} {timezone}, pool {pool}; start a worker: prefect worker start --pool {pool}",
        highlight=False,
    )


@app.command("tts-serve")
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
    cfg = _load(config, set_)
    from factory.render.base import BackendUnavailable
    from factory.render.registry import backend_for
    from factory.render.service import TTSService, serve

    names = [n.strip() for n in backends.split(",") if n.strip()]
    try:
        hosted = {n: backend_for(n, cfg.tts.backend_options.get(n), processes=processes) for n in names}
        service = TTSService(hosted, batch_size=batch_size, max_wait_ms=max_wait_ms)
    except (BackendUnavailable, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(3) from None
    where = f"http://{host}:{port}"
    console.print(f"TTS service: {', '.join(names)} on {where} (batch {batch_size}, wait {max_wait_ms} ms)")
    serve(service, host, port)


@app.command()
def plot(
    run_dir: RunArg,
    sample: Annotated[str | None, typer.Argument(help="sample id; default: the first")] = None,
    out: Annotated[Path | None, typer.Option(help="PNG path; default RUN_DIR/plots/<id>.png (also for a URL)")] = None,
    storage_options: StorageOpt = None,
) -> None:
    """Draw one dialogue: both channels' waveforms under its timeline."""
    import tempfile

    from factory.audit.plots import plot_dialogue
    from factory.run.read import RunFolderError, open_run, read_samples

    store = open_run(run_dir, _storage(storage_options))
    try:
        for s in read_samples(
            store.url, None if sample is None else [sample], storage_options=_storage(storage_options)
        ):
            if out is not None or store.is_local:
                path = plot_dialogue(
                    s.timeline, s.stems, s.sample_rate, out or Path(store.root) / "plots" / f"{s.id}.png"
                )
                console.print(str(path))
                return
            with tempfile.TemporaryDirectory(prefix="duplex-plot-") as scratch:  # drawn here, then put in the store
                local = plot_dialogue(s.timeline, s.stems, s.sample_rate, Path(scratch) / f"{s.id}.png")
                store.put(local, f"plots/{s.id}.png")
            console.print(store.url + f"/plots/{s.id}.png")
            return
    except RunFolderError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"[red]no sample {sample!r} in {run_dir}[/red]")
    raise typer.Exit(1)


PUSH_FAILED = 6  # exit code of a push that stopped part-way (re-run the same command to resume)


@app.command()
def push(
    run_dir: RunArg,
    repo: Annotated[str, typer.Option("--repo", help="dataset repo id, e.g. my-org/duplex-synth")],
    private: Annotated[bool, typer.Option(help="create the repo private")] = False,
    revision: Annotated[str | None, typer.Option(help="branch to push to (created if missing); default main")] = None,
    follow: Annotated[bool, typer.Option(help="keep pushing finished shards until the run is finalized")] = False,
    poll: Annotated[float, typer.Option(help="with --follow: seconds between rounds")] = 60.0,
    storage_options: StorageOpt = None,
) -> None:
    """Push a run to the Hugging Face Hub, resumably: one commit per shard, files already there are
    skipped. With --follow, push a run while it is generated. The token comes from HF_TOKEN or
    `hf auth login`, never from the command line."""
    from factory.publish.hub import PushError, follow_run, push_run
    from factory.run.read import RunFolderError

    def on_file(path: str, what: str) -> None:
        console.print(f"{'skip  ' if what == 'skip' else 'pushed'} {path}", highlight=False)

    options = _storage(storage_options)
    try:
        if follow:
            reports = follow_run(
                run_dir,
                repo,
                poll_s=poll,
                private=private,
                revision=revision,
                on_file=on_file,
                storage_options=options,
            )
            if not reports:
                console.print(f"[red]{run_dir} was finalized without a finished shard: nothing to push[/red]")
                raise typer.Exit(1)
            report = reports[-1]
            report.uploaded = [p for r in reports for p in r.uploaded]
            report.commits = sum(r.commits for r in reports)
            report.bytes_uploaded = sum(r.bytes_uploaded for r in reports)
            report.skipped = reports[0].skipped  # already on the Hub before this push began
        else:
            report = push_run(
                run_dir, repo, private=private, revision=revision, on_file=on_file, storage_options=options
            )
    except RunFolderError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    except PushError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(PUSH_FAILED) from None
    console.print(
        f"{report.repo_id}@{report.revision}: {len(report.uploaded)} files pushed in {report.commits} commits "
        f"({report.bytes_uploaded / 1e6:.1f} MB), {len(report.skipped)} already there",
        highlight=False,
    )


@app.command()
def audit(
    run_dir: RunArg,
    html: Annotated[Path | None, typer.Option("--html", help="write a static HTML report into this folder")] = None,
    asr_turns: Annotated[int | None, typer.Option(help="turns per sample through ASR; default audit.asr_turns")] = None,
    vad: Annotated[
        list[str] | None, typer.Option(help="detector(s), primary first; default audit.vad + compare_vad")
    ] = None,
    players: Annotated[int, typer.Option(help="samples with audio players in the HTML report")] = 12,
    audio_format: Annotated[str, typer.Option(help="report audio: flac (lossless) or ogg (Opus, small)")] = "flac",
    storage_options: StorageOpt = None,
) -> None:
    """Audit a run (or dataset) folder or URL from its audio: table, RUN_DIR/audit.parquet, optional HTML."""
    from factory.audit.cli import run_audit_command

    options = _storage(storage_options)
    raise typer.Exit(run_audit_command(console, run_dir, html, asr_turns, vad, players, audio_format, options))


@app.command()
def augment(
    run_dir: RunArg,
    out: Annotated[Path, typer.Option(help="new local run folder (the source run is left as it is)")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    storage_options: StorageOpt = None,
) -> None:
    """Re-augment a finished run into a new run folder from its stored clean audio (no LLM, no
    TTS): the `augment` section comes from --config/--set over the run's own config.yaml."""
    from factory.augment.base import AugmentError
    from factory.augment.rerun import RerunError, augment_run
    from factory.run.read import RunFolderError

    options = _storage(storage_options)
    try:
        base = _run_config(run_dir, options)
        # --config: its augment section (with --set); --set alone: over the run's own config
        if config is not None:
            section = load_config(config, set_).augment
        else:
            section = _override(base, set_).augment
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    with Progress(TextColumn("augment"), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("augment", total=None)
        try:
            counts = augment_run(
                run_dir, out, section, base.tts.cache_dir, lambda _: progress.advance(task), storage_options=options
            )
        except (RunFolderError, RerunError, AugmentError) as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    console.print(f"{out}: {counts['augmented']} of {counts['samples']} samples augmented in {counts['shards']} shards")


@app.command()
def preference(
    run_dir: RunArg,
    out: Annotated[Path, typer.Option(help="parquet file of pairs")],
    max_stop_s: Annotated[float, typer.Option(help="chosen: the agent stops within this after a barge-in")] = 1.0,
    late_s: Annotated[float, typer.Option(help="rejected stops_late: stops this long after the onset")] = 1.5,
    early_s: Annotated[float, typer.Option(help="rejected answers_early: starts this long before the user ends")] = 1.0,
    storage_options: StorageOpt = None,
) -> None:
    """Preference pairs (chosen, rejected) for DPO from a finished run, re-placed and re-mixed from
    its recipes with the renders in the TTS cache (no TTS call)."""
    from factory.preference.export import export_pairs
    from factory.run.read import RunFolderError, read_samples
    from factory.run.rebuild import SourceMissing

    options = _storage(storage_options)
    try:
        cache = _run_config(run_dir, options).tts.cache_dir
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    try:
        samples = read_samples(run_dir, storage_options=options)
        n = export_pairs(samples, cache, out, max_stop_s=max_stop_s, late_s=late_s, early_s=early_s)
    except (RunFolderError, SourceMissing) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{out}: {n} pairs")


@app.command("fit-timing")
def fit_timing(
    source: Annotated[str, typer.Argument(help="two-speaker .rttm, lhotse .jsonl(.gz) manifest, or 'switchboard'")],
    out: Annotated[Path, typer.Option(help="JSON of the fitted model, for timing.model_file")],
) -> None:
    """Fit the turn-taking model (floor-transfer offsets) to a corpus or the published numbers."""
    from factory.atomic import atomic_write_text
    from factory.timeline.timing import SWITCHBOARD, TimingFitError, TimingModel

    try:
        model = TimingModel.fit(SWITCHBOARD if source.lower() == "switchboard" else Path(source))
    except TimingFitError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    atomic_write_text(out, model.model_dump_json(indent=2))
    q = ", ".join(f"p{round(k * 100)} {v:+.3f}" for k, v in model.quantiles().items())
    console.print(f"{out}: overlap share {model.overlap_probability:.3f}; FTO {q} s")


def _warm_up(cfg) -> None:
    # Imported here: the engine pulls in the stage packages, and `generate` starts warming up the
    # models before Prefect is imported; other commands need neither.
    from factory.engine import warm_up
    from factory.runtime import runtime_for

    try:
        warm_up(runtime_for(cfg))
    except Exception:  # noqa: BLE001 - a head start only; preflight reports every problem
        return


def _run_config(run_dir: str, storage_options: dict | None) -> RunConfig:
    """The run's own config.yaml (read where the run is), else the defaults."""
    from factory.run.read import read_config

    return read_config(run_dir, storage_options) or load_config()


def _override(cfg: RunConfig, overrides: list[str] | None) -> RunConfig:
    """`cfg` with `--set` overrides applied (validated like a config file)."""
    import tempfile

    if not overrides:
        return cfg
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:  # load_config reads a file
        f.write(cfg.to_yaml())
        f.flush()
        return load_config(f.name, overrides)


def _print_utilisation(use: Utilisation) -> None:
    """Where the time went: seconds per audio-minute per stage, LLM requests in flight, TTS batches."""
    if not use.audio_minutes:
        return
    per_min = use.seconds_per_audio_minute
    stages = ", ".join(f"{stage} {seconds:g}" for stage, seconds in per_min.items())
    total = sum(per_min.values())
    console.print(
        f"stages, wall s per audio minute: {stages} (sum {total:.1f}: "
        f"{60 / total if total else 0:.2f} dialogue-min per stage-min); "
        f"LLM {use.llm.mean_in_flight} in flight on average (max {use.llm.max_in_flight}); "
        f"TTS {use.tts.renders_per_call} renders per batch call",
        highlight=False,
    )


def _llm_http_note(stats: LLMHttp | None) -> str:
    """The HTTP LLM's retries and failures this run, e.g. "; LLM 40 requests, 3 retries (http_429 2, timeout 1)"."""
    if not stats:
        return ""

    def by_cause(counts: dict[str, int]) -> str:
        return f" ({', '.join(f'{cause} {n}' for cause, n in counts.items())})" if counts else ""

    retries, failures = stats.retries, stats.failures
    return (
        f"; LLM {stats.requests} requests, {sum(retries.values())} retries{by_cause(retries)}, "
        f"{sum(failures.values())} failed{by_cause(failures)}"
    )


def _print_summary(run_dir: str | Path, storage_options: dict | None = None) -> None:
    import polars as pl

    from factory.run.read import MANIFEST, RunFolderError, open_run, read_manifest
    from factory.run.records import failed_shards

    store = open_run(run_dir, storage_options)
    for name, failure in failed_shards(store).items():
        console.print(f"[red]failed shard {name} ({failure.attempts} attempts): {failure.error}[/red]")
    try:
        df = read_manifest(store)
    except RunFolderError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    manifest = store.path(MANIFEST)
    ok = df.filter(pl.col("status") == "ok")
    table = Table(title=f"{Path(store.root).name}: {len(ok)} dialogues, {ok['duration'].sum() or 0:.1f} s")
    for header in ("id", "mode", "s", "turns", "barge-ins", "backch.", "fillers", "overlap", "voices (user / agent)"):
        table.add_column(header, no_wrap=True)
    for r in ok.head(20).iter_rows(named=True):
        table.add_row(
            r["id"],
            r["mode"],
            f"{r['duration']:.1f}",
            str(r["n_turns"]),
            str(r["n_barge_ins"]),
            str(r["n_backchannels"]),
            str(r["n_fillers"]),
            f"{r['overlap_share']:.2f}",
            f"{r['user_voice']} / {r['agent_voice']}",
        )
    # A table wider than a pipe's 80 columns beats a squashed one.
    Console(width=max(console.width, 120)).print(table)
    if len(ok) > 20:
        console.print(f"... and {len(ok) - 20} more dialogues: {manifest}")
    _print_audit_gates(store, df)
    rejected = df.filter(pl.col("status") == "rejected")
    for row in rejected.head(20).iter_rows(named=True):
        console.print(f"[yellow]rejected {row['id']}: {row['reason']}[/yellow]")
    if len(rejected):
        console.print(f"[yellow]{_rejection_counts(rejected['reason'].to_list())}[/yellow]", highlight=False)


def _print_audit_gates(store, manifest) -> None:
    """Samples the audit gates flagged, and shards whose pooled measures left their band (records)."""
    import polars as pl

    from factory.run.read import shard_records

    if "audit_flags" in manifest.columns:
        flagged = manifest.filter(pl.col("audit_flags").is_not_null())
        for row in flagged.head(10).iter_rows(named=True):
            console.print(f"[yellow]audit flag {row['id']}: {row['audit_flags']}[/yellow]", highlight=False)
        if len(flagged):
            console.print(f"[yellow]{len(flagged)} samples flagged by the audit gates (manifest: audit_flags)[/yellow]")
    for name, record in shard_records(store):
        if isinstance(record, Exception):
            console.print(f"[red]shard {name}: record unreadable ({record})[/red]", highlight=False)
        elif record.audit.problems:
            console.print(f"[yellow]shard {name} audit: {'; '.join(record.audit.problems)}[/yellow]", highlight=False)


def _rejection_counts(reasons: list[str | None]) -> str:
    """E.g. "5 rejected: behaviour_minimum x 3, internal_error x 2": reasons by kind (the text
    before the first colon), most frequent first, so a run's main failure is read at a glance."""
    kinds = Counter((reason or "unknown").split(":", 1)[0].strip() for reason in reasons)
    return f"{len(reasons)} rejected: " + ", ".join(f"{kind} x {n}" for kind, n in kinds.most_common())


@app.command("export")
def export_cmd(
    run: RunArg,
    format_: Annotated[
        str, typer.Option("--format", "-f", help="bayling, dgslm, lslm, units-1s, moshi, nemo-duplex, fdb")
    ],
    out: Annotated[
        Path | None, typer.Option(help="export folder; default RUN/exports/FORMAT (required for a URL)")
    ] = None,
    audio_tokenizer: Annotated[str, typer.Option(help="units (fitted on the run), mimi, encodec")] = "units",
    weights: Annotated[Path | None, typer.Option(help="local weights folder of mimi/encodec")] = None,
    codebook: Annotated[Path | None, typer.Option(help="a saved units codebook to reuse instead of fitting")] = None,
    text_tokenizer: Annotated[str | None, typer.Option(help="HF tokenizer folder; default the embedded LLM's")] = None,
    units_k: Annotated[int, typer.Option(help="units codebook size")] = 256,
    seed: Annotated[int, typer.Option(help="seed of the units fit")] = 0,
    shard_size: Annotated[int, typer.Option(help="sequences per parquet shard")] = 1000,
    tokenize_batch: Annotated[int, typer.Option(help="dialogues per audio-tokenizer batch")] = 8,
    augmented: Annotated[bool, typer.Option(help="tokenize the augmented mix")] = False,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="format option KEY=VALUE")] = None,
    storage_options: StorageOpt = None,
) -> None:
    """Export a finished run as training shards of FORMAT (token arrays + export.json sidecar), or with
    `--format fdb` its test split as Full-Duplex-Bench items (-o split=test|train|dev|all,
    -o tasks=pause_handling,backchannel,smooth_turn_taking,user_interruption). A format's options
    are checked before the run is read; a bad one names the key and what the format takes."""
    from factory.export.console import parse_options, print_report, run_with_progress
    from factory.export.errors import ExportError
    from factory.export.options import ExportOptions
    from factory.export.run import export_run

    try:
        tokenizer_options = {"weights": str(weights)} if weights else {}
        if codebook:
            audio_tokenizer, tokenizer_options = "units", {"codebook": str(codebook)}
        options = ExportOptions(
            audio_tokenizer=audio_tokenizer,
            audio_tokenizer_options=tokenizer_options,
            text_tokenizer=text_tokenizer,
            units_k=units_k,
            seed=seed,
            shard_size=shard_size,
            tokenize_batch=tokenize_batch,
            use_augmented=augmented,
            format_options=parse_options(option or []),
        )
        storage = _storage(storage_options)
        report = run_with_progress(lambda progress: export_run(run, format_, out, options, progress, storage))
    except ExportError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(exc.exit_code) from None
    print_report(console, report)


@app.command()
def inspect(
    export_dir: Path,
    sample: Annotated[str, typer.Argument(help="sequence (sample) id")],
    start: Annotated[float, typer.Option(help="from this time, s")] = 0.0,
    end: Annotated[float | None, typer.Option(help="up to this time, s")] = None,
) -> None:
    """Render one exported sequence back as a timeline: per frame, each channel's tokens, text and states."""
    from factory.export.console import render_decoded
    from factory.export.errors import ExportError

    try:
        render_decoded(console, export_dir, sample, start, end)
    except ExportError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(exc.exit_code) from None


if __name__ == "__main__":
    app()
