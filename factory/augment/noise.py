"""Augmentation: background noise per channel at a sampled SNR.

Written against numpy Generators rather than audiomentations' transforms because those draw
from the global `random` state, which would make runs irreproducible across worker threads.
"""

from __future__ import annotations

import numpy as np

from factory.audio.edit import frame_activity
from factory.config import AugmentSection
from factory.models import AugmentationRecord


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown (1/f^2 power) noise."""
    white = rng.standard_normal(n)
    if color != "white":
        spectrum = np.fft.rfft(white)
        f = np.fft.rfftfreq(n)
        f[0] = f[1] if n > 1 else 1.0
        spectrum /= f ** (0.5 if color == "pink" else 1.0)
        white = np.fft.irfft(spectrum, n)
    return (white / (np.sqrt(np.mean(white**2)) or 1.0)).astype(np.float32)


def add_noise(
    stereo: np.ndarray, sr: int, cfg: AugmentSection, rng: np.random.Generator, peak_dbfs: float
) -> tuple[np.ndarray, list[AugmentationRecord]] | None:
    """Returns (augmented audio, what was applied) or None when this sample draws no augmentation."""
    if rng.random() >= cfg.noise_probability:
        return None
    color = str(rng.choice(cfg.colors))
    snr = float(cfg.snr_db.low + rng.random() * (cfg.snr_db.high - cfg.snr_db.low))
    out = stereo.astype(np.float64).copy()
    for ch in range(out.shape[1]):
        active = np.repeat(frame_activity(stereo[:, ch], sr), int(round(0.01 * sr)))[: len(out)]
        speech = out[: len(active), ch][active]
        power = float(np.mean(speech**2)) if speech.size else 1e-6
        out[:, ch] += colored_noise(len(out), color, rng) * np.sqrt(power / 10 ** (snr / 10))
    peak = np.max(np.abs(out))
    ceiling = 10 ** (peak_dbfs / 20)
    if peak > ceiling:
        out *= ceiling / peak
    record = AugmentationRecord(transform="colored_noise", params={"color": color, "snr_db": round(snr, 2)})
    return out.astype(np.float32), [record]
