"""The coqui backend against randomly initialised models of Coqui's real classes, loaded
from folders laid out like a user's downloaded model (scripts/make_coqui_test_models.py).

Random weights give noise-like audio and arbitrary durations: these tests check the API
path, shapes, speaker selection, the timing contract and the errors, not speech quality.
Run in the Coqui environment (see tests/coqui/conftest.py).
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from factory.models import Utterance, Voice
from factory.render.base import BackendUnavailable, SynthesisRequest, TTSBackend, TTSError
from factory.render.coqui import XTTS_V2, CoquiBackend, xtts
from factory.render.registry import get_backend

ROOT = Path(__file__).resolve().parents[2]
SENTENCE = "Well, I think we should meet at 10 tomorrow — okay? Mm-hmm."
TEXTS = ["Hello there.", "Sure, that works for me.", "Uh, I don't know, maybe... let's see what happens next week."]


def _builder():
    spec = importlib.util.spec_from_file_location("make_coqui_test_models", ROOT / "scripts/make_coqui_test_models.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def vits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built in one place, then moved, like a model downloaded on one machine and copied to
    another: config.json keeps the old absolute speakers_file path."""
    build = tmp_path_factory.mktemp("build")
    t = time.perf_counter()
    _builder().build_vits(build / "vits-ms", n_speakers=4, small=True)
    print(f"\n[coqui] random multi-speaker VITS built in {time.perf_counter() - t:.1f} s")
    moved = tmp_path_factory.mktemp("models") / "vits-ms"
    shutil.move(str(build / "vits-ms"), moved)
    return moved


@pytest.fixture(scope="session")
def backend() -> CoquiBackend:
    return CoquiBackend(device="cpu")


def voice(model: Path | str, speaker: str | None = "p225", **kw) -> Voice:
    return Voice(id=f"coqui-{speaker or 'x'}", backend="coqui", model=str(model), speaker=speaker, **kw)


def check_contract(u: Utterance, text: str, sample_rate: int) -> None:
    assert u.audio.dtype == np.float32 and u.audio.ndim == 1
    assert u.sample_rate == sample_rate
    assert np.all(np.isfinite(u.audio))
    peak = float(np.abs(u.audio).max())
    assert 0.0 < peak <= 0.99 + 1e-6, peak
    assert float(np.mean(np.abs(u.audio) >= 0.999)) < 1e-4  # no clipped plateaus
    assert [w.word for w in u.words] == text.split()
    prev = 0.0
    for w in u.words:
        assert prev <= w.start <= w.end <= u.duration + 1e-9, (w, prev, u.duration)
        prev = w.end


def test_registry_gives_the_backend() -> None:
    b = get_backend("coqui")
    assert isinstance(b, CoquiBackend) and isinstance(b, TTSBackend) and b.name == "coqui"
    assert get_backend("coqui") is b
    assert b.device in ("cpu", "cuda")


def test_vits_contract(backend: CoquiBackend, vits_dir: Path) -> None:
    v = voice(vits_dir)
    t = time.perf_counter()
    u = backend.synthesize(SENTENCE, v)
    took = time.perf_counter() - t
    print(f"\n[coqui] VITS {u.duration:.2f} s of audio in {took:.2f} s (first call, incl. load)")
    check_contract(u, SENTENCE, 22050)
    assert u.voice_id == v.id and u.text == SENTENCE
    assert u.duration > 0.2
    # words have time (random durations, but every speakable token gets frames)
    assert sum(w.end > w.start for w in u.words) >= len(u.words) - 2
    assert backend.speakers(v) == ["p225", "p226", "p227", "p228"]


def test_vits_deterministic_and_speakers_differ(backend: CoquiBackend, vits_dir: Path) -> None:
    a1 = backend.synthesize(TEXTS[1], voice(vits_dir, "p225"))
    a2 = backend.synthesize(TEXTS[1], voice(vits_dir, "p225"))
    b = backend.synthesize(TEXTS[1], voice(vits_dir, "p226"))
    assert np.array_equal(a1.audio, a2.audio)
    assert a1.words == a2.words
    n = min(len(a1.audio), len(b.audio))
    assert len(a1.audio) != len(b.audio) or not np.allclose(a1.audio[:n], b.audio[:n])


