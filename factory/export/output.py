"""What an export writes and how it is read back: parquet shards (`data/<split>-NNNNN.parquet`),
the `export.json` sidecar (everything needed to read the token ids back), `report.json`, and the
output folder's preparation (a re-export never leaves a stale file; a foreign folder is refused)."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from factory.atomic import atomic_write, atomic_write_text
from factory.export.errors import ExportError
from factory.export.report import ExportReport, RuleCounter

SIDECAR = "export.json"
UNITS_CODEBOOK = "units_codebook.json"
REPORT = "report.json"


class Sidecar(BaseModel):
    """`export.json` beside the shards: everything needed to read the token ids back."""

    format: str
    format_version: str
    frame_rate: float | None
    sample_rate: int | None = Field(default=None, description="rate of the audio the tokenizer was fed")
    special_tokens: dict[str, int] = Field(default_factory=dict)
    id_layout: dict[str, tuple[int, int]] = Field(
        default_factory=dict, description="range name -> (first id, size) in the exported id space"
    )
    vocabulary: list[str] | None = Field(default=None, description="the text vocabulary (id - text offset -> token)")
    vocabulary_path: str | None = Field(default=None, description="or the tokenizer folder it comes from")
    audio_tokenizer: dict[str, Any] | None = None
    audio_tokenizer_path: str | None = Field(default=None, description="saved codebook (units), relative to the export")
    text_tokenizer: dict[str, Any] | None = None
    source_run: str | None = None
    layout: str = Field(default="", description="the sequence layout in words")
    columns: dict[str, str] = Field(default_factory=dict, description="parquet column -> meaning")
    options: dict[str, Any] = Field(default_factory=dict)
    rules: dict[str, str] = Field(default_factory=dict, description="rule -> action: doc")


class Decoded(BaseModel):
    """One exported sequence read back onto its frame grid (`duplex-factory inspect`): per track
    (e.g. 'user audio', 'text', 'agent audio', 'state'), one label per frame."""

    id: str
    format: str
    frame_rate: float
    tracks: dict[str, list[str]]


class ShardWriter:
    """Rows -> `data/<split>-NNNNN.parquet`, `shard_size` rows per file, written atomically.
    A shard is written only when it holds a row (rule empty_output_shard)."""

    def __init__(self, out_dir: Path, schema: pa.Schema, shard_size: int) -> None:
        self.out_dir, self.schema, self.shard_size = Path(out_dir), schema, shard_size
        self.buffers: dict[str, list[dict]] = {}
        self.counts: Counter[str] = Counter()
        self.paths: list[str] = []

    def add(self, split: str, row: dict) -> None:
        buf = self.buffers.setdefault(split, [])
        buf.append(row)
        if len(buf) >= self.shard_size:
            self._flush(split)

    def _flush(self, split: str) -> None:
        rows = self.buffers.get(split) or []
        if not rows:
            return
        path = self.out_dir / "data" / f"{split}-{self.counts[split]:05d}.parquet"
        table = pa.Table.from_pylist(rows, schema=self.schema)
        atomic_write(path, lambda tmp: pq.write_table(table, tmp))
        self.counts[split] += 1
        self.paths.append(str(path.relative_to(self.out_dir)))
        self.buffers[split] = []

    def close(self) -> list[str]:
        for split in list(self.buffers):
            self._flush(split)
        return self.paths


def read_rows(out_dir: Path, columns: list[str] | None = None) -> Iterator[dict]:
    for path in sorted((Path(out_dir) / "data").glob("*.parquet")):
        yield from pq.read_table(path, columns=columns).to_pylist()


def read_row(out_dir: Path, sample_id: str) -> dict:
    for path in sorted((Path(out_dir) / "data").glob("*.parquet")):
        table = pq.read_table(path, filters=[("id", "=", sample_id)])
        if table.num_rows:
            return table.to_pylist()[0]
    raise ExportError(f"no sequence {sample_id!r} in {out_dir}")


def read_sidecar(out_dir: Path) -> Sidecar:
    path = Path(out_dir) / SIDECAR
    if not path.exists():
        raise ExportError(f"{out_dir} is not an export (no {SIDECAR})")
    return Sidecar.model_validate_json(path.read_text())


def write_report(out_dir: Path, report: ExportReport) -> None:
    atomic_write_text(Path(out_dir) / REPORT, report.model_dump_json(indent=2))


def read_report(out_dir: Path) -> ExportReport:
    return ExportReport.model_validate_json((Path(out_dir) / REPORT).read_text())


def finish(
    out_dir: Path,
    sidecar: Sidecar,
    report: ExportReport,
    counter: RuleCounter,
    writer: ShardWriter | None,
    started: float,
) -> ExportReport:
    """Close the shards, fill the report's counts, write sidecar and report. Zero sequences out
    is an error (exit 4), never an empty export that looks fine."""
    report.shards = writer.close() if writer else report.shards
    report.rules = dict(counter.counts)
    report.rule_actions = {k: r.action for k, r in counter.rules.items()}
    report.dropped = counter.dropped
    report.seconds_total = time.perf_counter() - started
    sidecar.rules = {k: f"{r.action}: {r.doc}" for k, r in counter.rules.items()}
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / SIDECAR, sidecar.model_dump_json(indent=2))
    write_report(out_dir, report)
    if report.samples_out == 0:
        counter.add("empty_output_shard")
        report.rules = dict(counter.counts)
        write_report(out_dir, report)
        raise ExportError(
            f"no sequence exported from {report.samples_in} samples "
            f"({', '.join(f'{d.id}: {d.rule}' for d in counter.dropped[:5])})",
            exit_code=4,
        )
    return report


def prepare_out_dir(out_dir: Path, outputs: Iterable[str] = ()) -> None:
    """Make `out_dir` ready for a fresh export. A previous export there (it has export.json) loses
    its shards, sidecar, report and the format's `outputs` (glob patterns; a matching folder goes
    whole), so no stale file is read with the new ones; a folder holding anything else is refused
    rather than written into."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return
    if not (out_dir / SIDECAR).exists():
        foreign = [p for p in out_dir.rglob("*") if p.is_file() and p.name != UNITS_CODEBOOK]
        if foreign:
            raise ExportError(
                f"{out_dir} exists and is not an export (no {SIDECAR}; holds e.g. {foreign[0].name}): "
                "give --out a new or empty folder"
            )
        return
    for pattern in ("data/*.parquet", SIDECAR, REPORT, *outputs):
        for path in out_dir.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
