"""What each TTS backend says it can speak (`registry.voice_languages`: espeak's voices list,
Kokoro's languages, a Piper model's config, a Coqui model's languages), and a voice declared in a
language its backend cannot speak refused at config time (`doctor.language_gaps`), not at render
time. The GPU bank's XTTS voices in hi/fr/de/es validate without the weights."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from factory.cli import app
from factory.config import ConfigError, load_config
from factory.doctor import languages as language_checks
from factory.locations import voice_bank_dir
from factory.models import Voice
from factory.render.base import BackendUnavailable, TTSError
from factory.render.coqui import XTTS_V2
from factory.render.kokoro_backend import LANGUAGES as KOKORO
from factory.render.registry import cannot_speak, voice_languages
from factory.render.voices import VoiceBank, group_of
from factory.runtime import Runtime

GPU_BANK = voice_bank_dir() / "gpu" / "coqui.yaml"


def voice(backend: str, language: str = "en", **kw: str) -> Voice:
    return Voice(id=f"t-{backend}", backend=backend, language=language, **kw)  # type: ignore[arg-type]


def test_espeak_answers_from_its_voices_list() -> None:
    """The language of the voice file the speaker selects, variant or not, as espeak lists it."""
    assert voice_languages(voice("espeak", speaker="hi+m2")) == {"hi"}
    assert voice_languages(voice("espeak", speaker="en+m3")) == {"en"}  # espeak's "en" is British English
    assert voice_languages(voice("espeak", speaker="fr+f3")) == {"fr"}
    assert voice_languages(voice("espeak")) == {"en"}  # the default, en-us
    with pytest.raises(TTSError, match="unknown voice 'zz\\+m3'"):
        voice_languages(voice("espeak", speaker="zz+m3"))
    with pytest.raises(BackendUnavailable, match="cannot load"):
        voice_languages(voice("espeak", speaker="de"), {"library": "libespeak-missing.so.9"})


def test_kokoro_speaks_its_languages_with_any_of_its_styles() -> None:
    assert voice_languages(voice("kokoro", speaker="jm_kumo")) == KOKORO == {"ja", "en", "fr", "hi"}
    with pytest.raises(TTSError, match="unknown style"):
        voice_languages(voice("kokoro", speaker="af_heart"))


def test_piper_answers_from_its_model_config(tmp_path: Path) -> None:
    assert voice_languages(voice("piper")) == {"en"}  # the packaged en_US-joe-medium
    model = tmp_path / "de_DE-thorsten-medium.onnx"
    (tmp_path / f"{model.name}.json").write_text(
        json.dumps({"espeak": {"voice": "de"}, "language": {"code": "de_DE"}}), encoding="utf-8"
    )
    assert voice_languages(voice("piper", "de", model=str(model))) == {"de"}
    with pytest.raises(BackendUnavailable, match="cannot read voice config"):
        voice_languages(voice("piper", model=str(tmp_path / "missing.onnx")))


def test_coqui_answers_from_the_model_without_torch(tmp_path: Path) -> None:
    """Runs in the torch-free main venv: XTTS-v2 by name, a VITS model by its name's language, a
    local folder by its config.json. Japanese is left out (word times align whitespace tokens)."""
    xtts = voice_languages(voice("coqui", model=XTTS_V2, speaker="Ana Florence"))
    assert {"en", "es", "fr", "de", "hi"} <= xtts and "ja" not in xtts and len(xtts) == 16
    assert voice_languages(voice("coqui", model="tts_models/en/vctk/vits", speaker="p225")) == {"en"}
    folder = tmp_path / "xtts"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": "xtts", "languages": ["en", "hi"]}), encoding="utf-8")
    assert voice_languages(voice("coqui", model=str(folder))) == {"en", "hi"}
    (folder / "config.json").write_text(json.dumps({"model": "vits", "phoneme_language": "fr-fr"}), encoding="utf-8")
    assert voice_languages(voice("coqui", model=str(folder))) == {"fr"}
    with pytest.raises(BackendUnavailable, match="is not here"):
        voice_languages(voice("coqui", model="/models/not-downloaded"))


def test_cannot_speak_says_what_the_backend_speaks() -> None:
    assert cannot_speak(voice("kokoro", "fr", speaker="jm_kumo"), "fr") is None
    assert cannot_speak(voice("kokoro", "de", speaker="jm_kumo"), "de") == (
        "voice t-kokoro is declared de, but its backend (kokoro) speaks en, fr, hi, ja with it, not de"
    )
    assert "speaks en with it, not de" in str(cannot_speak(voice("espeak", "de", speaker="en+m3"), "de"))
    assert cannot_speak(voice("coqui", "ja", model=XTTS_V2, speaker="Ana Florence"), "ja") is not None
    assert cannot_speak(voice("coqui", "hi", model="/models/not-downloaded"), "hi") is None  # cannot tell here


def _bank_with(tmp_path: Path, *extra: dict) -> Path:
    """The packaged bank plus `extra` voices, as a user's folder."""
    for f in voice_bank_dir().glob("*.yaml"):
        (tmp_path / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(list(extra)), encoding="utf-8")
    return tmp_path


