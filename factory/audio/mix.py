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
from functools import lru_cache

import numpy as np
import pyloudnorm
import soundfile as sf
from scipy.signal import sosfilt, tf2sos

from factory.models import Channel, MixPiece, MixRecipe

PCM16_SCALE = 32768.0
# FLAC compression level (0-8), chosen by benchmarks/mix.py on real TTS speech at 24 kHz
# (results/mix.md): levels 6-8 save 2-4 % of the clean stems' bytes (8-15 GB over 400K x 45 s
# dialogues; under 2 % of a run's clean + augmented audio, whose noise hardly compresses) for
# 1.3-2.2x the encode time (level 8 would take mix + encoding from ~860x to ~580x real time);
# levels 0-3 encode ~28 % faster but add 4-7 % (12-26 GB). 5 is also libsndfile's default, so
# shards written before it was named are byte-identical. Lossless at every level.
FLAC_LEVEL = 5


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
    A channel's own pieces never overlap (the timeline guarantees it; checked here); layers (a
    piece with `gain_db`: sound the agent must not answer) are scaled and added after them."""
    if len(sources) != len(recipe.pieces):
        raise MixError(f"{len(sources)} sources for {len(recipe.pieces)} pieces")
    n = recipe.n_samples
    stems = np.zeros((n, 2), np.float32)
    # layers last (a stable sort): the overlap check sees the channel's own speech only
    for piece, source in sorted(zip(recipe.pieces, sources), key=lambda pair: pair[0].gain_db is not None):
        audio = piece_audio(piece, source)
        end = piece.offset + len(audio)
        if end > n:
            raise MixError(f"piece ends at sample {end}, past the dialogue end {n}")
        target = stems[piece.offset : end, piece.channel.index]
        if piece.gain_db is not None:
            target += audio * np.float32(10 ** (piece.gain_db / 20))
        elif np.any(target != 0):
            raise MixError(
                f"two pieces of speech overlap on the {piece.channel.value} channel at sample {piece.offset}"
            )
        else:
            target[:] = audio
    return stems


@lru_cache(maxsize=8)
def _k_weighting(sr: int) -> np.ndarray:
    """pyloudnorm's BS.1770 K-weighting (shelf, then high-pass) at `sr` as float32 second-order
    sections, passband gains folded into the first."""
    stages = list(pyloudnorm.Meter(sr)._filters.values())
    sos = np.vstack([tf2sos(f.b, f.a) for f in stages])
    sos[0, :3] *= np.prod([f.passband_gain for f in stages])
    return sos.astype(np.float32)


def integrated_loudness(x: np.ndarray, sr: int, block_s: float = 0.4, overlap: float = 0.75) -> float:
    """ITU-R BS.1770-4 integrated loudness of a mono signal (LUFS): pyloudnorm's
    `Meter.integrated_loudness` with its filters run as one float32 cascade and its block loop
    vectorised: the squared signal is summed once between consecutive block edges (`reduceat`)
    and each block's energy is a difference of those partial sums, so no full-length cumulative
    sum is built. ~5x faster than pyloudnorm on a dialogue; within 0.001 LU of it
    (tests/test_augment.py)."""
    y = sosfilt(_k_weighting(sr), np.asarray(x, np.float32))  # a strided column is read in place
    n = len(y)
    if n < round(block_s * sr):
        raise MixError(f"audio of {n} samples is shorter than one {block_s} s loudness block")
    step = 1.0 - overlap
    n_blocks = int(np.round((n / sr - block_s) / (block_s * step))) + 1
    j = np.arange(n_blocks)
    # pyloudnorm's own (float-rounded) block edges, so the blocks are the same samples
    lower = np.minimum((block_s * (j * step) * sr).astype(np.int64), n)
    upper = np.minimum((block_s * (j * step + 1) * sr).astype(np.int64), n)
    edges = np.unique(np.concatenate([[0], lower, upper]))
    starts = edges[edges < n]
    prefix = np.concatenate([[0.0], np.cumsum(np.add.reduceat(np.square(y, dtype=np.float64), starts))])
    points = np.append(starts, n)  # prefix[k] = sum of y^2 before points[k]
    energy = prefix[np.searchsorted(points, upper)] - prefix[np.searchsorted(points, lower)]
    z = np.maximum(energy, 0.0) / (block_s * sr)  # a difference of sums may round just below 0
    with np.errstate(divide="ignore"):
        blocks = -0.691 + 10.0 * np.log10(z)
        gated = z[blocks >= -70.0]
        if not len(gated):
            return -np.inf
        relative = -0.691 + 10.0 * np.log10(gated.mean()) - 10.0
        kept = z[(blocks > relative) & (blocks > -70.0)]
        return float(-0.691 + 10.0 * np.log10(kept.mean() if len(kept) else 0.0))


def loudness_gains(stems: np.ndarray, sr: int, target_lufs: float, peak_dbfs: float) -> tuple[float, float]:
    """One linear gain per channel: to `target_lufs`, lowered where the result would peak above
    `peak_dbfs`. A silent channel keeps gain 1. Each channel is read in place (no float64 copy);
    its peak pass is also the finiteness check (a NaN or inf sample makes the peak non-finite)."""
    ceiling = 10 ** (peak_dbfs / 20)
    gains = []
    for ch in range(2):
        x = stems[:, ch]
        peak = float(np.max(np.abs(x))) if len(x) else 0.0
        if not math.isfinite(peak):
            raise MixError(f"non-finite samples on channel {Channel.user if ch == 0 else Channel.agent}")
        loudness = integrated_loudness(x, sr) if peak > 0 else -np.inf
        gain = 10 ** ((target_lufs - loudness) / 20) if np.isfinite(loudness) else 1.0
        if peak * gain > ceiling:
            gain = ceiling / peak
        gains.append(float(gain))
    return gains[0], gains[1]


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float audio (full scale 1.0) as int16, rounded and clipped: the one quantiser, so what is
    written is exactly what a reader decodes (soundfile reads int16 as pcm / 32768). Scaling by
    2^15 is exact in any float width, so float32 input is rounded in float32 (same result, no
    float64 copy)."""
    x = np.asarray(audio)
    if x.dtype != np.float32:
        x = x.astype(np.float64)
    y = x * x.dtype.type(PCM16_SCALE)
    np.rint(y, out=y)
    np.clip(y, -PCM16_SCALE, PCM16_SCALE - 1, out=y)
    return y.astype(np.int16)


