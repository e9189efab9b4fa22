"""Audit a whole run folder (or a Hugging Face dataset folder): read every sample it holds, measure
it, flag it, pool shards and the run.

Bad input has a defined outcome, and every message names the file:
- a folder that does not exist, or holds neither shard records (`shards/*.json`) nor parquet data
  files (`data/*.parquet`): `AuditInputError`, nothing audited;
- a partial run (fewer shard records than its shard names promise, no `manifest.parquet`): the
  finished shards are audited and a note says how far the run got;
- a shard whose data file is missing or fails its recorded sha256: skipped, named in `problems`;
- a sample from an older timeline schema, with a missing column, or with audio that does not
  decode: skipped, named (file and id) in `problems`; the rest of its shard is audited.

A folder without shard records but with `data/*.parquet` (a dataset downloaded from the Hub, or
the run's data folder alone) is read unverified, which a note says.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from factory.atomic import atomic_write, sha256_file
from factory.audit.gates import sample_flags, shard_report
from factory.audit.measures import SampleAudit, audit_sample
from factory.config import ConfigError, RunConfig, load_config
from factory.models import TIMELINE_SCHEMA_VERSION, Sample

AUDIT_FILE = "audit.parquet"


class AuditInputError(ValueError):
    """The folder cannot be audited at all; the message names the path and what is wrong."""


@dataclass
class ShardSource:
    name: str
    path: Path
    verified: bool  # its checksum matched a shard record


@dataclass
class RunAudit:
    run_dir: Path
    config: RunConfig
    vads: tuple[str, ...]
    rows: list[dict] = field(default_factory=list)
    shards: dict[str, dict] = field(default_factory=dict)  # name -> shard_report
    pooled: dict[str, dict[str, float]] = field(default_factory=dict)  # vad -> pooled run values
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def frame(self) -> pl.DataFrame:
        return audit_frame(self.rows)


def run_config(run_dir: Path, notes: list[str] | None = None) -> RunConfig:
    """The run's own config (config.yaml), or the defaults when it has none or it does not load."""
    path = Path(run_dir) / "config.yaml"
    if path.is_file():
        try:
            return load_config(path)
        except ConfigError as exc:
            if notes is not None:
                notes.append(
                    f"{path} does not load with this factory ({str(exc).splitlines()[0]}): audit defaults used"
                )
    elif notes is not None:
        notes.append(f"no {path}: audit defaults used for gates")
    return load_config()


