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

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Synthesise two-channel conversational speech.")
console = Console()

ALL_REJECTED = 4  # exit code of a generate run in which no sample came out (2: bad config, 3: missing backend)
SHARD_FAILED = 5  # a shard task kept failing after its retries (the others were written; --retry-failed)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override, e.g. --set run.seed=7")]


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
    from factory.run.shards import failed_shards, run_store
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

        def on_sample(result) -> None:
            with lock:
                counts[result.manifest.status.value] += 1
                progress.update(bar, advance=1, status=f"{counts['ok']} ok, {counts['rejected']} rejected")

        try:
            # A Prefect server of this run's own that the kernel kills with it (flows.server).
            with run_server():
                summary = flow_module.run_generate(cfg, on_sample=on_sample, only=only)
        except (LLMUnavailable, BackendUnavailable, VoiceBankError, ScenarioBankError) as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(3) from None
        progress.update(bar, completed=cfg.run.n_samples)
    console.print(
        f"[green]done[/green]: {summary['ok']} dialogues, {summary['rejected']} rejected, "
        f"{summary['skipped']}/{summary['shards']} shards already complete -> {summary['run_dir']}"
        + _llm_http_note(summary.get("llm_http"))
    )
    _print_utilisation(summary.get("utilisation"))
    if summary_json is not None:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    _print_summary(summary["run_dir"], cfg.run.storage_options)
    if summary["failed"]:  # the other shards are written; a scheduler must still see the failure
        for name, error in summary["failed"].items():
            console.print(f"[red]shard {name} failed: {error}[/red]", highlight=False)
        console.print(f"[red]{len(summary['failed'])} shard(s) failed: rerun with --retry-failed[/red]")
        raise typer.Exit(SHARD_FAILED)
    if summary["ok"] == 0:  # a run that produced nothing must not look like a success to a scheduler
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
def summary(run_dir: Annotated[str, typer.Argument(help="run folder or fsspec URL (s3://bucket/runs/<id>)")]) -> None:
    """Summarise a run folder from its manifest (and list its failed shards)."""
    _print_summary(run_dir)


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
    run_dir: Path,
    sample: Annotated[str | None, typer.Argument(help="sample id; default: the first")] = None,
    out: Annotated[Path | None, typer.Option(help="PNG path; default RUN_DIR/plots/<id>.png")] = None,
) -> None:
    """Draw one dialogue: both channels' waveforms under its timeline."""
    from factory.audit.plots import plot_dialogue
    from factory.run.read import RunFolderError, read_samples

    try:
        for s in read_samples(run_dir, None if sample is None else [sample]):
            path = plot_dialogue(s.timeline, s.stems, s.sample_rate, out or run_dir / "plots" / f"{s.id}.png")
            console.print(str(path))
            return
    except RunFolderError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"[red]no sample {sample!r} in {run_dir}[/red]")
    raise typer.Exit(1)


PUSH_FAILED = 6  # exit code of a push that stopped part-way (re-run the same command to resume)


@app.command()
def push(
    run_dir: Annotated[str, typer.Argument(help="run folder, or the fsspec URL it was published to (s3://...)")],
    repo: Annotated[str, typer.Option("--repo", help="dataset repo id, e.g. my-org/duplex-synth")],
    private: Annotated[bool, typer.Option(help="create the repo private")] = False,
    revision: Annotated[str | None, typer.Option(help="branch to push to (created if missing); default main")] = None,
    follow: Annotated[bool, typer.Option(help="keep pushing finished shards until the run is finalized")] = False,
    poll: Annotated[float, typer.Option(help="with --follow: seconds between rounds")] = 60.0,
) -> None:
    """Push a run to the Hugging Face Hub, resumably: one commit per shard, files already there are
    skipped. With --follow, push a run while it is generated. The token comes from HF_TOKEN or
    `hf auth login`, never from the command line."""
    from factory.publish.hub import PushError, follow_run, push_run
    from factory.run.read import RunFolderError

    def on_file(path: str, what: str) -> None:
        console.print(f"{'skip  ' if what == 'skip' else 'pushed'} {path}", highlight=False)

    try:
        if follow:
            reports = follow_run(run_dir, repo, poll_s=poll, private=private, revision=revision, on_file=on_file)
            if not reports:
                console.print(f"[red]{run_dir} was finalized without a finished shard: nothing to push[/red]")
                raise typer.Exit(1)
            report = reports[-1]
            report.uploaded = [p for r in reports for p in r.uploaded]
            report.commits = sum(r.commits for r in reports)
            report.bytes_uploaded = sum(r.bytes_uploaded for r in reports)
            report.skipped = reports[0].skipped  # already on the Hub before this push began
        else:
            report = push_run(run_dir, repo, private=private, revision=revision, on_file=on_file)
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


