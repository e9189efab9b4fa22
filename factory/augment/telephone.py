"""Telephone channel: the 300-3400 Hz band, 8 kHz sampling and 8-bit mu-law (G.711), back at
the run's rate. Nothing above 4 kHz survives the 8 kHz resampling."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.signal import butter, sosfiltfilt

from factory.audio.edit import resample
from factory.augment.base import AugmentContext, Options, Params, options_of

MU = 255.0


def mu_law(x: np.ndarray) -> np.ndarray:
    """8-bit mu-law encode and decode (the G.711 quantiser, continuous companding curve)."""
    x = np.clip(x, -1.0, 1.0)
    y = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    q = np.round((y + 1) / 2 * 255) / 255 * 2 - 1  # 256 levels
    return np.sign(q) * np.expm1(np.abs(q) * np.log1p(MU)) / MU


class Telephone:
    name: ClassVar[str] = "telephone"
    stereo_only: ClassVar[bool] = False

    class Options(Options):
        low_hz: float = 300.0
        high_hz: float = 3400.0
        rate: int = 8000

    def __init__(self, options: dict, context: AugmentContext):
        self.o = options_of(type(self), options)

    def __call__(self, audio: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
        sos = butter(4, [self.o.low_hz, self.o.high_hz], btype="bandpass", fs=sr, output="sos")
        out = np.empty_like(audio, dtype=np.float32)
        for ch in range(audio.shape[1]):
            band = sosfiltfilt(sos, audio[:, ch].astype(np.float64)).astype(np.float32)
            narrow = mu_law(resample(band, sr, self.o.rate).astype(np.float64)).astype(np.float32)
            back = resample(narrow, self.o.rate, sr)
            out[:, ch] = np.pad(back, (0, max(0, len(audio) - len(back))))[: len(audio)]
        return out, {"low_hz": self.o.low_hz, "high_hz": self.o.high_hz, "rate": self.o.rate, "mu_law": True}
