"""Commands on training exports: `export` (a run as a format's training shards, or
Full-Duplex-Bench items), `inspect` (an exported sequence rendered back per frame) and
`smoke-train` (does the export carry learnable turn-taking; factory/vap, torch environment). The logic
lives in factory/export; here are the option parsing, the progress bar, and the hand-over of an
export that needs torch to the torch environment (`torch_env`: the hidden `export-request`
command there runs the same `ExportRequest`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from factory.cli import present, torch_env
from factory.cli.app import RunArg, StorageOpt, console, parse_storage
from factory.export.errors import ExportError
from factory.export.options import ExportOptions
from factory.export.output import read_sidecar
from factory.export.registry import get_format, needs_torch
from factory.export.report import ExportReport
from factory.progress import track
from factory.vap.report import MIN_SEEDS, TRAIN_SEEDS


class ExportRequest(BaseModel):
    """One export as the command line parsed it: what crosses to the torch environment."""

    run: str
    format: str
    out: Path | None = None
    options: ExportOptions
    storage_options: dict[str, Any] | None = None


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
    text_tokenizer: Annotated[
        str | None,
        typer.Option(
            help="HF tokenizer folder, 'gemma', 'whisper', .model or .gguf; default the embedded LLM's (English), "
            "else 'gemma'"
        ),
    ] = None,
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
    -o tasks=pause_handling,backchannel,smooth_turn_taking,user_interruption, -o lead_s= / tail_s= /
    pause_resume_s= window lengths in seconds). A format's options
    are checked before the run is read; a bad one names the key and what the format takes.
    A format that needs torch (nemo-duplex; any format with --audio-tokenizer mimi or encodec) runs
    in the torch environment (`make envs`) by itself."""
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
        request = ExportRequest(
            run=run, format=format_, out=out, options=options, storage_options=parse_storage(storage_options)
        )
    except ExportError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(exc.exit_code) from None
    export(request)


def export_request() -> None:
    """An `ExportRequest` (JSON on stdin) exported here: how `export` runs in the torch environment."""
    export(ExportRequest.model_validate_json(sys.stdin.read()))


def export(request: ExportRequest) -> None:
    """Export and print the report; in the torch environment when the export needs torch and this
    environment lacks it (that environment's exit code is this command's)."""
    # lazy: the exporters and the run reader pull in datasets and scipy (seconds): imported when this runs.
    from factory.export.fdb import FdbReport
    from factory.export.run import export_run

    try:
        if needs_torch(request.format, request.options) and not torch_env.has_torch():
            code = torch_env.run_there(["export-request"], request.model_dump_json())
            raise typer.Exit(code)
        report = run_with_progress(
            lambda progress: export_run(
                request.run, request.format, request.out, request.options, progress, request.storage_options
            )
        )
    except ExportError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(exc.exit_code) from None
    present.print_export_report(console, report)
    if isinstance(report, FdbReport):
        present.wide(console, 120).print(present.fdb_tasks_table(report))


def parse_options(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs -> a dict; values parsed as JSON where they are (0.5, true, "x"), else strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ExportError(f"format option {item!r} is not KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def run_with_progress(work: Callable[[Callable[[int, int | None], None]], ExportReport]) -> ExportReport:
    """`work(progress)` under a progress bar; `progress(done, total)` moves it (total: the run's
    ok samples, from its manifest)."""
    with track(console, "export", None, unit="samples", transient=True) as progress:
        return work(progress.update)


def inspect(
    export_dir: Path,
    sample: Annotated[str, typer.Argument(help="sequence (sample) id")],
    start: Annotated[float, typer.Option(help="from this time, s")] = 0.0,
    end: Annotated[float | None, typer.Option(help="up to this time, s")] = None,
) -> None:
    """Render one exported sequence back as a timeline: per frame, each channel's tokens, text and states."""
    try:
        sidecar = read_sidecar(export_dir)
        decoded = get_format(sidecar.format).decode(Path(export_dir), sample)
    except ExportError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(exc.exit_code) from None
    present.wide(console, 100).print(present.decoded_table(sidecar.format, sample, decoded, start, end))


def smoke_train(
    export_dir: Annotated[
        Path, typer.Argument(help="an export folder: dgslm, units-1s, lslm, or moshi -o tokens=true")
    ],
    run: Annotated[
        str | None, typer.Option(help="the run whose timelines are the truth; default the export's source run")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="report and plot folder; default EXPORT/smoke-train")] = None,
    steps: Annotated[int, typer.Option(help="training steps of each model (16 crops of 20 s per step)")] = 400,
    seed: Annotated[int, typer.Option(help="first training seed of the models and their crops")] = 0,
    train_seeds: Annotated[
        int,
        typer.Option(
            min=MIN_SEEDS, help="train the model and each control with this many seeds (--seed, --seed + 1, ...)"
        ),
    ] = TRAIN_SEEDS,
    threads: Annotated[
        int, typer.Option(help="torch threads (2 only on an idle machine: under load they wait on each other)")
    ] = 1,
    storage_options: StorageOpt = None,
) -> None:
    """Train a small Voice Activity Projection model on an export's audio tokens and say whether the data
    carries learnable turn-taking: its held-out shift/hold, shift-prediction, backchannel and barge-in-stop
    balanced accuracies against the majority class and the same model trained with the agent channel
    delayed by 2 s and with the user channel delayed by 2 s, each trained with several seeds; learnable
    (exit 0) when shift/hold after each speaker beats the control that delays that speaker by a margin
    that counts the held-out events' sampling error and the spread between seeds, else not (exit 1). Runs in the torch
    environment (`make envs`) by itself; writes smoke_train.json and smoke_train.png."""
    if not torch_env.has_torch():
        args = [str(export_dir), *(["--run", run] if run else []), *(["--out", str(out)] if out else [])]
        args += ["--steps", str(steps), "--seed", str(seed), "--train-seeds", str(train_seeds)]
        args += ["--threads", str(threads)]
        if storage_options:
            args += ["--storage-options", storage_options]
        try:
            raise typer.Exit(torch_env.run_there(["smoke-train", *args], ""))
        except ExportError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(exc.exit_code) from None
    # lazy: torch and the run reader (seconds), in the torch environment only
    from factory.vap.smoke import smoke_train as run_smoke_train

    try:
        with console.status(f"smoke-train: the model and both shifted controls, {train_seeds} seeds each"):
            report = run_smoke_train(
                export_dir,
                run,
                out,
                steps=steps,
                seed=seed,
                train_seeds=train_seeds,
                threads=threads,
                storage_options=parse_storage(storage_options),
            )
    except ExportError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(exc.exit_code) from None
    present.wide(console, 110).print(present.smoke_table(report))
    console.print(f"[{'green' if report.learnable else 'red'}]{report.verdict}[/]", highlight=False)
    console.print(f"rule: {report.rule}; plot: {report.plot}", highlight=False)
    raise typer.Exit(0 if report.learnable else 1)