def shard_sources(run_dir: Path, problems: list[str], notes: list[str]) -> list[ShardSource]:
    """The data files to audit, verified against their records where the folder has them."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AuditInputError(f"{run_dir}: no such folder (expected a run folder or a dataset folder)")
    records = sorted((run_dir / "shards").glob("*.json"))
    if not records:
        data = sorted((run_dir / "data").glob("*.parquet"))
        if not data:
            raise AuditInputError(
                f"{run_dir}: neither shard records ({run_dir / 'shards'}/*.json) nor data files "
                f"({run_dir / 'data'}/*.parquet): not a run or dataset folder, or nothing finished yet"
            )
        notes.append(f"{run_dir}: no shard records, reading {len(data)} data file(s) unverified (a dataset folder)")
        return [ShardSource(p.stem, p, False) for p in data]
    out, promised = [], set()
    for record in records:
        try:
            info = json.loads(record.read_text())
            name, digest = info["shard"], info["sha256"]
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{record}: unreadable shard record ({exc!r}); shard skipped")
            continue
        m = re.search(r"-of-(\d+)$", name)
        if m:
            promised.add(int(m.group(1)))
        path = run_dir / "data" / f"{name}.parquet"
        if not path.is_file():
            problems.append(f"{path}: missing, though {record} records it; shard skipped")
        elif sha256_file(path) != digest:
            problems.append(f"{path}: does not match the sha256 in {record} (damaged or rewritten); shard skipped")
        else:
            out.append(ShardSource(name, path, True))
    total = max(promised) if promised else len(records)
    if len(records) < total or not (run_dir / "manifest.parquet").is_file():
        notes.append(
            f"{run_dir}: partial run ({len(records)} of {total} shards finished"
            f"{'' if (run_dir / 'manifest.parquet').is_file() else ', no manifest.parquet'}); auditing what is there"
        )
    return out


def _sample_of(row: dict, path: Path) -> Sample:
    """A row as a Sample, or a ValueError naming the file, the id and what is wrong."""
    from factory.export.hf import read_audio, row_meta

    sid = row.get("id", "?")
    try:
        version = json.loads(row["timeline"]).get("schema_version")
    except KeyError:
        raise ValueError(f"{path}: sample {sid}: no timeline column (not a duplex-factory shard)") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: sample {sid}: timeline is not JSON ({exc})") from None
    if version != TIMELINE_SCHEMA_VERSION:
        raise ValueError(
            f"{path}: sample {sid}: timeline schema {version!r}, this factory reads {TIMELINE_SCHEMA_VERSION!r} "
            "(an older run: regenerate it, or audit it with the factory version that wrote it)"
        )
    try:
        meta = row_meta(row)
    except KeyError as exc:
        raise ValueError(f"{path}: sample {sid}: column {exc} missing (older schema)") from None
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ValueError(f"{path}: sample {sid}: metadata does not validate ({str(exc).splitlines()[0]})") from None
    try:
        stems = read_audio(row["audio"]["bytes"])[0]
        aug = row.get("audio_augmented")
        augmented = read_audio(aug["bytes"])[0] if aug and aug.get("bytes") else None
    except Exception as exc:  # soundfile raises its own errors on damaged FLAC
        raise ValueError(f"{path}: sample {sid}: audio could not be decoded ({type(exc).__name__}: {exc})") from None
    if stems.ndim != 2 or stems.shape[1] != 2:
        raise ValueError(f"{path}: sample {sid}: audio has shape {stems.shape}, expected (samples, 2)")
    return Sample(meta=meta, stems=stems, augmented=augmented)


def iter_samples(
    run_dir: Path, ids: set[str] | None = None, problems: list[str] | None = None, notes: list[str] | None = None
) -> Iterator[tuple[str, Sample]]:
    """(shard name, Sample) of every readable sample of a run or dataset folder (or only `ids`);
    what cannot be read goes to `problems` with the file named."""
    from factory.export.hf import read_shard_rows

    problems = [] if problems is None else problems
    for src in shard_sources(run_dir, problems, [] if notes is None else notes):
        try:
            for row in read_shard_rows(src.path):
                if ids is not None and row.get("id") not in ids:
                    continue
                try:
                    yield src.name, _sample_of(row, src.path)
                except ValueError as exc:
                    problems.append(str(exc))
        except Exception as exc:  # a parquet file that does not open or breaks mid-way
            problems.append(f"{src.path}: cannot read parquet ({type(exc).__name__}: {exc}); rest of shard skipped")


def load_sample(run_dir: Path, sample_id: str) -> Sample:
    """One sample of a run or dataset folder, by id (KeyError naming the folder when absent)."""
    problems: list[str] = []
    for _, sample in iter_samples(run_dir, ids={sample_id}, problems=problems):
        return sample
    raise KeyError(f"no readable sample {sample_id!r} in {run_dir}" + (f" ({problems[0]})" if problems else ""))


def count_samples(run_dir: Path) -> int | None:
    """How many samples the folder's finished shards hold (for progress), if it can tell."""
    import pyarrow.parquet as pq

    try:
        return sum(pq.ParquetFile(p).metadata.num_rows for p in sorted((Path(run_dir) / "data").glob("*.parquet")))
    except Exception:
        return None


