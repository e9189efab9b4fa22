"""The TTS cache's storage: where an entry lives and how a reader gets its audio back.

`factory.render.cache.CachedBackend` writes entries; `factory.run.rebuild` (clean audio from a
recipe), `factory.preference` and `factory.augment.babble` (a pool of cached voices) read them
without importing a TTS backend, so the layout lives here, in a module that imports no stage.

The cache is content-addressed storage on fsspec (`CacheStore`): a local folder (the default,
`tts.cache_dir`) or any fsspec URL (`s3://bucket/tts-cache`, with `tts.cache_storage_options`), so
on a cluster every worker writes its renders where every machine, and later every reader of the
run (`rebuild_clean`, `augment`, `preference`), finds them. An entry is two files in
`<cache>/<key[:2]>/`: `<key>.npy` (float32 audio, exact bytes) and `<key>.json` (text, voice id,
sample rate, words, the audio's sha256), written JSON last, so a reader that sees the JSON sees a
complete entry: in a folder each file goes to a temporary name and is renamed; an object store
publishes each `put` whole. Writers of one key write identical content, so the last one wins.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

AUDIO_SUFFIX = ".npy"
META_SUFFIX = ".json"


class CacheStore:
    """The TTS cache at a local folder or an fsspec URL; entries addressed by their key."""

    def __init__(self, location: str | Path, storage_options: dict[str, Any] | None = None) -> None:
        self.url = str(location).rstrip("/") or "/"
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.is_local = "file" in protocols or "local" in protocols

    def __repr__(self) -> str:
        return f"CacheStore({self.url!r})"

    def __reduce__(self):  # a worker process opens its own filesystem from the same location
        return (CacheStore, (self.url, self.storage_options))

    def _ident(self) -> tuple[str, str]:
        return self.url, json.dumps(self.storage_options, sort_keys=True, default=str)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CacheStore) and self._ident() == other._ident()

    def __hash__(self) -> int:
        return hash(self._ident())

    def paths(self, key: str) -> tuple[str, str]:
        """(audio .npy, meta .json) of the entry `key`, as paths of `self.fs`."""
        folder = posixpath.join(self.root, key[:2])
        return posixpath.join(folder, f"{key}{AUDIO_SUFFIX}"), posixpath.join(folder, f"{key}{META_SUFFIX}")

    def exists(self) -> bool:
        """The cache's folder (or prefix) is there."""
        return bool(self.fs.isdir(self.root)) if self.is_local else bool(self.fs.exists(self.root))

    def read_meta(self, key: str) -> dict[str, Any]:
        """The entry's meta JSON as written by the cache; FileNotFoundError when absent."""
        return json.loads(self.fs.cat_file(self.paths(key)[1]).decode("utf-8"))

    def read_audio(self, key: str) -> np.ndarray:
        """The entry's audio as stored; FileNotFoundError when absent."""
        return np.load(io.BytesIO(self.fs.cat_file(self.paths(key)[0])), allow_pickle=False)

    def write(self, key: str, audio: np.ndarray, meta: dict[str, Any]) -> None:
        """Publish one entry, audio first, JSON last."""
        buf = io.BytesIO()
        np.save(buf, audio, allow_pickle=False)
        npy, meta_path = self.paths(key)
        text = json.dumps(meta, ensure_ascii=False).encode("utf-8")
        if not self.is_local:
            self.fs.pipe_file(npy, buf.getvalue())
            self.fs.pipe_file(meta_path, text)
            return
        Path(npy).parent.mkdir(parents=True, exist_ok=True)
        tag = f".{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:8]}.tmp"
        tmp_npy, tmp_meta = Path(npy + tag), Path(meta_path + tag)
        try:
            tmp_npy.write_bytes(buf.getvalue())
            tmp_meta.write_bytes(text)
            os.replace(tmp_npy, npy)
            os.replace(tmp_meta, meta_path)
        finally:
            for p in (tmp_npy, tmp_meta):
                p.unlink(missing_ok=True)

    def keys(self) -> Iterator[str]:
        """Keys of the complete entries (meta and audio both there), in key order."""
        try:
            found = {posixpath.basename(p) for p in self.fs.find(self.root)}
        except FileNotFoundError:
            return
        for name in sorted(found):
            if name.endswith(META_SUFFIX) and name.removesuffix(META_SUFFIX) + AUDIO_SUFFIX in found:
                yield name.removesuffix(META_SUFFIX)


CacheLike = str | Path | CacheStore


def _store(cache: CacheLike, storage_options: dict[str, Any] | None = None) -> CacheStore:
    return cache if isinstance(cache, CacheStore) else CacheStore(cache, storage_options)


def open_cache(location: CacheLike | None, storage_options: dict[str, Any] | None = None) -> CacheStore | None:
    """The cache at `location` (a folder, a URL, or an open store); None stays None (cache off)."""
    return None if location is None else _store(location, storage_options)


def entry_paths(cache_dir: str | Path, key: str) -> tuple[Path, Path]:
    """(audio .npy, meta .json) of the entry `key` in a local cache folder (`CacheStore.paths`)."""
    npy, meta = CacheStore(cache_dir).paths(key)
    return Path(npy), Path(meta)


def entry_keys(cache: CacheLike) -> Iterator[str]:
    """Keys of the complete entries (meta and audio both there), in key order."""
    return _store(cache).keys()


def read_entry(cache: CacheLike, key: str) -> tuple[np.ndarray, int]:
    """(audio as stored, its sample rate) of a complete entry; FileNotFoundError otherwise."""
    store = _store(cache)
    try:
        meta = store.read_meta(key)  # written last: there means the audio is there
        return store.read_audio(key), int(meta["sample_rate"])
    except FileNotFoundError:
        raise FileNotFoundError(f"TTS cache entry {key} not in {store.url}") from None
