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
from factory.audio.vad import speech_intervals, true_runs
from factory.models import Utterance, WordTiming

__all__ = [
    "VAD_FRAME_S",
    "cut_after_word",
    "frame_activity",
    "gate_silence",
    "insert_pause",
    "resample",
    "resample_render",
    "resample_utterance",
    "speech_intervals",
]


# `gate_silence`: quiet stretches of a render this long or longer become digital zero, entered
# and left by ramps this long (a stop closure is shorter than GATE_MIN_S and is left alone).
GATE_MIN_S, GATE_FADE_S = 0.05, 0.005


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


def resample_render(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """A render at the mix rate: `resample`, with its digital silence kept digital. The filter
    rings into a gated pause (`gate_silence`) at about -90 dB, which the 16-bit mix can still round
    to +-1; only zero runs as long as a gated pause's are kept (a zero crossing is not silence).
    The pipeline (`resample_utterance`) and the rebuild from the TTS cache both resample through
    it, so both give the bytes the recipe's hash names."""
    out = resample(audio, orig_sr, target_sr)
    if out is audio:
        return out
    ratio = target_sr / orig_sr
    min_n = round((GATE_MIN_S - 2 * GATE_FADE_S) * orig_sr)
    for a, b in true_runs(np.asarray(audio) == 0):
        if b - a >= min_n:
            out[math.ceil(a * ratio) : math.floor(b * ratio)] = 0.0
    return out


def resample_utterance(utt: Utterance, sample_rate: int) -> Utterance:
    if utt.sample_rate == sample_rate:
        return utt
    audio = resample_render(utt.audio, utt.sample_rate, sample_rate)
    duration = len(audio) / sample_rate
    words = [w.model_copy(update={"end": min(w.end, duration), "start": min(w.start, duration)}) for w in utt.words]
    return utt.model_copy(update={"audio": audio, "sample_rate": sample_rate, "words": words})


def insert_pause(utt: Utterance, after_word: int, seconds: float) -> tuple[Utterance, float, float]:
    """Insert silence at the end of word `after_word` (after the gate's fade-out where the render
    is gated there); later words shift. Returns the new utterance and the pause's (start, end)
    relative to the utterance start."""
    sr = utt.sample_rate
    at = round(utt.words[after_word].end * sr)
    # A gated render (`gate_silence`) fades the engine's floor out over the first GATE_FADE_S
    # after the word, then holds zeros: open the pause after that fade, or a 5 ms fragment of the
    # floor would sit in the middle of the silence.
    fade = round(GATE_FADE_S * sr)
    after = utt.audio[at : at + 3 * fade]
    for k in range(min(2 * fade, len(after) - fade) + 1):  # where `fade` zeros begin, if they do
        if not after[k : k + fade].any():
            at += k
            break
    n = round(seconds * sr)
    audio = np.concatenate([utt.audio[:at], np.zeros(n, np.float32), utt.audio[at:]])
    shift = n / sr
    words = [
        w if i <= after_word else WordTiming(word=w.word, start=w.start + shift, end=w.end + shift)
        for i, w in enumerate(utt.words)
    ]
    start = at / sr
    return utt.model_copy(update={"audio": audio, "words": words}), start, start + shift


def gate_silence(
    audio: np.ndarray, active: np.ndarray, sample_rate: int, *, min_s: float = GATE_MIN_S, fade_s: float = GATE_FADE_S
) -> np.ndarray:
    """Digital zero in every stretch of at least `min_s` where `active` (per-sample speech) is
    False, entered and left by `fade_s` cos^2 ramps that lie inside the stretch (speech is never
    touched). A copy; shorter quiet stretches (stop closures) are kept as they are.

    Why: engines leave a floor in their own pauses (Kokoro and Piper about -65 dBFS, espeak's
    echo/breath variants such as en-us+f3 about -63), while the gaps the mixer puts between turns
    and the pauses the planner inserts are digital zero. A model trained on such stems learns
    "a floor means the turn goes on, zero means it is over" (docs/exports/smoke-train.md); gated,
    every silence of a clean stem is the same digital zero."""
    if not 0 < 2 * fade_s <= min_s:
        raise ValueError(f"gate_silence needs 0 < 2 * fade_s <= min_s, got fade_s={fade_s}, min_s={min_s}")
    out = np.array(audio, dtype=np.float32)
    quiet = ~np.asarray(active, dtype=bool)
    if quiet.shape != out.shape:
        raise ValueError(f"activity of shape {quiet.shape} for audio of shape {out.shape}")
    min_n, n_fade = max(1, round(min_s * sample_rate)), round(fade_s * sample_rate)
    ramp = np.cos(np.linspace(0, math.pi / 2, n_fade, dtype=np.float32)) ** 2  # 1 -> 0
    for a, b in true_runs(quiet):
        if b - a < min_n:
            continue
        out[a : a + n_fade] *= ramp
        out[a + n_fade : b - n_fade] = 0.0
        out[b - n_fade : b] *= ramp[::-1]
    return out


def cut_after_word(audio: np.ndarray, words: list[WordTiming], last_word: int, sr: int, fade_s: float) -> np.ndarray:
    """Keep audio up to the end of `last_word`, with a short fade-out ending exactly there."""
    stop = round(words[last_word].end * sr)
    kept = audio[:stop].copy()
    n_fade = min(round(fade_s * sr), len(kept))
    if n_fade:
        kept[-n_fade:] *= np.cos(np.linspace(0, math.pi / 2, n_fade, dtype=np.float32)) ** 2
    return kept
