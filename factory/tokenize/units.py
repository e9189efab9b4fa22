"""The embedded audio tokenizer: k-means units over log-mel frames, no downloaded weights.

Features: audio resampled to 16 kHz (`factory.audio.edit.resample`, soxr HQ), a 40-band log-mel
spectrogram every 10 ms (25 ms window), pooled over the frames of one unit (8, 4 or 2 of them at
12.5, 25 or 50 Hz) into their mean and standard deviation, standardised with the fitted
statistics. A unit is the nearest centroid (squared Euclidean distance, float64). One codebook:
n_q = 1, cardinality = k.

Frame rule: T = ceil(duration * frame_rate); the tail of the last unit is padded with silence.

The codebook (config, feature statistics and centroids as little-endian float32) is one JSON
file with sorted keys; its sha256 is the tokenizer's identity, so an export names exactly the
codebook that made its tokens, and the same file tokenizes other runs identically. Fitting is
deterministic for a given seed: frames are subsampled with `numpy.random.default_rng(seed)`
and k-means runs single-threaded with `random_state=seed` (OpenMP reductions would otherwise
reorder float sums between runs).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np

from factory.audio.edit import resample
from factory.tokenize.base import TokenizerIdentity, ceil_frames
from factory.tokenize.progress import progress_map

FEATURE_SR = 16000
HOP = 160  # 10 ms at 16 kHz
N_FFT = 400  # 25 ms
N_MELS = 40
FRAME_RATES = (12.5, 25.0, 50.0)
FORMAT = "duplex-factory/units-codebook/1"
_FLOOR = 1e-10


class CodebookError(ValueError):
    """A codebook file that is not one this module wrote, or is damaged."""


def _pool(frame_rate: float) -> int:
    if frame_rate not in FRAME_RATES:
        raise ValueError(f"units frame rate must be one of {FRAME_RATES} Hz, got {frame_rate}")
    return int(round(100 / frame_rate))


def _resample(audio: np.ndarray, sr: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"units tokenizer takes mono audio [n], got shape {audio.shape}")
    if sr == FEATURE_SR:
        return audio
    return resample(audio, sr, FEATURE_SR, length="soxr")


def features(audio: np.ndarray, sr: int, frame_rate: float) -> np.ndarray:
    """Unstandardised unit features `[T, 2 * N_MELS]` with T = ceil(duration * frame_rate)."""
    import librosa  # lazy: heavy (numba); only fitting and encoding need it

    pool = _pool(frame_rate)
    n_units = ceil_frames(len(audio), sr, frame_rate)
    if n_units == 0:
        return np.zeros((0, 2 * N_MELS), dtype=np.float64)
    y = _resample(audio, sr)
    want = n_units * pool * HOP
    y = np.pad(y[:want], (0, max(0, want - len(y))))
    mel = librosa.feature.melspectrogram(
        y=y, sr=FEATURE_SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, center=True, pad_mode="constant"
    )[:, : n_units * pool]
    logmel = np.log10(np.maximum(mel.astype(np.float64), _FLOOR))
    blocks = logmel.reshape(N_MELS, n_units, pool)
    return np.concatenate([blocks.mean(axis=2), blocks.std(axis=2)], axis=0).T


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def _unb64(s: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<f4").reshape(shape).astype(np.float64)


class UnitsTokenizer:
    name = "units"
    sample_rate = FEATURE_SR
    n_q = 1

    def __init__(self, centroids: np.ndarray, mean: np.ndarray, std: np.ndarray, frame_rate: float, seed: int) -> None:
        # Round through float32 once, so a fitted tokenizer and its saved codebook give equal units.
        self.centroids = np.asarray(centroids, dtype="<f4").astype(np.float64)
        self.mean = np.asarray(mean, dtype="<f4").astype(np.float64)
        self.std = np.asarray(std, dtype="<f4").astype(np.float64)
        self.frame_rate = float(frame_rate)
        self.seed = int(seed)
        self.cardinality = len(self.centroids)
        _pool(self.frame_rate)
        dim = (2 * N_MELS,)
        if self.centroids.shape[1:] != dim or self.mean.shape != dim or self.std.shape != dim:
            raise CodebookError(f"codebook arrays have wrong shapes: centroids {self.centroids.shape}")
        self._c2 = (self.centroids**2).sum(axis=1)

    def n_frames(self, n_samples: int, sr: int) -> int:
        return ceil_frames(n_samples, sr, self.frame_rate)

    def encode(self, audio: np.ndarray, sr: int) -> np.ndarray:
        x = (features(audio, sr, self.frame_rate) - self.mean) / self.std
        dist = self._c2[None, :] - 2.0 * x @ self.centroids.T
        return dist.argmin(axis=1).astype(np.int64)[None, :]

    def encode_batch(self, audios: Sequence[np.ndarray], sr: int) -> list[np.ndarray]:
        return progress_map(lambda a: self.encode(a, sr), audios, f"units @ {self.frame_rate:g} Hz")

    # ---------------------------------------------------------------- codebook file
    def to_json(self) -> str:
        doc = {
            "format": FORMAT,
            "frame_rate": self.frame_rate,
            "k": self.cardinality,
            "seed": self.seed,
            "features": {"sr": FEATURE_SR, "hop": HOP, "n_fft": N_FFT, "n_mels": N_MELS, "stats": "mean+std"},
            "mean": _b64(self.mean),
            "std": _b64(self.std),
            "centroids": _b64(self.centroids),
        }
        return json.dumps(doc, sort_keys=True, indent=1) + "\n"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> UnitsTokenizer:
        path = Path(path)
        if not path.is_file():
            raise CodebookError(f"units codebook not found: {path} (fit one with factory.tokenize.fit_units)")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("format") != FORMAT:
                raise CodebookError(f"{path} is not a units codebook (format {doc.get('format')!r}, want {FORMAT!r})")
            dim = 2 * doc["features"]["n_mels"]
            if doc["features"] != {"sr": FEATURE_SR, "hop": HOP, "n_fft": N_FFT, "n_mels": N_MELS, "stats": "mean+std"}:
                raise CodebookError(f"{path} was fitted on other features: {doc['features']}")
            return cls(
                centroids=_unb64(doc["centroids"], (doc["k"], dim)),
                mean=_unb64(doc["mean"], (dim,)),
                std=_unb64(doc["std"], (dim,)),
                frame_rate=doc["frame_rate"],
                seed=doc["seed"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CodebookError):
                raise
            raise CodebookError(f"damaged units codebook {path}: {exc}") from exc

    def identity(self) -> TokenizerIdentity:
        return TokenizerIdentity(
            name=self.name,
            version=f"duplex-factory units/1 (librosa {version('librosa')}, scikit-learn {version('scikit-learn')})",
            weights_sha256=hashlib.sha256(self.to_json().encode("utf-8")).hexdigest(),
            config={"frame_rate": self.frame_rate, "k": self.cardinality, "seed": self.seed, "n_mels": N_MELS},
        )


def fit_units(
    audios: Sequence[np.ndarray],
    sr: int,
    frame_rate: float = 12.5,
    k: int = 256,
    seed: int = 0,
    max_frames: int = 100_000,
) -> UnitsTokenizer:
    """Fits a k-means codebook on the unit frames of `audios` (mono, rate `sr`): a run's own
    channels, typically. At most `max_frames` frames (drawn with the seed) go into k-means."""
    from sklearn.cluster import KMeans  # lazy: heavy; only fitting needs it
    from threadpoolctl import threadpool_limits  # lazy: comes with scikit-learn

    _pool(frame_rate)
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    feats = progress_map(lambda a: features(a, sr, frame_rate), audios, "unit features")
    x = np.concatenate(feats) if feats else np.zeros((0, 2 * N_MELS))
    if len(x) < k:
        raise ValueError(f"{len(x)} frames of audio cannot fit {k} units: give more audio or a smaller k")
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), 1e-6)
    z = (x - mean) / std
    rng = np.random.default_rng(seed)
    if len(z) > max_frames:
        z = z[np.sort(rng.choice(len(z), size=max_frames, replace=False))]
    with threadpool_limits(limits=1):
        # sklearn is unannotated: pyright takes n_init's type (str) from its default, "auto"
        km = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=100).fit(z)  # pyright: ignore[reportArgumentType]
    return UnitsTokenizer(km.cluster_centers_, mean, std, frame_rate, seed)