def test_a_voice_declared_in_a_language_its_backend_cannot_speak_is_a_config_error(tmp_path: Path) -> None:
    """A Kokoro voice declared German: refused by the config check (exit 2 in the CLI), for the
    split's voices and for a fixed voice, and failed in doctor's language check, before any LLM
    call or render; the same voice declared French passes."""
    bank = _bank_with(
        tmp_path,
        {"id": "kokoro-de-alpha", "backend": "kokoro", "speaker": "jf_alpha", "language": "de", "split": "train"},
    )
    base = [f"tts.voice_bank={bank}", "dialogue.language=de", "llm.backend=http"]
    problem = "voice kokoro-de-alpha is declared de, but its backend (kokoro) speaks en, fr, hi, ja with it, not de"
    rt = Runtime(load_config(overrides=base))
    with pytest.raises(ConfigError) as err:
        rt.check_languages()
    assert f"language de: {problem}" in str(err.value)
    check = next(c for c in language_checks(rt) if c.name == "de")
    assert check.required and problem in check.detail and check.status != "ok"
    fixed = Runtime(load_config(overrides=[*base, "tts.user_voice=kokoro-de-alpha", "tts.agent_voice=espeak-de-m1"]))
    with pytest.raises(ConfigError, match=re.escape(f"tts.user_voice: {problem}")):
        fixed.check_languages()
    Runtime(
        load_config(overrides=[f"tts.voice_bank={bank}", "dialogue.language=fr", "llm.backend=http"])
    ).check_languages()
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(app, ["generate", "--out", str(out), *(a for o in base for a in ("--set", o))])
    assert result.exit_code == 2, result.output
    assert problem in " ".join(result.output.split()) and not any(out.iterdir())  # refused before anything ran


def test_every_packaged_voice_can_speak_its_language() -> None:
    for v in VoiceBank.load():
        assert cannot_speak(v, v.language) is None, v.id


def test_the_gpu_bank_s_xtts_voices_validate_for_hindi_french_german_and_spanish() -> None:
    """voices/gpu/coqui.yaml loads (speaker-disjoint), every voice's model speaks its language,
    and each new language has a female and a male speaker in train, dev and test, none reused
    across languages. Rendering them needs the XTTS-v2 weights from the hub (not here)."""
    bank = VoiceBank.load(GPU_BANK)
    for v in bank:
        assert cannot_speak(v, v.language) is None, v.id
    for language in ("hi", "fr", "de", "es"):
        for split in ("train", "dev", "test"):
            voices = bank.by_split(split, language)
            assert len(bank.groups(split, language)) == 2 and {v.gender for v in voices} == {"female", "male"}
            assert all(v.model == XTTS_V2 and v.speaker and not v.reference for v in voices)
    speakers = Counter(v.speaker for v in bank if v.model == XTTS_V2)
    assert max(speakers.values()) == 1  # one language, one split per built-in speaker
    assert len({group_of(v) for v in bank}) == len(bank)
    assert not bank.by_split("train", "ja")
