"""espeak-ng IPA for the espeak-IPA TTS engines (Piper, Kokoro): the phonemizer both were trained
with, as the espeak-ng bundled in piper-tts. A helper the backends share, so no backend imports
another.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from functools import lru_cache

from factory.render.base import BackendUnavailable
from factory.render.text import interjection_ipa, split_punct

PUNCT = set(",.!?;:")
NOT_SOUNDS = PUNCT | {"ˈ", "ˌ", " "}
_ESPEAK_LOCK = threading.Lock()  # piper's espeakbridge is one global espeak instance
_espeak_ready = False


def espeak_ipa(text: str, language: str = "en-us") -> list[tuple[str, str, bool]]:
    """Clauses of `text` as (IPA, terminator, end_of_sentence) from the espeak-ng bundled in
    piper-tts (the phonemizer Piper voices were trained with; Kokoro uses it too)."""
    try:
        from piper import espeakbridge
        from piper.phonemize_espeak import ESPEAK_DATA_DIR
    except ImportError as exc:
        raise BackendUnavailable("espeak IPA needs piper-tts: pip install piper-tts") from exc
    global _espeak_ready
    with _ESPEAK_LOCK:
        if not _espeak_ready:
            espeakbridge.initialize(str(ESPEAK_DATA_DIR))
            _espeak_ready = True
        espeakbridge.set_voice(language)
        clauses = espeakbridge.get_phonemes(text)
    # espeak wraps foreign-language words in "(en)...(fr)" flags; they are not phonemes
    return [(re.sub(r"\([^)]*\)", "", p).strip(), t, e) for p, t, e in clauses]


@lru_cache(maxsize=65536)
def token_weight(token: str, language: str = "en-us") -> float:
    """Number of sounds in one whitespace token said alone: the weight that decides how
    engine word units map onto tokens (0 for pure punctuation like "—")."""
    ipa = interjection_ipa(token)
    if ipa is None:
        ipa = " ".join(p for p, _, _ in espeak_ipa(token, language))
    return float(sum(c not in NOT_SOUNDS for c in unicodedata.normalize("NFD", ipa)))


def phonemize(tokens: list[str], language: str = "en-us") -> list[list[str]]:
    """Phoneme sentences (NFD code points; spaces between words; clause punctuation kept).
    Runs of ordinary words go to espeak together, so function words get their reduced forms;
    backchannel/filler tokens become IPA the models say well (espeak spells "mm" "em em")."""
    sentences: list[list[str]] = []
    current: list[str] = []
    run: list[str] = []

    def add(ipa: str, end_of_sentence: bool) -> None:
        nonlocal current
        if current and current[-1] != " ":
            current.append(" ")
        current.extend(unicodedata.normalize("NFD", ipa))
        if end_of_sentence:
            sentences.append(current)
            current = []

    def flush() -> None:
        if run:
            for ipa, terminator, end in espeak_ipa(" ".join(run), language):
                add(ipa + terminator, end)
            run.clear()

    for token in tokens:
        ipa = interjection_ipa(token)
        if ipa is None:
            run.append(token)
            continue
        flush()
        trailing = "".join(c for c in split_punct(token)[2] if c in PUNCT)[:1]
        add(ipa + trailing, trailing in {".", "!", "?"})
    flush()
    if current:
        sentences.append(current)
    return [s for s in sentences if any(c not in NOT_SOUNDS for c in s)]


def phoneme_words(phonemes: list[str], samples: list[int], offset: int) -> list[tuple[int, int, float]]:
    """(start, end, n_sounds) in samples per space-separated phoneme word; punctuation and
    stress marks carry no sound of the word (a comma's samples are the pause after it)."""
    units: list[tuple[int, int, float]] = []
    pos = offset
    start = end = -1
    n = 0
    for ph, ns in zip(phonemes + [" "], samples + [0], strict=True):
        if ph == " ":
            if n:
                units.append((start, end, float(n)))
            start, n = -1, 0
        elif ph not in PUNCT:
            if start < 0:
                start = pos
            end = pos + ns
            n += ph not in NOT_SOUNDS
        pos += ns
    return units
