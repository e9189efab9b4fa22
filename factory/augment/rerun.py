"""Re-augment a finished run into a new run folder, from its stored clean audio: no LLM, no TTS.

The new folder is a copy of the run (config, manifest, card, signatures) whose shards hold the
same samples with `audio_augmented` and `augmentation` drawn again under another `augment`
section; the clean `audio` column and every other column are carried over unchanged. Seeds are
the samples' own (run seed, sample key, "augment"), so re-augmenting with the run's own section
gives its stored bytes back, and the new folder reads like any run (`read_samples`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import yaml

from factory.atomic import atomic_write_text
from factory.augment import augment_sample
from factory.config import AugmentSection
from factory.export.hf import read_shard_rows, row_to_sample, write_shard
from factory.run.read import complete_shards


class RerunError(ValueError):
    pass


def augment_run(
    src: Path,
    dst: Path,
    cfg: AugmentSection,
    tts_cache_dir: Path | None = None,
    on_sample: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Write `dst` from `src` with augmentation redrawn under `cfg`; returns counts."""
    src, dst = Path(src), Path(dst)
    shards = complete_shards(src)  # raises on a damaged or unfinished run
    if dst.exists() and any(dst.iterdir()):
        raise RerunError(f"{dst} exists and is not empty: choose a new folder")
    if src.resolve() == dst.resolve():
        raise RerunError("the new run folder must differ from the source run (clean stems stay where they are)")
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("data", "shards", "config.yaml"), dirs_exist_ok=True)
    config = yaml.safe_load((src / "config.yaml").read_text()) if (src / "config.yaml").exists() else {}
    config["augment"] = cfg.model_dump(mode="json")
    config.setdefault("run", {})["run_id"] = dst.name
    atomic_write_text(dst / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    counts = {"samples": 0, "augmented": 0, "shards": 0}
    for _, rel in shards:
        path = src / rel
        record = json.loads((src / "shards" / f"{path.stem}.json").read_text())
        samples = []
        for row in read_shard_rows(path):
            sample = augment_sample(row_to_sample(row), cfg, tts_cache_dir)
            samples.append(sample)
            counts["samples"] += 1
            counts["augmented"] += sample.augmented is not None
            if on_sample:
                on_sample(sample.id)
        sr = samples[0].sample_rate if samples else int(config.get("audio", {}).get("sample_rate", 24000))
        (dst / "data").mkdir(parents=True, exist_ok=True)
        record["sha256"] = write_shard(samples, dst / "data" / path.name, sr)
        (dst / "shards").mkdir(exist_ok=True)
        atomic_write_text(dst / "shards" / f"{path.stem}.json", json.dumps(record, indent=2))
        counts["shards"] += 1
    return counts
