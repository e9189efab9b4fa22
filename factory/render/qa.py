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

from factory.asr import EXEMPT_MAX_WORDS, is_exempt, wer
from factory.config import TTSSection
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
    """Transcribe `utt.audio` and compare it with `utt.text`. `ok` when WER <= threshold or the
    text is backchannel-length (exempt, not transcribed)."""
    if is_exempt(utt.text):
        return QAResult(
            wer=math.nan, transcript="", ok=True, reason=f"exempt: <= {EXEMPT_MAX_WORDS} words or fillers only"
        )
    from factory.asr import transcribe

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
