"""Hugging Face parquet shards: `data/<split>-NNNNN-of-MMMMM.parquet` under the run folder, the
layout `datasets.load_dataset(run_dir)` and the Hub's viewer understand.

Audio is stereo FLAC bytes (channel 0 = user, channel 1 = agent) in an `Audio` column, written
without torchcodec: bytes go in as a {bytes, path} struct and the column is cast to `Audio`.
Read it back with `cast_column("audio", Audio(decode=False))` + soundfile to keep both channels
(torchcodec's decoder averages stereo to mono).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from datasets import Audio, Dataset, Features, Value

_AUDIO_STRUCT = {"bytes": Value("binary"), "path": Value("string")}
AUDIO_COLUMNS = ("audio", "audio_augmented")

ROW_FEATURES = Features({
    "id": Value("string"),
    "audio": _AUDIO_STRUCT,
    "audio_augmented": _AUDIO_STRUCT,
    "augmentation": Value("string"),  # JSON, null when the sample was not augmented
    "duration": Value("float32"),
    "sample_rate": Value("int32"),
    "mode": Value("string"),
    "text": Value("string"),  # readable transcript of what was spoken, in time order
    "user_text": Value("string"),
    "agent_text": Value("string"),
    "timeline": Value("string"),  # Timeline JSON (schemas/timeline.schema.json)
    "scenario": Value("string"),  # Scenario JSON
    "user_voice": Value("string"),
    "agent_voice": Value("string"),
    "llm": Value("string"),
    "seed": Value("int64"),
})


def shard_name(split: str, index: int, total: int) -> str:
    return f"{split}-{index:05d}-of-{total:05d}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_shard(rows: list[dict[str, Any]], path: Path, sample_rate: int) -> str:
    """Write rows atomically (temporary name, then rename). Returns the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # from_list([]) would drop the schema; an all-rejected shard is still a valid, empty shard
    ds = Dataset.from_list(rows, features=ROW_FEATURES) if rows else Dataset.from_dict(
        {name: [] for name in ROW_FEATURES}, features=ROW_FEATURES)
    for column in AUDIO_COLUMNS:
        ds = ds.cast_column(column, Audio(sampling_rate=sample_rate))
    tmp = path.with_name(f".{path.name}.tmp")
    ds.to_parquet(str(tmp))
    digest = sha256_file(tmp)
    os.replace(tmp, path)
    return digest
