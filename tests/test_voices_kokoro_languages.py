"""Kokoro's speakers in French and Hindi (espeak-ng IPA into Kokoro v1.0's phoneme vocabulary):
nothing espeak says is dropped on the way in; the French voices of the bank each get word times
the audio agrees with (Silero VAD, a detector independent of the durations the times come from)
and Whisper (in French) hears them within the default QA gate; a language the backend cannot
speak is refused by name. Hindi ships no Kokoro voice: on whole turns Whisper-base heard it no
better than espeak-ng's (benchmarks/results/languages.md, "hi kokoro"). The per-voice error rates,
against the espeak-ng voices on the same turns, are in benchmarks/results/languages_voices.md."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from factory.asr import error_rate, transcribe
from factory.audio.vad import FRAME_S, silero_vad
from factory.config import load_config
from factory.models import Voice
from factory.render.base import TTSError
from factory.render.kokoro_backend import ESPEAK_LANGUAGES, KokoroBackend, load_model, to_kokoro
from factory.render.phonemize import NOT_SOUNDS, phonemize
from factory.render.voices import VoiceBank

TEXTS = {
    "fr": "Bonjour, je voudrais réserver une table pour deux personnes ce soir.",
    "hi": "नमस्ते, क्या आप मुझे स्टेशन का रास्ता बता सकते हैं?",
}
# Sounds espeak-ng writes for these languages that English lacks: they must reach the model.
# ("-" is espeak's mark of a clitic joined to the next word, "mə- dˈiʁ": not a sound.)
NOT_SPOKEN = NOT_SOUNDS | {"-"}
NATIVE_SOUNDS = {"fr": {"ʁ", "\u0303"}, "hi": {"ʈ", "ʰ"}}


@pytest.mark.parametrize("language", ["fr", "hi"])
def test_espeak_sounds_reach_kokoro_and_the_bank_keeps_speakers_apart(language: str) -> None:
    """Every sound espeak-ng writes for the language's dialogue turns is a symbol of Kokoro's
    vocabulary after `to_kokoro` (so none is silently dropped), including the language's own
    (French's uvular r and nasal vowels, Hindi's retroflex and aspirated stops); the Kokoro voices
    of the language (French: kumo and tebukuro; Hindi: none) share their speakers' groups and
    splits with cpu.yaml and ja.yaml."""
    import json

    from factory.locations import dialogue_set_dir

    vocab = load_model().vocab
    lines = (dialogue_set_dir() / f"{language}-everyday.jsonl").read_text(encoding="utf-8").splitlines()
    turns = [t["text"] for line in lines[:3] for t in json.loads(line)["turns"]]
    seen: set[str] = set()
    for text in turns:
        for sentence in phonemize(text.split(), ESPEAK_LANGUAGES[language]):
            ipa = to_kokoro("".join(sentence), language)
            missing = {c for c in ipa if c not in vocab and c not in NOT_SPOKEN}
            assert not missing, (text, ipa, missing)
            seen |= set(unicodedata.normalize("NFD", ipa))
    assert NATIVE_SOUNDS[language] <= seen
    bank = VoiceBank.load()
    ours = [v for v in bank if v.language == language and v.backend == "kokoro"]
    assert sorted(v.speaker or "" for v in ours) == (["jf_tebukuro", "jm_kumo"] if language == "fr" else [])
    for v in ours:
        same = [u for u in bank if u.backend == "kokoro" and u.speaker == v.speaker and u.language in ("en", "ja")]
        assert same and all(u.split == v.split and (u.group or u.id) == v.group for u in same), v.id


@pytest.mark.parametrize("speaker", ["kumo", "tebukuro"])
def test_the_french_voices_are_heard_within_the_gate_with_word_times_on_the_audio(speaker: str) -> None:
    language = "fr"
    voice = VoiceBank.load().get(f"kokoro-fr-{speaker}")
    utt = KokoroBackend().synthesize(TEXTS[language], voice)
    assert [w.word for w in utt.words] == TEXTS[language].split()
    active = silero_vad(utt.audio, utt.sample_rate)

    def share(start: float, end: float) -> float:
        frames = active[int(start / FRAME_S) : max(int(end / FRAME_S), int(start / FRAME_S) + 1)]
        return float(np.mean(frames)) if len(frames) else 0.0

    for a, b in zip(utt.words, utt.words[1:], strict=False):
        assert a.start < a.end <= b.start + 1e-6
    assert np.mean([share(w.start, w.end) >= 0.6 for w in utt.words]) >= 0.8
    gate = load_config().tts.qa_threshold(language)
    assert gate is not None
    heard = transcribe(utt.audio, utt.sample_rate, language=language).text
    assert error_rate(TEXTS[language], heard, language) <= gate, heard


def test_a_language_kokoro_cannot_speak_is_refused_by_name() -> None:
    voice = Voice(id="k-de", backend="kokoro", speaker="jm_kumo", language="de")
    with pytest.raises(TTSError, match=r"asks for 'de'; kokoro speaks en, fr, hi, ja"):
        KokoroBackend().synthesize("Guten Tag, wie geht es Ihnen?", voice)
