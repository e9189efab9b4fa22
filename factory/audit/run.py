"""Audit a whole run folder (or a Hugging Face dataset folder), local or at an fsspec URL
(`s3://...`, read through `factory.run.read`): read every sample it holds, measure it, flag it,
pool shards and the run.

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

import io
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from factory.audio.mix import read_audio
from factory.audit.gates import by_language, pool, sample_flags, shard_report
from factory.audit.measures import SampleAudit, audit_sample
from factory.config import ConfigError, RunConfig, load_config
from factory.conversation.bands import Band, bands_for, headline
from factory.models import TIMELINE_SCHEMA_VERSION, Sample
from factory.run.read import AUDIT_TABLE, MANIFEST, is_remote, open_run, read_config, shard_records
from factory.run.rows import read_shard_rows, read_voice_prompt, row_meta
from factory.run.store import RunStore

AUDIT_FILE = AUDIT_TABLE


class AuditInputError(ValueError):
    """The folder cannot be audited at all; the message names the path and what is wrong."""


@dataclass
class ShardSource:
    name: str
    store: RunStore
    rel: str  # the data file, relative to the run
    verified: bool  # its checksum matched a shard record

    @property
    def path(self) -> str:
        return self.store.path(self.rel)


@dataclass
class RunAudit:
    # a local run's folder; a remote run's URL as a PurePosixPath (its name for titles, no file access)
    run_dir: Path | PurePosixPath
    config: RunConfig
    vads: tuple[str, ...]
    rows: list[dict] = field(default_factory=list)
    shards: dict[str, dict] = field(default_factory=dict)  # name -> shard_report
    pooled: dict[str, dict[str, float]] = field(default_factory=dict)  # vad -> pooled run values
    # language -> vad -> pooled values of that language's samples (each judged by its own bands)
    by_language: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    store: RunStore | None = None  # where the run is read from (set by audit_run)

    @property
    def is_remote(self) -> bool:
        return self.store is not None and not self.store.is_local

    @property
    def languages(self) -> list[str]:
        """The run's languages (primary subtags, sorted); English for an empty audit."""
        return list(self.by_language) or ["en"]

    def headline(self, language: str) -> list[HeadlineRow]:
        """The headline measures of `language`'s samples against its bands (not measurable, NaN,
        when the run has none of that language)."""
        pooled = self.by_language.get(language, {} if self.by_language else self.pooled)
        bands = bands_for(language)
        return [
            HeadlineRow(m, bands[m], tuple(pooled.get(v, {}).get(m, math.nan) for v in self.vads))
            for m in headline(language)
        ]

    def frame(self) -> pl.DataFrame:
        return audit_frame(self.rows)


Run = Path | str | RunStore  # a run folder, its URL, or its store


@dataclass(frozen=True)
class HeadlineRow:
    """One headline measure of one language: its band for that language and its pooled value per detector."""

    measure: str
    band: Band
    values: tuple[float, ...]  # per detector, the primary first

    @property
    def in_band(self) -> str:
        """Whether the primary value lies in the band: "yes", "no", or "-" where it is not measurable."""
        v = self.values[0]
        return "-" if v != v else ("yes" if self.band.contains(v) else "no")


def run_config(run: Run, notes: list[str] | None = None, storage_options: dict[str, Any] | None = None) -> RunConfig:
    """The run's own config (config.yaml), or the defaults when it has none or it does not load."""
    store = open_run(run, storage_options)
    try:
        own = read_config(store)
    except ConfigError as exc:
        own = None
        if notes is not None:
            notes.append(
                f"{store.path('config.yaml')} does not load with this factory ({str(exc).splitlines()[0]}): "
                "audit defaults used"
            )
    else:
        if own is None and notes is not None:
            notes.append(f"no {store.path('config.yaml')}: audit defaults used for gates")
    return own if own is not None else load_config()


def _is_dir(store: RunStore) -> bool:
    try:
        return store.fs.isdir(store.root)
    except OSError:
        return False


