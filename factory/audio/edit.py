"""Small audio operations shared by stages: resampling, pauses, cuts, fades, voice activity.

Arrays are float32 mono unless a name says otherwise. Times are seconds.
"""

from __future__ import annotations

import math

import librosa
import numpy as np

from factory.models import Utterance, WordTiming

VAD_FRAME_S = 0.010


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
    at = int(round(utt.words[after_word].end * sr))
    n = int(round(seconds * sr))
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
    stop = int(round(words[last_word].end * sr))
    kept = audio[:stop].copy()
    n_fade = min(int(round(fade_s * sr)), len(kept))
    if n_fade:
        kept[-n_fade:] *= np.cos(np.linspace(0, math.pi / 2, n_fade, dtype=np.float32)) ** 2
    return kept


def frame_activity(audio: np.ndarray, sr: int, threshold_db: float = -45.0, frame_s: float = VAD_FRAME_S) -> np.ndarray:
    """Voice activity per 10 ms frame from energy relative to the signal's loudest frame.

    For clean synthetic stems (silence is digital zero) this is exact to a frame; noisy audio
    needs a real VAD (see factory.audit)."""
    hop = int(round(frame_s * sr))
    n_frames = math.ceil(len(audio) / hop)
    padded = np.zeros(n_frames * hop, np.float32)
    padded[: len(audio)] = audio
    frames = padded.reshape(n_frames, hop)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    peak = rms.max() if len(rms) else 0.0
    if peak <= 0:
        return np.zeros(n_frames, bool)
    return 20 * np.log10(np.maximum(rms, 1e-12) / peak) > threshold_db


def speech_intervals(active: np.ndarray, frame_s: float = VAD_FRAME_S, bridge_s: float = 0.0) -> list[tuple[float, float]]:
    """Runs of active frames as (start, end) seconds; silences shorter than `bridge_s` bridged."""
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    runs: list[tuple[float, float]] = []
    for s, e in zip(starts, ends):
        if runs and (s * frame_s - runs[-1][1]) < bridge_s:
            runs[-1] = (runs[-1][0], e * frame_s)
        else:
            runs.append((s * frame_s, e * frame_s))
    return runs
