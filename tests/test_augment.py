"""Augmentation chains, checked from the audio: SNRs measured back, the telephone band's
spectrum, the echo's delay by cross-correlation, clean stems untouched at their loudness, and
identical bytes for a seed (in this process and in a fresh one, room simulation included)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from scipy.signal import correlate

from factory.audio.mix import apply_gains, flac_bytes, loudness_gains
from factory.audio.vad import energy_vad, frame_samples
from factory.augment.babble import Babble
from factory.augment.base import AugmentContext, AugmentError
from factory.augment.chain import TRANSFORMS, Augmenter
from factory.config import ConfigError, load_config

SR = 16000


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Word-like bursts of band-limited noise with silences (a stand-in for speech)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * SR), np.float32)
    t = int(0.3 * SR)
    while t < len(out) - SR // 2:
        n = int(rng.uniform(0.15, 0.4) * SR)
        burst = np.convolve(rng.standard_normal(n), np.ones(4) / 4, "same") * 0.3
        out[t : t + n] = burst * np.hanning(n)
        t += n + int(rng.uniform(0.05, 0.5) * SR)
    return out


def stereo_clean(seconds: float = 12.0, seed: int = 0) -> np.ndarray:
    stems = np.stack([speechlike(seconds, seed), speechlike(seconds, seed + 100)], axis=1)
    return apply_gains(stems, loudness_gains(stems, SR, -23.0, -1.0))


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> AugmentContext:
    root = tmp_path_factory.mktemp("aug")
    noise = root / "musan" / "noise" / "free-sound"
    noise.mkdir(parents=True)
    rng = np.random.default_rng(9)
    for i in range(3):  # recordings at another rate, as a user's folder would have
        sf.write(noise / f"noise-{i:04d}.wav", (rng.standard_normal(44100 * 3) * 0.1).astype(np.float32), 44100)
    return AugmentContext(sample_rate=SR, cache_dir=root / "cache", noise_folder=root / "musan")


def build(name: str, context: AugmentContext, **options):
    if name == "babble":  # voices from other samples' clean stems (the TTS cache is another source)
        return Babble(options, context, pool=[speechlike(3.0, 50 + i) for i in range(8)])
    return TRANSFORMS[name](options, context)


ALL = sorted(TRANSFORMS)


@pytest.mark.parametrize("name", ALL)
def test_each_transform_gives_identical_bytes_for_a_seed(name, context):
    t = build(name, context)
    x = stereo_clean(6.0) if t.stereo_only else stereo_clean(6.0)[:, :1].copy()
    a, pa = t(x, SR, np.random.default_rng(5))
    b, pb = t(x, SR, np.random.default_rng(5))
    assert a.dtype == np.float32 and a.shape == x.shape
    assert a.tobytes() == b.tobytes() and pa == pb, name
    assert not np.array_equal(a, x), name  # it did something
    c, pc = t(x, SR, np.random.default_rng(6))
    if name != "telephone":  # the telephone band draws nothing
        assert pc != pa or c.tobytes() != a.tobytes(), name


def _measured_snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Active speech power of the clean channel (its VAD frames) over the power of what was added."""
    mask = np.repeat(energy_vad(clean, SR), frame_samples(SR))[: len(clean)]
    speech = np.mean(clean.astype(np.float64)[mask] ** 2)
    noise = np.mean((noisy.astype(np.float64) - clean) ** 2)
    return float(10 * np.log10(speech / noise))


@pytest.mark.parametrize("name", ["colored_noise", "hum", "babble", "recorded_noise"])
def test_snr_measured_back_within_1_db(name, context):
    t = build(name, context)
    for seed in range(4):
        x = stereo_clean(8.0, seed)[:, :1].copy()
        y, params = t(x, SR, np.random.default_rng(seed))
        assert abs(_measured_snr(x[:, 0], y[:, 0]) - params["snr_db"]) <= 1.0, (name, params)


def test_telephone_band_has_no_energy_above_4_khz(context):
    x = stereo_clean(6.0)
    y, _ = build("telephone", context)(x, SR, np.random.default_rng(0))
    for ch in range(2):
        spectrum = np.abs(np.fft.rfft(y[:, ch].astype(np.float64))) ** 2
        f = np.fft.rfftfreq(len(y), 1 / SR)
        above, inside = spectrum[f > 4000].sum(), spectrum[(f > 300) & (f < 3400)].sum()
        assert above / inside < 1e-6, above / inside  # below -60 dB
        before = np.abs(np.fft.rfft(x[:, ch].astype(np.float64))) ** 2
        assert before[f > 4000].sum() / before[(f > 300) & (f < 3400)].sum() > 0.01  # there was some to remove


