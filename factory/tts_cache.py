"""The TTS cache's file layout: where an entry lives and how a reader gets its audio back.

`factory.render.cache.CachedBackend` writes entries; `factory.run.rebuild` (clean audio from a
recipe) and `factory.augment.babble` (a pool of cached voices) read them without importing a TTS
backend, so the layout lives here, in a module that imports no stage.

An entry is two files in `cache_dir/<key[:2]>/`: `<key>.npy` (float32 audio, exact bytes) and
`<key>.json` (text, voice id, sample rate, words, the audio's sha256; written last, so a reader
that sees the JSON sees a complete entry).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

AUDIO_SUFFIX = ".npy"
META_SUFFIX = ".json"


def entry_paths(cache_dir: str | Path, key: str) -> tuple[Path, Path]:
    """(audio .npy, meta .json) of the entry `key`."""
    folder = Path(cache_dir) / key[:2]
    return folder / f"{key}{AUDIO_SUFFIX}", folder / f"{key}{META_SUFFIX}"


def entry_keys(cache_dir: str | Path) -> Iterator[str]:
    """Keys of the complete entries (meta and audio both there), in key order."""
    for meta in sorted(Path(cache_dir).glob(f"*/*{META_SUFFIX}")):
        if meta.with_suffix(AUDIO_SUFFIX).exists():
            yield meta.stem


def read_meta(cache_dir: str | Path, key: str) -> dict[str, Any]:
    """The entry's meta JSON as written by the cache."""
    return json.loads(entry_paths(cache_dir, key)[1].read_text(encoding="utf-8"))


def read_entry(cache_dir: str | Path, key: str) -> tuple[np.ndarray, int]:
    """(audio as stored, its sample rate) of a complete entry; FileNotFoundError otherwise."""
    npy, meta = entry_paths(cache_dir, key)
    if not meta.exists() or not npy.exists():
        raise FileNotFoundError(f"TTS cache entry {key} not in {cache_dir}")
    return np.load(npy, allow_pickle=False), int(read_meta(cache_dir, key)["sample_rate"])