def apply_gains(stems: np.ndarray, gains: Sequence[float]) -> np.ndarray:
    """The stems as stored: gained, then on the 16-bit PCM grid (what FLAC keeps), float32.
    (x * g) * 2^15 == x * (g * 2^15) exactly, so one float64 multiply does both; the rounded,
    clipped values are integers of at most 16 bits, so they go to float32 exactly (no int16 step)."""
    y = np.multiply(stems, np.asarray(gains, np.float64) * PCM16_SCALE, dtype=np.float64)
    np.rint(y, out=y)
    np.clip(y, -PCM16_SCALE, PCM16_SCALE - 1, out=y)
    out = y.astype(np.float32)
    out *= np.float32(1 / PCM16_SCALE)
    return out


def apply_gain(mono: np.ndarray, gain: float) -> np.ndarray:
    """One mono signal as stored: `apply_gains` of a single channel (the agent's voice prompt)."""
    return apply_gains(mono[:, None], (gain,))[:, 0]


def mix(recipe: MixRecipe, sources: Sequence[np.ndarray]) -> np.ndarray:
    """The clean stereo mix of a complete recipe (gains already in it)."""
    return apply_gains(place(recipe, sources), recipe.gains)


def flac_bytes(stereo: np.ndarray, sr: int) -> bytes:
    """16-bit FLAC of float audio (quantised by `to_pcm16`)."""
    buf = io.BytesIO()
    sf.write(buf, to_pcm16(stereo), sr, format="FLAC", subtype="PCM_16", compression_level=FLAC_LEVEL / 8)
    return buf.getvalue()


def read_audio(data: bytes) -> tuple[np.ndarray, int]:
    """(samples, channels) float32 and the rate, from encoded bytes (FLAC, WAV)."""
    audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio, sr