def audit_run(
    run_dir: Path,
    *,
    vads: tuple[str, ...] | None = None,
    asr_turns: int | None = None,
    config: RunConfig | None = None,
    on_sample: Callable[[SampleAudit], None] | None = None,
) -> RunAudit:
    """Audit every readable sample of `run_dir`: measures, per-sample flags, shard and run pools.
    Defaults for detectors, ASR turns and gates come from the run's config (`audit`)."""
    run_dir = Path(run_dir)
    notes: list[str] = []
    problems: list[str] = []
    if config is not None:
        cfg = config
    else:
        cfg = run_config(run_dir, notes) if run_dir.is_dir() else load_config()
    gates = cfg.audit
    if vads is None:
        vads = (gates.vad,) + ((gates.compare_vad,) if gates.compare_vad and gates.compare_vad != gates.vad else ())
    asr_turns = gates.asr_turns if asr_turns is None else asr_turns
    result = RunAudit(run_dir, cfg, tuple(vads), problems=problems, notes=notes)
    by_shard: dict[str, list[dict]] = {}
    for shard, sample in iter_samples(run_dir, problems=problems, notes=notes):
        audit = audit_sample(sample, vads=tuple(vads), asr_turns=asr_turns, shard=shard)
        flags = sample_flags(audit.row, gates, cfg.audio)
        audit.row["flags"] = flags
        audit.row["flag_reason"] = "; ".join(flags) or None
        result.rows.append(audit.row)
        by_shard.setdefault(shard, []).append(audit.row)
        if on_sample:
            on_sample(audit)
    for name, rows in by_shard.items():
        result.shards[name] = shard_report(rows, gates, vads[0])
    from factory.audit.gates import pool

    result.pooled = {v: pool(result.rows, v) for v in vads}
    return result


def audit_frame(rows: list[dict]) -> pl.DataFrame:
    """Rows as a polars frame (list columns stay lists)."""
    if not rows:
        return pl.DataFrame({"id": []}, schema={"id": pl.Utf8})
    return pl.DataFrame(rows, infer_schema_length=None, nan_to_null=False)


def write_audit(result: RunAudit, path: Path | None = None) -> Path:
    path = Path(path or result.run_dir / AUDIT_FILE)
    frame = result.frame()
    atomic_write(path, lambda tmp: frame.write_parquet(tmp))
    return path


def gate_row(sample: Sample, cfg: RunConfig, shard: str) -> dict:
    """One sample's part of the generation-time gate: measured with the primary detector (no
    ASR: intelligibility QA already ran on every turn) and flagged by the config's thresholds.
    Per sample and pure, so the worker process that made the sample computes it."""
    row = audit_sample(sample, vads=(cfg.audit.vad,), asr_turns=0, shard=shard).row
    row["flags"] = sample_flags(row, cfg.audit, cfg.audio)
    return row


def gate_shard(
    samples: list[Sample], cfg: RunConfig, shard: str, rows: list[dict | None] | None = None
) -> tuple[dict[str, str], dict]:
    """The generation-time gate of one shard: each sample's `gate_row` (given in `rows` when
    already computed, else computed here), pooled into the shard's report.
    Returns (id -> reasons, for flagged samples; the shard report for its record)."""
    given = rows if rows is not None else [None] * len(samples)
    rows = [row if row is not None else gate_row(s, cfg, shard) for s, row in zip(samples, given, strict=True)]
    report = shard_report(rows, cfg.audit, cfg.audit.vad)
    pooled = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else round(v, 4)) for k, v in report["pooled"].items()
    }
    flags = {r["id"]: "; ".join(r["flags"]) for r in rows if r["flags"]}
    return flags, {"pooled": pooled, "flagged": report["flagged"], "problems": report["problems"]}


def worst(frame: pl.DataFrame, measure: str, k: int = 5, column: str | None = None) -> list[str]:
    """Ids of the `k` samples furthest outside `measure`'s band (deepest inside it last), read
    from `column` (default: the measure's own name; `<vad>_<measure>` for the H&E measures)."""
    from factory.conversation.bands import BANDS

    band, column = BANDS.get(measure), column or measure
    if column not in frame.columns or band is None:
        return []
    vals = frame.select("id", pl.col(column).alias(measure)).drop_nulls().filter(pl.col(measure).is_finite())
    if not len(vals):
        return []
    lo = band.low if band.low is not None else -np.inf
    hi = band.high if band.high is not None else np.inf
    dist = np.maximum(lo - vals[measure].to_numpy(), vals[measure].to_numpy() - hi)
    order = np.argsort(-dist, kind="stable")[:k]
    return [vals["id"][int(i)] for i in order]
