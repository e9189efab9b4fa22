"""What every augmentation transform shares: one call signature, options validated up front,
and helpers for levels.

A transform is constructed once from its validated options (and the `AugmentContext` of the run:
sample rate, folders, caches) and then called as `transform(audio, sr, rng) -> (audio, params)`:
`audio` is float32 (samples, channels), `rng` the sample's own numpy Generator, and `params`
every value it drew, JSON-able, recorded in the sample's `AugmentationRecord`. Parameters are
drawn from `rng` only; where a transform wraps an audiomentations one, the drawn values are set
on it and frozen (`freeze_parameters`), so its global `random` state is never used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from factory.audio.vad import energy_vad, frame_samples
from factory.locations import user_cache
from factory.tts_cache import CacheLike

Params = dict[str, float | int | str | bool]


class AugmentError(ValueError):
    """A transform's options or inputs are unusable; the message names the transform."""


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class AugmentContext:
    """Run-level inputs of transforms: where banks and user folders live."""

    sample_rate: int
    cache_dir: Path = field(default_factory=lambda: user_cache("augment"))  # RIR banks, babble pools
    tts_cache_dir: CacheLike | None = None  # renders for babble (no TTS call): folder, URL or CacheStore
    noise_folder: Path | None = None  # MUSAN / DEMAND layout
    rir_folder: Path | None = None  # measured impulse responses


class Transform(Protocol):
    name: ClassVar[str]
    stereo_only: ClassVar[bool]  # needs both channels (echo): only on the mix

    def __call__(self, audio: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]: ...


def uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return float(low + rng.random() * (high - low))


def active_power(x: np.ndarray, sr: int) -> float:
    """Mean power of the frames where there is speech (energy VAD, 10 ms): the speech level an
    SNR is relative to, as the active speech level of ITU-T P.56 (silence does not dilute it)."""
    x = np.asarray(x, np.float64)
    active = energy_vad(x.astype(np.float32), sr)
    if not active.any():
        return 0.0
    mask = np.repeat(active, frame_samples(sr))[: len(x)]
    return float(np.mean(x[mask] ** 2))


def add_at_snr(audio: np.ndarray, noise: np.ndarray, sr: int, snr_db: float) -> np.ndarray:
    """`audio` + `noise` scaled per channel so speech power / noise power = `snr_db`. A silent
    channel gets no noise (there is no level to be relative to)."""
    out = audio.astype(np.float64)
    for ch in range(audio.shape[1]):
        n = noise[:, ch] if noise.ndim == 2 else noise
        p_speech, p_noise = active_power(audio[:, ch], sr), float(np.mean(np.asarray(n, np.float64) ** 2))
        if p_speech > 0 and p_noise > 0:
            out[:, ch] += n * np.sqrt(p_speech / p_noise / 10 ** (snr_db / 10))
    return out.astype(np.float32)


def loop_to(x: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """`n` samples of `x` from `offset`, looping."""
    if len(x) == 0:
        raise AugmentError("empty noise source")
    reps = (offset + n) // len(x) + 1
    return np.tile(x, reps)[offset : offset + n]


def options_of(cls: type, options: dict[str, Any]) -> Any:
    try:
        return cls.Options.model_validate(options)
    except Exception as exc:  # pydantic's message names the field
        raise AugmentError(f"augment transform {cls.name!r}: {exc}") from None
