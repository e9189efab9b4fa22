"""Real noise recordings from a user folder (MUSAN `noise/` or DEMAND `<ENV>/ch01.wav` layouts:
any tree of .wav/.flac files) at a sampled SNR: a file and an offset drawn per sample."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np
import soundfile as sf

from factory.audio.edit import resample
from factory.augment.base import AugmentContext, AugmentError, Options, Params, add_at_snr, loop_to, options_of, uniform

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


@lru_cache(maxsize=4096)
def _load(path: str, sr: int) -> np.ndarray:
    x, file_sr = sf.read(path, dtype="float32", always_2d=True)
    return resample(np.ascontiguousarray(x[:, 0]), file_sr, sr)  # first channel (DEMAND ch01)


class RecordedNoise:
    name: ClassVar[str] = "recorded_noise"
    stereo_only: ClassVar[bool] = False

    class Options(Options):
        snr_db: tuple[float, float] = (5.0, 25.0)
        folder: Path | None = None  # default: the run's augment.noise_folder

    def __init__(self, options: dict, context: AugmentContext):
        self.o = options_of(type(self), options)
        folder = self.o.folder or context.noise_folder
        if folder is None or not Path(folder).is_dir():
            raise AugmentError(f"recorded_noise: noise folder {folder} not found (set augment.noise_folder)")
        self.folder = Path(folder)
        self.files = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not self.files:
            raise AugmentError(f"recorded_noise: no {AUDIO_SUFFIXES} files under {self.folder}")

    def __call__(self, audio: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
        path = self.files[int(rng.integers(len(self.files)))]
        noise = _load(str(path), sr)
        offset = int(rng.integers(len(noise)))
        snr = uniform(rng, self.o.snr_db)
        shifted = [
            loop_to(noise, len(audio), (offset + c * len(noise) // 2) % len(noise)) for c in range(audio.shape[1])
        ]
        return add_at_snr(audio, np.stack(shifted, axis=1), sr, snr), {
            "file": str(path.relative_to(self.folder)),
            "offset": offset,
            "snr_db": round(snr, 3),
        }
