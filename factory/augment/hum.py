"""Mains hum: a 50 or 60 Hz tone with decaying harmonics (random phases) at a sampled SNR."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from factory.augment.base import AugmentContext, Options, Params, add_at_snr, options_of, uniform


class Hum:
    name: ClassVar[str] = "hum"
    stereo_only: ClassVar[bool] = False

    class Options(Options):
        snr_db: tuple[float, float] = (15.0, 35.0)
        mains_hz: list[float] = [50.0, 60.0]
        harmonics: tuple[int, int] = (1, 5)

    def __init__(self, options: dict, context: AugmentContext):
        self.o = options_of(type(self), options)

    def __call__(self, audio: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
        f0 = float(rng.choice(self.o.mains_hz))
        k = int(rng.integers(self.o.harmonics[0], self.o.harmonics[1] + 1))
        snr = uniform(rng, self.o.snr_db)
        t = np.arange(len(audio)) / sr
        phases = rng.uniform(0, 2 * np.pi, k)
        tone = sum(
            np.sin(2 * np.pi * f0 * (h + 1) * t + phases[h]) / (h + 1) for h in range(k) if f0 * (h + 1) < sr / 2
        )
        return add_at_snr(audio, np.asarray(tone, np.float64), sr, snr), {
            "mains_hz": f0,
            "harmonics": k,
            "snr_db": round(snr, 3),
        }
