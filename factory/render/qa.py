"""Intelligibility QA: transcribe a rendered utterance with Whisper and compare it with the text.

Text normalisation (applied to both reference and hypothesis before the word error rate):
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

Backchannel-length texts (<= `EXEMPT_MAX_WORDS` = 2 whitespace tokens, or nothing left after
normalisation, e.g. "Um, uh...") are exempt: on half a second of "yeah" or "mm-hmm" Whisper
hallucinates ("Thank you.", "you") often enough that checking them would only reject good audio.
Their result has `ok=True`, `wer=nan`, `reason="exempt: ..."`. The word error rate itself is jiwer's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jiwer
from num2words import num2words

from factory.config import TTSSection
from factory.models import Utterance
from factory.render.base import TTSError

EXEMPT_MAX_WORDS = 2
# One source of truth: the run config's default (`tts.qa_wer_threshold`).
DEFAULT_THRESHOLD: float = TTSSection.model_fields["qa_wer_threshold"].default

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


def number_words(n: int, ordinal: bool = False) -> str:
    """`n` in words as `normalize` compares them: num2words without its commas, hyphens and "and"
    ("one thousand nine hundred ninety five"), so both spellings of a number meet."""
    words = num2words(n, to="ordinal" if ordinal else "cardinal")
    return " ".join(w for w in re.split(r"[\s,\-]+", words) if w and w != "and")


def _numbers(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        whole, decimals, suffix = m.group(1).replace(",", ""), m.group(2), m.group(3)
        if len(whole) > _MAX_NUMBER_DIGITS:
            out = " ".join(number_words(int(d)) for d in whole)
        else:
            out = number_words(int(whole), ordinal=bool(suffix) and not decimals)
        if decimals:
            out += " point " + " ".join(number_words(int(d)) for d in decimals)
        return f" {out} "

    text = text.replace("%", " percent ")
    return re.sub(r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?:(st|nd|rd|th)\b)?", one, text)


def normalize(text: str) -> list[str]:
    """Words of `text` as compared by `wer` (see the module docstring)."""
    t = text.lower().replace("\u2019", "'").replace("\u2018", "'").replace("\u2014", " ").replace("\u2013", " ")
    t = _numbers(t)
    for pattern, repl in _BACKCHANNELS:
        t = pattern.sub(repl, t)
    t = re.sub(r"[^\w'\s-]", " ", t)  # drop punctuation, keep apostrophes and hyphens for now
    words: list[str] = []
    for raw in t.split():
        w = raw.strip("'")
        if w in _CONTRACTIONS:
            w = _CONTRACTIONS[w]
        else:
            for suffix, repl in _SUFFIXES:
                if w.endswith(suffix) and len(w) > len(suffix):
                    w = w[: -len(suffix)] + repl
                    break
        for part in re.split(r"[\s\-_]+", w):
            part = part.strip("'")
            if part and part not in FILLERS:
                words.append(part)
    return words


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate (jiwer) of `hypothesis` against `reference` after `normalize`. An empty
    reference gives 0.0 for an empty hypothesis and 1.0 otherwise."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(" ".join(ref), " ".join(hyp)))


@dataclass(frozen=True)
class QAResult:
    wer: float
    transcript: str
    ok: bool
    reason: str = ""


def is_exempt(text: str) -> bool:
    return len(text.split()) <= EXEMPT_MAX_WORDS or len(normalize(text)) == 0


def check_intelligibility(utt: Utterance, threshold: float = DEFAULT_THRESHOLD, language: str = "en") -> QAResult:
    """Transcribe `utt.audio` and compare it with `utt.text`. `ok` when WER <= threshold or the
    text is backchannel-length (exempt, not transcribed)."""
    if is_exempt(utt.text):
        return QAResult(
            wer=math.nan, transcript="", ok=True, reason=f"exempt: <= {EXEMPT_MAX_WORDS} words or fillers only"
        )
    from factory.render.asr import transcribe

    transcript = transcribe(utt.audio, utt.sample_rate, language=language).text
    score = wer(utt.text, transcript)
    if score <= threshold:
        return QAResult(wer=score, transcript=transcript, ok=True)
    return QAResult(
        wer=score,
        transcript=transcript,
        ok=False,
        reason=f"intelligibility: WER {score:.2f} > {threshold:.2f} (heard {transcript!r} for {utt.text!r})",
    )


def render_checked(
    render: Callable[[float], Utterance], text: str, threshold: float, rates: Sequence[float]
) -> tuple[Utterance, QAResult]:
    """Render with each rate in order until one passes QA; returns that utterance and its
    result. Raises `TTSError("intelligibility: WER x > threshold ...")` naming every attempt
    when none passes. Exempt texts are rendered once, at the first rate."""
    if not rates:
        raise ValueError("render_checked needs at least one rate")
    attempts: list[str] = []
    best: tuple[float, float] | None = None
    for rate in rates:
        utt = render(rate)
        if utt.text != text:
            raise TTSError(f"render returned text {utt.text!r}, expected {text!r}")
        result = check_intelligibility(utt, threshold)
        if result.ok:
            return utt, result
        attempts.append(f"rate {rate:g}: WER {result.wer:.2f} heard {result.transcript!r}")
        if best is None or result.wer < best[0]:
            best = (result.wer, rate)
    assert best is not None
    raise TTSError(
        f"intelligibility: WER {best[0]:.2f} > threshold {threshold:.2f} at every rate "
        f"for {text!r} ({'; '.join(attempts)})"
    )
