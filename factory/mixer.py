"""Mix stage: placements -> two sample-aligned stems -> stereo (channel 0 = user, 1 = agent).

Each stem is loudness-normalised (ITU-R BS.1770 via pyloudnorm) and then kept under the peak
ceiling, so nothing clips.
"""

from __future__ import annotations

import io

import numpy as np
import pyloudnorm
import soundfile as sf

from factory.models import Channel
from factory.timeline import Placement


class MixError(RuntimeError):
    pass


def render_stems(placements: list[Placement], duration: float, sr: int) -> np.ndarray:
    """(samples, 2) float32. Pieces on one channel never overlap (the timeline guarantees it)."""
    n = int(round(duration * sr))
    stems = np.zeros((n, 2), np.float32)
    for p in placements:
        end = p.start + len(p.audio)
        if end > n:
            raise MixError(f"placement ends at sample {end}, past the dialogue end {n}")
        target = stems[p.start : end, p.channel.index]
        if np.any(target != 0):
            raise MixError(f"two pieces of speech overlap on the {p.channel.value} channel at sample {p.start}")
        target[:] = p.audio
    return stems


def normalise(stems: np.ndarray, sr: int, target_lufs: float, peak_dbfs: float) -> np.ndarray:
    """Per-channel loudness to `target_lufs`, then scale down any channel that would peak above
    `peak_dbfs`. Channels are scaled as wholes, never limited, so the audio is not distorted."""
    meter = pyloudnorm.Meter(sr)
    ceiling = 10 ** (peak_dbfs / 20)
    out = np.empty_like(stems)
    for ch in range(stems.shape[1]):
        x = stems[:, ch].astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise MixError(f"non-finite samples on channel {Channel.user if ch == 0 else Channel.agent}")
        loudness = meter.integrated_loudness(x) if np.any(x) else -np.inf
        gain = 10 ** ((target_lufs - loudness) / 20) if np.isfinite(loudness) else 1.0
        x = x * gain
        peak = np.max(np.abs(x)) if len(x) else 0.0
        if peak > ceiling:
            x *= ceiling / peak
        out[:, ch] = x
    return out.astype(np.float32)


def flac_bytes(stereo: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, stereo, sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()
