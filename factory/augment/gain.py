"""Gain: audiomentations' `Gain` with its amplitude drawn from our generator and frozen (Moshi
trains its user channel over -24..+15 dB). The clipping guard after a chain keeps the peak."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from factory.augment.base import AugmentContext, Options, Params, options_of, uniform


class Gain:
    name: ClassVar[str] = "gain"
    stereo_only: ClassVar[bool] = False

    class Options(Options):
        gain_db: tuple[float, float] = (-24.0, 15.0)

    def __init__(self, options: dict, context: AugmentContext):
        from audiomentations import Gain as AmGain  # lazy: optional (cpu extra), heavy

        self.o = options_of(type(self), options)
        self.transform = AmGain(min_gain_db=self.o.gain_db[0], max_gain_db=self.o.gain_db[1], p=1.0)

    def __call__(self, audio: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
        db = uniform(rng, self.o.gain_db)
        t = self.transform
        t.parameters = {"should_apply": True, "amplitude_ratio": float(10 ** (db / 20))}
        t.freeze_parameters()
        out = t(samples=np.ascontiguousarray(audio.T), sample_rate=sr).T
        return np.ascontiguousarray(out, np.float32), {"gain_db": round(db, 3)}


def clipping_guard(audio: np.ndarray, peak_dbfs: float) -> tuple[np.ndarray, float]:
    """Scale the whole signal down so its peak sits at `peak_dbfs` at most (never clip); returns
    the audio and the scale applied (1.0 when under the ceiling)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    ceiling = 10 ** (peak_dbfs / 20)
    if peak <= ceiling:
        return audio, 1.0
    scale = ceiling / peak
    return (audio * scale).astype(np.float32), scale