def test_echo_delay_found_by_cross_correlation(context):
    x = stereo_clean(10.0, 3)
    y, params = build("echo", context)(x, SR, np.random.default_rng(4))
    leak = y[:, 0].astype(np.float64) - x[:, 0]
    assert np.array_equal(y[:, 1], x[:, 1])  # the agent's own channel is untouched
    xc = correlate(y[:, 0].astype(np.float64), x[:, 1].astype(np.float64), mode="full", method="fft")
    lag = int(np.argmax(xc)) - (len(x) - 1)
    assert lag == params["delay_samples"], (lag, params)
    assert np.sqrt(np.mean(leak**2)) / np.sqrt(np.mean(x[:, 1].astype(np.float64) ** 2)) == pytest.approx(
        params["scale"], rel=0.05
    )


CHAINS = [
    "augment.chains=["
    "{name: full, probability: 1.0, steps: ["
    "{transform: room, apply_to: user, options: {bank_size: 4}},"
    "{transform: colored_noise, apply_to: each},"
    "{transform: hum, apply_to: agent, probability: 0.5},"
    "{transform: echo, apply_to: mix},"
    "{transform: gain, apply_to: user},"
    "{transform: codec, apply_to: mix},"
    "{transform: telephone, apply_to: mix, probability: 0.5}]}]",
]


def test_clean_channels_stay_at_their_loudness_beside_the_augmented(context):
    from factory.augment.chain import augmenter

    cfg = load_config(None, CHAINS)
    clean = stereo_clean(10.0)
    before = clean.copy()
    out, records = augmenter(cfg.augment, context)(clean, SR, np.random.default_rng(1), -1.0)
    assert np.array_equal(clean, before)  # never touched
    meter = pyloudnorm.Meter(SR)
    for ch in range(2):
        assert abs(meter.integrated_loudness(clean[:, ch].astype(np.float64)) + 23.0) <= 0.5
    assert np.max(np.abs(out)) <= 10 ** (-1 / 20) + 1e-6  # clipping guard
    names = [r.transform for r in records]
    assert names[:3] == ["room", "colored_noise", "colored_noise"] and "echo" in names and "codec" in names
    assert all(r.chain == "full" for r in records)


def test_same_seed_same_bytes_in_a_fresh_process(context, tmp_path):
    """Room simulation (a fresh bank in a fresh cache), codec and noise: identical bytes."""
    script = textwrap.dedent(
        f"""
        import hashlib, sys
        import numpy as np
        sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
        from tests.test_augment import CHAINS, stereo_clean, SR
        from factory.augment.base import AugmentContext
        from factory.augment.chain import Augmenter
        from factory.audio.mix import flac_bytes
        from factory.config import load_config
        from pathlib import Path
        ctx = AugmentContext(sample_rate=SR, cache_dir=Path(sys.argv[1]))
        aug = Augmenter(load_config(None, CHAINS).augment, ctx)
        for seed in range(3):
            out, rec = aug(stereo_clean(8.0), SR, np.random.default_rng(seed), -1.0)
            print(hashlib.sha256(flac_bytes(out, SR)).hexdigest(), [r.transform for r in rec])
        """
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / f"cache{k}")], capture_output=True, text=True, check=True
        ).stdout
        for k in range(2)
    ]
    here = Augmenter(load_config(None, CHAINS).augment, AugmentContext(sample_rate=SR, cache_dir=tmp_path / "c3"))
    mine = ""
    for seed in range(3):
        out, rec = here(stereo_clean(8.0), SR, np.random.default_rng(seed), -1.0)
        mine += f"{hashlib.sha256(flac_bytes(out, SR)).hexdigest()} {[r.transform for r in rec]}\n"
    assert runs[0] == runs[1] == mine, (runs, mine)
    assert (tmp_path / "cache0").exists() and any((tmp_path / "cache0").glob("rir-*/000.wav"))


