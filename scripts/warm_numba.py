"""Compiles librosa's numba functions once into a cache folder (argv[1]) that each test process
copies as its own NUMBA_CACHE_DIR (tests/conftest.py).

librosa compiles its gufuncs when its submodules import and its jitted helpers at first call, and
caches them on disk (`cache=True`). The test processes keep separate caches (two workers once
segfaulted in a gufunc's cache while others compiled it), so each one compiled everything again:
~28 CPU-s a process on 2 cores, in a suite whose workers and CLI subprocesses each touch librosa.
Run by scripts/setup.sh once per environment; the cache is keyed by the source files' stamps, so a
changed librosa or numba only misses it (and compiles), never loads a stale entry."""

from __future__ import annotations

import os
import sys
import time

os.environ["NUMBA_CACHE_DIR"] = os.path.abspath(sys.argv[1])  # read when numba first imports

import numpy as np  # noqa: E402

start = time.process_time()
import librosa  # noqa: E402

sr = 16_000
for dtype in (np.float32, np.float64):  # what the factory and its tests pass (audio, features)
    y = (np.random.default_rng(0).standard_normal(sr) * 0.1).astype(dtype)
    # The functions the project and its tests call (grep librosa\. in factory, tests, benchmarks).
    librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20)
    librosa.feature.melspectrogram(y=y, sr=sr)
    librosa.feature.spectral_centroid(y=y, sr=sr)
    librosa.feature.rms(y=y)
    librosa.yin(y, fmin=60, fmax=400, sr=sr)
    librosa.pyin(y, fmin=60, fmax=400, sr=sr)
    librosa.resample(y, orig_sr=sr, target_sr=24_000)
print(f"[setup] librosa's numba functions compiled into {sys.argv[1]} ({time.process_time() - start:.0f} CPU-s)")
