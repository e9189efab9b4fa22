"""Read a finished run folder back as `Sample`s: what exporters, augmentation and audit take.

Only complete shards are read (those whose record's checksum matches the data file), in shard
order, one record batch at a time, so reading a 400K-sample run keeps memory flat. The run may be
a local folder or any fsspec URL it was published to (`run.destination`, e.g.
`s3://bucket/runs/<run id>`; pass `storage_options` such as `{"endpoint_url": ...}`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from factory.run.rows import read_shard_rows, row_meta, row_to_sample
from factory.models import Sample, SampleMeta
from factory.run.store import RunStore


class RunFolderError(ValueError):
    """The folder is not a run, or a shard is missing or damaged; the message says which."""


def complete_shards(
    run_dir: Path | str, verify: bool = True, storage_options: dict[str, Any] | None = None
) -> list[tuple[RunStore, str]]:
    """(store, data file) of the run's finished shards, in order. With `verify`, a shard whose
    checksum disagrees with its record raises (rather than silently yielding fewer samples)."""
    store = RunStore(str(run_dir), storage_options)
    records = store.names("shards", ".json")
    if not records:
        raise RunFolderError(
            f"{run_dir} has no finished shards (no shards/*.json): not a run folder, or nothing finished"
        )
    paths = []
    for record in records:
        info = json.loads(store.read_text(f"shards/{record}"))
        data = f"data/{info['shard']}.parquet"
        if not store.exists(data):
            raise RunFolderError(f"shard {info['shard']}: record exists but {store.path(data)} is missing")
        if verify and store.sha256(data) != info["sha256"]:
            raise RunFolderError(
                f"shard {info['shard']}: {store.path(data)} does not match its recorded sha256 (damaged or rewritten)"
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
    ]
    for row in _rows(run_dir, verify, storage_options, columns=columns, batch_size=256):
        yield row_meta(row)
