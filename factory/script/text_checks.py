"""Repair and validation of one LLM-written spoken turn. Pure functions, no model.

Small models wrap a spoken line in chat habits (speaker labels, markdown, stage directions,
emojis) and sometimes fail outright (loops, echoing the prompt, another language). `clean_turn`
repairs what can be repaired into plain speakable text; `check_turn` rejects the rest with a
machine-readable reason. Neither raises anything but `TurnRejected`.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

from factory.languages import base, join, morphemes, spaced, words
from factory.script.function_words import fold, function_words


class TurnRejected(Exception):
    """A written turn could not be repaired. `reason` is a short code (`empty`, `too_short`,
    `prompt_echo`, `repetition_loop`, `wrong_language`, `meta`, `parrot`), `detail` says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------- cleaning
_GENERIC_LABELS = (
    "user",
    "agent",
    "assistant",
    "ai",
    "human",
    "customer",
    "caller",
    "speaker",
    "person",
    "you",
    "me",
    "bot",
    "system",
    "a",
    "b",
)
_TRANSLATE = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2013": ", ",
        "\u2014": ", ",
        "\u2015": ", ",
        "\u2212": "-",
        "\u2026": "...",
        "\u00a0": " ",
        # Devanagari danda and double danda: sentence ends, as the checks and cuts know them.
        "\u0964": ".",
        "\u0965": ".",
    }
)
# Symbols a TTS reads badly or not at all, said as words.
_SYMBOL_WORDS = (
    (re.compile(r"(\d)\s*%"), r"\1 percent"),
    (re.compile(r"\$\s*(\d+(?:[.,]\d+)*)"), r"\1 dollars"),
    (re.compile(r"\u20ac\s*(\d+(?:[.,]\d+)*)"), r"\1 euros"),
    (re.compile(r"\u00a3\s*(\d+(?:[.,]\d+)*)"), r"\1 pounds"),
    (re.compile(r"(\d)\s*\u00b0\s*[cC]\b"), r"\1 degrees Celsius"),
    (re.compile(r"(\d)\s*\u00b0\s*[fF]\b"), r"\1 degrees Fahrenheit"),
    (re.compile(r"(\d)\s*\u00b0"), r"\1 degrees"),
    (re.compile(r"\s*&\s*"), " and "),
    (re.compile(r"(\w)\s*\+\s*(\w)"), r"\1 plus \2"),
    (re.compile(r"(\w)\s*/\s*(\w)"), r"\1 or \2"),
    (re.compile(r"(\d)\s*x\s*(\d)"), r"\1 by \2"),
)
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_EMAIL = re.compile(r"\S+@\S+\.\w+")
_STAGE = re.compile(r"\([^()]*\)|\[[^\[\]]*\]|\{[^{}]*\}|<[^<>]*>|(?<!\*)\*(?!\*)[^*\n]+(?<!\*)\*(?!\*)")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+\u2022\u25cf\u25aa>]+|\d{1,2}[.)]|[a-zA-Z][.)])\s+")
_LABEL = re.compile(r"^\s*[\*_#>\s]*([A-Za-z][\w .'\-]{0,30}?)[\*_\s]*:[\*_]*\s*")
# Spanish opens its questions and exclamations with ¿ and ¡: part of the sentence, kept.
_KEEP = re.compile(r"[^\w\s.,!?;:'\-¿¡]")
_TERMINAL = (".", "!", "?")
# Words a sentence cannot end on: what is left dangling when a cut falls after them.
_DANGLING = frozenset(
    "a an the of to and or but nor with for in on at by from into onto as than because if "
    "very my your our their his her its every whose which".split()
)


def _is_label(candidate: str, names: set[str]) -> bool:
    """A `Xxx:` prefix is a speaker label when it names a participant or a generic role."""
    key = candidate.strip().lower()
    parts = key.split()
    return key in names or key in _GENERIC_LABELS or (len(parts) <= 2 and any(p in names for p in parts))


def _cut_at_other_speaker(lines: list[str], names: set[str]) -> list[str]:
    """Keeps the first speaker's lines: drops its own leading label and stops at the first line
    where a label starts another turn (small models go on to write the whole dialogue)."""
    kept: list[str] = []
    for line in lines:
        match = _LABEL.match(line)
        if match and _is_label(match.group(1), names):
            if kept:
                break
            line = line[match.end() :]
        kept.append(line)
    return kept


def _cut_inline_label(text: str, names: set[str]) -> str:
    """Cuts `... fine. Sam: and you?` at an inline label of a participant."""
    for match in re.finditer(r"(?<=[.!?,])\s+([A-Z][a-zA-Z]{0,20})\s*:\s", text):
        if _is_label(match.group(1), names):
            return text[: match.start()]
    return text


