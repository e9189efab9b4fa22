"""Content words per language: the function-word lists (factory/script/function_words/), Unicode
words, Japanese by its own analyser, and the two places that read them besides the writer's
parrot measure: the dataset rewrite's content check and `planner.heard_floor`'s referent rule.

The expected sets below are written out by hand (what a reader of each language calls the content
of the sentence), not computed by the code under test.
"""

from __future__ import annotations

import pytest
import yaml

from factory.locations import function_words_dir
from factory.models import Channel, ScriptTurn
from factory.script.function_words import FunctionWordsError, fold, function_words
from factory.script.lexicon import lexicon_languages
from factory.script.planner import heard_floor
from factory.script.source import kept_share
from factory.script.text_checks import content_words, word_overlap


def test_every_lexicon_language_has_a_cited_function_word_list() -> None:
    for language in lexicon_languages():
        fw = function_words(language)
        assert fw.language == language and fw.source and fw.license
        raw = (function_words_dir() / f"{language}.yaml").read_text(encoding="utf-8")
        assert raw.startswith("#") and fw.license.split("-")[0] in raw  # the header cites and carries the licence
        assert set(fw.removed) <= set(fw.words)
    assert function_words("ja").pos  # the analyser's function parts of speech


def test_a_language_without_a_list_is_an_error_naming_the_file() -> None:
    with pytest.raises(FunctionWordsError, match=r"'pt-BR'.*add pt\.yaml"):
        function_words("pt-BR")


def test_a_removed_word_must_be_in_the_cited_list(tmp_path) -> None:
    from pydantic import ValidationError

    from factory.script.function_words import FunctionWords

    doc = yaml.safe_load((function_words_dir() / "de.yaml").read_text(encoding="utf-8"))
    with pytest.raises(ValidationError, match="not in the cited list"):
        FunctionWords.model_validate({**doc, "removed": ["Zug"]})


def test_english_content_words_are_what_they_were() -> None:
    # ASCII, the old list: contractions are words of the list, a hyphen separates, one letter is no word.
    text = "I don't think the 25 trains to twenty-five towns are running, so let's take a bus."
    assert content_words(text) == {"think", "25", "trains", "twenty", "five", "towns", "running", "take", "bus"}
    assert content_words(text, "en-GB") == content_words(text)


def test_french_function_words_are_french_and_letters_are_unicode() -> None:
    text = "Je pense que l'homme a pris le bus pour aller au café avec nous."
    # The English list would keep le, que, pour, avec, nous; an ASCII pattern would cut café to caf.
    assert content_words(text, "fr") == {"pense", "homme", "pris", "bus", "aller", "café"}


def test_german_and_spanish_function_words() -> None:
    assert content_words("Ich habe den Zug um acht Uhr genommen, aber der Weg war weit.", "de") == {
        "zug",
        "acht",
        "uhr",
        "genommen",
        "weg",  # removed from Snowball's list: the noun Weg
        "weit",
    }
    assert content_words("¿Tomaste el tren de las ocho o el autobús?", "es") == {"tomaste", "tren", "ocho", "autobús"}


def test_hindi_words_keep_their_vowel_signs() -> None:
    # Python's \w leaves out the vowel signs and the nukta: बाज़ार would fall apart at them.
    text = "मैं कल बाज़ार गया था और वहाँ से सब्ज़ियाँ खरीदीं।"
    # मैं, गया, था, और, वहाँ, से are function words (pronoun, auxiliaries, conjunction, adverb, postposition).
    assert content_words(text, "hi") == {fold(w) for w in ("कल", "बाज़ार", "सब्ज़ियाँ", "खरीदीं")}


def test_japanese_content_words_are_the_analysers_dictionary_forms() -> None:
    text = "えーと、駅まで行って、それから新しいカメラを買いました。"
    # The filler, particles, auxiliaries, the pronoun and the punctuation are function words.
    assert content_words(text, "ja") == {"駅", "行く", "新しい", "カメラ", "買う"}
    # A politer ending keeps the verb: the rewrite kept the content.
    assert kept_share("駅まで行って、カメラを買った。", "駅まで行きまして、カメラを買いました。", "ja") == 1.0
    assert word_overlap("駅に行きます。カメラも買います。", "駅まで行って、カメラを買った。", "ja") == 1.0


def test_the_rewrite_check_counts_short_content_words_not_long_function_words() -> None:
    source = "Nous avons pris le bus avec votre thé."
    # The content is pris, bus, thé: a rewrite that drops bus and thé lost content...
    assert kept_share(source, "Alors nous avons pris, avec votre accord.", "fr") == pytest.approx(1 / 3)
    # ...and one that keeps them but drops nous, avons, avec, votre kept all of it.
    assert kept_share(source, "On a pris le bus, et le thé.", "fr") == 1.0


def _turns(*texts: str) -> list[ScriptTurn]:
    return [ScriptTurn(speaker=(Channel.user, Channel.agent)[i % 2], text=t) for i, t in enumerate(texts)]


def test_heard_floor_keeps_a_short_referent_heard_and_ignores_long_function_words() -> None:
    # The later turn takes up "bus" (three letters): the cut must let the listener hear it.
    turns = _turns("Tu viens comment ?", "Je pense prendre le bus demain matin avec nous tous.", "Le bus ? Bonne idée.")
    assert heard_floor(turns, "fr")[1] == 5  # up to "bus"
    # "nous" and "avec" (four letters) are function words: saying them again refers to nothing.
    turns = _turns("Tu viens comment ?", "Je pense partir demain matin avec nous.", "Avec nous ? Oui.")
    assert heard_floor(turns, "fr")[1] == 0


def test_heard_floor_in_japanese_matches_a_referent_under_another_particle() -> None:
    turns = _turns("どうやって来ますか？", "明日は電車で駅まで行って、そこから歩きます。", "駅に着いたら電話してね。")
    # 駅まで (the third accent phrase: 明日は 電車で 駅まで) is taken up as 駅に: the listener must hear it.
    assert heard_floor(turns, "ja")[1] == 3


def test_the_writers_parrot_check_reads_hindi_words_whole() -> None:
    from factory.script.text_checks import copy_share

    # Five words, four word pairs, one said again (कल सुबह). Split at the vowel signs and the nukta
    # (Python's \w), the same lines were ten and six pieces and the share 2/9.
    assert copy_share("हाँ, कल सुबह चलेंगे।", "हम कल सुबह बाज़ार जाएँगे।") == pytest.approx(1 / 4)