def test_vits_rate(backend: CoquiBackend, vits_dir: Path) -> None:
    slow = backend.synthesize(TEXTS[2], voice(vits_dir), rate=0.5)
    fast = backend.synthesize(TEXTS[2], voice(vits_dir), rate=2.0)
    check_contract(slow, TEXTS[2], 22050)
    check_contract(fast, TEXTS[2], 22050)
    assert slow.duration > 1.5 * fast.duration


def test_vits_params(backend: CoquiBackend, vits_dir: Path) -> None:
    u = backend.synthesize(TEXTS[0], voice(vits_dir, params={"noise_scale": 0.3, "length_scale": 1.2}))
    check_contract(u, TEXTS[0], 22050)
    with pytest.raises(TTSError, match="unknown voice params"):
        backend.synthesize(TEXTS[0], voice(vits_dir, params={"pitch": 2.0}))


def test_vits_synthesize_many_batches(backend: CoquiBackend, vits_dir: Path) -> None:
    t = time.perf_counter()
    many = backend.synthesize_many([SynthesisRequest(t, voice(vits_dir, "p227")) for t in TEXTS], batch_size=2)
    took = time.perf_counter() - t
    audio_s = sum(u.duration for u in many)
    print(f"\n[coqui] VITS batch of {len(TEXTS)}: {audio_s:.2f} s audio in {took:.2f} s")
    assert [u.text for u in many] == TEXTS
    for u, text in zip(many, TEXTS, strict=True):
        check_contract(u, text, 22050)


def test_vits_errors(backend: CoquiBackend, vits_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TTSError, match="unknown speaker 'nobody'"):
        backend.synthesize(TEXTS[0], voice(vits_dir, "nobody"))
    with pytest.raises(TTSError, match="has 4 speakers"):
        backend.synthesize(TEXTS[0], voice(vits_dir, None))
    for empty in ("", "   ", "— ..."):
        with pytest.raises(TTSError):
            backend.synthesize(empty, voice(vits_dir))
    missing = tmp_path / "no-such-model"
    with pytest.raises(BackendUnavailable, match="does not exist") as info:
        backend.synthesize(TEXTS[0], voice(missing))
    assert str(missing) in str(info.value) and "tts --list_models" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendUnavailable, match="no config.json"):
        backend.synthesize(TEXTS[0], voice(tmp_path / "empty"))
    with pytest.raises(TTSError, match="need `model`"):
        backend.synthesize(TEXTS[0], voice(""))
    with pytest.raises(TTSError, match="not coqui"):
        backend.synthesize(TEXTS[0], Voice(id="x", backend="piper"))


