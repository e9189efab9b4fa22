"""Re-augment a finished run into a new run folder, from its stored clean audio: no LLM, no TTS.

The new folder is a copy of the run (config, manifest, card, signatures) whose shards hold the
same samples with `audio_augmented` and `augmentation` drawn again under another `augment`
section; the clean `audio` column and every other column are carried over unchanged. Seeds are
the samples' own (run seed, sample key, "augment"), so re-augmenting with the run's own section
gives its stored bytes back, and the new folder reads like any run (`read_samples`). The source
may be a folder or a URL (`s3://...`, read through `factory.run.read`); the new run is a local folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from factory.atomic import atomic_write_text
from factory.augment import augment_sample
from factory.config import AugmentSection
from factory.run.read import CONFIG, complete_shards, open_run
from factory.run.records import read_shard_record, shard_files, write_shard_record
from factory.run.rows import read_shard_rows, row_to_sample, write_shard
from factory.run.store import RunStore
from factory.tts_cache import CacheLike

_REWRITTEN = ("data", "shards", CONFIG)  # everything else of the source run is copied as it is


class RerunError(ValueError):
    pass


def augment_run(
    src: Path | str,
    dst: Path,
    cfg: AugmentSection,
    tts_cache_dir: CacheLike | None = None,
    on_sample: Callable[[str], None] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Write `dst` from `src` with augmentation redrawn under `cfg`; returns counts."""
    dst = Path(dst)
    source = open_run(src, storage_options)
    shards = complete_shards(source)  # raises on a damaged or unfinished run
    if dst.exists() and any(dst.iterdir()):
        raise RerunError(f"{dst} exists and is not empty: choose a new folder")
    if source.is_local and Path(source.root).resolve() == dst.resolve():
        raise RerunError("the new run folder must differ from the source run (clean stems stay where they are)")
    target = RunStore(str(dst))
    _copy_tree(source, target)
    config = yaml.safe_load(source.read_text(CONFIG)) if source.exists(CONFIG) else {}
    config["augment"] = cfg.model_dump(mode="json")
    config.setdefault("run", {})["run_id"] = dst.name
    atomic_write_text(dst / CONFIG, yaml.safe_dump(config, sort_keys=False))
    counts = {"samples": 0, "augmented": 0, "shards": 0}
    for _, rel in shards:
        name = Path(rel).stem
        record = read_shard_record(source, name)
        samples = []
        with source.open(rel) as f:
            for row in read_shard_rows(f):
                sample = augment_sample(row_to_sample(row), cfg, tts_cache_dir)
                samples.append(sample)
                counts["samples"] += 1
                counts["augmented"] += sample.augmented is not None
                if on_sample:
                    on_sample(sample.id)
        sr = samples[0].sample_rate if samples else int(config.get("audio", {}).get("sample_rate", 24000))
        digest = write_shard(samples, dst / shard_files(name)["data"], sr)
        write_shard_record(target, record.model_copy(update={"sha256": digest}))
        counts["shards"] += 1
    return counts


def _copy_tree(source: RunStore, target: RunStore) -> None:
    """The source run's files but its data, shard records and config, into `target`."""
    root = source.root.rstrip("/") + "/"
    for path in source.fs.find(source.root):
        rel = path.removeprefix(root)
        if rel.split("/", 1)[0] not in _REWRITTEN:
            target.write_bytes(rel, source.read_bytes(rel))
