"""The one reader of a finished run, for every consumer (exporters, audit, augmentation,
preference pairs, push, `summary`, `plot`, regenerate): Samples, their metadata, the manifest, the
run's config, shard and failure records (`factory.run.records`), the audit table.

The run may be a local folder or any fsspec URL it was published to (`run.destination`, e.g.
`s3://bucket/runs/<run id>`; pass `storage_options` such as `{"endpoint_url": ...}`; credentials
come from the environment, as fsspec reads them). Only complete shards are read (those whose
record's checksum matches the data file), in shard order, one record batch at a time, so reading
a 400K-sample run keeps memory flat.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from pydantic import ValidationError

from factory.config import ConfigError, RunConfig
from factory.models import Sample, SampleMeta
from factory.run.records import ShardRecord, read_shard_record, record_names, shard_files
from factory.run.rows import read_shard_rows, row_meta, row_to_sample
from factory.run.store import RunStore

MANIFEST = "manifest.parquet"
CONFIG = "config.yaml"
AUDIT_TABLE = "audit.parquet"  # written by `duplex-factory audit` next to the run's data


class RunFolderError(ValueError):
    """The folder is not a run, or a shard is missing or damaged; the message says which."""


def open_run(run: Path | str | RunStore, storage_options: dict[str, Any] | None = None) -> RunStore:
    """The store of a run folder or URL (a `RunStore` is taken as it is)."""
    return run if isinstance(run, RunStore) else RunStore(str(run), storage_options)


def is_remote(run: Path | str) -> bool:
    """True for a URL with a protocol other than a local file (`s3://...`)."""
    protocol = str(run).split("://", 1)[0] if "://" in str(run) else "file"
    return protocol not in ("file", "local")


def shard_records(
    run: Path | str | RunStore, storage_options: dict[str, Any] | None = None
) -> list[tuple[str, ShardRecord | Exception]]:
    """(shard name, its record or the error that kept it from being read) of every record, in order."""
    store = open_run(run, storage_options)
    out: list[tuple[str, ShardRecord | Exception]] = []
    for name in record_names(store):
        try:
            out.append((name, read_shard_record(store, name)))
        except (ValueError, FileNotFoundError) as exc:
            out.append((name, exc))
    return out


def complete_shards(
    run_dir: Path | str | RunStore, verify: bool = True, storage_options: dict[str, Any] | None = None
) -> list[tuple[RunStore, str]]:
    """(store, data file) of the run's finished shards, in order. With `verify`, a shard whose
    checksum disagrees with its record raises (rather than silently yielding fewer samples)."""
    store = open_run(run_dir, storage_options)
    records = shard_records(store)
    if not records:
        raise RunFolderError(
            f"{run_dir} has no finished shards (no shards/*.json): not a run folder, or nothing finished"
        )
    paths = []
    for name, record in records:
        if isinstance(record, Exception):
            raise RunFolderError(f"shard {name}: record unreadable or from an older format ({record})")
        data = shard_files(record.shard)["data"]
        if not store.exists(data):
            raise RunFolderError(f"shard {record.shard}: record exists but {store.path(data)} is missing")
        if verify and store.sha256(data) != record.sha256:
            raise RunFolderError(
                f"shard {record.shard}: {store.path(data)} does not match its recorded sha256 (damaged or rewritten)"
            )
        paths.append((store, data))
    return paths


def _rows(run_dir, verify, storage_options, **kwargs) -> Iterator[dict]:
    for store, data in complete_shards(run_dir, verify, storage_options):
        with store.open(data) as f:
            yield from read_shard_rows(f, **kwargs)


def read_samples(
    run_dir: Path | str,
    ids: Iterable[str] | None = None,
    *,
    verify: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[Sample]:
    """Yield every Sample of a finished run (or only `ids`), audio decoded."""
    wanted = set(ids) if ids is not None else None
    for row in _rows(run_dir, verify, storage_options):
        if wanted is None or row["id"] in wanted:
            yield row_to_sample(row)


def read_sample_metas(
    run_dir: Path | str, *, verify: bool = True, storage_options: dict[str, Any] | None = None
) -> Iterator[SampleMeta]:
    """Metadata of every sample, without reading the audio columns."""
    columns = [
        "id",
        "split",
        "run_seed",
        "sample_key",
        "scenario",
        "script",
        "timeline",
        "recipe",
        "augmentation",
        "user_voice",
        "agent_voice",
        "llm",
        "role_prompt",
        "voice_prompt_source",
    ]
    for row in _rows(run_dir, verify, storage_options, columns=columns, batch_size=256):
        yield row_meta(row)


def read_manifest(
    run: Path | str | RunStore,
    storage_options: dict[str, Any] | None = None,
    *,
    columns: list[str] | None = None,
    unfinalized: bool = False,
) -> pl.DataFrame:
    """The finalized run's `manifest.parquet` (RunFolderError when the run was not finalized), or
    with `unfinalized`, the shards' manifest parts of a run that has not been finalized yet (a
    failed or running one), in shard order."""
    store = open_run(run, storage_options)
    if store.exists(MANIFEST):
        parts = [MANIFEST]
    elif unfinalized:
        parts = [f"manifests/{name}" for name in store.names("manifests", ".parquet")]
    else:
        raise RunFolderError(f"no manifest at {store.path(MANIFEST)} (not a run, or not finalized)")
    frames = [pl.read_parquet(io.BytesIO(store.read_bytes(part)), columns=columns) for part in parts]
    return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()


def read_config(run: Path | str | RunStore, storage_options: dict[str, Any] | None = None) -> RunConfig | None:
    """The run's own `config.yaml`, None when it has none; ConfigError when it does not load."""
    store = open_run(run, storage_options)
    if not store.exists(CONFIG):
        return None
    try:
        return RunConfig.model_validate(yaml.safe_load(store.read_text(CONFIG)) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{store.path(CONFIG)}: {exc}") from None


def read_audit_table(run: Path | str | RunStore, storage_options: dict[str, Any] | None = None) -> pl.DataFrame:
    """The run's `audit.parquet` (RunFolderError when the run was not audited)."""
    store = open_run(run, storage_options)
    if not store.exists(AUDIT_TABLE):
        raise RunFolderError(f"no audit table at {store.path(AUDIT_TABLE)}: run `duplex-factory audit` first")
    return pl.read_parquet(io.BytesIO(store.read_bytes(AUDIT_TABLE)))