def test_bad_chain_configs_are_named(context):
    with pytest.raises(ConfigError, match="sum to 1.5"):
        load_config(
            None,
            [
                "augment.chains=[{name: a, probability: 0.8, steps: [{transform: hum}]},"
                "{name: b, probability: 0.7, steps: [{transform: gain}]}]"
            ],
        )
    with pytest.raises(ConfigError, match="apply_to must be mix"):
        load_config(None, ["augment.chains=[{name: a, probability: 1, steps: [{transform: echo}]}]"])
    bad = load_config(
        None, ["augment.chains=[{name: a, probability: 1, steps: [{transform: hum, options: {snr: 3}}]}]"]
    )
    with pytest.raises(AugmentError, match="(?s)'hum'.*snr"):
        Augmenter(bad.augment, context)
    missing = load_config(None, ["augment.chains=[{name: a, probability: 1, steps: [{transform: recorded_noise}]}]"])
    with pytest.raises(AugmentError, match="noise folder"):
        Augmenter(missing.augment, AugmentContext(sample_rate=SR))


# --------------------------------------------------------------------------- the faster mix path
def test_fast_loudness_and_quantiser_agree_with_the_reference():
    """The vectorised BS.1770 meter against pyloudnorm's, and the one-multiply quantiser against
    the two-step formula (gain, then 2^15): the stored bytes must not depend on the speed-up."""
    from factory.audio.mix import PCM16_SCALE, apply_gains, integrated_loudness, to_pcm16

    rng = np.random.default_rng(12)
    for sr in (16000, 22050, 24000, 48000):
        x = stereo_clean(20.0, int(rng.integers(1000)))[:, 0] * float(rng.uniform(0.1, 3.0))
        ref = pyloudnorm.Meter(sr).integrated_loudness(x.astype(np.float64))
        assert abs(integrated_loudness(x, sr) - ref) < 1e-3, sr
    x = (rng.standard_normal((50_000, 2)) * 0.7).astype(np.float32)
    x[:4, 0] = np.array([0.5, 1.5, -2.5, 32767.5], np.float32) / 32768
    gains = (0.731, 2.9)
    ref = np.clip(np.round(x.astype(np.float64) * np.asarray(gains)[None, :] * PCM16_SCALE), -32768, 32767)
    assert np.array_equal(apply_gains(x, gains), (ref / PCM16_SCALE).astype(np.float32))
    assert np.array_equal(to_pcm16(x), np.clip(np.round(x.astype(np.float64) * PCM16_SCALE), -32768, 32767))


def test_flac_decodes_bit_exactly_to_the_quantised_stems():
    """The shard's FLAC at the chosen level is lossless on the 16-bit grid: ffmpeg (another
    decoder than the libsndfile that wrote it) gives back `to_pcm16` of the stems sample for
    sample, full-scale clipping included, and soundfile's float read gives `apply_gains`'s
    output exactly (pcm / 2^15). Encoding is deterministic."""
    from factory.audio.mix import FLAC_LEVEL, read_audio, to_pcm16

    clean = stereo_clean(6.0, 3)
    clean[:3, 1] = [1.0, -1.0, 0.99999]  # the clip points of the quantiser
    data = flac_bytes(clean, SR)
    assert data == flac_bytes(clean.copy(), SR)
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1"],
        input=data,
        capture_output=True,
        check=True,
    ).stdout
    pcm = np.frombuffer(decoded, "<i2").reshape(-1, 2)
    assert np.array_equal(pcm, np.clip(np.round(clean.astype(np.float64) * 32768), -32768, 32767))
    assert pcm[0, 1] == 32767 and pcm[1, 1] == -32768
    back, sr = read_audio(data)
    assert sr == SR and back.dtype == np.float32
    assert np.array_equal(back, pcm / np.float32(32768)) and np.array_equal(back[3:], clean[3:])
    buf = io.BytesIO()
    sf.write(buf, to_pcm16(clean), SR, format="FLAC", subtype="PCM_16", compression_level=FLAC_LEVEL / 8)
    assert buf.getvalue() == data  # the level the README and benchmarks/results/mix.md state


def test_loudness_gains_reject_non_finite_samples():
    """The peak pass is also the finiteness check: a NaN or an inf anywhere on a channel is a
    MixError naming that channel, never a gain computed from garbage."""
    from factory.audio.mix import MixError

    for ch, name in ((0, "user"), (1, "agent")):
        for bad in (np.nan, np.inf, -np.inf):
            stems = stereo_clean(2.0, 5)
            stems[len(stems) // 2, ch] = bad
            with pytest.raises(MixError, match=f"non-finite samples on channel {name}"):
                loudness_gains(stems, SR, -23.0, -1.0)
