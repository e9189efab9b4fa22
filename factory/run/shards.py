"""Shards of a run: plan, produce, record, resume, finalize.

A shard is one parquet data file of Samples (`factory.export.hf`), one manifest part (every
sample, produced or rejected, with the reason), MinHash signatures of its scripts, and a record
with the data file's checksum, written last. A re-run skips a shard whose record matches its
data file and redoes any other. `finalize_run` merges the parts into `manifest.parquet`, marks
near-duplicate scripts across shards, and writes the resolved config and the dataset card.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from factory.audit.run import gate_shard
from factory.config import RunConfig
from factory.export.card import write_card
from factory.export.hf import read_shard_rows, shard_name, write_shard
from factory.models import ManifestRow, SampleStatus
from factory.pipeline import SampleResult, generate_sample
from factory.run.io import atomic_write, atomic_write_text, sha256_file
from factory.script.dedup import find_duplicates, load_signatures, save_signatures, signature

MANIFEST_SCHEMA = {name: pl.Utf8 for name in ManifestRow.model_fields} | {
    "duration": pl.Float64,
    "n_turns": pl.Int64,
    "n_words": pl.Int64,
    "n_barge_ins": pl.Int64,
    "n_backchannels": pl.Int64,
    "n_fillers": pl.Int64,
    "n_laughs": pl.Int64,
    "n_failed_interruptions": pl.Int64,
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


def plan_shards(cfg: RunConfig) -> list[ShardSpec]:
    per, n = cfg.run.samples_per_shard, cfg.run.n_samples
    total = (n + per - 1) // per
    return [
        ShardSpec(i, shard_name(cfg.run.split, i, total), tuple(range(i * per, min(n, (i + 1) * per))))
        for i in range(total)
    ]


def shard_paths(cfg: RunConfig, name: str) -> tuple[Path, Path, Path]:
    run = cfg.run_dir
    return run / "data" / f"{name}.parquet", run / "manifests" / f"{name}.parquet", run / "shards" / f"{name}.json"


def signature_path(cfg: RunConfig, name: str) -> Path:
    return cfg.run_dir / "signatures" / f"{name}.npz"


def shard_is_complete(cfg: RunConfig, name: str) -> bool:
    data, manifest, record = shard_paths(cfg, name)
    if not (data.exists() and manifest.exists() and record.exists() and signature_path(cfg, name).exists()):
        return False
    try:
        return json.loads(record.read_text())["sha256"] == sha256_file(data)
    except (ValueError, KeyError):
        return False


def generate_shard(
    cfg: RunConfig, spec: ShardSpec, on_sample: Callable[[SampleResult], None] | None = None
) -> ShardResult:
    """Produce one shard, or skip it if a previous run finished it (checksum verified)."""
    data, manifest_path, record = shard_paths(cfg, spec.name)
    if shard_is_complete(cfg, spec.name):
        info = json.loads(record.read_text())
        return ShardResult(spec.name, info["sha256"], info["n_ok"], info["n_rejected"], skipped=True)
    results = []
    for index in spec.sample_indices:
        result = generate_sample(cfg, index, spec.name)
        results.append(result)
        if on_sample:
            on_sample(result)
    samples = [r.sample for r in results if r.sample is not None]
    # audit gates: flag (not reject) samples the audio shows failing; the shard's pooled report goes in its record
    flags, audit_report = gate_shard(samples, cfg, spec.name)
    for r in results:
        if r.manifest.id in flags:
            r.manifest = r.manifest.model_copy(update={"audit_flags": flags[r.manifest.id]})
    digest = write_shard(samples, data, cfg.audio.sample_rate)
    write_manifest([r.manifest for r in results], manifest_path)
    # MinHash signatures of the spoken scripts, merged across shards by finalize_run
    save_signatures(signature_path(cfg, spec.name), {s.id: signature(_spoken_text(s)) for s in samples})
    n_ok = len(samples)
    check_shard(data, [r.manifest for r in results])  # before the record: a shard that fails is never "complete"
    atomic_write_text(
        record,
        json.dumps(
            {
                "shard": spec.name,
                "sha256": digest,
                "n_ok": n_ok,
                "n_rejected": len(results) - n_ok,
                "audit": audit_report,
            },
            indent=2,
        ),
    )
    return ShardResult(spec.name, digest, n_ok, len(results) - n_ok)


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


def finalize_run(cfg: RunConfig, shards: list[ShardResult]) -> Path:
    """Collect shard manifests into `manifest.parquet`, write the resolved config and a card."""
    run = cfg.run_dir
    parts = [shard_paths(cfg, s.name)[1] for s in shards]
    manifest = pl.concat([pl.read_parquet(p) for p in parts]).sort("id")
    signatures = load_signatures(signature_path(cfg, s.name) for s in shards)
    duplicates = find_duplicates(dict(sorted(signatures.items())))  # run order: independent of sharding
    manifest = manifest.with_columns(
        pl.col("id").replace_strict(duplicates, default=None, return_dtype=pl.Utf8).alias("duplicate_of")
    )
    atomic_write(run / "manifest.parquet", lambda tmp: manifest.write_parquet(tmp))
    atomic_write_text(run / "config.yaml", cfg.to_yaml())
    atomic_write_text(run / "README.md", write_card(cfg, manifest, run))
    return run
