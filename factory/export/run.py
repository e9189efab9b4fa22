"""`export_run`: export a finished run (a local folder or an fsspec URL such as s3://...) with a
format of the registry: validate the format's options, count what the run rejected, prepare the
output folder and the audio tokenizer (fitting 'units' on the run's own audio), then stream the
run's samples through the format."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from factory.export.errors import ExportError
from factory.export.grid import channel_audio
from factory.export.options import ExportOptions
from factory.export.output import REPORT, prepare_out_dir, read_report, write_report
from factory.export.registry import get_format
from factory.export.report import DroppedSample, ExportReport
from factory.export.tokenizers import audio_tokenizer_for
from factory.models import Channel, Sample
from factory.run.read import RunFolderError, complete_shards, read_manifest, read_samples
from factory.tokenize import default_text_tokenizer

Progress = Callable[[int, int | None], None]  # (samples read, samples the run holds when known)


@dataclass
class RunCounts:
    """What a run holds besides its samples: the manifest's ok count and rejections, empty shards."""

    ok: int | None = None
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (sample id, reason)
    empty_shards: int = 0
    languages: set[str] = field(default_factory=set)  # of the accepted samples (a run before languages: en)


def run_counts(run: str, storage_options: dict[str, Any] | None = None) -> RunCounts:
    """Rejected samples (from the manifest) and empty data shards of a run; RunFolderError when
    it is not a run."""
    shards = complete_shards(run, verify=False, storage_options=storage_options)
    manifest = read_manifest(shards[0][0], unfinalized=True)
    counts = RunCounts()
    if manifest.width:  # no manifest part at all: the ok count is unknown
        ok = manifest.filter(pl.col("status") == "ok")
        counts.ok = ok.height
        if "language" in ok.columns:
            counts.languages = {lang or "en" for lang in ok["language"].to_list()}
        rejected = manifest.filter(pl.col("status") == "rejected")
        counts.rejected = [(r["id"], r["reason"] or "") for r in rejected.iter_rows(named=True)]
    for store, data in shards:
        with store.open(data) as f:
            counts.empty_shards += pq.read_metadata(f).num_rows == 0
    return counts


def default_out_dir(run: str, format_name: str) -> Path:
    """RUN/exports/FORMAT for a local run; a remote run needs an explicit output folder."""
    if "://" in run and not run.startswith("file://"):
        raise ExportError(f"{run} is remote: give the export folder (--out)")
    return Path(run.removeprefix("file://")) / "exports" / format_name


def export_run(
    run: str | Path,
    format_name: str,
    out_dir: Path | None = None,
    options: ExportOptions | None = None,
    progress: Progress | None = None,
    storage_options: dict[str, Any] | None = None,
) -> ExportReport:
    """Export a finished run into `out_dir` (default RUN/exports/FORMAT for a local run)."""
    run = str(run)
    fmt = get_format(format_name)
    options = (options or ExportOptions()).model_copy(update={"source_run": run})
    format_options = fmt.parse_options(options)  # bad options fail before any work
    out_dir = Path(out_dir) if out_dir else default_out_dir(run, format_name)
    if "://" not in run and not Path(run).is_dir():
        raise ExportError(f"run folder {run} does not exist")
    try:
        counts = run_counts(run, storage_options)
    except RunFolderError as exc:
        raise ExportError(str(exc)) from None
    except FileNotFoundError as exc:
        raise ExportError(f"run {run} does not exist ({exc})") from None
    if options.text_tokenizer is None and options.text_tokenizer_obj is None:
        # the default vocabulary is the embedded LLM's where it covers the run's languages, else Gemma 3's
        options = options.model_copy(update={"text_tokenizer": default_text_tokenizer(sorted(counts.languages))})
    prepare_out_dir(out_dir, fmt.outputs)
    fit_seconds = 0.0
    if fmt.needs_audio_tokens and options.audio_tokenizer_obj is None:
        started = time.perf_counter()
        fit_samples, augmented = options.units_fit_samples, options.use_augmented

        def fit_audio() -> Iterator[tuple[Any, int]]:
            for i, s in enumerate(read_samples(run, verify=False, storage_options=storage_options)):
                if i >= fit_samples:
                    break
                for ch in Channel:
                    yield channel_audio(s, ch, augmented), s.sample_rate

        tok = audio_tokenizer_for(options, fmt.tokenizer_rate(format_options), fit_audio, out_dir)
        options = options.model_copy(update={"audio_tokenizer_obj": tok})
        fit_seconds = time.perf_counter() - started

    def samples() -> Iterator[Sample]:
        for i, s in enumerate(read_samples(run, storage_options=storage_options)):
            yield s
            if progress:
                progress(i + 1, counts.ok)

    try:
        report = fmt.write(samples(), out_dir, options, format_options)
    except ExportError as exc:
        raise _with_run_counts(exc, out_dir, counts) from None
    except RunFolderError as exc:
        raise ExportError(str(exc)) from None
    _add_run_counts(report, counts)
    report.samples_in += len(counts.rejected)
    report.seconds_tokenize += fit_seconds  # the units fit is tokenizer work, timed before the export
    report.seconds_total += fit_seconds
    write_report(out_dir, report)
    return report


def _add_run_counts(report: ExportReport, counts: RunCounts) -> None:
    report.rules["rejected_samples"] = report.rules.get("rejected_samples", 0) + len(counts.rejected)
    report.rules["empty_source_shards"] = report.rules.get("empty_source_shards", 0) + counts.empty_shards
    report.dropped += [DroppedSample(id=i, rule="rejected_samples", detail=r) for i, r in counts.rejected]


def _with_run_counts(exc: ExportError, out_dir: Path, counts: RunCounts) -> ExportError:
    if (out_dir / REPORT).exists():  # an all-dropped export still reports what the run rejected
        report = read_report(out_dir)
        _add_run_counts(report, counts)
        write_report(out_dir, report)
    if counts.rejected:
        return ExportError(f"{exc} (and {len(counts.rejected)} samples the run rejected)", exc.exit_code)
    return exc
