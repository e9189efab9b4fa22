"""Babble: several other voices talking at once, at a sampled SNR. The voices are renders already
in the TTS cache (no TTS call): a pool read once, in cache-key order, so a seed picks the same ones."""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

import numpy as np

from factory.audio.edit import resample
from factory.augment.base import AugmentContext, AugmentError, Options, Params, add_at_snr, loop_to, options_of, uniform
from factory.tts_cache import CacheStore, entry_keys, open_cache, read_entry


@lru_cache(maxsize=8)
def babble_pool(
    cache_dir: CacheStore, sr: int, max_items: int, min_seconds: float
) -> tuple[tuple[str, np.ndarray], ...]:
    """(cache key, audio at `sr`) of up to `max_items` renders of at least `min_seconds` from a TTS cache."""
    out = []
    for key in entry_keys(cache_dir):
        audio, rate = read_entry(cache_dir, key)
        if len(audio) >= min_seconds * rate:
            out.append((key, resample(audio.astype(np.float32), rate, sr)))
        if len(out) >= max_items:
            break
    return tuple(out)


class Babble:
    name: ClassVar[str] = "babble"
    stereo_only: ClassVar[bool] = False

    class Options(Options):
        snr_db: tuple[float, float] = (5.0, 20.0)
        voices: tuple[int, int] = (3, 6)
        pool_size: int = 200
        min_seconds: float = 1.0

    def __init__(self, options: dict, context: AugmentContext, pool: list[np.ndarray] | None = None):
        self.o = options_of(type(self), options)
        if pool is not None:
            self.pool = [(f"pool-{i}", p) for i, p in enumerate(pool)]
        elif (cache := open_cache(context.tts_cache_dir)) is not None and cache.exists():
            self.pool = list(babble_pool(cache, context.sample_rate, self.o.pool_size, self.o.min_seconds))
        else:
            self.pool = []
        if len(self.pool) < self.o.voices[0]:
            raise AugmentError(
                f"babble: {len(self.pool)} renders in the pool (TTS cache {context.tts_cache_dir}); "
                f"need at least {self.o.voices[0]}"
            )

    def __call__(self, audio: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
        n_voices = int(rng.integers(self.o.voices[0], min(self.o.voices[1], len(self.pool)) + 1))
        picks = rng.choice(len(self.pool), size=n_voices, replace=False)
        snr = uniform(rng, self.o.snr_db)
        channels = []
        for _ in range(audio.shape[1]):
            mix = np.zeros(len(audio), np.float64)
            for i in picks:
                voice = self.pool[int(i)][1]
                mix += loop_to(
                    voice / (np.sqrt(np.mean(voice.astype(np.float64) ** 2)) or 1.0),
                    len(audio),
                    int(rng.integers(len(voice))),
                )
            channels.append(mix)
        return add_at_snr(audio, np.stack(channels, axis=1), sr, snr), {
            "voices": ",".join(self.pool[int(i)][0] for i in picks),
            "snr_db": round(snr, 3),
        }
