"""Content-addressed cache around any TTS backend.

Key = sha256 over (backend name, backend identity string, voice.model_dump_json(), text, rate).
The identity string is the backend's `cache_identity()`: its package versions, options that
change the audio, and a hash of its own code and the shared post-processing (trim, fit), so
upgrading a TTS package or changing the code never reuses stale audio.

An entry is two files laid out by `factory.tts_cache` (`<key[:2]>/<key>.npy`, float32 audio,
exact bytes, and `<key>.json`: text, voice id, sample rate, words, the audio's sha256) in a local
folder or at an fsspec URL (`factory.tts_cache.CacheStore`). Both are published whole (renamed from
a temporary name in a folder, one `put` on an object store), JSON last, so a reader that sees the
JSON sees a complete entry; concurrent writers of one key write identical content and the last wins.
An entry that fails to load or whose audio hash disagrees is treated as a miss and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from factory.models import Utterance, Voice, WordTiming
from factory.render.base import BatchStats, SynthesisRequest, TTSBackend, TTSError, synthesize_many
from factory.tts_cache import CacheStore

CACHE_FORMAT = 1


def backend_identity(backend: TTSBackend) -> str:
    """The backend's declared identity (`TTSBackend.cache_identity`); a backend without one
    cannot be cached safely, so it is an error rather than a guess."""
    ident = getattr(backend, "cache_identity", None)
    ident = ident() if callable(ident) else ident
    if not isinstance(ident, str) or not ident:
        raise TypeError(f"{type(backend).__qualname__} declares no cache_identity(); the TTS cache needs one")
    return f"{backend.name};{ident}"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    writes: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "corrupt": self.corrupt, "writes": self.writes}


class CachedBackend:
    """A TTSBackend that returns the stored Utterance for a render it has seen before."""

    def __init__(
        self,
        backend: TTSBackend,
        cache_dir: str | Path | CacheStore,
        identity: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.name = backend.name
        self.store = cache_dir if isinstance(cache_dir, CacheStore) else CacheStore(cache_dir, storage_options)
        self.cache_dir: Path | str = Path(self.store.root) if self.store.is_local else self.store.url
        self.identity = identity or backend_identity(backend)
        self.cache_stats = CacheStats()
        self._lock = threading.Lock()

    @property
    def batch_stats(self) -> BatchStats | None:
        """The inner backend's batch fill (None for one that renders one at a time)."""
        return getattr(self.backend, "batch_stats", None)

    def cache_identity(self) -> str:
        """The wrapped backend's: the cache changes where the audio comes from, never the audio,
        so a cache wrapper is a `TTSBackend` like the one it wraps."""
        return self.backend.cache_identity()

    def key(self, text: str, voice: Voice, rate: float) -> str:
        payload = json.dumps(
            [CACHE_FORMAT, self.name, self.identity, voice.model_dump_json(), text, repr(float(rate))],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _count(self, field: str) -> None:
        with self._lock:
            setattr(self.cache_stats, field, getattr(self.cache_stats, field) + 1)

    def _load(self, key: str, text: str) -> Utterance | None:
        try:
            meta = self.store.read_meta(key)
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - an unreadable entry is recomputed
            self._count("corrupt")
            return None
        try:
            audio = self.store.read_audio(key)
            if (
                audio.dtype != np.float32
                or audio.ndim != 1
                or meta.get("key") != key
                or meta.get("text") != text
                or hashlib.sha256(audio.tobytes()).hexdigest() != meta.get("audio_sha256")
            ):
                raise ValueError("entry does not match its key")
            words = [WordTiming.model_validate(w) for w in meta["words"]]
            return Utterance(
                text=meta["text"],
                voice_id=meta["voice_id"],
                sample_rate=int(meta["sample_rate"]),
                audio=audio,
                words=words,
            )
        except Exception:  # noqa: BLE001 — any unreadable entry is recomputed
            self._count("corrupt")
            return None

    def _store(self, key: str, utt: Utterance) -> None:
        audio = np.ascontiguousarray(utt.audio, dtype=np.float32)
        meta = {
            "key": key,
            "format": CACHE_FORMAT,
            "backend": self.name,
            "identity": self.identity,
            "text": utt.text,
            "voice_id": utt.voice_id,
            "sample_rate": utt.sample_rate,
            "audio_sha256": hashlib.sha256(audio.tobytes()).hexdigest(),
            "words": [w.model_dump() for w in utt.words],
        }
        self.store.write(key, audio, meta)
        self._count("writes")

    def synthesize(self, text: str, voice: Voice, *, rate: float = 1.0) -> Utterance:
        key = self.key(text, voice, rate)
        cached = self._load(key, text)
        if cached is not None:
            self._count("hits")
            return cached
        self._count("misses")
        utt = self.backend.synthesize(text, voice, rate=rate)
        self._store(key, utt)
        return _as_hit(utt)

    def synthesize_many(self, requests: Sequence[SynthesisRequest]) -> list[Utterance | Exception]:
        """A batch, in order: hits come from the cache; the misses go to the inner backend in
        ONE `synthesize_many` call (its padded batch, process pool or service) and are stored.
        A request repeated inside the batch is rendered once and counted as a hit after the
        first, exactly as one-at-a-time calls would count it. A failed render's slot holds its
        exception, as `synthesize_many` in `factory.render.base` gives it."""
        out: list[Utterance | Exception | None] = [None] * len(requests)
        todo: dict[str, list[int]] = {}  # key -> slots waiting for that render
        for i, r in enumerate(requests):
            key = self.key(r.text, r.voice, r.rate)
            if key in todo:
                self._count("hits")
                todo[key].append(i)
                continue
            cached = self._load(key, r.text)
            if cached is not None:
                self._count("hits")
                out[i] = cached
            else:
                self._count("misses")
                todo[key] = [i]
        if todo:
            keys = list(todo)
            rendered = synthesize_many(self.backend, [requests[todo[k][0]] for k in keys])
            if len(rendered) != len(keys):
                raise TTSError(
                    f"{type(self.backend).__qualname__}.synthesize_many returned {len(rendered)} results "
                    f"for {len(keys)} requests"
                )
            for key, result in zip(keys, rendered, strict=True):
                if isinstance(result, Utterance):
                    self._store(key, result)
                for slot in todo[key]:  # each slot its own copy, as separate calls would give
                    out[slot] = _as_hit(result) if isinstance(result, Utterance) else result
        return [r for r in out if r is not None]


def _as_hit(utt: Utterance) -> Utterance:
    """What a hit would return for a fresh render, so hit and miss are indistinguishable."""
    return Utterance(
        text=utt.text,
        voice_id=utt.voice_id,
        sample_rate=utt.sample_rate,
        audio=np.array(utt.audio, dtype=np.float32, order="C"),  # a copy
        words=[WordTiming.model_validate(w.model_dump()) for w in utt.words],
    )
