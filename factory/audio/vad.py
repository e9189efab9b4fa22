"""Voice activity detection: one bool per 10 ms frame, from an energy detector or a trained one.

- `energy_vad`: frame RMS within `threshold_db` of the loudest frame. Exact on the factory's own
  stems, whose silence is digital zero; useless under noise (the noise floor clears a relative
  threshold), which is what the trained detectors are for.
- `webrtc_vad`: WebRTC's GMM detector (`webrtcvad`) on 10 ms frames at 8/16/32/48 kHz; audio at
  any other rate is resampled to 16 kHz first.
- `silero_vad`: Silero VAD v6 through onnxruntime, from the ONNX file faster-whisper ships (no
  torch, no download); 32 ms windows at 16 kHz spread onto the 10 ms grid.

Both trained detectors lag the end of speech (WebRTC's hangover, Silero's recurrent state), so
each also runs on the time-reversed audio and the two directions are combined. On espeak speech,
clean and at 10-20 dB SNR (white, pink), that puts them within 6 frames of the word times
(tests/test_vad.py): WebRTC's onsets within 1, its offsets up to 6 early (a last word's faint
tail), Silero within ~4 either way; one direction alone ends 10-18 frames late in noise.

Every detector returns `n_frames(len(audio), sr)` flags on one grid: frame k covers samples
`[k * hop, (k + 1) * hop)` with `hop = frame_samples(sr)` (10 ms; 220 samples, 9.98 ms, at
22.05 kHz), the last frame zero-padded. `speech_intervals` turns flags into times.

`moving_power` is the sliding energy envelope that TTS trimming (`factory.render.text.speech_mask`)
and word-boundary snapping (`factory.render.align`) read at a finer resolution than the grid.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

FRAME_S = 0.010
WEBRTC_RATES = (8000, 16000, 32000, 48000)
SILERO_RATE, SILERO_WINDOW = 16_000, 512
VAD_METHODS = ("energy", "webrtc", "silero")


def frame_samples(sr: int, frame_s: float = FRAME_S) -> int:
    return round(frame_s * sr)


def n_frames(n_samples: int, sr: int, frame_s: float = FRAME_S) -> int:
    return math.ceil(n_samples / frame_samples(sr, frame_s))


def frame_rms(audio: np.ndarray, sr: int, frame_s: float = FRAME_S) -> np.ndarray:
    """RMS of each frame of the grid (float64; the last frame zero-padded)."""
    hop = frame_samples(sr, frame_s)
    n = n_frames(len(audio), sr, frame_s)
    padded = np.zeros(n * hop, np.float32)
    padded[: len(audio)] = audio
    return np.sqrt(np.mean(padded.reshape(n, hop).astype(np.float64) ** 2, axis=1))


def energy_vad(audio: np.ndarray, sr: int, threshold_db: float = -45.0, frame_s: float = FRAME_S) -> np.ndarray:
    """Frames whose RMS is within `threshold_db` of the loudest frame's; all False for silence."""
    rms = frame_rms(audio, sr, frame_s)
    peak = rms.max() if len(rms) else 0.0
    if peak <= 0:
        return np.zeros(len(rms), bool)
    return 20 * np.log10(np.maximum(rms, 1e-12) / peak) > threshold_db


