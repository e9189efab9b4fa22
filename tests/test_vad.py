"""The voice activity detectors of factory/audio/vad.py on real speech (espeak), padded with
digital silence and with noise: one grid for all, edges found within a few frames."""

from __future__ import annotations

import numpy as np
import pytest

from factory.audio import vad
from factory.audio.edit import frame_activity, resample
from factory.augment.noise import colored_noise
from factory.render.registry import get_backend
from factory.render.text import speech_mask
from factory.render.voices import VoiceBank

CASES = [
    ("Could you send me the report by Friday afternoon, please?", "espeak-gb-m3"),
    ("Mine came with the flat, so I honestly have no idea.", "espeak-us-f3"),
]
PAD_S = 0.5
# Edge tolerance in frames against the word times (speech 40 dB below the peak included). The
# trained detectors stop before a last word's faint tail (WebRTC up to ~6 frames early) and
# decide per window (Silero: 32 ms, a voiceless onset heard up to ~4 frames late).
TOLERANCE = {"energy": 1, "webrtc": 6, "silero": 5}
TRAINED = ("webrtc", "silero")


@pytest.fixture(scope="module", params=CASES, ids=["gb-m3", "us-f3"])
def speech(request: pytest.FixtureRequest) -> tuple[np.ndarray, int, float, float]:
    """Espeak speech with 0.5 s of digital silence each side, and the speech's true edges (s)."""
    text, voice = request.param
    utt = get_backend("espeak").synthesize(text, VoiceBank.load().get(voice))
    pad = np.zeros(int(PAD_S * utt.sample_rate), np.float32)
    audio = np.concatenate([pad, utt.audio, pad])
    active = np.flatnonzero(speech_mask(audio, utt.sample_rate))
    return audio, utt.sample_rate, active[0] / utt.sample_rate, (active[-1] + 1) / utt.sample_rate


def with_noise(audio: np.ndarray, color: str, snr_db: float, seed: int = 0) -> np.ndarray:
    power = float(np.mean(audio[np.abs(audio) > 0.01] ** 2))  # of the speech, not the silence
    noise = colored_noise(len(audio), color, np.random.default_rng(seed))
    return (audio + noise * np.sqrt(power / 10 ** (snr_db / 10))).astype(np.float32)


def frame_edges(active: np.ndarray, sr: int) -> tuple[float, float]:
    """First and last active frame, in frame units of 10 ms."""
    hop_s = vad.frame_samples(sr) / sr
    idx = np.flatnonzero(active)
    assert idx.size, "no speech found"
    return idx[0] * hop_s / vad.FRAME_S, (idx[-1] + 1) * hop_s / vad.FRAME_S


def assert_edges(active: np.ndarray, sr: int, on: float, off: float, tolerance: int) -> None:
    first, last = frame_edges(active, sr)
    assert abs(first - on / vad.FRAME_S) <= tolerance + 1e-9, (first, on / vad.FRAME_S)
    assert abs(last - off / vad.FRAME_S) <= tolerance + 1e-9, (last, off / vad.FRAME_S)


@pytest.mark.parametrize("method", vad.VAD_METHODS)
@pytest.mark.parametrize("sr", [16000, 22050, 24000, 44100, 48000])
def test_one_grid_for_every_detector_and_rate(speech, method: str, sr: int) -> None:
    audio, native, on, off = speech
    audio = resample(audio, native, sr)
    active = vad.detect_speech(audio, sr, method)
    assert active.dtype == bool and active.shape == (vad.n_frames(len(audio), sr),)
    assert_edges(active, sr, on, off, TOLERANCE[method] + 1)  # resampling smears an edge by a sample or two


def test_energy_vad_is_exact_on_digital_silence(speech) -> None:
    audio, sr, on, off = speech
    active = vad.energy_vad(audio, sr)
    hop = vad.frame_samples(sr)
    silent = np.array([not audio[k * hop : (k + 1) * hop].any() for k in range(len(active))])
    assert silent.sum() >= 2 * PAD_S / vad.FRAME_S - 2 and not active[silent].any()
    assert_edges(active, sr, on, off, TOLERANCE["energy"])
    assert np.array_equal(frame_activity(audio, sr), active)  # the old name, same detector
    assert not vad.energy_vad(np.zeros(sr, np.float32), sr).any()


@pytest.mark.parametrize("method", TRAINED)
def test_trained_detectors_on_clean_speech(speech, method: str) -> None:
    audio, sr, on, off = speech
    assert_edges(vad.detect_speech(audio, sr, method), sr, on, off, TOLERANCE[method])
    if method == "webrtc":  # its onsets are sharp
        assert abs(frame_edges(vad.webrtc_vad(audio, sr), sr)[0] - on / vad.FRAME_S) <= 1


@pytest.mark.parametrize("method", TRAINED)
@pytest.mark.parametrize("color", ["white", "pink"])
def test_trained_detectors_under_noise(speech, method: str, color: str) -> None:
    audio, sr, on, off = speech
    noisy = with_noise(audio, color, snr_db=20)
    assert_edges(vad.detect_speech(noisy, sr, method), sr, on, off, TOLERANCE[method])


def test_energy_vad_takes_noise_for_speech(speech) -> None:
    # why the trained detectors exist: at 20 dB SNR the noise floor clears a relative threshold
    audio, sr, on, _ = speech
    active = vad.energy_vad(with_noise(audio, "white", snr_db=20), sr)
    assert active[: int(on / vad.FRAME_S) - 5].mean() > 0.9


def test_one_direction_alone_would_trail(speech) -> None:
    import webrtcvad

    audio, sr, _, _ = speech
    pcm = np.round(resample(audio, sr, 16000) * 32767).astype("<i2")
    one = webrtcvad.Vad(3)
    forward = [one.is_speech(pcm[k * 160 : (k + 1) * 160].tobytes(), 16000) for k in range(len(pcm) // 160)]
    both_ways = frame_edges(vad.webrtc_vad(audio, sr), sr)[1]
    assert np.flatnonzero(forward)[-1] + 1 - both_ways >= 6  # the hangover the backward pass cuts


def test_speech_intervals_and_samples() -> None:
    active = np.array([0, 1, 1, 0, 0, 1, 0, 1, 1, 1], bool)
    assert np.allclose(vad.speech_intervals(active), [(0.01, 0.03), (0.05, 0.06), (0.07, 0.10)])
    assert np.allclose(vad.speech_intervals(active, bridge_s=0.015), [(0.01, 0.03), (0.05, 0.10)])
    per_sample = vad.frames_to_samples(active, 16000, 1550)
    assert len(per_sample) == 1550 and per_sample[160:320].all() and not per_sample[:160].any()


def test_moving_power_windows_and_edges() -> None:
    x = np.arange(1, 11, dtype=np.float32)
    zero = vad.moving_power(x, 4)  # window [i - 2, i + 2)
    assert zero[0] == pytest.approx((1 + 4) / 4) and zero[5] == pytest.approx((16 + 25 + 36 + 49) / 4)
    inside = vad.moving_power(x, 4, hop=3, edges="inside")
    assert inside == pytest.approx([(1 + 4) / 2, (4 + 9 + 16 + 25) / 4, (25 + 36 + 49 + 64) / 4, (64 + 81 + 100) / 3])
    assert len(vad.moving_power(x[:3], 110)) == 3
    assert vad.moving_power(x, 4, hop=1, edges="zero") == pytest.approx(
        vad.moving_power(x, 4, hop=1, edges="inside") * np.array([2, 3] + [4] * 7 + [3]) / 4
    )
