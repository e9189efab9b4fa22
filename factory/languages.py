"""Languages: BCP-47 codes, and words in text with or without spaces between them.

Every place that counts, indexes or cuts words (the planner's word positions, text checks, barge-in
cuts, word spans) goes through `words` and `join`, so a language written without spaces (Japanese)
gets the same word positions everywhere. Space-separated languages split on whitespace, exactly as
the English code always did. Japanese is segmented by pyopenjtalk's own morphological analyser (the
one its G2P uses, so a word here is a word the voice reads), into accent phrases (bunsetsu-like
units: "駅まで", "行って"), with punctuation kept on the word before it as in English ("word,").

Imports nothing of the factory, so any stage may use it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

# BCP-47 as the factory uses it: a primary language subtag, optional script/region/variant subtags.
LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
UNSPACED = frozenset({"ja"})  # languages whose words `words` finds with a morphological analyser
# Languages QA scores by characters though their words are spaced: Hindi, whose spelling varies
# freely (nukta, chandrabindu, loanwords) and whose Whisper-base transcripts of espeak-ng renders
# get a WER near 1.0 on every voice, where the CER still tells voices apart
# (benchmarks/results/languages.md).
CHARACTER_SCORED = frozenset({"hi"})


def base(language: str) -> str:
    """The primary subtag: "ja-JP" -> "ja", "en-us" -> "en"."""
    return language.split("-")[0].lower()


def spaced(language: str) -> bool:
    """Whether words of `language` are written with spaces between them."""
    return base(language) not in UNSPACED


def scored_by_characters(language: str) -> bool:
    """Whether QA scores `language` by character error rate (CER) rather than WER: every language
    written without spaces, and the spaced ones of `CHARACTER_SCORED`."""
    return not spaced(language) or base(language) in CHARACTER_SCORED


def qa_metric(language: str) -> str:
    """ "CER" or "WER": the name of `language`'s QA score, for messages and tables."""
    return "CER" if scored_by_characters(language) else "WER"


def check_language(language: str) -> str:
    if not re.fullmatch(LANGUAGE_PATTERN, language):
        raise ValueError(f"{language!r} is not a BCP-47 language tag (e.g. en, ja, es, pt-BR)")
    return language


def words(text: str, language: str = "en") -> list[str]:
    """The words of `text`, in order, whose `join` is `text` with its spacing normalised."""
    if spaced(language):
        return text.split()
    return list(_japanese_words(text))


def script_language(text: str) -> str:
    """The word-splitting language of a text whose language is not at hand (a `Script` knows only
    its turns): "ja" when it is written in kana or kanji, else "en" (whitespace)."""
    return "ja" if any(unicodedata.name(c, "").startswith(("HIRAGANA", "KATAKANA", "CJK")) for c in text) else "en"


def join(parts: Sequence[str], language: str = "en") -> str:
    """The inverse of `words`: space-separated, or run together for an unspaced language."""
    return (" " if spaced(language) else "").join(parts)


class Morpheme(NamedTuple):
    """One morpheme of an unspaced language's analyser: its text, part of speech (NAIST-jdic tags
    for ja: `pos`, `pos_group1`) and dictionary form (`lemma`: "行っ" -> "行く")."""

    surface: str
    pos: str
    pos_group1: str
    lemma: str


@lru_cache(maxsize=4096)
def morphemes(text: str, language: str) -> tuple[Morpheme, ...]:
    """The morphemes of `text` in an unspaced `language`, by the analyser `words` uses
    (pyopenjtalk's for ja); a space between them is layout, as there."""
    if spaced(language):
        raise ValueError(f"{language!r} is written with spaces: its words are `words`, not morphemes")
    import pyopenjtalk  # lazy: Japanese only

    text = "".join(text.split())
    return tuple(
        Morpheme(n["string"], n["pos"], n["pos_group1"], n["orig"] if n["orig"] not in ("", "*") else n["string"])
        for n in (pyopenjtalk.run_frontend(text) if text else [])
    )


def _is_punct(s: str) -> bool:
    return all(unicodedata.category(c)[0] in "PSZ" for c in s)


@lru_cache(maxsize=4096)
def _japanese_words(text: str) -> tuple[str, ...]:
    import pyopenjtalk  # lazy: Japanese only; loads the dictionary (~0.5 s)

    text = "".join(text.split())  # a space between Japanese words is layout, not a boundary
    out: list[str] = []
    pos = 0
    for node in pyopenjtalk.run_frontend(text) if text else []:
        surface = _consume(text, pos, node["string"])
        if not surface:
            continue
        pos += len(surface)
        opening = unicodedata.category(surface[-1]) in ("Ps", "Pi")
        if out and _is_punct(surface) and not opening:
            out[-1] += surface  # "駅まで、" as English keeps "word,"
        elif out and node.get("chain_flag") == 1 and node["pos"] != "フィラー" and not _is_punct(out[-1][-1]):
            out[-1] += surface  # the same accent phrase: a particle or ending stays with its word
        else:
            out.append(surface)
    if pos < len(text):  # whatever the analyser dropped stays with the last word
        if out:
            out[-1] += text[pos:]
        else:
            out.append(text[pos:])
    # Opening brackets and quotes belong to the word after them.
    merged: list[str] = []
    for w in out:
        if merged and _is_punct(merged[-1]) and unicodedata.category(merged[-1][-1]) in ("Ps", "Pi"):
            merged[-1] += w
        else:
            merged.append(w)
    return tuple(merged)


def _consume(text: str, pos: int, token: str) -> str:
    """The characters of `text` from `pos` that the analyser's `token` stands for (it writes digits
    and Latin letters full-width: compared under NFKC)."""
    want = unicodedata.normalize("NFKC", token)
    for k in range(1, len(token) + 8):
        piece = text[pos : pos + k]
        if unicodedata.normalize("NFKC", piece) == want:
            return piece
        if pos + k >= len(text):
            break
    return ""