def moving_power(audio: np.ndarray, window: int, hop: int = 1, edges: Literal["zero", "inside"] = "zero") -> np.ndarray:
    """Mean square of the `window` samples `[i - window // 2, i - window // 2 + window)` around
    every `hop`-th sample i. Past the ends the audio counts as zeros ("zero": a fixed divisor) or
    is left out ("inside": the mean of what lies inside).

    Per sample ("zero", hop 1) this is a convolution, the arithmetic TTS trimming has always used
    (a change of rounding there would change rendered bytes); otherwise cumulative sums."""
    x = np.asarray(audio, dtype=np.float64).ravel()
    window = max(1, int(window))
    if hop == 1 and edges == "zero":
        full = np.convolve(x**2, np.ones(window) / window, mode="full")
        start = (window - 1) // 2
        return full[start : start + len(x)]
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    centres = np.arange(0, len(x), hop)
    lo = np.clip(centres - window // 2, 0, len(x))
    hi = np.clip(centres - window // 2 + window, 0, len(x))
    divisor = np.maximum(hi - lo, 1) if edges == "inside" else window
    return (csum[hi] - csum[lo]) / divisor


def webrtc_vad(audio: np.ndarray, sr: int, aggressiveness: int = 3) -> np.ndarray:
    """WebRTC's detector per frame. Its hangover (6-14 frames of "speech" after speech stops, by
    design for telephony) trails every run, so it runs forwards and backwards in time and the two
    are ANDed: one pass's late offset is cut by the other's exact onset. Each pass first hears the
    audio once to adapt its noise model; unadapted, it takes noise for speech in its first half
    second. `aggressiveness` 0-3: higher rejects more non-speech."""
    import webrtcvad  # lazy: not in the Coqui env, which imports this module (through edit) for the exports

    rate = sr if sr in WEBRTC_RATES else 16_000
    pcm = np.round(np.clip(_resample(audio, sr, rate), -1.0, 1.0) * 32767).astype("<i2")
    hop = rate // 100
    n = math.ceil(len(pcm) / hop)
    frames = np.concatenate([pcm, np.zeros(n * hop - len(pcm), "<i2")]).reshape(n, hop)

    def one_pass(ordered: np.ndarray) -> np.ndarray:
        vad, chunks = webrtcvad.Vad(aggressiveness), [frame.tobytes() for frame in ordered]
        for chunk in chunks:
            vad.is_speech(chunk, rate)
        return np.array([vad.is_speech(chunk, rate) for chunk in chunks], bool)

    flags = one_pass(frames) & one_pass(frames[::-1, ::-1])[::-1]
    return _on_grid(flags, FRAME_S, len(audio), sr)


def silero_vad(audio: np.ndarray, sr: int, threshold: float = 0.5) -> np.ndarray:
    """Silero's speech probability >= `threshold` per frame (each 32 ms window's probability is
    given to the frames whose centre it holds). The recurrent model trails speech it has heard by
    up to ~200 ms in noise, so it also hears the audio backwards and the two probabilities are
    averaged: the lags, in opposite directions, cancel."""
    from faster_whisper.vad import get_vad_model  # lazy: heavy (faster_whisper loads CTranslate2)

    model = get_vad_model()
    x = _resample(audio, sr, SILERO_RATE)
    n = max(1, math.ceil(len(x) / SILERO_WINDOW))
    padded = np.zeros(n * SILERO_WINDOW, np.float32)
    padded[: len(x)] = x
    # copies: the model writes into its input
    forward = np.asarray(model(padded.copy())).reshape(-1)[:n]
    backward = np.asarray(model(padded[::-1].copy())).reshape(-1)[:n][::-1]
    return _on_grid((forward + backward) / 2 >= threshold, SILERO_WINDOW / SILERO_RATE, len(audio), sr)


def detect_speech(audio: np.ndarray, sr: int, method: str = "energy") -> np.ndarray:
    """Flags per frame from the detector named `method` (one of `VAD_METHODS`)."""
    if method == "energy":
        return energy_vad(audio, sr)
    if method == "webrtc":
        return webrtc_vad(audio, sr)
    if method == "silero":
        return silero_vad(audio, sr)
    raise ValueError(f"unknown VAD method {method!r}; choose one of {VAD_METHODS}")


def frames_to_samples(active: np.ndarray, sr: int, n_samples: int) -> np.ndarray:
    """Per-sample flags from per-frame ones (each frame's flag repeated over its samples)."""
    return np.repeat(active, frame_samples(sr))[:n_samples]


def true_runs(flags: np.ndarray) -> list[tuple[np.intp, np.intp]]:
    """[start, end) indices of each run of True in a bool array (frames or samples)."""
    edges = np.diff(np.asarray(flags, dtype=bool).astype(np.int8), prepend=0, append=0)
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def speech_intervals(active: np.ndarray, frame_s: float = FRAME_S, bridge_s: float = 0.0) -> list[tuple[float, float]]:
    """Runs of active frames as (start, end) seconds; silences shorter than `bridge_s` bridged."""
    runs: list[tuple[float, float]] = []
    for s, e in true_runs(active):
        if runs and (s * frame_s - runs[-1][1]) < bridge_s:
            runs[-1] = (runs[-1][0], e * frame_s)
        else:
            runs.append((s * frame_s, e * frame_s))
    return runs


def _resample(audio: np.ndarray, sr: int, target: int) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float32).ravel()
    if sr == target:
        return x
    # lazy: factory.audio.edit imports this module (it re-exports the VAD), so a top import would be a cycle
    from factory.audio.edit import resample

    return resample(x, sr, target, length="soxr")


def _on_grid(flags: np.ndarray, flag_s: float, n_samples: int, sr: int) -> np.ndarray:
    """Flags on their own time step (`flag_s` each) read at the centre of every frame of the grid."""
    hop = frame_samples(sr)
    centres = (np.arange(n_frames(n_samples, sr)) + 0.5) * hop / sr
    if not len(flags):
        return np.zeros(len(centres), bool)
    return flags[np.minimum((centres / flag_s).astype(int), len(flags) - 1)]