def shard_sources(
    run: Run, problems: list[str], notes: list[str], storage_options: dict[str, Any] | None = None
) -> list[ShardSource]:
    """The data files to audit, verified against their records where the folder has them."""
    store = open_run(run, storage_options)
    where = store.url
    if not _is_dir(store):
        raise AuditInputError(f"{where}: no such folder (expected a run folder or a dataset folder)")
    records = shard_records(store)
    if not records:
        data = store.names("data", ".parquet")
        if not data:
            raise AuditInputError(
                f"{where}: neither shard records ({store.path('shards')}/*.json) nor data files "
                f"({store.path('data')}/*.parquet): not a run or dataset folder, or nothing finished yet"
            )
        notes.append(f"{where}: no shard records, reading {len(data)} data file(s) unverified (a dataset folder)")
        return [ShardSource(name.removesuffix(".parquet"), store, f"data/{name}", False) for name in data]
    out, promised = [], set()
    for name, record in records:
        where_record = store.path(f"shards/{name}.json")
        if isinstance(record, Exception):
            problems.append(f"{where_record}: unreadable shard record ({record!r}); shard skipped")
            continue
        m = re.search(r"-of-(\d+)$", record.shard)
        if m:
            promised.add(int(m.group(1)))
        rel = f"data/{record.shard}.parquet"
        if not store.exists(rel):
            problems.append(f"{store.path(rel)}: missing, though {where_record} records it; shard skipped")
        elif store.sha256(rel) != record.sha256:
            problems.append(
                f"{store.path(rel)}: does not match the sha256 in {where_record} (damaged or rewritten); shard skipped"
            )
        else:
            out.append(ShardSource(record.shard, store, rel, True))
    total = max(promised) if promised else len(records)
    finalized = store.exists(MANIFEST)
    if len(records) < total or not finalized:
        notes.append(
            f"{where}: partial run ({len(records)} of {total} shards finished"
            f"{'' if finalized else ', no manifest.parquet'}); auditing what is there"
        )
    return out


def _sample_of(row: dict, path: str) -> Sample:
    """A row as a Sample, or a ValueError naming the file, the id and what is wrong."""
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
        voice_prompt = read_voice_prompt(row)
    except Exception as exc:  # soundfile raises its own errors on damaged FLAC
        raise ValueError(f"{path}: sample {sid}: audio could not be decoded ({type(exc).__name__}: {exc})") from None
    if stems.ndim != 2 or stems.shape[1] != 2:
        raise ValueError(f"{path}: sample {sid}: audio has shape {stems.shape}, expected (samples, 2)")
    return Sample(meta=meta, stems=stems, voice_prompt=voice_prompt, augmented=augmented)


