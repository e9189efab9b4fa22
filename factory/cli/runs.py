"""Commands that read a finished run, a folder or an fsspec URL (`--storage-options`): `summary`,
`plot`, `push`, `audit`, `augment`, `preference`.

The run reader (`factory.run.read`) and what each command does with a run pull in datasets,
scipy or the Hub client (seconds): each command imports them when it runs, so that
`duplex-factory --help` and the other commands never pay for them."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from factory.audit.plots import plot_dialogue
from factory.cli import present
from factory.cli.app import ConfigOpt, RunArg, SetOpt, StorageOpt, console, parse_storage
from factory.config import ConfigError, RunConfig, load_config
from factory.progress import track
from factory.run.records import failed_shards
from factory.tts_cache import CacheStore, open_cache

PUSH_FAILED = 6  # exit code of a push that stopped part-way (re-run the same command to resume)


def summary(run_dir: RunArg, storage_options: StorageOpt = None) -> None:
    """Summarise a run from its manifest and shard records (failed shards, audit gate problems)."""
    show_run(run_dir, parse_storage(storage_options))


def show_run(run_dir: str | Path, storage_options: dict | None = None) -> None:
    """Read a run's failure records, manifest and shard records, and print them (exit 1 without a manifest)."""
    # lazy: the run reader pulls in datasets (seconds): see the module docstring.
    from factory.run.read import MANIFEST, RunFolderError, open_run, read_manifest, shard_records

    store = open_run(run_dir, storage_options)
    present.print_failures(console, failed_shards(store))
    try:
        manifest = read_manifest(store)
    except RunFolderError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    present.print_run_summary(console, Path(store.root).name, store.path(MANIFEST), manifest, shard_records(store))


def plot(
    run_dir: RunArg,
    sample: Annotated[str | None, typer.Argument(help="sample id; default: the first")] = None,
    out: Annotated[Path | None, typer.Option(help="PNG path; default RUN_DIR/plots/<id>.png (also for a URL)")] = None,
    storage_options: StorageOpt = None,
) -> None:
    """Draw one dialogue: both channels' waveforms under its timeline."""
    # lazy: the run reader pulls in datasets (seconds): see the module docstring.
    from factory.run.read import RunFolderError, open_run, read_samples

    store = open_run(run_dir, parse_storage(storage_options))
    try:
        for s in read_samples(
            store.url, None if sample is None else [sample], storage_options=parse_storage(storage_options)
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
    # lazy: the Hub client and the run reader take seconds to import: see the module docstring.
    from factory.publish.hub import PushError, follow_run, push_run
    from factory.run.read import RunFolderError

    def on_file(path: str, what: str) -> None:
        console.print(f"{'skip  ' if what == 'skip' else 'pushed'} {path}", highlight=False)
        progress.advance()

    options = parse_storage(storage_options)
    with track(console, "push", None, unit="files") as progress:
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
    present.print_push_report(console, report)


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
    # lazy: the audit (VADs, ASR, the run reader) takes seconds to import: see the module docstring.
    from factory.audit.cli import run_audit_command

    options = parse_storage(storage_options)
    raise typer.Exit(run_audit_command(console, run_dir, html, asr_turns, vad, players, audio_format, options))


def augment(
    run_dir: RunArg,
    out: Annotated[Path, typer.Option(help="new local run folder (the source run is left as it is)")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    storage_options: StorageOpt = None,
) -> None:
    """Re-augment a finished run into a new run folder from its stored clean audio (no LLM, no
    TTS): the `augment` section comes from --config/--set over the run's own config.yaml."""
    # lazy: the augmentation chains and the run reader take seconds to import: see the module docstring.
    from factory.augment.base import AugmentError
    from factory.augment.rerun import RerunError, augment_run
    from factory.run.read import RunFolderError

    options = parse_storage(storage_options)
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
    with track(console, "augment", None, unit="samples", every_s=base.run.progress_every_s) as progress:
        try:
            counts = augment_run(
                run_dir, out, section, _tts_cache(base), lambda _: progress.advance(), storage_options=options
            )
        except (RunFolderError, RerunError, AugmentError) as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    console.print(f"{out}: {counts['augmented']} of {counts['samples']} samples augmented in {counts['shards']} shards")


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
    # lazy: re-placing, mixing and the run reader take seconds to import: see the module docstring.
    from factory.preference.export import export_pairs
    from factory.run.read import RunFolderError, read_samples
    from factory.run.rebuild import SourceMissing

    options = parse_storage(storage_options)
    try:
        cache = _tts_cache(_run_config(run_dir, options))
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


def _run_config(run_dir: str, storage_options: dict | None) -> RunConfig:
    """The run's own config.yaml (read where the run is), else the defaults."""
    # lazy: the run reader pulls in datasets (seconds): see the module docstring.
    from factory.run.read import read_config

    return read_config(run_dir, storage_options) or load_config()


def _tts_cache(cfg: RunConfig) -> CacheStore | None:
    """The run's TTS cache as its config names it (a folder, or a URL any machine can read)."""
    return open_cache(cfg.tts.cache_dir, cfg.tts.cache_storage_options)


def _override(cfg: RunConfig, overrides: list[str] | None) -> RunConfig:
    """`cfg` with `--set` overrides applied (validated like a config file)."""
    if not overrides:
        return cfg
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:  # load_config reads a file
        f.write(cfg.to_yaml())
        f.flush()
        return load_config(f.name, overrides)
