"""Coloured noise (white, pink 1/f, brown 1/f^2) at a sampled SNR, independent per channel."""

from __future__ import annotations

from typing import ClassVar, Literal, cast

import numpy as np
from scipy.fft import next_fast_len

from factory.augment.base import AugmentContext, Options, Params, add_at_snr, options_of, uniform


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown (1/f^2 power) noise. Shaped at a length FFTs are
    fast at (`next_fast_len`; a dialogue's length can have large prime factors), then cut to `n`."""
    if color == "white":
        white = rng.standard_normal(n)
    else:
        # scipy wraps a C function in a Python def whose body is only a docstring: it returns an int
        m = cast(int, next_fast_len(max(n, 2), real=True))
        spectrum = np.fft.rfft(rng.standard_normal(m))
        f = np.fft.rfftfreq(m)
        f[0] = f[1]
        spectrum /= f ** (0.5 if color == "pink" else 1.0)
        white = np.fft.irfft(spectrum, m)[:n]
    return (white / (np.sqrt(np.mean(white**2)) or 1.0)).astype(np.float32)


class ColoredNoise:
    name: ClassVar[str] = "colored_noise"
    stereo_only: ClassVar[bool] = False

    class Options(Options):
        snr_db: tuple[float, float] = (10.0, 30.0)
        colors: list[Literal["white", "pink", "brown"]] = ["white", "pink", "brown"]

    def __init__(self, options: dict, context: AugmentContext):
        self.o = options_of(type(self), options)

    def __call__(self, audio: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
        color = str(rng.choice(self.o.colors))
        snr = uniform(rng, self.o.snr_db)
        noise = np.stack([colored_noise(len(audio), color, rng) for _ in range(audio.shape[1])], axis=1)
        return add_at_snr(audio, noise, sr, snr), {"color": color, "snr_db": round(snr, 3)}