def iter_samples(
    run: Run,
    ids: set[str] | None = None,
    problems: list[str] | None = None,
    notes: list[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[tuple[str, Sample]]:
    """(shard name, Sample) of every readable sample of a run or dataset folder (or only `ids`);
    what cannot be read goes to `problems` with the file named."""
    problems = [] if problems is None else problems
    for src in shard_sources(run, problems, [] if notes is None else notes, storage_options):
        try:
            with src.store.open(src.rel) as f:
                for row in read_shard_rows(f):
                    if ids is not None and row.get("id") not in ids:
                        continue
                    try:
                        yield src.name, _sample_of(row, src.path)
                    except ValueError as exc:
                        problems.append(str(exc))
        except Exception as exc:  # a parquet file that does not open or breaks mid-way
            problems.append(f"{src.path}: cannot read parquet ({type(exc).__name__}: {exc}); rest of shard skipped")


def load_sample(run: Run, sample_id: str, storage_options: dict[str, Any] | None = None) -> Sample:
    """One sample of a run or dataset folder, by id (KeyError naming the folder when absent)."""
    problems: list[str] = []
    for _, sample in iter_samples(run, ids={sample_id}, problems=problems, storage_options=storage_options):
        return sample
    raise KeyError(f"no readable sample {sample_id!r} in {run}" + (f" ({problems[0]})" if problems else ""))


def count_samples(run: Run, storage_options: dict[str, Any] | None = None) -> int | None:
    """How many samples the folder's finished shards hold (for progress), if it can tell."""
    try:
        store = open_run(run, storage_options)
        total = 0
        for name in store.names("data", ".parquet"):
            with store.open(f"data/{name}") as f:
                total += pq.ParquetFile(f).metadata.num_rows
        return total
    except Exception:  # noqa: BLE001 - progress without a total is fine
        return None


def audit_run(
    run_dir: Path | str,
    *,
    vads: tuple[str, ...] | None = None,
    asr_turns: int | None = None,
    config: RunConfig | None = None,
    on_sample: Callable[[SampleAudit], None] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> RunAudit:
    """Audit every readable sample of `run_dir` (a folder or URL): measures, per-sample flags,
    shard and run pools. Defaults for detectors, ASR turns and gates come from the run's config
    (`audit`)."""
    store = open_run(run_dir, storage_options)
    notes: list[str] = []
    problems: list[str] = []
    if config is not None:
        cfg = config
    else:
        cfg = run_config(store, notes) if _is_dir(store) else load_config()
    gates = cfg.audit
    if vads is None:
        vads = (gates.vad,) + ((gates.compare_vad,) if gates.compare_vad and gates.compare_vad != gates.vad else ())
    asr_turns = gates.asr_turns if asr_turns is None else asr_turns
    where = PurePosixPath(str(run_dir)) if is_remote(run_dir) else Path(run_dir)
    result = RunAudit(where, cfg, tuple(vads), problems=problems, notes=notes, store=store)
    by_shard: dict[str, list[dict]] = {}
    for shard, sample in iter_samples(store, problems=problems, notes=notes):
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
    result.pooled = {v: pool(result.rows, v) for v in vads}
    groups = by_language(result.rows)
    result.by_language = {
        language: result.pooled if len(groups) == 1 else {v: pool(rows, v) for v in vads}
        for language, rows in groups.items()
    }
    return result


def audit_frame(rows: list[dict]) -> pl.DataFrame:
    """Rows as a polars frame (list columns stay lists)."""
    if not rows:
        return pl.DataFrame({"id": []}, schema={"id": pl.Utf8})
    return pl.DataFrame(rows, infer_schema_length=None, nan_to_null=False)


def write_audit(result: RunAudit, path: Path | None = None) -> str:
    """`audit.parquet`: at `path`, else next to the run's data, through its store (an object store
    publishes it whole; a folder gets it atomically). Returns where it went."""
    buffer = io.BytesIO()
    result.frame().write_parquet(buffer)
    if path is not None:
        store, rel = open_run(Path(path).parent), Path(path).name
    else:
        # without a store the audit was built on a local folder (audit_run sets it for every URL)
        store, rel = result.store or open_run(Path(result.run_dir)), AUDIT_FILE
    store.write_bytes(rel, buffer.getvalue())
    return store.path(rel)


def gate_row(sample: Sample, cfg: RunConfig, shard: str) -> dict:
    """One sample's part of the generation-time gate: measured with the primary detector (no
    ASR: intelligibility QA already ran on every turn) and flagged by the config's thresholds.
    Per sample and pure, so the worker process that made the sample computes it."""
    row = audit_sample(sample, vads=(cfg.audit.vad,), asr_turns=0, shard=shard).row
    row["flags"] = sample_flags(row, cfg.audit, cfg.audio)
    return row


def gate_shard(
    samples: list[Sample] | None, cfg: RunConfig, shard: str, rows: list[dict | None] | None = None
) -> tuple[dict[str, str], dict]:
    """The generation-time gate of one shard: each sample's `gate_row` (given in `rows` when
    already computed, else computed here), pooled into the shard's report. `samples` may be None
    when every row is given (a streamed shard has written and let go of its samples).
    Returns (id -> reasons, for flagged samples; the shard report for its record)."""
    if samples is None:
        if rows is None or any(row is None for row in rows):
            raise ValueError("gate_shard without samples needs every sample's gate row")
        made = [row for row in rows if row is not None]
    else:
        given = rows if rows is not None else [None] * len(samples)
        made = [row if row is not None else gate_row(s, cfg, shard) for s, row in zip(samples, given, strict=True)]
    report = shard_report(made, cfg.audit, cfg.audit.vad)
    pooled = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else round(v, 4)) for k, v in report["pooled"].items()
    }
    flags = {r["id"]: "; ".join(r["flags"]) for r in made if r["flags"]}
    return flags, {"pooled": pooled, "flagged": report["flagged"], "problems": report["problems"]}


def worst(frame: pl.DataFrame, measure: str, k: int = 5, column: str | None = None) -> list[str]:
    """Ids of the `k` samples furthest outside `measure`'s band (deepest inside it last), read
    from `column` (default: the measure's own name; `<vad>_<measure>` for the H&E measures); each
    sample against the band of its own language (`language` column; English without one)."""
    column = column or measure
    if column not in frame.columns:
        return []
    language = pl.col("language") if "language" in frame.columns else pl.lit("en")
    vals = (
        frame.select("id", pl.col(column).alias(measure), language.fill_null("en").alias("language"))
        .drop_nulls(measure)
        .filter(pl.col(measure).is_finite())
    )
    bands = {lang: bands_for(lang).get(measure) for lang in vals["language"].unique().to_list()}
    vals = vals.filter(pl.col("language").is_in([lang for lang, b in bands.items() if b is not None]))
    if not len(vals):
        return []
    edges = [bands[lang] for lang in vals["language"].to_list()]
    lo = np.array([-np.inf if b is None or b.low is None else b.low for b in edges])
    hi = np.array([np.inf if b is None or b.high is None else b.high for b in edges])
    x = vals[measure].to_numpy()
    dist = np.maximum(lo - x, x - hi)
    order = np.argsort(-dist, kind="stable")[:k]
    return [vals["id"][int(i)] for i in order]