def test_model_names_never_download_by_default(
    backend: CoquiBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTS_HOME", str(tmp_path))  # an empty Coqui cache
    monkeypatch.delenv("COQUI_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(BackendUnavailable, match="not downloaded") as info:
        backend.synthesize(TEXTS[0], voice("tts_models/en/vctk/vits"))
    assert "COQUI_ALLOW_DOWNLOAD=1" in str(info.value) and "tts --model_name" in str(info.value)
    with pytest.raises(BackendUnavailable, match="not downloaded") as info:
        backend.synthesize(TEXTS[0], voice(XTTS_V2, None, reference="ref.wav"))
    assert "XTTS-v2" in str(info.value)
    with pytest.raises(BackendUnavailable, match="unknown Coqui model name"):
        backend.synthesize(TEXTS[0], voice("tts_models/xx/nothing/vits"))


# ----------------------------------------------------------------------------- XTTS
@pytest.fixture(scope="session")
def xtts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("xtts") / "xtts"
    t = time.perf_counter()
    _builder().build_xtts(out)
    print(f"\n[coqui] random XTTS built in {time.perf_counter() - t:.1f} s")
    return out


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import soundfile as sf

    sr = 22050
    t = np.arange(int(4.0 * sr)) / sr
    clip = 0.3 * np.sin(2 * np.pi * 140 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    path = tmp_path_factory.mktemp("ref") / "speaker.wav"
    sf.write(path, clip.astype(np.float32), sr)
    return path


def test_xtts_loads_and_explains_word_times(backend: CoquiBackend, xtts_dir: Path, reference: Path) -> None:
    v = voice(xtts_dir, None, reference=str(reference))
    try:
        import faster_whisper  # noqa: F401

        import factory.render.align  # noqa: F401
    except ImportError:
        with pytest.raises(TTSError, match="factory.render.align"):
            backend.synthesize(TEXTS[0], v)
    else:  # the alignment step is available here: the full path works
        check_contract(backend.synthesize(TEXTS[0], v), TEXTS[0], 24000)
    assert backend.models.load(v).kind == "xtts"
    assert backend.models.load(v).sample_rate == 24000


def test_xtts_without_alignment_says_where_word_times_come_from(
    backend: CoquiBackend, xtts_dir: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_whisper(*args, **kwargs):  # what align_words raises in an env without faster-whisper
        raise ImportError("No module named 'faster_whisper'")

    monkeypatch.setattr(xtts, "align_words", no_whisper)
    with pytest.raises(TTSError, match=r"no word durations.*factory\.render\.align\.align_words"):
        backend.synthesize(TEXTS[0], voice(xtts_dir, None, reference=str(reference)))


def test_xtts_errors(backend: CoquiBackend, xtts_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TTSError, match="needs `reference`"):
        backend.synthesize(TEXTS[0], voice(xtts_dir, None))
    with pytest.raises(TTSError, match="does not exist"):
        backend.synthesize(TEXTS[0], voice(xtts_dir, None, reference=str(tmp_path / "none.wav")))
    with pytest.raises(TTSError, match="does not speak"):
        backend.synthesize(TEXTS[0], voice(xtts_dir, None, reference="x.wav", language="tlh"))
    with pytest.raises(TTSError, match="unknown voice params"):
        backend.synthesize(TEXTS[0], voice(xtts_dir, None, reference="x.wav", params={"noise_scale": 1.0}))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="Coqui's espeak phonemizer needs espeak-ng")
def test_vits_with_phonemes_like_vctk(backend: CoquiBackend, tmp_path_factory: pytest.TempPathFactory) -> None:
    """IPA input (espeak phonemizer), as tts_models/en/vctk/vits: the phonemizer merges and
    splits words ("was the" -> one phoneme word, "1995" -> three); the mapping still gives one
    span per token, in order."""
    folder = _builder().build_vits(tmp_path_factory.mktemp("ph") / "vits-ph", n_speakers=2, small=True, phonemes=True)
    text = "Well, I think 1995 was the year — okay? Mm-hmm."
    u = backend.synthesize(text, voice(folder, "p226"))
    check_contract(u, text, 22050)
    spoken = [w for w in u.words if w.word != "—"]
    assert all(w.end > w.start for w in spoken)


def test_xtts_v2_languages_are_coqui_s_own(vits_dir: Path) -> None:
    """The languages CoquiBackend declares for XTTS-v2 without its weights are coqui-tts's own
    XttsConfig list (the model's config.json carries the same); Japanese is left out (word times
    align whitespace tokens). A local VITS folder without a language says it cannot tell."""
    from TTS.tts.configs.xtts_config import XttsConfig

    from factory.render.coqui import XTTS_V2_LANGUAGES
    from factory.render.registry import voice_languages

    assert list(XTTS_V2_LANGUAGES) == XttsConfig().languages
    spoken = voice_languages(Voice(id="xtts-ana", backend="coqui", model=XTTS_V2, speaker="Ana Florence"))
    assert spoken == {code.split("-")[0] for code in XttsConfig().languages} - {"ja"}
    with pytest.raises(BackendUnavailable, match="names no language"):
        voice_languages(voice(vits_dir))