def _line_to_sentence(line: str) -> str:
    """List items and headings become plain sentences so joined lines still read as speech."""
    line = _LIST_MARKER.sub("", line)
    line = line.strip().strip("#").strip()
    if line and line[-1].isalnum():
        line += "."
    return line


def _strip_symbols(text: str) -> str:
    for pattern, spoken in _SYMBOL_WORDS:
        text = pattern.sub(spoken, text)
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith(("S", "C")) or ch.isspace())
    # Combining marks are part of their letter (Devanagari vowel signs and virama), not symbols.
    return "".join(ch if unicodedata.category(ch)[0] == "M" else _KEEP.sub(" ", ch) for ch in text)


def _tidy_punctuation(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([.,!?;:])", r"\1", text)
    text = re.sub(r"([¿¡])[¿¡\s]+", r"\1", text)  # "¿ Vienes?" / "¿¿Vienes?" -> "¿Vienes?"
    text = re.sub(r"([!?])[!?.]+", r"\1", text)
    text = re.sub(r"\.{4,}", "...", text)
    text = re.sub(r"(?<!\.)\.\.(?!\.)", ".", text)
    text = re.sub(r"([,;:])[,;:.]+", r"\1", text)
    text = re.sub(r"([,;:])(?=[^\s\d])", r"\1 ", text)
    text = re.sub(r"(?:^|\s)['\-]+(?=\s|$)", " ", text)  # stray quote/dash tokens
    text = re.sub(r"\s+", " ", text).strip()
    text = text.lstrip(".,;:!?-' ")
    return text if re.search(r"\w", text) else ""


def _end_sentence(text: str) -> str:
    return text if text.endswith(_TERMINAL) else _finish(text.split())


def _drop_repeated_sentences(text: str) -> str:
    """A sentence said twice in one turn is a decoding loop, not speech: keep the first."""
    seen: set[tuple[str, ...]] = set()
    kept = []
    for sentence in split_sentences(text):
        key = _norm_words(sentence)
        if key and tuple(key) in seen and len(key) >= 3:
            continue
        seen.add(tuple(key))
        kept.append(sentence)
    return " ".join(kept)


def split_sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def truncate_words(text: str, min_words: int, max_words: int) -> str:
    """Cuts to at most `max_words`: at the last sentence end that keeps `min_words`, else at the
    last comma, else hard, dropping dangling function words ("some of the.")."""
    words = text.split()
    if len(words) <= max_words:
        return text
    head = words[:max_words]
    for ends in (_TERMINAL, (",", ";", ":")):
        for i in range(len(head) - 1, max(min_words, 1) - 2, -1):
            if head[i].endswith(ends):
                return _finish(head[: i + 1])
    return _finish(head)


def _finish(words: list[str]) -> str:
    words = list(words)
    if not words:
        return ""
    while len(words) > 1 and words[-1].strip(".,;:!?'-").lower() in _DANGLING:
        words.pop()
    last = words[-1].rstrip(",;:-'")
    words[-1] = last if last.endswith(_TERMINAL) else last.rstrip(".") + "."
    return " ".join(words)


def drop_unfinished_sentence(text: str, min_words: int) -> str:
    """A generation cut by the token limit ends mid-sentence: drop that fragment when the
    complete sentences before it are long enough on their own, else cut it at its last comma."""
    sentences = split_sentences(text)
    if not sentences or sentences[-1].endswith(_TERMINAL):
        return text
    complete = " ".join(sentences[:-1])
    if len(complete.split()) >= min_words:
        return complete
    clause = text[: text.rfind(",")] if "," in sentences[-1] else ""
    return _finish(clause.split()) if len(clause.split()) >= max(min_words, 1) else text


def clean_turn(raw: str, *, names: Iterable[str] = (), min_words: int = 1, max_words: int = 60) -> str:
    """Repairs one raw completion into plain spoken text ("" when nothing speakable is left).
    `names` are the participants' names (labels to strip at the start, and to cut at later)."""
    name_set = {n.strip().lower() for n in names if n.strip()}
    name_set |= {n.split(" ")[0] for n in name_set}
    text = unicodedata.normalize("NFKC", raw or "").translate(_TRANSLATE)
    text = re.sub(r"```.*?(```|$)", " ", text, flags=re.DOTALL)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    lines = _cut_at_other_speaker(lines, name_set)
    # The last line keeps its ending: a missing period there means the token limit cut it.
    text = " ".join([_line_to_sentence(ln) for ln in lines[:-1]] + [_LIST_MARKER.sub("", ln) for ln in lines[-1:]])
    text = _cut_inline_label(text, name_set)
    # Spoken stand-ins keep the sentence grammatical.
    text = _URL.sub("the website", text)
    text = _EMAIL.sub("my email", text)
    for _ in range(2):  # nested stage directions: "(smiles (warmly))"
        text = _STAGE.sub(" ", text)
    text = re.sub(r"[*_`#~|\"]", " ", text)
    text = _strip_symbols(text)
    text = _tidy_punctuation(text)
    text = _drop_repeated_sentences(text)
    # A token-limit cut ends on a word or comma; an emoji or quote at the end was meant.
    if re.search(r"[\w,]\s*$", raw or ""):
        text = drop_unfinished_sentence(text, min_words)
    return truncate_words(_end_sentence(text), min_words, max(max_words, 1)) if text else ""


# --------------------------------------------------------------------------- validation
# Frequent English words, conversational ones included, for the language check.
COMMON_ENGLISH = frozenset(
    """
a about after again all also am an and any are as at back be because been before being but by
can could did do does doing don't done down each even ever every for from get go going good got
great had has have having he her here him his how i i'm if in into is isn't it it's its just
know let like make many maybe me more most much my need never new no not now of off oh okay ok on
one only or other our out over really right said say see she should so some something sound
sounds still such sure than thank thanks that that's the their them then there these they thing
things think this those though through time to too two up us very want was way we well were
what when where which while who why will with would yeah yes yet you you're your
i've i'd i'll we're we'll they're there's what's let's can't won't didn't doesn't wasn't
hi hello hey love nice fun lot day today tomorrow week year people place help find try feel
look first last next best better little long great kind of course please actually definitely
""".split()
)
_ECHO_N = 4


def _norm_words(text: str) -> list[str]:
    """The lower-cased words of `text` in any script (`_word_patterns`: a Devanagari word keeps its
    vowel signs), apostrophe parts joined ("rock'n'roll" is one)."""
    return _word_patterns()[2].findall(text.lower())


def _ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def echo_share(text: str, reference: str, n: int = _ECHO_N) -> float:
    """Share of the text's word n-grams that appear in `reference`."""
    grams = _ngrams(_norm_words(text), n)
    if not grams:
        return 0.0
    return len(grams & _ngrams(_norm_words(reference), n)) / len(grams)


def _loop_detail(words: Sequence[str]) -> str | None:
    for n, limit in ((1, 4), (2, 3), (3, 3), (5, 2)):
        counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        if not counts:
            continue
        gram, count = counts.most_common(1)[0]
        if n == 1:
            # single words repeat naturally ("the"); only back-to-back runs are loops
            run = max(
                (len(m.group(0).split()) for m in re.finditer(r"\b(\w+)(?:\s+\1\b)+", " ".join(words))), default=1
            )
            if run >= limit:
                return f"a word repeated {run} times in a row"
        elif count >= limit:
            return f"{' '.join(gram)!r} x{count}"
    if len(words) >= 20 and len(set(words)) / len(words) < 0.35:
        return f"only {len(set(words))} distinct words of {len(words)}"
    return None


# A reply that says again this share of the previous turn's word pairs, in order, parrots it (the
# small model's habit after a barge-in), when that turn has at least `MIN_COPY_PAIRS` of them. Word
# pairs, not words: an answer repeats a question's nouns ("one cup of rice?" -> "for one cup of
# white rice, use ..."), a parrot its phrases. 0.4 flags 1 of the 175 replies of the human-written
# dialogue set (dialogues/en-everyday.jsonl) and every parrot of benchmarks/data/content_pairs.jsonl.
COPY_SHARE = 0.4
MIN_COPY_PAIRS = 3


@lru_cache(maxsize=1)
def _word_patterns() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """Words in any script: letters, digits and combining marks (Python's `\\w` leaves out the
    marks, so a Devanagari word would break at its vowel signs): one pattern joining a trailing
    apostrophe part of letters ("don't"), one splitting there ("l'homme"), and one joining every
    apostrophe part (`_norm_words`). The marks are those of planes 0
    and 1 and the variation selectors of plane 14 (planes 2 and 3 are ideographs only)."""
    marks: list[str] = []
    for plane in (range(0x20000), range(0xE0000, 0xE1000)):
        run = [cp for cp in plane if unicodedata.category(chr(cp))[0] == "M"]
        starts = [c for i, c in enumerate(run) if i == 0 or run[i - 1] != c - 1]
        ends = [c for i, c in enumerate(run) if i == len(run) - 1 or run[i + 1] != c + 1]
        marks += [f"\\U{a:08x}-\\U{b:08x}" for a, b in zip(starts, ends, strict=True)]
    mark = "".join(marks)
    char, letter = f"(?:[^\\W_]|[{mark}])", f"(?:[^\\W\\d_]|[{mark}])"
    return re.compile(f"{char}+(?:'{letter}+)?"), re.compile(f"{char}+"), re.compile(f"{char}+(?:'{char}+)*")


def content_words(text: str, language: str = "en") -> set[str]:
    """The content words of `text`: its words without `language`'s function words
    (`function_words.function_words`, one list per language), compared folded
    (`function_words.fold`). Spaced languages: Unicode words of at least two characters (digits
    stay digits; a hyphen separates, "twenty-five" is two), apostrophes joining or splitting as the
    list says. Unspaced (ja): the dictionary forms of the analyser's morphemes
    (`languages.morphemes`) whose part of speech is not a function one."""
    if not spaced(language):
        return set(_unspaced_content(text, language))
    fw = function_words(language)
    joined, split, _ = _word_patterns()
    found = (split if fw.split_apostrophes else joined).findall(fold(text).replace("-", " "))
    return {w for w in found if w not in fw.stop and len(w) > 1}


@lru_cache(maxsize=8192)
def _unspaced_content(text: str, language: str) -> frozenset[str]:
    fw = function_words(language)
    out = set()
    for m in morphemes(text, language):
        lemma = fold(m.lemma)
        if m.pos in fw.pos or f"{m.pos}-{m.pos_group1}" in fw.pos or lemma in fw.stop:
            continue
        if any(c.isalnum() for c in lemma):
            out.add(lemma)
    return frozenset(out)


def copy_share(reply: str, previous: str) -> float:
    """Share of `previous`'s word pairs that `reply` says again (0.0 when `previous` has fewer
    than `MIN_COPY_PAIRS`: too short to tell a copy from an answer)."""
    before = _ngrams(_norm_words(previous), 2)
    if len(before) < MIN_COPY_PAIRS:
        return 0.0
    return len(before & _ngrams(_norm_words(reply), 2)) / len(before)


def word_overlap(reply: str, previous: str, language: str = "en") -> float:
    """Share of `previous`'s content words (`content_words`) that `reply` says again (0.0 below two
    of them)."""
    before = content_words(previous, language)
    return len(before & content_words(reply, language)) / len(before) if len(before) >= 2 else 0.0


_META = re.compile(
    r"\b(as an ai( language model)?|language model|i am an ai|i'm an ai|here'?s (a|my|the) "
    r"(response|reply|turn|dialogue)|word count|next turn|the (user|agent|speaker)\b|"
    r"in this (conversation|dialogue|role-?play)|role-?play|system prompt)",
    re.IGNORECASE,
)
# The meta phrases an AI voice agent may say about itself (pass as `check_turn(allow_meta=...)`).
AGENT_META = ("as an ai", "i am an ai", "i'm an ai")


_SCRIPTS = {"hi": "DEVANAGARI"}  # the script of a spaced language's letters, where not Latin
# The letters of a spaced language as a regular-expression class: English's ASCII (its turns must be
# ASCII, `check_turn`), Devanagari's block without its dandas and digits for hi, else Latin with the
# Latin-1 and the French ligatures (es, fr, de); Japanese: kana (with the long-vowel mark) and kanji.
_LETTERS = {"en": "A-Za-z", "hi": "\u0900-\u0963\u0971-\u097f", "ja": "\u3041-\u30ff\u3400-\u4dbf\u4e00-\u9fff\u3005"}
_LATIN_LETTERS = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff\u0152\u0153"


def letter_class(language: str) -> str:
    """The letters of spaced `language`, for a regular-expression character class (`[...]`)."""
    return _LETTERS.get(base(language), _LATIN_LETTERS)


def check_turn(
    text: str,
    *,
    min_words: int,
    references: Sequence[str] = (),
    allow_meta: Sequence[str] = (),
    previous: str | None = None,
    language: str = "en",
) -> None:
    """Raises `TurnRejected` when a cleaned turn is unusable. `references` are texts the turn
    must not copy (the instructions, earlier turns); `allow_meta` lists meta phrases that are
    legitimate for this speaker (an AI agent may say it is an AI); `previous` is the turn it
    answers, as heard, whose words it must not parrot (`copy_share`). `language`: English turns
    must be English words; another language's letters must be in its script (a served model
    answering in English is rejected)."""
    words = _norm_words(text)
    if not words:
        raise TurnRejected("empty", "nothing speakable after cleaning")
    letters = [ch for ch in text if ch.isalpha()]
    if base(language) == "en":
        ascii_share = sum(ch.isascii() for ch in letters) / max(len(letters), 1)
        common_share = sum(w in COMMON_ENGLISH for w in words) / len(words)
        if ascii_share < 0.95 or (len(words) >= 4 and common_share < 0.2):
            raise TurnRejected("wrong_language", f"ascii {ascii_share:.2f}, common English words {common_share:.2f}")
    else:  # a served model writing another spaced language: its letters are in the language's script
        script = _SCRIPTS.get(base(language), "LATIN")
        share = sum(unicodedata.name(ch, "").startswith(script) for ch in letters) / max(len(letters), 1)
        if share < 0.9:
            raise TurnRejected("wrong_language", f"{share:.2f} of letters in the {script.lower()} script ({language})")
        common_share = sum(w in COMMON_ENGLISH for w in words) / len(words)
        if len(words) >= 4 and common_share >= 0.5:  # Latin letters, English words
            raise TurnRejected("wrong_language", f"common English words {common_share:.2f} ({language})")
    # Counted as the TTS will say them: whitespace tokens with a letter or digit ("DM!T." is one
    # token, though normalising splits it in two).
    n_tokens = sum(any(ch.isalnum() for ch in token) for token in text.split())
    if min(len(words), n_tokens) < min_words:
        raise TurnRejected("too_short", f"{min(len(words), n_tokens)} words < {min_words}")
    loop = _loop_detail(words)
    if loop:
        raise TurnRejected("repetition_loop", loop)
    for reference in references:
        ref_words = _norm_words(reference)
        # Short turns may fairly repeat a few words of the topic; long copies are echoes.
        if words == ref_words or (len(words) >= 2 * _ECHO_N and echo_share(text, reference) >= 0.5):
            raise TurnRejected("prompt_echo", f"copies {reference[:60]!r}")
    meta = _META.search(text)
    if meta and meta.group(0).lower() not in {m.lower() for m in allow_meta}:
        raise TurnRejected("meta", f"talks about the task: {meta.group(0)!r}")
    if previous is not None and (share := copy_share(text, previous)) >= COPY_SHARE:
        raise TurnRejected("parrot", f"says again {share:.0%} of the previous turn's words: {previous[:60]!r}")


# --------------------------------------------------------------------------- languages without spaces
_UNSPACED_TERMINAL = ("。", "！", "？", "!", "?")
_JA_LABEL = re.compile(r"^\s*[「『\"]?\s*[^\s:：「」]{1,12}\s*[:：]\s*")  # "ユーザー：", "ハル:"


def clean_turn_unspaced(raw: str, language: str, *, min_words: int = 1, max_words: int = 60) -> str:
    """`clean_turn` for a language written without spaces (Japanese): the first line, a speaker
    label and enclosing quotes removed, whitespace (layout there) dropped, cut to `max_words`
    words of `languages.words` at the last sentence end that keeps `min_words`."""
    lines = [ln for ln in raw.strip().splitlines() if ln.strip()]
    text = _JA_LABEL.sub("", lines[0]) if lines else ""
    text = "".join(text.split()).strip('「」『』"')
    parts = words(text, language)
    if len(parts) > max_words:
        head = parts[:max_words]
        ends = [i for i in range(max(min_words, 1) - 1, len(head)) if head[i].endswith(_UNSPACED_TERMINAL)]
        head = head[: ends[-1] + 1] if ends else head
        text = join(head, language)
    if text and not text.endswith(_UNSPACED_TERMINAL):
        text = text.rstrip("、,") + "。"
    return text


def check_turn_unspaced(text: str, language: str, *, min_words: int, references: Sequence[str] = ()) -> None:
    """`check_turn` for a language written without spaces: words are `languages.words`, and the
    wrong-language check asks for the language's own script (kana and kanji for ja)."""
    parts = [w for w in words(text, language) if any(c.isalnum() for c in w)]
    if not parts:
        raise TurnRejected("empty", "nothing speakable after cleaning")
    letters = [c for c in text if c.isalpha()]
    native = sum(unicodedata.name(c, "").startswith(("HIRAGANA", "KATAKANA", "CJK")) for c in letters)
    if native / max(len(letters), 1) < 0.8:
        raise TurnRejected("wrong_language", f"{native / max(len(letters), 1):.2f} of letters in {language} script")
    if len(parts) < min_words:
        raise TurnRejected("too_short", f"{len(parts)} words < {min_words}")
    loop = _loop_detail(parts)
    if loop:
        raise TurnRejected("repetition_loop", loop)
    for reference in references:
        if text == "".join(reference.split()):
            raise TurnRejected("prompt_echo", f"copies {reference[:60]!r}")
