"""Intelligibility QA: transcribe a rendered utterance with Whisper and compare it with the text.

Transcription and scoring (Whisper, the text normalisation, WER, the exemption of
backchannel-length texts) live in `factory.asr`, shared with the audit stage.

Backchannel-length texts (<= `EXEMPT_MAX_WORDS` = 2 whitespace tokens, or nothing left after
normalisation, e.g. "Um, uh...") are exempt: on half a second of "yeah" or "mm-hmm" Whisper
hallucinates ("Thank you.", "you") often enough that checking them would only reject good audio.
Their result has `ok=True`, `wer=nan`, `reason="exempt: ..."`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from factory.asr import ASR_SAMPLE_RATE, EXEMPT_MAX_WORDS, error_rate, is_exempt, to_16k, transcribe
from factory.config import TTSSection
from factory.languages import join, qa_metric
from factory.models import Utterance
from factory.render.base import TTSError

# One source of truth: the run config's default (`tts.qa_wer_threshold`).
DEFAULT_THRESHOLD: float = TTSSection.model_fields["qa_wer_threshold"].default


@dataclass(frozen=True)
class QAResult:
    wer: float
    transcript: str
    ok: bool
    reason: str = ""


def check_intelligibility(utt: Utterance, threshold: float = DEFAULT_THRESHOLD, language: str = "en") -> QAResult:
    """Transcribe `utt.audio` in `language` and compare it with `utt.text`. `ok` when the error rate
    (`asr.error_rate`: WER, or CER where words are not space-separated) <= threshold or the text is
    backchannel-length (exempt, not transcribed)."""
    if is_exempt(utt.text, language):
        return QAResult(
            wer=math.nan, transcript="", ok=True, reason=f"exempt: <= {EXEMPT_MAX_WORDS} words or fillers only"
        )
    heard = transcribe(utt.audio, utt.sample_rate, language=language).text
    return _scored(utt.text, heard, threshold, language)


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


# Silence between utterances in one channel pass: wide enough that Whisper's word times (off by
# up to ~0.2 s) still fall on the right side of the midpoint that separates two utterances.
CHANNEL_GAP_S = 1.0


def check_together(
    utts: Sequence[Utterance], threshold: float = DEFAULT_THRESHOLD, language: str = "en"
) -> list[QAResult]:
    """`check_intelligibility` for several utterances (one speaker's turns) in ONE Whisper pass:
    the non-exempt ones are joined with `CHANNEL_GAP_S` of silence and transcribed with word
    timestamps, and each word goes to the utterance whose stretch (gap midpoints as bounds)
    holds the word's midpoint. Whisper encodes 30 s windows whatever the clip length, so one
    pass over a channel costs a few windows instead of one window per turn. The result depends
    only on `utts` (not on what else is being checked), which keeps batched and one-at-a-time
    runs byte-identical."""
    results: list[QAResult | None] = [None] * len(utts)
    checked = [i for i, u in enumerate(utts) if not is_exempt(u.text, language)]
    for i, u in enumerate(utts):
        if i not in checked:
            results[i] = check_intelligibility(u, threshold, language)
    if checked:
        gap = np.zeros(int(CHANNEL_GAP_S * ASR_SAMPLE_RATE), dtype=np.float32)
        parts, bounds, t = [], [], 0.0
        for i in checked:
            pcm = to_16k(utts[i].audio, utts[i].sample_rate)
            parts += [pcm, gap]
            bounds.append((t, t + len(pcm) / ASR_SAMPLE_RATE))
            t += (len(pcm) + len(gap)) / ASR_SAMPLE_RATE
        words = transcribe(np.concatenate(parts), ASR_SAMPLE_RATE, language, word_timestamps=True).words
        # utterance k owns [midpoint of the gap before it, midpoint of the gap after it)
        cuts = np.array([end + CHANNEL_GAP_S / 2 for _, end in bounds[:-1]])
        heard: list[list[str]] = [[] for _ in checked]
        for w in words:
            heard[int(np.searchsorted(cuts, (w.start + w.end) / 2, side="right"))].append(w.word)
        for k, i in enumerate(checked):
            results[i] = _scored(utts[i].text, join(heard[k], language), threshold, language)
    return [r for r in results if r is not None]


def _scored(text: str, transcript: str, threshold: float, language: str = "en") -> QAResult:
    score = error_rate(text, transcript, language)
    if score <= threshold:
        return QAResult(wer=score, transcript=transcript, ok=True)
    return QAResult(
        wer=score,
        transcript=transcript,
        ok=False,
        reason=f"intelligibility: {_metric(language)} {score:.2f} > {threshold:.2f} "
        f"(heard {transcript!r} for {text!r})",
    )


def _metric(language: str) -> str:
    return qa_metric(language)