def _export_eval(run_dir: Path, out: Path, tasks: list[str] | None, split: str, overwrite: bool) -> None:
    """`export --format eval`: the run's SPLIT (default test) as Full-Duplex-Bench items, OUT/{task}/{ID}/
    with input.wav (user channel) and the task's JSON (see factory/export/fdb.py)."""
    from factory.export.fdb import FdbExportError, export
    from factory.run.read import RunFolderError, read_samples

    try:
        with Progress(TextColumn("exporting"), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
            progress = bar.add_task("samples", total=None)
            report = export(
                read_samples(run_dir),
                out,
                tasks=tasks or None,
                overwrite=overwrite,
                split=None if split == "all" else split,
                on_sample=lambda _: bar.advance(progress),
            )
    except (RunFolderError, FdbExportError) as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(1) from None
    table = Table(title=f"{out}: Full-Duplex-Bench items from {report['samples']} samples")
    for header in ("task", "items", "samples used", "samples without (reason)", "events left out (reason)"):
        table.add_column(header)
    for name, c in report["tasks"].items():
        table.add_row(
            name,
            str(c["items"]),
            str(c["samples_with_items"]),
            "\n".join(f"{n} {r}" for r, n in c["samples_without"].items()),
            "\n".join(f"{n} {r}" for r, n in c["events_left_out"].items()),
        )
    Console(width=max(console.width, 120)).print(table)
    for reason, n in [*report["excluded"].items(), *report["rejected"].items()]:
        console.print(f"[yellow]{n} samples not exported: {reason}[/yellow]", highlight=False)
    if not any(c["items"] for c in report["tasks"].values()):
        console.print("[red]no item written[/red] (a run made with run.split=test, or --split train/all?)")
        raise typer.Exit(1)


@app.command()
def audit(
    run_dir: Path,
    html: Annotated[Path | None, typer.Option("--html", help="write a static HTML report into this folder")] = None,
    asr_turns: Annotated[int | None, typer.Option(help="turns per sample through ASR; default audit.asr_turns")] = None,
    vad: Annotated[
        list[str] | None, typer.Option(help="detector(s), primary first; default audit.vad + compare_vad")
    ] = None,
    players: Annotated[int, typer.Option(help="samples with audio players in the HTML report")] = 12,
    audio_format: Annotated[str, typer.Option(help="report audio: flac (lossless) or ogg (Opus, small)")] = "flac",
) -> None:
    """Audit a run (or dataset) folder from its audio: table, RUN_DIR/audit.parquet, optional HTML."""
    from factory.audit.cli import run_audit_command

    raise typer.Exit(run_audit_command(console, run_dir, html, asr_turns, vad, players, audio_format))


@app.command()
def augment(
    run_dir: Path,
    out: Annotated[Path, typer.Option(help="new run folder (the source run is left as it is)")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Re-augment a finished run into a new run folder from its stored clean audio (no LLM, no
    TTS): the `augment` section comes from --config/--set over the run's own config.yaml."""
    from factory.augment.base import AugmentError
    from factory.augment.rerun import RerunError, augment_run
    from factory.run.read import RunFolderError

    own = run_dir / "config.yaml"
    try:
        base = load_config(own if own.exists() else None, [])
        # --config: its augment section (with --set); --set alone: over the run's own config
        section = load_config(config or (own if own.exists() else None), set_).augment
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    with Progress(TextColumn("augment"), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("augment", total=None)
        try:
            counts = augment_run(run_dir, out, section, base.tts.cache_dir, lambda _: progress.advance(task))
        except (RunFolderError, RerunError, AugmentError) as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    console.print(f"{out}: {counts['augmented']} of {counts['samples']} samples augmented in {counts['shards']} shards")


@app.command()
def preference(
    run_dir: Path,
    out: Annotated[Path, typer.Option(help="parquet file of pairs")],
    max_stop_s: Annotated[float, typer.Option(help="chosen: the agent stops within this after a barge-in")] = 1.0,
    late_s: Annotated[float, typer.Option(help="rejected stops_late: stops this long after the onset")] = 1.5,
    early_s: Annotated[float, typer.Option(help="rejected answers_early: starts this long before the user ends")] = 1.0,
) -> None:
    """Preference pairs (chosen, rejected) for DPO from a finished run, re-placed and re-mixed from
    its recipes with the renders in the TTS cache (no TTS call)."""
    from factory.preference.export import export_pairs
    from factory.run.read import RunFolderError, read_samples
    from factory.run.rebuild import SourceMissing

    own = run_dir / "config.yaml"
    cache = load_config(own if own.exists() else None, []).tts.cache_dir
    try:
        n = export_pairs(read_samples(run_dir), cache, out, max_stop_s=max_stop_s, late_s=late_s, early_s=early_s)
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
    from factory.batch import warm_up
    from factory.pipeline import pick_voices, voice_bank

    try:
        if cfg.tts.user_voice:
            backends = {v.backend for v in pick_voices(cfg, "warm-up").values()}
        else:
            backends = {v.backend for v in voice_bank(cfg.tts.voice_bank).by_split(cfg.run.split)}
        warm_up(cfg, sorted(backends))
    except Exception:  # noqa: BLE001 - a head start only; preflight reports every problem
        return


def _print_utilisation(use: dict | None) -> None:
    """Where the time went: seconds per audio-minute per stage, LLM requests in flight, TTS batches."""
    if not use or not use.get("audio_minutes"):
        return
    per_min = use["seconds_per_audio_minute"]
    stages = ", ".join(f"{stage} {seconds:g}" for stage, seconds in per_min.items())
    total = sum(per_min.values())
    llm, tts = use["llm"], use["tts"]
    console.print(
        f"stages, wall s per audio minute: {stages} (sum {total:.1f}: "
        f"{60 / total if total else 0:.2f} dialogue-min per stage-min); "
        f"LLM {llm['mean_in_flight']} in flight on average (max {llm['max_in_flight']}); "
        f"TTS {tts['renders_per_call']} renders per batch call",
        highlight=False,
    )


def _llm_http_note(stats: dict | None) -> str:
    """The HTTP LLM's retries and failures this run, e.g. "; LLM 40 requests, 3 retries (http_429 2, timeout 1)"."""
    if not stats:
        return ""

    def by_cause(counts: dict[str, int]) -> str:
        return f" ({', '.join(f'{cause} {n}' for cause, n in counts.items())})" if counts else ""

    retries, failures = stats["retries"], stats["failures"]
    return (
        f"; LLM {stats['requests']} requests, {sum(retries.values())} retries{by_cause(retries)}, "
        f"{sum(failures.values())} failed{by_cause(failures)}"
    )


def _print_summary(run_dir: str | Path, storage_options: dict | None = None) -> None:
    import io

    import polars as pl

    from factory.run.shards import failed_shards
    from factory.run.store import RunStore

    store = RunStore(str(run_dir), storage_options)
    for name, failure in failed_shards(store).items():
        console.print(f"[red]failed shard {name} ({failure.get('attempts')} attempts): {failure.get('error')}[/red]")
    if not store.exists("manifest.parquet"):
        console.print(f"[red]no manifest at {store.path('manifest.parquet')}[/red]")
        raise typer.Exit(1)
    run_dir = Path(store.root)
    manifest = store.path("manifest.parquet")
    df = pl.read_parquet(io.BytesIO(store.read_bytes("manifest.parquet")))
    ok = df.filter(pl.col("status") == "ok")
    table = Table(title=f"{run_dir.name}: {len(ok)} dialogues, {ok['duration'].sum() or 0:.1f} s")
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
    _print_audit_gates(run_dir, df)
    rejected = df.filter(pl.col("status") == "rejected")
    for row in rejected.head(20).iter_rows(named=True):
        console.print(f"[yellow]rejected {row['id']}: {row['reason']}[/yellow]")
    if len(rejected):
        console.print(f"[yellow]{_rejection_counts(rejected['reason'].to_list())}[/yellow]", highlight=False)


def _print_audit_gates(run_dir: Path, manifest) -> None:
    """Samples the audit gates flagged, and shards whose pooled measures left their band (records)."""
    import json

    import polars as pl

    if "audit_flags" in manifest.columns:
        flagged = manifest.filter(pl.col("audit_flags").is_not_null())
        for row in flagged.head(10).iter_rows(named=True):
            console.print(f"[yellow]audit flag {row['id']}: {row['audit_flags']}[/yellow]", highlight=False)
        if len(flagged):
            console.print(f"[yellow]{len(flagged)} samples flagged by the audit gates (manifest: audit_flags)[/yellow]")
    for record in sorted((run_dir / "shards").glob("*.json")):
        problems = (json.loads(record.read_text()).get("audit") or {}).get("problems") or []
        if problems:
            console.print(f"[yellow]shard {record.stem} audit: {'; '.join(problems)}[/yellow]", highlight=False)


def _rejection_counts(reasons: list[str | None]) -> str:
    """E.g. "5 rejected: behaviour_minimum x 3, internal_error x 2": reasons by kind (the text
    before the first colon), most frequent first, so a run's main failure is read at a glance."""
    kinds = Counter((reason or "unknown").split(":", 1)[0].strip() for reason in reasons)
    return f"{len(reasons)} rejected: " + ", ".join(f"{kind} x {n}" for kind, n in kinds.most_common())


@app.command("export")
def export_cmd(
    run_dir: Path,
    format_: Annotated[
        str, typer.Option("--format", "-f", help="bayling, dgslm, lslm, units-1s, moshi, nemo-duplex, eval")
    ],
    out: Annotated[Path | None, typer.Option(help="export folder; default RUN_DIR/exports/FORMAT")] = None,
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
) -> None:
    """Export a finished run as training shards of FORMAT (token arrays + export.json sidecar), or with
    `--format eval` its test split as Full-Duplex-Bench items (-o split=test|train|dev|all,
    -o tasks=pause_handling,backchannel,smooth_turn_taking,user_interruption, -o overwrite=true)."""
    from factory.export.base import ExportError, ExportOptions, export_run
    from factory.export.console import parse_options, run_with_progress

    if format_ == "eval":
        try:
            opts = parse_options(option or [])
        except ExportError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(exc.exit_code) from None
        unknown = set(opts) - {"split", "tasks", "overwrite"}
        if unknown:
            console.print(f"[red]unknown eval option(s) {sorted(unknown)}: known are split, tasks, overwrite[/red]")
            raise typer.Exit(2)
        tasks = opts.get("tasks")
        tasks = tasks.split(",") if isinstance(tasks, str) else tasks
        _export_eval(
            run_dir,
            out or run_dir / "exports" / "eval",
            tasks,
            str(opts.get("split", "test")),
            bool(opts.get("overwrite", False)),
        )
        return
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
        report = run_with_progress(lambda progress: export_run(run_dir, format_, out, options, progress), run_dir)
    except ExportError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(exc.exit_code) from None
    from factory.export.console import print_report

    print_report(console, report)


@app.command()
def inspect(
    export_dir: Path,
    sample: Annotated[str, typer.Argument(help="sequence (sample) id")],
    start: Annotated[float, typer.Option(help="from this time, s")] = 0.0,
    end: Annotated[float | None, typer.Option(help="up to this time, s")] = None,
) -> None:
    """Render one exported sequence back as a timeline: per frame, each channel's tokens, text and states."""
    from factory.export.base import ExportError
    from factory.export.console import render_decoded

    try:
        render_decoded(console, export_dir, sample, start, end)
    except ExportError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(exc.exit_code) from None


if __name__ == "__main__":
    app()
