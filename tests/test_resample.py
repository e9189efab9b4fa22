"""The one resample function (factory.audio.edit.resample): soxr HQ with the exact bytes of
librosa's soxr_hq path, which the runs made before it was replaced (recipes hash those bytes), and
with `length="soxr"` the exact bytes of the raw soxr calls the exporters, ASR, VAD, tokenizers
and the pitch shift made before they were routed through it."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soxr

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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rates", [(22050, 24000), (16000, 24000), (44100, 16000), (24000, 22050), (25680, 24000)])
def test_soxr_length_gives_the_raw_soxr_bytes(dtype, rates) -> None:
    """What `soxr.resample(x, a, b).astype(np.float32)` gave the callers routed here; the
    samples both lengths keep are equal, and "ceil" is never shorter."""
    rng = np.random.default_rng(3)
    for n in (1, 5, 13, 4099, 48037):
        x = (rng.standard_normal(n) * 0.3).astype(dtype)
        want = soxr.resample(x, *rates, quality="HQ").astype(np.float32)
        got = resample(x, *rates, length="soxr")
        assert got.dtype == np.float32 and got.tobytes() == want.tobytes(), (n, len(got), len(want))
        ceil = resample(x, *rates)
        assert len(ceil) == int(np.ceil(n * rates[1] / rates[0])) >= len(got)
        assert ceil[: len(got)].tobytes() == got[: len(ceil)].tobytes()


@pytest.mark.parametrize("length", ["ceil", "soxr"])
def test_channels_are_resampled_each_on_its_own(length) -> None:
    rng = np.random.default_rng(5)
    stems = (rng.standard_normal((16001, 2)) * 0.3).astype(np.float32)
    both = resample(stems, 16000, 24000, length=length)
    assert both.shape[1] == 2 and both.dtype == np.float32
    for c in range(2):
        one = resample(np.ascontiguousarray(stems[:, c]), 16000, 24000, length=length)
        assert np.ascontiguousarray(both[:, c]).tobytes() == one.tobytes()
    raw = soxr.resample(stems, 16000, 24000).astype(np.float32)  # the moshi export's call
    assert resample(stems, 16000, 24000, length="soxr").tobytes() == raw.tobytes()


def test_refuses_what_it_cannot_resample() -> None:
    with pytest.raises(ValueError, match=r"float audio \[n\] or \[n, channels\]"):
        resample(np.zeros((10, 2, 2), np.float32), 16000, 24000)
    with pytest.raises(ValueError, match="float audio"):
        resample(np.zeros(10, np.int16), 16000, 24000)
    with pytest.raises(ValueError, match="length must be 'ceil' or 'soxr'"):
        resample(np.zeros(10, np.float32), 16000, 24000, length="round")  # pyright: ignore[reportArgumentType]
