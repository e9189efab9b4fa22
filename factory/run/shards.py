"""Shards of a run: plan, produce, record, resume, finalize.

A shard is one parquet data file of Samples (`factory.run.rows`), one manifest part (every
sample, produced or rejected, with the reason), MinHash signatures of its scripts, and a record
(`factory.run.records.ShardRecord`) with the checksums and row counts of all three, published
last. Shards are produced in the local run folder and published to the run's store
(`factory.run.store`: the same folder, or
`run.destination`, where they are streamed and deleted locally). A re-run skips a shard whose
record matches the content of its three files at the store and redoes any other.
`finalize_run` merges the parts read from the store into `manifest.parquet` a row group at a
time (`merge_manifest`), marks near-duplicate scripts across shards (banded LSH streamed through
parquet, `find_duplicates_banded`), and writes the resolved config and the dataset card from
queries over the merged file; memory holds a batch, not the run, and it is idempotent (same
inputs, same bytes). A shard whose task kept failing leaves `failures/<shard>.json`
(its error) instead of a record; a later success removes it.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from factory.atomic import atomic_write, sha256_file
from factory.audit.run import gate_row, gate_shard
from factory.config import RunConfig
from factory.crash import crash_point
from factory.engine import build_shard
from factory.export.card import OVERVIEW_PLOT, Manifest, dataset_card, overview_png
from factory.models import ManifestRow, SampleStatus
from factory.run.records import (
    FailureRecord,
    ShardAudit,
    ShardRecord,
    ShardStats,
    delete_failure,
    event_tally,
    read_shard_record,
    shard_files,
    write_failure,
    write_shard_record,
)
from factory.run.rows import ShardWriter, read_shard_rows, shard_name
from factory.run.store import RunStore, clean_stale_tmp, run_store
from factory.runtime import Runtime
from factory.script.dedup import (
    NUM_PERM,
    find_duplicates_banded,
    read_signature_file,
    save_signatures_values,
    signature,
)
from factory.stages import SampleResult

SHARD_FOLDERS = ("data", "manifests", "signatures", "shards")

MANIFEST_SCHEMA = {name: pl.Utf8 for name in ManifestRow.model_fields} | {
    "duration": pl.Float64,
    "n_turns": pl.Int64,
    "n_words": pl.Int64,
    "n_barge_ins": pl.Int64,
    "n_backchannels": pl.Int64,
    "n_fillers": pl.Int64,
    "n_laughs": pl.Int64,
    "n_failed_interruptions": pl.Int64,
    "n_side_talk": pl.Int64,
    "n_background_speech": pl.Int64,
    "n_non_speech": pl.Int64,
    "n_events_planned": pl.Int64,
    "overlap_share": pl.Float64,
    "wer_max": pl.Float64,
}


@dataclass(frozen=True)
class ShardSpec:
    index: int
    name: str
    sample_indices: tuple[int, ...]


@dataclass
class ShardResult:
    name: str
    sha256: str
    n_ok: int
    n_rejected: int
    skipped: bool = False
    seconds: float = 0.0
    error: str | None = None  # set when the shard's task kept failing: nothing of it was published
    attempts: int = 1
    stats: ShardStats | None = None  # of a shard produced now (stage seconds, LLM/TTS fill)

    @property
    def failed(self) -> bool:
        return self.error is not None


def plan_shards(cfg: RunConfig) -> list[ShardSpec]:
    per, n = cfg.run.samples_per_shard, cfg.run.n_samples
    total = (n + per - 1) // per
    return [
        ShardSpec(i, shard_name(cfg.run.split, i, total), tuple(range(i * per, min(n, (i + 1) * per))))
        for i in range(total)
    ]


def shard_paths(cfg: RunConfig, name: str) -> tuple[Path, Path, Path]:
    """Local paths (where the shard is produced) of its data file, manifest part and record."""
    files, run = shard_files(name), cfg.run_dir
    return run / files["data"], run / files["manifest"], run / files["record"]


def signature_path(cfg: RunConfig, name: str) -> Path:
    return cfg.run_dir / shard_files(name)["signatures"]


def verify_shard(store: RunStore, name: str) -> str | None:
    """None when the shard at the store is complete, else why not. Complete means: a record,
    and each file's sha256 and row count equal the record's (the manifest part has every
    sample of the shard, the data file and the signatures its ok ones), so a file replaced,
    truncated or left over from another attempt never passes."""
    files = shard_files(name)
    if not store.exists(files["record"]):
        return "no record"
    try:
        record = read_shard_record(store, name)
    except (ValueError, FileNotFoundError) as exc:
        return f"record unreadable or from an older format ({exc!r})"
    expected = {"data": record.sha256, "manifest": record.manifest_sha256, "signatures": record.signatures_sha256}
    n_ok, n_rejected = record.n_ok, record.n_rejected
    for kind, digest in expected.items():
        if not store.exists(files[kind]):
            return f"{kind} file missing"
        if store.sha256(files[kind]) != digest:
            return f"{kind} file does not match the record's sha256"
    try:
        with store.open(files["data"]) as f:
            n_data = pq_rows(f)
        with store.open(files["manifest"]) as f:
            manifest = pl.read_parquet(f, columns=["status"])
        with np.load(io.BytesIO(store.read_bytes(files["signatures"]))) as sig:
            n_sig = len(sig["ids"])
    except Exception as exc:  # noqa: BLE001 - any unreadable file makes the shard incomplete
        return f"unreadable ({exc!r})"
    n_manifest_ok = int((manifest["status"] == SampleStatus.ok.value).sum())
    counts = (n_data, len(manifest), n_manifest_ok, n_sig)
    if counts != (n_ok, n_ok + n_rejected, n_ok, n_ok):
        return f"row counts (data, manifest, manifest ok, signatures) {counts} disagree with the record"
    return None


def pq_rows(f) -> int:
    return pq.ParquetFile(f).metadata.num_rows


def shard_is_complete(cfg: RunConfig, name: str) -> bool:
    return verify_shard(run_store(cfg), name) is None


def clean_local(cfg: RunConfig) -> int:
    """Remove temporary files that killed writers left in the local run folder."""
    return clean_stale_tmp(cfg.run_dir, ("", *SHARD_FOLDERS))


def generate_shard(
    rt: Runtime, spec: ShardSpec, on_sample: Callable[[SampleResult], None] | None = None
) -> ShardResult:
    """Produce one shard and publish it, or skip it if it is complete at the store."""
    cfg = rt.cfg
    store = run_store(cfg)
    files = shard_files(spec.name)
    if verify_shard(store, spec.name) is None:
        delete_failure(store, spec.name)
        return skipped_result(store, spec.name)
    clean_local(cfg)
    store.clean_stale_tmp(("", *SHARD_FOLDERS, "failures"))
    data, manifest_path, _ = shard_paths(cfg, spec.name)
    # The data file is written as the engine hands results over, in the shard's order: each
    # sample's row (its audio encoded once, where it was made) goes to the writer and the sample
    # is let go, keeping only what the rest of the shard needs: its manifest row, its audit gate
    # row and its MinHash signature. Memory holds the engine's window and one row group.
    sink = _ShardSink(cfg, spec.name, ShardWriter(data, cfg.audio.sample_rate))
    with sink.writer:
        _, stats = build_shard(rt, spec.sample_indices, spec.name, on_sample, sink=sink)
    digest = sink.writer.sha256
    stats.events = event_tally(row.model_dump() for row in sink.manifest)
    crash_point("shard.data")
    # audit gates: flag (not reject) samples the audio shows failing; the shard's pooled report goes in its record
    flags, audit_report = gate_shard(None, cfg, spec.name, list(sink.gates))
    manifest = [r.model_copy(update={"audit_flags": flags[r.id]}) if r.id in flags else r for r in sink.manifest]
    write_manifest(manifest, manifest_path)
    crash_point("shard.manifest")
    # MinHash signatures of the spoken scripts, merged across shards by finalize_run
    sig_path = signature_path(cfg, spec.name)
    save_signatures_values(sig_path, sink.ids, _stack(sink.signatures))
    crash_point("shard.signatures")
    n_ok = len(sink.ids)
    check_shard(data, manifest)  # before the record: a shard that fails is never "complete"
    record = ShardRecord(
        shard=spec.name,
        sha256=digest,
        n_ok=n_ok,
        n_rejected=len(manifest) - n_ok,
        manifest_sha256=sha256_file(manifest_path),
        signatures_sha256=sha256_file(sig_path),
        audit=ShardAudit.model_validate(audit_report),
    )
    local = {"data": data, "manifest": manifest_path, "signatures": sig_path}
    for kind, path in local.items():  # the record goes last: it is what makes the shard complete
        store.put(path, files[kind])
    write_shard_record(store, record)
    crash_point("shard.record")
    delete_failure(store, spec.name)
    if not _in_place(cfg, store):
        for path in local.values():  # streamed out: local disk holds only shards in flight
            path.unlink(missing_ok=True)
    return ShardResult(spec.name, digest, n_ok, len(manifest) - n_ok, stats=stats)


class _ShardSink:
    """Takes a shard's results from the engine in order: each made sample's row to the shard's
    writer, and of the sample only its manifest row, audit gate row and signature values."""

    def __init__(self, cfg: RunConfig, shard: str, writer: ShardWriter) -> None:
        self.cfg, self.shard, self.writer = cfg, shard, writer
        self.manifest: list[ManifestRow] = []
        self.gates: list[dict] = []
        self.ids: list[str] = []
        self.signatures: list[np.ndarray] = []

    def __call__(self, result: SampleResult) -> None:
        crash_point("sample")
        self.manifest.append(result.manifest)
        sample = result.sample
        if sample is None:
            return
        self.writer.add(sample, result.encoded)
        self.gates.append(result.gate if result.gate is not None else gate_row(sample, self.cfg, self.shard))
        self.ids.append(sample.id)
        self.signatures.append(signature(_spoken_text(sample)).hashvalues)


def _stack(values: list[np.ndarray]) -> np.ndarray:
    return np.stack(values) if values else np.zeros((0, NUM_PERM), np.uint32)


def skipped_result(store: RunStore, name: str) -> ShardResult:
    """The result of a shard found complete at the store (its record's counts)."""
    record = read_shard_record(store, name)
    return ShardResult(name, record.sha256, record.n_ok, record.n_rejected, skipped=True)


def record_failure(cfg: RunConfig, name: str, error: str, attempts: int) -> None:
    """Note at the store that a shard's task kept failing (the run goes on without it)."""
    write_failure(run_store(cfg), FailureRecord(shard=name, error=error, attempts=attempts))


class ShardInconsistent(RuntimeError):
    """A shard's data file and manifest part disagree: a bug in the factory, not bad input."""


def check_shard(data: Path, rows: list[ManifestRow]) -> None:
    """Raise unless the data file holds exactly the manifest's ok samples, in order, each with the
    audio the manifest's `audio_sha256` names, and every manifest id appears once. One read of
    the ids and clean audio just written, next to the sha256 of the file taken anyway."""
    repeated = sorted(i for i, n in Counter(r.id for r in rows).items() if n > 1)
    problems = [f"manifest ids repeat: {repeated}"] if repeated else []
    expected = [(r.id, r.audio_sha256) for r in rows if r.status is SampleStatus.ok]
    written = [
        (row["id"], hashlib.sha256(row["audio"]["bytes"]).hexdigest())
        for row in read_shard_rows(data, columns=["id", "audio"])
    ]
    if [i for i, _ in written] != [i for i, _ in expected]:
        problems.append(f"data ids {[i for i, _ in written]} != manifest ok ids {[i for i, _ in expected]}")
    else:
        problems += [
            f"{i}: audio sha256 differs from the manifest's" for (i, a), (_, b) in zip(written, expected) if a != b
        ]
    if problems:
        raise ShardInconsistent(f"shard {data.name}: " + "; ".join(problems))


def _spoken_text(sample) -> str:
    turns = sample.timeline.turns
    user = " ".join(t.spoken_text for t in turns if t.channel.value == "user")
    agent = " ".join(t.spoken_text for t in turns if t.channel.value == "agent")
    return f"{user} {agent}"


def write_manifest(rows: list[ManifestRow], path: Path) -> None:
    frame = pl.DataFrame([r.model_dump(mode="json") for r in rows], schema=MANIFEST_SCHEMA)
    atomic_write(path, lambda tmp: frame.write_parquet(tmp))


def finalize_run(cfg: RunConfig, shards: list[ShardResult]) -> str:
    """Collect the published shards' manifest parts and signatures (read from the store) into
    `manifest.parquet`, and write the resolved config and the card. Failed shards are left out
    (they have no record); a re-run that finishes them finalizes again. Idempotent: every
    output is a function of the published shards, written whole or not at all. Returns the
    store's URL (a local path when there is no destination)."""
    store = run_store(cfg)
    clean_local(cfg)
    store.clean_stale_tmp(("",))
    done = [s for s in shards if not s.failed]
    with tempfile.TemporaryDirectory(prefix="finalize-") as tmp:
        scratch = Path(tmp)

        def signature_shards():  # one shard's file at a time, in shard order
            for s in done:
                yield read_signature_file(io.BytesIO(store.read_bytes(shard_files(s.name)["signatures"])))

        # run order (sorted ids): independent of sharding
        duplicates = find_duplicates_banded(signature_shards, scratch, expected_rows=sum(s.n_ok for s in done))
        manifest_path = scratch / "manifest.parquet"
        merge_manifest([_local_part(store, s.name, scratch) for s in done], duplicates, manifest_path)
        store.put(manifest_path, "manifest.parquet")
        crash_point("finalize.manifest")
        store.write_bytes("config.yaml", cfg.to_yaml().encode())
        crash_point("finalize.config")
        # The card and its overview plot from queries over the merged manifest (a column or an
        # aggregate at a time).
        publish_card(store, cfg, pl.scan_parquet(manifest_path), [s.name for s in done])
    if not _in_place(cfg, store) and cfg.run_dir.exists() and not any(p.is_file() for p in cfg.run_dir.rglob("*")):
        shutil.rmtree(cfg.run_dir, ignore_errors=True)  # all published; only empty folders were left
    return store.url


def publish_card(store: RunStore, cfg: RunConfig, manifest: Manifest, shard_names: list[str]) -> None:
    """The dataset card (README.md) and its overview plot, from the merged manifest and the
    published data's sizes (local copies may be gone)."""
    png = overview_png(manifest.filter(pl.col("status") == "ok"))
    if png is not None:
        store.write_bytes(OVERVIEW_PLOT, png)
    data_bytes = sum(store.size(f"data/{name}.parquet") for name in shard_names)
    card = dataset_card(cfg, manifest, data_bytes=data_bytes, plot=OVERVIEW_PLOT if png is not None else None)
    store.write_bytes("README.md", card.encode())


def _local_part(store: RunStore, name: str, scratch: Path) -> Path:
    """A shard's manifest part as a local file: where it is, or copied into `scratch` from a remote store."""
    rel = shard_files(name)["manifest"]
    if store.is_local:
        return Path(store.path(rel))
    local = scratch / "manifests" / Path(rel).name
    local.parent.mkdir(exist_ok=True)
    local.write_bytes(store.read_bytes(rel))
    return local


MANIFEST_ROW_GROUP_ROWS = 50_000  # rows per row group of manifest.parquet, and about the rows merged in memory


def merge_manifest(
    parts: list[Path], duplicates: dict[str, str], path: Path, *, row_group_rows: int = MANIFEST_ROW_GROUP_ROWS
) -> None:
    """The run's manifest from its parts, sorted by id, with `duplicate_of` set, streamed: memory
    holds about two row groups' rows, never the run. One lazy polars pass takes each part's id
    range and row count (`_sorted_batches`); the parts are then read in id order a batch of about
    `row_group_rows` rows at a time (parts whose id ranges overlap always in the same batch), each
    batch sorted and appended to pyarrow's `ParquetWriter` in row groups of exactly
    `row_group_rows` rows (the last shorter). The layout depends on the rows alone, not on how the
    run was sharded: the same rows give the same bytes."""
    if row_group_rows < 1:
        raise ValueError(f"row_group_rows must be >= 1, got {row_group_rows}")
    found = pl.DataFrame(
        {"id": list(duplicates), "dup": list(duplicates.values())}, schema={"id": pl.Utf8, "dup": pl.Utf8}
    )
    columns = list(MANIFEST_SCHEMA)

    def table(frame: pl.DataFrame) -> pa.Table:
        marked = frame.join(found, on="id", how="left", maintain_order="left").with_columns(
            pl.col("dup").alias("duplicate_of")
        )
        return marked.select(columns).to_arrow(compat_level=pl.CompatLevel.oldest())

    def write(tmp: Path) -> None:
        left = pl.DataFrame(schema=MANIFEST_SCHEMA)
        with pq.ParquetWriter(tmp, table(left).schema, compression="zstd") as writer:
            for batch in _sorted_batches(parts, row_group_rows):
                left = pl.concat([left, batch.select(columns).cast(pl.Schema(MANIFEST_SCHEMA))])
                while len(left) >= row_group_rows:
                    writer.write_table(table(left.head(row_group_rows)), row_group_size=row_group_rows)
                    left = left.slice(row_group_rows)
            if len(left):
                writer.write_table(table(left), row_group_size=row_group_rows)

    atomic_write(path, write)


def _sorted_batches(parts: list[Path], rows: int) -> Iterator[pl.DataFrame]:
    """The parts' rows in id order, a frame of about `rows` rows (whole parts) at a time. Parts are
    ordered by their smallest id; a batch ends only where the next part's ids all come after the
    batch's largest, so parts whose ranges overlap are read and sorted together and the batches,
    each sorted, follow one another in id order."""
    if not parts:
        return
    names = {str(p): p for p in parts}
    ranges = (
        pl.scan_parquet(list(names.values()), include_file_paths="part")
        .group_by("part")
        .agg(lo=pl.col("id").min(), hi=pl.col("id").max(), n=pl.len())
        .sort("lo", "hi", "part")
        .collect(engine="streaming")  # an aggregate per part, not the run's ids
    )
    batch: list[Path] = []
    n_batch, top = 0, ""
    for part, lo, hi, n in ranges.select("part", "lo", "hi", "n").iter_rows():
        if batch and n_batch >= rows and lo > top:
            yield pl.read_parquet(batch).sort("id", maintain_order=True)
            batch, n_batch = [], 0
        top = hi if not batch else max(top, hi)
        batch.append(names.get(part, Path(part)))
        n_batch += n
    if batch:
        yield pl.read_parquet(batch).sort("id", maintain_order=True)


def _in_place(cfg: RunConfig, store: RunStore) -> bool:
    """True when the store is the local run folder itself (no destination to stream to)."""
    return store.is_local and Path(store.root).resolve() == cfg.run_dir.resolve()
