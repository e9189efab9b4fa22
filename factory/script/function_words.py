"""Function words per language: the words that carry no content of their own (articles,
pronouns, prepositions, auxiliaries, particles, hesitations), which `text_checks.content_words`
leaves out. One notion of "content word" for the writer's parrot measure (`word_overlap`), the
dataset rewrite's content check (`source.kept_share`) and the referent rule of
`planner.heard_floor`.

Data, not code: one YAML file per language in `factory/script/function_words/`, each citing the
list it takes (Snowball's stop lists for es/fr/de, stopwords-iso's for hi and ja, the factory's
own for en) and carrying its licence; `removed` and `added` say where the factory departs from
the cited list. A language written without spaces (ja) also lists the parts of speech of its
analyser (`languages.morphemes`) that are function words.
"""

from __future__ import annotations

import unicodedata
from functools import cached_property, lru_cache

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from factory.languages import base
from factory.locations import function_words_dir


class FunctionWordsError(ValueError):
    """A language has no function-word list, or its file is malformed."""


def fold(word: str) -> str:
    """How content words are compared: NFKC (one spelling of a nukta or a full-width digit),
    lower-cased."""
    return unicodedata.normalize("NFKC", word).lower()


class FunctionWords(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    language: str
    source: str = Field(min_length=1, description="the published list `words` is, with its version")
    license: str = Field(min_length=1, description="the licence of the cited list (SPDX)")
    words: list[str] = Field(min_length=1, description="the cited list, as published")
    removed: list[str] = Field(default_factory=list, description="words of the cited list that carry content here")
    added: list[str] = Field(default_factory=list, description="the factory's additions (fillers, answer particles)")
    pos: list[str] = Field(
        default_factory=list,
        description="an unspaced language's function parts of speech (`languages.morphemes`: pos or pos-pos_group1)",
    )
    split_apostrophes: bool = Field(
        default=True, description="words split at an apostrophe (French l'homme: l, homme); false keeps don't"
    )

    @model_validator(mode="after")
    def _removed_are_listed(self) -> FunctionWords:
        missing = sorted(set(self.removed) - set(self.words))
        if missing:
            raise ValueError(f"removed words not in the cited list: {missing}")
        return self

    @cached_property
    def stop(self) -> frozenset[str]:
        """The function words, folded (`fold`)."""
        return frozenset(fold(w) for w in (set(self.words) - set(self.removed)) | set(self.added))


def function_word_languages() -> list[str]:
    """The languages a function-word list is packaged for."""
    return sorted(p.stem for p in function_words_dir().glob("*.yaml"))


@lru_cache(maxsize=16)
def function_words(language: str) -> FunctionWords:
    """The packaged function-word list of `language` (its primary subtag: fr-CA reads fr.yaml)."""
    path = function_words_dir() / f"{base(language)}.yaml"
    if not path.is_file():
        raise FunctionWordsError(
            f"no function-word list for language {language!r} (the content check of rewrites and barge-in "
            f"cuts): add {path.name} to {function_words_dir()}; packaged: {', '.join(function_word_languages())}"
        )
    try:
        return FunctionWords.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, ValidationError) as exc:
        raise FunctionWordsError(f"function-word list {path} is invalid: {exc}") from None
