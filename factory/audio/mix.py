"""Mix stage: a `MixRecipe` plus its pieces' source audio -> two sample-aligned stems -> stereo
(channel 0 = user, 1 = agent).

The recipe is the only way audio gets mixed: the pipeline mixes fresh TTS renders through it,
and a rebuild mixes the same renders read back from the TTS cache through it, so both give the
same bytes. Each stem is loudness-normalised (ITU-R BS.1770 via pyloudnorm) by one linear gain,
capped so it stays under the peak ceiling: channels are scaled as wholes, never limited.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence

import numpy as np
import pyloudnorm
import soundfile as sf

from factory.models import Channel, MixPiece, MixRecipe

PCM16_SCALE = 32768.0


class MixError(RuntimeError):
    pass


def audio_sha256(audio: np.ndarray) -> str:
    """Content hash of a float32 mono render (the `PieceSource.sha256` of the recipe)."""
    return hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()


def fade_out(audio: np.ndarray, n_fade: int) -> np.ndarray:
    """A cos^2 fade over the last `n_fade` samples, in place; returns `audio`."""
    if n_fade:
        audio[-n_fade:] *= np.cos(np.linspace(0, math.pi / 2, n_fade, dtype=np.float32)) ** 2
    return audio


def piece_audio(piece: MixPiece, source: np.ndarray) -> np.ndarray:
    """Apply a piece's edits to its source render: inserted silences, then the cut and fade."""
    audio = np.asarray(source, dtype=np.float32)
    for s in piece.silences:
        audio = np.concatenate([audio[: s.at], np.zeros(s.length, np.float32), audio[s.at :]])
    if piece.cut:
        audio = fade_out(audio[: piece.length].copy(), min(piece.fade, piece.length))
    if len(audio) != piece.length:
        raise MixError(
            f"piece {piece.source.text!r} is {len(audio)} samples after its edits; the recipe says {piece.length}"
        )
    return audio


def place(recipe: MixRecipe, sources: Sequence[np.ndarray]) -> np.ndarray:
    """(samples, 2) float32 stems before gain. `sources[i]` is the render of `recipe.pieces[i]`.
    Pieces on one channel never overlap (the timeline guarantees it; checked here)."""
    if len(sources) != len(recipe.pieces):
        raise MixError(f"{len(sources)} sources for {len(recipe.pieces)} pieces")
    n = recipe.n_samples
    stems = np.zeros((n, 2), np.float32)
    for piece, source in zip(recipe.pieces, sources):
        audio = piece_audio(piece, source)
        end = piece.offset + len(audio)
        if end > n:
            raise MixError(f"piece ends at sample {end}, past the dialogue end {n}")
        target = stems[piece.offset : end, piece.channel.index]
        if np.any(target != 0):
            raise MixError(
                f"two pieces of speech overlap on the {piece.channel.value} channel at sample {piece.offset}"
            )
        target[:] = audio
    return stems


def loudness_gains(stems: np.ndarray, sr: int, target_lufs: float, peak_dbfs: float) -> tuple[float, float]:
    """One linear gain per channel: to `target_lufs`, lowered where the result would peak above
    `peak_dbfs`. A silent channel keeps gain 1."""
    meter = pyloudnorm.Meter(sr)
    ceiling = 10 ** (peak_dbfs / 20)
    gains = []
    for ch in range(2):
        x = stems[:, ch].astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise MixError(f"non-finite samples on channel {Channel.user if ch == 0 else Channel.agent}")
        loudness = meter.integrated_loudness(x) if np.any(x) else -np.inf
        gain = 10 ** ((target_lufs - loudness) / 20) if np.isfinite(loudness) else 1.0
        peak = float(np.max(np.abs(x))) if len(x) else 0.0
        if peak * gain > ceiling:
            gain = ceiling / peak
        gains.append(float(gain))
    return gains[0], gains[1]


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float audio (full scale 1.0) as int16, rounded and clipped: the one quantiser, so what is
    written is exactly what a reader decodes (soundfile reads int16 as pcm / 32768)."""
    return np.clip(np.round(np.asarray(audio, np.float64) * PCM16_SCALE), -PCM16_SCALE, PCM16_SCALE - 1).astype(
        np.int16
    )


def apply_gains(stems: np.ndarray, gains: Sequence[float]) -> np.ndarray:
    """The stems as stored: gained, then on the 16-bit PCM grid (what FLAC keeps), float32."""
    out = stems.astype(np.float64) * np.asarray(gains, np.float64)[None, :]
    return (to_pcm16(out) / PCM16_SCALE).astype(np.float32)


def mix(recipe: MixRecipe, sources: Sequence[np.ndarray]) -> np.ndarray:
    """The clean stereo mix of a complete recipe (gains already in it)."""
    return apply_gains(place(recipe, sources), recipe.gains)


def flac_bytes(stereo: np.ndarray, sr: int) -> bytes:
    """16-bit FLAC of float audio (quantised by `to_pcm16`)."""
    buf = io.BytesIO()
    sf.write(buf, to_pcm16(stereo), sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def read_audio(data: bytes) -> tuple[np.ndarray, int]:
    """(samples, channels) float32 and the rate, from encoded bytes (FLAC, WAV)."""
    audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio, sr
