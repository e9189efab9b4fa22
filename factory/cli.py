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


if __name__ == "__main__":
    app()
