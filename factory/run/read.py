"""Read a finished run folder back as `Sample`s: what exporters, augmentation and audit take.

Only complete shards are read (those whose record's checksum matches the data file), in shard
order, one record batch at a time, so reading a 400K-sample run keeps memory flat.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from factory.export.hf import read_shard_rows, row_meta, row_to_sample
from factory.models import Sample, SampleMeta
from factory.run.io import sha256_file


class RunFolderError(ValueError):
    """The folder is not a run, or a shard is missing or damaged; the message says which."""


def complete_shards(run_dir: Path, verify: bool = True) -> list[Path]:
    """Data files of the run's finished shards, in order. With `verify`, a shard whose checksum
    disagrees with its record raises (rather than silently yielding fewer samples)."""
    run_dir = Path(run_dir)
    records = sorted((run_dir / "shards").glob("*.json"))
    if not records:
        raise RunFolderError(
            f"{run_dir} has no finished shards (no shards/*.json): not a run folder, or nothing finished"
        )
    paths = []
    for record in records:
        info = json.loads(record.read_text())
        data = run_dir / "data" / f"{info['shard']}.parquet"
        if not data.exists():
            raise RunFolderError(f"shard {info['shard']}: record exists but {data} is missing")
        if verify and sha256_file(data) != info["sha256"]:
            raise RunFolderError(
                f"shard {info['shard']}: {data} does not match its recorded sha256 (damaged or rewritten)"
            )
        paths.append(data)
    return paths


def read_samples(run_dir: Path, ids: Iterable[str] | None = None, *, verify: bool = True) -> Iterator[Sample]:
    """Yield every Sample of a finished run (or only `ids`), audio decoded."""
    wanted = set(ids) if ids is not None else None
    for path in complete_shards(run_dir, verify):
        for row in read_shard_rows(path):
            if wanted is None or row["id"] in wanted:
                yield row_to_sample(row)


def read_sample_metas(run_dir: Path, *, verify: bool = True) -> Iterator[SampleMeta]:
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
    for path in complete_shards(run_dir, verify):
        for row in read_shard_rows(path, columns=columns, batch_size=256):
            yield row_meta(row)
