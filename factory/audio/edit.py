"""Small audio operations shared by stages: resampling, pauses, cuts, fades.

Arrays are float32 mono unless a name says otherwise. Times are seconds. Voice activity lives in
`factory.audio.vad`; `frame_activity` (its energy detector), `speech_intervals` and
`VAD_FRAME_S` are re-exported here for the callers that import them from this module.
"""

from __future__ import annotations

import math

import librosa
import numpy as np

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


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """float32 mono at `target_sr` (soxr, deterministic); the same array when the rates agree."""
    if orig_sr == target_sr:
        return audio
    return librosa.resample(audio, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq").astype(np.float32)


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
