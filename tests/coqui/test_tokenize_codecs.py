"""Mimi (kyutai's moshi package and transformers' MimiModel) and EnCodec (transformers) as audio
tokenizers, built as their real classes with random weights (no weights ship in any package).

Truths from outside the code under test: the frame count each model itself returns (our
n_frames rule must predict it); the model's own encode on the unpadded input (batching must
not change a code); the models' own published constants (Mimi 24 kHz, 12.5 Hz, 2048 codes;
EnCodec 24 kHz, 75 Hz, 1024 codes, 8 codebooks at 6 kbps).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factory.tokenize import AudioTokenizer, TokenizerUnavailable, get_audio_tokenizer

SR = 24000
LENGTHS = (1, 1920, 1921, 12000, 12000, 16000 + 5)


def _voice_like(n: int, seed: int, sr: int = SR) -> np.ndarray:
    """A varying harmonic signal, so a random codec's codes change over time."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = 120 + 60 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    x = sum(np.sin(k * phase) / k for k in range(1, 8)) * env
    return (0.2 * x + 0.01 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def mimi():
    return get_audio_tokenizer("mimi", random_init_seed=3)


@pytest.fixture(scope="module")
def encodec():
    return get_audio_tokenizer("encodec", random_init_seed=3)


def _check_frame_rule_and_batching(tok, native_frames) -> None:
    assert isinstance(tok, AudioTokenizer)
    audios = [_voice_like(n, n) for n in LENGTHS]
    one = [tok.encode(a, SR) for a in audios]
    for a, codes in zip(audios, one):
        t = tok.n_frames(len(a), SR)
        assert codes.shape == (tok.n_q, t) and codes.dtype == np.int64
        assert t == native_frames(a), "n_frames disagrees with the model's own frame count"
        assert codes.min() >= 0 and codes.max() < tok.cardinality
    assert len(np.unique(one[-1])) > 3, "random codebooks should give varied codes"
    batch = tok.encode_batch(audios, SR)
    for a, b in zip(one, batch):
        assert np.array_equal(a, b), "batched codes differ from one-by-one"
    # another input rate is resampled to the model's; a fixed seed gives the same model
    assert tok.encode(_voice_like(16000, 1, 16000), 16000).shape == (tok.n_q, 13 if tok.frame_rate == 12.5 else 75)


def test_mimi_through_moshi(mimi) -> None:
    assert (mimi.sample_rate, mimi.frame_rate, mimi.n_q, mimi.cardinality) == (24000, 12.5, 8, 2048)

    def native(a: np.ndarray) -> int:
        with torch.no_grad():
            return mimi.model.encode(torch.from_numpy(a)[None, None]).shape[-1]

    _check_frame_rule_and_batching(mimi, native)
    ident = mimi.identity()
    assert ident.weights_sha256 is None and ident.config["random_init_seed"] == 3 and "moshi" in ident.version


def test_mimi_is_deterministic_for_a_seed(mimi) -> None:
    again = get_audio_tokenizer("mimi", random_init_seed=3)
    audio = _voice_like(SR, 5)
    assert np.array_equal(again.encode(audio, SR), mimi.encode(audio, SR))


def test_mimi_through_transformers() -> None:
    tok = get_audio_tokenizer("mimi", backend="transformers", random_init_seed=3, n_q=8)
    assert (tok.sample_rate, tok.frame_rate, tok.cardinality) == (24000, 12.5, 2048)

    def native(a: np.ndarray) -> int:
        with torch.no_grad():
            return tok.model.encode(torch.from_numpy(a)[None, None], num_quantizers=8).audio_codes.shape[-1]

    _check_frame_rule_and_batching(tok, native)


def test_encodec(encodec) -> None:
    assert (encodec.sample_rate, encodec.frame_rate, encodec.n_q, encodec.cardinality) == (24000, 75.0, 8, 1024)

    def native(a: np.ndarray) -> int:
        with torch.no_grad():
            return encodec.model.encode(torch.from_numpy(a)[None, None], bandwidth=6.0).audio_codes.shape[-1]

    _check_frame_rule_and_batching(encodec, native)


def test_missing_weights_name_what_to_download(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(TokenizerUnavailable, match="kyutai/moshiko-pytorch-bf16.*tokenizer-e351c8d8-checkpoint125"):
        get_audio_tokenizer("mimi")
    with pytest.raises(TokenizerUnavailable, match="tokenizer-e351c8d8-checkpoint125.safetensors from the Hugging"):
        get_audio_tokenizer("mimi", weights=tmp_path)
    with pytest.raises(TokenizerUnavailable, match="kyutai/mimi"):
        get_audio_tokenizer("mimi", backend="transformers")
    with pytest.raises(TokenizerUnavailable, match="facebook/encodec_24khz"):
        get_audio_tokenizer("encodec")
    with pytest.raises(TokenizerUnavailable, match="no config.json"):
        get_audio_tokenizer("encodec", weights=tmp_path)
    with pytest.raises(ValueError, match="bandwidth"):
        get_audio_tokenizer("encodec", random_init_seed=0, bandwidth=5.0)


def test_mimi_loads_a_local_weights_file(mimi, tmp_path) -> None:
    """A saved state dict (here the random model's) loads through moshi's own loader, and the
    identity carries the file's hash."""
    from safetensors.torch import save_file

    path = tmp_path / "tokenizer-e351c8d8-checkpoint125.safetensors"
    save_file({k: v.contiguous() for k, v in mimi.model.state_dict().items()}, str(path))
    loaded = get_audio_tokenizer("mimi", weights=tmp_path)
    audio = _voice_like(SR, 9)
    assert np.array_equal(loaded.encode(audio, SR), mimi.encode(audio, SR))
    import hashlib

    assert loaded.identity().weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
