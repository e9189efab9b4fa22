"""Non-speech sounds on the user's side (coughs, door knocks, keyboard), synthesised.

No package installed here ships recordings of these (site-packages holds only scipy's test
tones), so each is built from the physics of how it sounds: a cough is a burst of turbulent air
(band-passed noise with a fast attack and a ~100 ms decay) followed by a weaker, lower tail; a
knock is a few strikes, each a short click exciting damped low resonances of a wooden panel
(150-450 Hz, 30-70 ms decay); typing is a run of key clicks (high-passed noise bursts of a few
ms) at human inter-key intervals. Pure functions of (kind, rate, seed): a recipe rebuilds a
sound from its seed (`PieceSource.seed`), with no cache.
"""

from __future__ import annotations

from typing import get_args

import numpy as np
from scipy.signal import butter, sosfilt

from factory.audio.mix import audio_sha256
from factory.models import NonSpeechSound, PieceSource

PEAK = 0.5  # -6 dBFS before the event's gain


def _band(x: np.ndarray, sr: int, low: float, high: float) -> np.ndarray:
    sos = butter(4, [low, min(high, 0.45 * sr)], btype="bandpass", fs=sr, output="sos")
    return np.asarray(sosfilt(sos, x))


def _cough(rng: np.random.Generator, sr: int) -> np.ndarray:
    n = int(rng.uniform(0.35, 0.55) * sr)
    t = np.arange(n) / sr
    burst = _band(rng.standard_normal(n), sr, 300, 3500) * np.minimum(t / 0.01, 1) * np.exp(-t / 0.09)
    tail_at = int(0.12 * sr)
    tail = np.zeros(n)
    tail[tail_at:] = _band(rng.standard_normal(n - tail_at), sr, 150, 1200)
    tail *= 0.35 * np.exp(-np.maximum(t - 0.12, 0) / 0.12) * (t >= 0.12)
    return burst + tail


def _knock(rng: np.random.Generator, sr: int) -> np.ndarray:
    strikes = int(rng.integers(2, 5))
    spacing = rng.uniform(0.14, 0.24)
    n = int((spacing * (strikes - 1) + 0.2) * sr)
    out = np.zeros(n)
    modes = rng.uniform(150, 450, size=3)
    decays = rng.uniform(0.03, 0.07, size=3)
    length = int(0.2 * sr)
    t = np.arange(length) / sr
    strike = sum(np.sin(2 * np.pi * f * t) * np.exp(-t / d) for f, d in zip(modes, decays))
    click = _band(rng.standard_normal(length), sr, 1000, 6000) * np.exp(-t / 0.003)
    for k in range(strikes):
        at = int(k * spacing * sr)
        out[at : at + length] += rng.uniform(0.7, 1.0) * (strike + 0.3 * click)[: n - at]
    return out


def _keyboard(rng: np.random.Generator, sr: int) -> np.ndarray:
    gaps = rng.uniform(0.08, 0.25, size=int(rng.integers(6, 15)))
    n = int((gaps.sum() + 0.05) * sr)
    out = np.zeros(n)
    length = int(0.02 * sr)
    t = np.arange(length) / sr
    at = 0.0
    for gap in gaps:
        i = int(at * sr)
        click = _band(rng.standard_normal(length), sr, 2000, 9000) * np.exp(-t / 0.004)
        out[i : i + length] += rng.uniform(0.5, 1.0) * click[: n - i]
        at += gap
    return out


_MAKERS = {"cough": _cough, "knock": _knock, "keyboard": _keyboard}


def synth_sound(kind: NonSpeechSound, sample_rate: int, seed: int) -> np.ndarray:
    """One `kind` sound, float32 mono at `sample_rate`, peaking at `PEAK`."""
    x = _MAKERS[kind](np.random.default_rng(seed), sample_rate)
    return (x * (PEAK / np.max(np.abs(x)))).astype(np.float32)


SOUND_BACKEND = "sound"  # PieceSource.backend of a synthesised sound; its voice_id is the kind


def sound_source(kind: NonSpeechSound, sample_rate: int, seed: int) -> tuple[np.ndarray, PieceSource]:
    """A sound and the recipe source that rebuilds it (`rebuild_sound`)."""
    audio = synth_sound(kind, sample_rate, seed)
    source = PieceSource(
        cache_key=None,
        backend=SOUND_BACKEND,
        voice_id=kind,
        text=f"[{kind}]",
        rate=1.0,
        sample_rate=sample_rate,
        n_samples=len(audio),
        sha256=audio_sha256(audio),
        seed=seed,
    )
    return audio, source


def rebuild_sound(source: PieceSource) -> np.ndarray:
    """The sound a `sound_source` recorded, at its own rate (the run's)."""
    kind = next((k for k in get_args(NonSpeechSound) if k == source.voice_id), None)
    if kind is None or source.seed is None:
        raise ValueError(f"not a synthesised sound: {source.voice_id!r} (seed {source.seed})")
    return synth_sound(kind, source.sample_rate, source.seed)
