"""`duplex-factory` command line."""

from __future__ import annotations

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
) -> None:
    """Generate dialogues into OUT/RUN_ID/ (parquet shards, manifest, config, card)."""
    cfg = _load(config, set_, n_samples=samples, seed=seed, run_id=run_id, output_dir=out, workers=workers)
    _quiet_prefect()
    from datasets.utils.logging import disable_progress_bar

    from factory.llm.base import LLMUnavailable
    from factory.render.base import BackendUnavailable
    from factory.render.voices import VoiceBankError
    from factory.script.scenario import ScenarioBankError
    from flows import generate as flow_module

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
            summary = flow_module.run_generate(cfg, on_sample=on_sample)
        except (LLMUnavailable, BackendUnavailable, VoiceBankError, ScenarioBankError) as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(3) from None
        progress.update(bar, completed=cfg.run.n_samples)
    console.print(
        f"[green]done[/green]: {summary['ok']} dialogues, {summary['rejected']} rejected, "
        f"{summary['skipped']}/{summary['shards']} shards already complete -> {summary['run_dir']}"
        + _llm_http_note(summary.get("llm_http"))
    )
    _print_summary(Path(summary["run_dir"]))
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
def summary(run_dir: Path) -> None:
    """Summarise a run folder from its manifest."""
    _print_summary(run_dir)


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
    from factory.run.io import atomic_write_text
    from factory.timeline.timing import SWITCHBOARD, TimingFitError, TimingModel

    try:
        model = TimingModel.fit(SWITCHBOARD if source.lower() == "switchboard" else Path(source))
    except TimingFitError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    atomic_write_text(out, model.model_dump_json(indent=2))
    q = ", ".join(f"p{round(k * 100)} {v:+.3f}" for k, v in model.quantiles().items())
    console.print(f"{out}: overlap share {model.overlap_probability:.3f}; FTO {q} s")


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


def _print_summary(run_dir: Path) -> None:
    import polars as pl

    manifest = run_dir / "manifest.parquet"
    if not manifest.exists():
        console.print(f"[red]no manifest at {manifest}[/red]")
        raise typer.Exit(1)
    df = pl.read_parquet(manifest)
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
    rejected = df.filter(pl.col("status") == "rejected")
    for row in rejected.head(20).iter_rows(named=True):
        console.print(f"[yellow]rejected {row['id']}: {row['reason']}[/yellow]")
    if len(rejected):
        console.print(f"[yellow]{_rejection_counts(rejected['reason'].to_list())}[/yellow]", highlight=False)


def _rejection_counts(reasons: list[str | None]) -> str:
    """E.g. "5 rejected: behaviour_minimum x 3, internal_error x 2": reasons by kind (the text
    before the first colon), most frequent first, so a run's main failure is read at a glance."""
    kinds = Counter((reason or "unknown").split(":", 1)[0].strip() for reason in reasons)
    return f"{len(reasons)} rejected: " + ", ".join(f"{kind} x {n}" for kind, n in kinds.most_common())


if __name__ == "__main__":
    app()
