"""The one resample function (factory.audio.edit.resample): soxr HQ with the exact bytes of
librosa's soxr_hq path, which the runs made before it was replaced (recipes hash those bytes)."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from factory.audio.edit import resample
from factory.render.registry import get_backend
from factory.render.voices import VoiceBank


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rates", [(22050, 24000), (24000, 16000), (44100, 48000), (8000, 24000), (48000, 8000)])
def test_bytes_equal_librosas_soxr_hq(dtype, rates) -> None:
    rng = np.random.default_rng(7)
    for n in (0, 1, 7, 1234, 54321):
        x = (rng.standard_normal(n) * 0.3).astype(dtype)
        want = librosa.resample(x, orig_sr=rates[0], target_sr=rates[1], res_type="soxr_hq").astype(np.float32)
        got = resample(x, *rates)
        assert got.dtype == np.float32 and got.tobytes() == want.tobytes(), (n, len(got), len(want))


def test_a_real_render_resamples_to_the_same_bytes() -> None:
    voice = VoiceBank.load().get("espeak-us-f3")
    utt = get_backend("espeak").synthesize("I think we should meet at ten tomorrow.", voice)
    for target in (16000, 24000, 48000):
        want = librosa.resample(utt.audio, orig_sr=utt.sample_rate, target_sr=target, res_type="soxr_hq")
        assert resample(utt.audio, utt.sample_rate, target).tobytes() == want.astype(np.float32).tobytes()
    assert resample(utt.audio, utt.sample_rate, utt.sample_rate) is utt.audio


def test_refuses_what_it_cannot_resample() -> None:
    with pytest.raises(ValueError, match="mono float"):
        resample(np.zeros((10, 2), np.float32), 16000, 24000)
    with pytest.raises(ValueError, match="mono float"):
        resample(np.zeros(10, np.int16), 16000, 24000)
