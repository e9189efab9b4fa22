"""Languages: `dialogue.language` from the config to the scenario, the planner's lexicon, word
segmentation without spaces, CER scoring, and the config errors naming what a language lacks.

The expected segmentations, scores and lexicon entries below are written out by hand (what a
reader of Japanese and the pre-lexicon config defaults say), not computed by the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from factory.asr import cer, error_rate, is_exempt, normalize_chars
from factory.config import ConfigError, RunConfig, load_config
from factory.languages import join, words
from factory.models import Mode
from factory.runtime import Runtime
from factory.script.lexicon import LexiconError, behaviour_for, load_lexicon
from factory.script.planner import insert_hesitations, plan_listener_marks
from factory.script.scenario import ScenarioBankError, draw_language, draw_scenario, load_bank
from factory.script.text_checks import clean_turn
from factory.seeding import rng_for

JA = "えーと、駅までまっすぐ行って、2つ目の角を右です。"


def test_japanese_words_are_accent_phrases_with_their_punctuation() -> None:
    assert words(JA, "ja") == ["えーと、", "駅まで", "まっすぐ", "行って、", "2つ目の", "角を", "右です。"]
    assert join(words(JA, "ja"), "ja") == JA
    assert words("「本当？」って聞いたら、はい。", "ja-JP") == ["「本当？」", "って", "聞いたら、", "はい。"]


def test_spaced_languages_split_on_whitespace_as_before() -> None:
    text = "Well,  I think   so."
    assert words(text, "en") == text.split() == words(text, "es")
    assert join(words(text, "en"), "en") == "Well, I think so."


def test_cer_scores_characters_after_normalisation() -> None:
    # Katakana readings: a full-width digit, the filler and punctuation go; kanji or kana is no error.
    assert normalize_chars("えーと、２つ目の角！") == "フタツメノカド"
    assert cer("駅までまっすぐ行きます。", "Aと駅まで真っ直ぐ行きます") == 0.0  # Whisper writes えーと as "Aと"
    assert cer("駅まで行きます", "駅から行きます") == pytest.approx(2 / 8)  # エキマデイキマス: マデ -> カラ
    assert error_rate("駅まで行きます", "駅から行きます", "ja") == pytest.approx(2 / 8)
    assert error_rate("go to the station", "go to a station", "en") == pytest.approx(1 / 4)  # WER where spaced
    assert is_exempt("うん、そうですね", "ja") and not is_exempt(JA, "ja")


def test_english_lexicon_is_the_old_config_defaults_in_order() -> None:
    behaviour = behaviour_for(RunConfig().behaviour, "en")
    assert behaviour.filler_tokens == ["um,", "uh,", "um", "uh"]
    assert behaviour.backchannel_tokens == ["mm-hmm", "yeah", "uh-huh", "right", "okay"]
    assert behaviour.laugh_tokens == ["haha", "ha ha", "hehe"]
    assert behaviour.failed_interruption_tokens == ["But I-", "Wait, can I-", "Sorry, I-", "Well-", "Oh, but-"]
    assert behaviour.backchannels_per_minute == 6.0
    prompts = load_lexicon("en").voice_prompts  # the sentences prompts.py held, in their order
    assert len(prompts) == 6 and prompts[0] == "Hello there, it is good to hear from you, and I am ready to help."
    assert prompts[5] == "Nice to talk with you again, let us see what we can sort out now."


def test_japanese_lexicon_has_aizuchi_at_a_higher_cited_rate() -> None:
    ja, en = load_lexicon("ja"), load_lexicon("en-GB")
    assert {"えーと、", "あの、", "まあ、"} <= set(ja.fillers)
    assert {"うん", "はい", "そうですね", "なるほど", "へえ"} <= set(ja.backchannels)
    assert ja.backchannels_per_minute > 2 * en.backchannels_per_minute
    assert "Maynard" in ja.backchannels_source
    # A config value still overrides the lexicon.
    cfg = load_config(overrides=["behaviour.backchannel_tokens=[はいはい]"])
    assert behaviour_for(cfg.behaviour, "ja").backchannel_tokens == ["はいはい"]
    with pytest.raises(LexiconError, match="no behaviour lexicon for language 'xx'.*packaged: de, en, es, fr, hi, ja"):
        load_lexicon("xx")


def test_planner_writes_japanese_marks_at_japanese_word_positions() -> None:
    behaviour = behaviour_for(RunConfig().behaviour, "ja").model_copy(update={"fillers_per_100_words": 30.0})
    text, marks = insert_hesitations(JA * 3, 0, np.random.default_rng(3), behaviour, 0.45, True, "ja")
    assert " " not in text  # written without spaces, as Japanese is
    written = words(text, "ja")
    fillers = [m for m in marks if m.type == "filler"]
    assert fillers and all(written[m.word_index] == m.token for m in fillers)
    assert all(m.token in load_lexicon("ja").fillers for m in fillers)
    from factory.models import Channel, ScriptTurn

    turns = [ScriptTurn(speaker=Channel.user, text=text), ScriptTurn(speaker=Channel.agent, text=JA * 4)]
    reactions = plan_listener_marks(turns, [], np.random.default_rng(1), behaviour, Mode.peer, "ja")
    assert {m.token for m in reactions if m.type == "backchannel"} <= set(load_lexicon("ja").backchannels)
    assert all(m.word_index < len(words(turns[m.turn].text, "ja")) for m in reactions)


def test_scenario_draw_carries_the_language_and_its_bank() -> None:
    ja = draw_scenario("x", rng_for(1, "x", "scenario"), {Mode.peer: 1.0}, (6, 8), load_bank(language="ja"), "ja")
    assert ja.language == "ja" and ja.topic in load_bank(language="ja").topics
    en = draw_scenario("x", rng_for(1, "x", "scenario"), {Mode.peer: 1.0}, (6, 8))
    assert en.language == "en" and en.topic in load_bank().topics
    with pytest.raises(ScenarioBankError, match="no scenario bank for language 'it'"):
        load_bank(language="it")
    # One language draws nothing from its generator; a mix draws by weight.
    rng = np.random.default_rng(0)
    assert draw_language(rng, {"ja": 1.0}) == "ja" and rng.random() == np.random.default_rng(0).random()
    drawn = [draw_language(np.random.default_rng(i), {"en": 0.75, "ja": 0.25}) for i in range(400)]
    assert 0.15 < drawn.count("ja") / 400 < 0.35


def test_language_config_is_validated_and_weighted() -> None:
    assert load_config(overrides=["dialogue.language={en: 3, ja: 1}"]).dialogue.language_weights == {
        "en": 3.0,
        "ja": 1.0,
    }
    with pytest.raises(ConfigError, match="not a BCP-47 language tag"):
        load_config(overrides=["dialogue.language=Japanese"])
    assert load_config().tts.qa_threshold("ja-JP") == 0.4 and load_config().tts.qa_threshold("en") == 0.8


def test_what_a_language_lacks_is_a_config_error_naming_it() -> None:
    rt = Runtime(load_config(overrides=["dialogue.language=it"]))
    with pytest.raises(ConfigError) as err:
        rt.check_languages()
    message = str(err.value)
    assert "language it: 0 speaker(s) in split 'train'" in message
    assert "no behaviour lexicon for language 'it'" in message and "no scenario bank for language 'it'" in message
    fixed = Runtime(
        load_config(overrides=["dialogue.language=ja", "tts.user_voice=piper-joe", "tts.agent_voice=espeak-gb-m3"])
    )
    with pytest.raises(ConfigError, match="tts.user_voice piper-joe speaks en, not ja"):
        fixed.check_languages()
    Runtime(load_config()).check_languages()  # English has everything


def test_japanese_turns_are_cleaned_and_checked_by_their_own_words() -> None:
    from factory.script.text_checks import TurnRejected, check_turn_unspaced, clean_turn_unspaced

    assert clean_turn_unspaced("ユーザー：「えーと、 駅まで 行きます」\n二行目", "ja") == "えーと、駅まで行きます。"
    assert clean_turn_unspaced(JA * 2, "ja", min_words=3, max_words=9) == JA  # cut at the sentence end
    check_turn_unspaced(JA, "ja", min_words=5)
    for text, reason in (("Well, I think so.", "wrong_language"), ("はい。", "too_short")):
        with pytest.raises(TurnRejected) as err:
            check_turn_unspaced(text, "ja", min_words=3)
        assert err.value.reason == reason


def test_a_japanese_script_counts_its_marks_in_japanese_words() -> None:
    from factory.models import Backchannel, Channel, Script, ScriptTurn

    turns = [ScriptTurn(speaker=Channel.user, text=JA), ScriptTurn(speaker=Channel.agent, text="はい。")]
    script = Script(scenario_id="x", turns=turns, marks=[Backchannel(turn=0, word_index=5, token="うん")])
    assert script.marks[0].word_index == 5  # word 5 of 7 ("角を"), though the turn has no spaces


def test_japanese_aizuchi_are_planned_at_the_lexicon_rate_per_minute_of_japanese_speech() -> None:
    """The planner turns the lexicon's rate into counts with the language's own speaking rate
    (accent phrases a second) and places aizuchi between accent phrases: over the packaged Japanese
    dialogues, the planned rate per minute of speech is near the lexicon's. At English's 3.5 words a
    second (and English's lead, tail and spacing in words) it was a quarter of it."""
    from factory.locations import dialogue_set_dir
    from factory.models import Script, ScriptTurn
    from factory.script.calibrate import calibrate_marks
    from factory.script.planner import LISTENER_LEAD_S, LISTENER_SPACING_S, LISTENER_TAIL_S, speech_minutes, words_for
    from factory.script.source import read_dialogue_set

    lex = load_lexicon("ja")
    behaviour = behaviour_for(RunConfig().behaviour, "ja")
    count, minutes = 0, 0.0
    for k, d in enumerate(read_dialogue_set(dialogue_set_dir() / "ja-everyday.jsonl")):
        turns = [ScriptTurn(speaker=t.role, text=t.text) for t in d.turns]
        script = calibrate_marks(
            Script(scenario_id=d.id, turns=turns), np.random.default_rng(k), behaviour, 0.45, mode=d.mode, language="ja"
        )
        count += sum(m.type == "backchannel" for m in script.marks)
        minutes += speech_minutes(turns, "ja")
    assert 0.75 * lex.backchannels_per_minute <= count / minutes <= 1.1 * lex.backchannels_per_minute
    # English's positions in words are what they were (2 words in, 3 from the end, 6 apart).
    assert [words_for(s, "en") for s in (LISTENER_LEAD_S, LISTENER_TAIL_S, LISTENER_SPACING_S)] == [2, 3, 6]
    assert [words_for(s, "ja") for s in (LISTENER_LEAD_S, LISTENER_TAIL_S, LISTENER_SPACING_S)] == [1, 1, 2]


def test_spanish_has_espeak_voices_a_lexicon_a_bank_and_a_dialogue_set() -> None:
    """Spanish, an espeak-ng language: every piece a language needs is packaged (voices/es.yaml with
    speaker-disjoint splits, lexicon, scenario bank, dialogues/es-everyday.jsonl), its words are
    space-separated (QA by WER) and a dataset dialogue becomes a Spanish script with Spanish marks."""
    from factory.locations import dialogue_set_dir
    from factory.render.voices import VoiceBank
    from factory.script.source import read_dialogue_set
    from factory.stages import plan_sample, sample_id, script_for

    cfg = load_config(overrides=["dialogue.language=es", "dialogue.sources=[{kind: dataset, path: es-everyday}]"])
    rt = Runtime(cfg)
    rt.check_languages()
    spanish = [v for v in VoiceBank.load() if v.language == "es"]
    assert {v.backend for v in spanish} == {"espeak"} and {v.split for v in spanish} == {"train", "dev", "test"}
    assert all(v.speaker is not None and v.speaker.startswith("es") for v in spanish)
    dialogues = read_dialogue_set(dialogue_set_dir() / "es-everyday.jsonl")
    assert len(dialogues) >= 8 and {d.language for d in dialogues} == {"es"}
    assert words("Sí, claro, a las ocho.", "es") == ["Sí,", "claro,", "a", "las", "ocho."]
    assert error_rate("sí claro a las ocho", "Sí, claro, a las ocho.", "es") == 0.0
    lex = load_lexicon("es")
    sid = sample_id(cfg, 0)
    plan = plan_sample(rt, sid, sid)
    script = script_for(rt, plan)
    assert plan.scenario.language == "es" and {v.language for v in plan.voices.values()} == {"es"}
    tokens = {m.token for m in script.marks if m.type in ("backchannel", "filler")}
    assert tokens and tokens <= {*lex.backchannels, *lex.fillers, *(f.capitalize() for f in lex.fillers)}
    # Spanish opens questions and exclamations with ¿ and ¡: the cleaner keeps them (it once
    # stripped them as symbols), and the dataset's turns reach the script with them.
    assert clean_turn("¿ Vienes mañana? ¡¡Qué bien!!") == "¿Vienes mañana? ¡Qué bien!"
    source = " ".join(t.text for d in dialogues for t in d.turns)
    assert "¿" in source and "¡" in source
    sids = [sample_id(cfg, i) for i in range(4)]
    spoken = [t.text for s in sids for t in script_for(rt, plan_sample(rt, s, s)).turns]
    assert any(t.startswith("¿") or " ¿" in t for t in spoken), spoken


ESPEAK_LANGUAGES = ("es", "fr", "de", "hi")
KOKORO_LANGUAGES = ("fr", "hi")  # also spoken by Kokoro's five speakers (tests/test_voices_kokoro_languages.py)


@pytest.mark.parametrize("language", ESPEAK_LANGUAGES)
def test_espeak_language_has_voices_lexicon_bank_dialogues_and_placeholders(language: str) -> None:
    """Every espeak-ng language is whole: speaker-disjoint splits, each with both genders (train with
    two or more of each), a lexicon whose uncited rates say "placeholder: English value" (German's
    backchannel rate is cited), a scenario
    bank, a dialogue set of its own language, and English's timing stated as a placeholder."""
    from factory.locations import dialogue_set_dir
    from factory.render.voices import VoiceBank, group_of
    from factory.script.source import read_dialogue_set
    from factory.timeline.timing import LANGUAGES_FILE, timing_defaults

    # Its dialogues come from its dataset source: the embedded SmolLM2 writes English only (writer_gaps).
    cfg = load_config(
        overrides=[f"dialogue.language={language}", f"dialogue.sources=[{{kind: dataset, path: {language}-everyday}}]"]
    )
    Runtime(cfg).check_languages()
    bank = VoiceBank.load()
    for split in ("train", "dev", "test"):
        voices = bank.by_split(split, language)
        assert all(
            (v.backend == "espeak" and (v.speaker or "").startswith(language))
            or (v.backend == "kokoro" and language in KOKORO_LANGUAGES)  # Kokoro's speakers in French and Hindi
            for v in voices
        )
        genders = [v.gender for v in voices]
        need = 2 if split == "train" else 1
        assert genders.count("female") >= need and genders.count("male") >= need, (split, genders)
        assert not bank.groups(split, language) & {
            group_of(v) for s in ("train", "dev", "test") if s != split for v in bank.by_split(s, language)
        }
    lex = load_lexicon(language)
    assert lex.language == language and lex.side_talk and lex.background_speech and len(lex.voice_prompts) >= 2
    if language == "de":  # derived from a published share (lexicon/de.yaml)
        assert "Knudsen" in lex.backchannels_source and lex.backchannels_per_minute == 5.1
    else:
        assert "placeholder: English value" in lex.backchannels_source
    if language != "es":  # Spanish's speaking rate is measured on its voices; the others' are English's
        assert "placeholder: English value" in lex.words_per_second_source
    assert load_bank(language=language).topics
    dialogues = read_dialogue_set(dialogue_set_dir() / f"{language}-everyday.jsonl")
    assert len(dialogues) >= 10 and {d.language for d in dialogues} == {language}
    assert {d.license for d in dialogues} == {"CC0-1.0"}
    assert timing_defaults(language) == timing_defaults("en")  # no published figure: English's
    assert f"{language}: placeholder" in LANGUAGES_FILE.read_text(encoding="utf-8")


@pytest.mark.parametrize("language", ESPEAK_LANGUAGES)
def test_no_voice_is_in_most_dialogues_of_an_espeak_language(language: str) -> None:
    """The pair draw prefers a partner of the other gender, so a lone female train voice was in
    every Spanish dialogue (espeak-es-f2). The share of dialogues each train voice is in, exactly
    from `pick_pair`'s draw (first voice uniform, partner uniform among `partners`), is at most 60 %,
    and a plan of 40 Spanish samples agrees."""
    from collections import Counter

    from factory.render.voices import VoiceBank

    bank = VoiceBank.load()
    voices = bank.by_split("train", language)
    share = dict.fromkeys((v.id for v in voices), 0.0)
    for first in voices:
        partners = bank.partners(first)
        share[first.id] += 1 / len(voices)
        for p in partners:
            share[p.id] += 1 / len(voices) / len(partners)
    assert max(share.values()) <= 0.6, share
    if language == "es":
        from factory.stages import plan_sample, sample_id

        cfg = load_config(overrides=["dialogue.language=es", "dialogue.sources=[{kind: dataset, path: es-everyday}]"])
        rt = Runtime(cfg)
        sids = [sample_id(cfg, i) for i in range(40)]
        seen = Counter(v.id for s in sids for v in plan_sample(rt, s, s).voices.values())
        assert max(seen.values()) <= 0.6 * 40, seen


def test_wer_normalisation_is_per_language() -> None:
    """English's clean-up (contractions, "%", backchannel spellings) stays English; other languages
    get their own number words, hesitation sounds and letters with their combining marks."""
    from factory.asr import normalize, wer

    assert normalize("I don't know, it's 10%") == ["i", "do", "not", "know", "it", "is", "ten", "percent"]
    french = ["il", "est", "vingt", "et", "un", "heures", "d'accord"]
    assert normalize("Euh, il est 21 heures, d'accord ?", "fr") == french
    assert normalize("Ähm, um 8 Uhr.", "de") == ["um", "acht", "uhr"]
    assert normalize("Eh, a las 3, ¿vale?", "es") == ["a", "las", "tres", "vale"]
    assert wer("Sí, a las ocho.", "si a las 8", "es") == pytest.approx(1 / 4)  # the accent counts, the digit not
    # Devanagari: vowel signs and virama are marks inside the word, not breaks; the danda goes;
    # nukta and chandrabindu spellings meet; Devanagari digits are digits.
    assert normalize("नमस्ते, मैं बाज़ार जाऊँगा। २", "hi") == ["नमस्ते", "मैं", "बाजार", "जाऊंगा", "2"]
    assert wer("मैं बाज़ार जाऊँगा", "मैं बाजार जाऊंगा", "hi") == 0.0


def test_hindi_is_scored_by_characters() -> None:
    """Hindi QA is CER over its normalised characters (its WER on espeak-ng renders is ~1.0 for
    every voice, benchmarks/results/languages.md); French and German stay WER."""
    from factory.languages import qa_metric

    assert [qa_metric(x) for x in ("hi", "hi-IN", "fr", "de", "es", "ja", "en")] == [
        "CER",
        "CER",
        "WER",
        "WER",
        "WER",
        "CER",
        "WER",
    ]
    # one wrong vowel sign of 11 code points (न म स ् त े द ो स ् त: the spaces are not compared)
    assert error_rate("नमस्ते दोस्त", "नमस्ते दास्त", "hi") == pytest.approx(1 / 11)
    assert error_rate("bonjour mon ami", "bonjour mon amie", "fr") == pytest.approx(1 / 3)
    assert error_rate("Il est 21 heures.", "il est vingt et un heures", "fr") == 0.0  # French number words


def test_turn_cleaner_keeps_devanagari_marks_and_ends_sentences_at_the_danda() -> None:
    assert clean_turn("नमस्ते, आप कैसे हैं। मैं ठीक हूँ।") == "नमस्ते, आप कैसे हैं. मैं ठीक हूँ."
    assert clean_turn("Ça va, l'été dernier? Grüß dich!") == "Ça va, l'été dernier? Grüß dich!"


def test_espeak_renders_are_transcribed_in_their_language() -> None:
    """Real espeak-ng renders, transcribed by Whisper-base in the voice's language: German is heard
    within the QA gate; Hindi comes back in Devanagari (without the script prompt Whisper-base
    wrote this voice in Urdu's Arabic letters), though not much of it right (its CER is in
    benchmarks/results/languages.md)."""
    import unicodedata

    from factory.asr import transcribe
    from factory.render.espeak_backend import EspeakBackend
    from factory.render.voices import VoiceBank

    bank, backend = VoiceBank.load(), EspeakBackend()
    text = "Der Zug nach Berlin fährt um acht Uhr von Gleis drei ab."
    utt = backend.synthesize(text, bank.get("espeak-de-m3"))
    heard = transcribe(utt.audio, utt.sample_rate, language="de").text
    assert error_rate(text, heard, "de") <= 0.8, heard
    utt = backend.synthesize("नमस्ते, मैं आज शाम दो लोगों के लिए एक मेज़ बुक करना चाहता हूँ।", bank.get("espeak-hi-f2"))
    heard = transcribe(utt.audio, utt.sample_rate, language="hi").text
    # espeak's word events time every Hindi word, in order and inside the audio
    assert [w.word for w in utt.words] == utt.text.split()
    assert all(a.end <= b.start + 1e-6 and a.start < a.end for a, b in zip(utt.words, utt.words[1:], strict=False))
    assert 0 < utt.words[-1].end <= utt.duration
    letters = [c for c in heard if c.isalpha()]
    assert letters and all(unicodedata.name(c).startswith("DEVANAGARI") for c in letters), heard


def test_readme_and_dialogue_sets_list_every_packaged_language() -> None:
    """The README's Languages section names every language with a lexicon, and dialogues/README.md
    lists each packaged dialogue set."""
    from pathlib import Path

    from factory.locations import dialogue_set_dir
    from factory.script.lexicon import lexicon_languages

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Languages", 1)[1].split("\n## ", 1)[0]
    assert all(f"`{language}`" in section for language in lexicon_languages()), lexicon_languages()
    table = (root / "dialogues" / "README.md").read_text(encoding="utf-8")
    assert all(f"`{p.name}`" in table for p in dialogue_set_dir().glob("*.jsonl"))
