"""Small audio operations shared by stages: resampling, pauses, cuts, fades.

Arrays are float32 mono unless a name says otherwise. Times are seconds. Voice activity lives in
`factory.audio.vad`; `frame_activity` (its energy detector), `speech_intervals` and
`VAD_FRAME_S` are re-exported here for the callers that import them from this module.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import soxr

from factory.audio.vad import FRAME_S as VAD_FRAME_S
from factory.audio.vad import energy_vad as frame_activity
from factory.audio.vad import speech_intervals
from factory.models import Utterance, WordTiming

__all__ = [
    "VAD_FRAME_S",
    "cut_after_word",
    "frame_activity",
    "insert_pause",
    "resample",
    "resample_utterance",
    "speech_intervals",
]


def resample(
    audio: np.ndarray, orig_sr: int, target_sr: int, *, length: Literal["ceil", "soxr"] = "ceil"
) -> np.ndarray:
    """float32 at `target_sr` (soxr HQ, deterministic), mono [n] or channels [n, c] (each channel
    resampled on its own); the same array when the rates agree.
    The project's one resampler: no other module calls soxr (tests/test_architecture.py).
    Computed in the input's precision. `length` says how many samples come out:
    * "ceil": trimmed or zero-padded to ceil(len * target / orig), the bytes of
      `librosa.resample(res_type="soxr_hq")`, which this replaced (renders, augmentation, FDB);
    * "soxr": soxr's own count, round(len * target / orig): what the exporters (moshi, nemo-duplex),
      ASR, VAD, the tokenizers and the pitch shift always wrote, kept so their bytes stay the same.
    The values of the samples both keep are the same."""
    if orig_sr == target_sr:
        return audio
    y = np.asarray(audio)
    if y.ndim not in (1, 2) or not np.issubdtype(y.dtype, np.floating):
        raise ValueError(f"resample takes float audio [n] or [n, channels], got shape {y.shape} of {y.dtype}")
    if length not in ("ceil", "soxr"):
        raise ValueError(f"resample length must be 'ceil' or 'soxr', got {length!r}")
    out = soxr.resample(y, orig_sr, target_sr, quality="soxr_hq")
    if length == "ceil":
        n = int(np.ceil(len(y) * (float(target_sr) / orig_sr)))
        out = out[:n] if len(out) >= n else np.pad(out, [(0, n - len(out))] + [(0, 0)] * (y.ndim - 1))
    return out.astype(np.float32)


def resample_utterance(utt: Utterance, sample_rate: int) -> Utterance:
    if utt.sample_rate == sample_rate:
        return utt
    audio = resample(utt.audio, utt.sample_rate, sample_rate)
    duration = len(audio) / sample_rate
    words = [w.model_copy(update={"end": min(w.end, duration), "start": min(w.start, duration)}) for w in utt.words]
    return utt.model_copy(update={"audio": audio, "sample_rate": sample_rate, "words": words})


def insert_pause(utt: Utterance, after_word: int, seconds: float) -> tuple[Utterance, float, float]:
    """Insert silence at the end of word `after_word`; later words shift. Returns the new
    utterance and the pause's (start, end) relative to the utterance start."""
    sr = utt.sample_rate
    at = round(utt.words[after_word].end * sr)
    n = round(seconds * sr)
    audio = np.concatenate([utt.audio[:at], np.zeros(n, np.float32), utt.audio[at:]])
    shift = n / sr
    words = [
        w if i <= after_word else WordTiming(word=w.word, start=w.start + shift, end=w.end + shift)
        for i, w in enumerate(utt.words)
    ]
    start = at / sr
    return utt.model_copy(update={"audio": audio, "words": words}), start, start + shift


def cut_after_word(audio: np.ndarray, words: list[WordTiming], last_word: int, sr: int, fade_s: float) -> np.ndarray:
    """Keep audio up to the end of `last_word`, with a short fade-out ending exactly there."""
    stop = round(words[last_word].end * sr)
    kept = audio[:stop].copy()
    n_fade = min(round(fade_s * sr), len(kept))
    if n_fade:
        kept[-n_fade:] *= np.cos(np.linspace(0, math.pi / 2, n_fade, dtype=np.float32)) ** 2
    return kept
