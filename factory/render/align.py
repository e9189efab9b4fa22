"""Word timings after synthesis, for TTS backends without a native alignment (XTTS, VITS on GPU).

`align_words(audio, sample_rate, text)` returns one `WordTiming` per whitespace token of `text`,
in order, monotonic, non-overlapping and inside the audio.

How:
1. Forced alignment with Whisper (audio <= 30 s, one window): the text itself, tokenised one
   whitespace token at a time (so every Whisper token belongs to a known token), is aligned to
   the encoder output through Whisper's cross-attention alignment heads + DTW
   (`ctranslate2.models.Whisper.align`, what faster-whisper's word timestamps use). No
   recognition errors can enter: the transcript *is* the text.
2. Longer audio: faster-whisper transcription with word timestamps, then a token-level
   alignment (difflib on normalised words) of recognised words to text tokens; runs of text
   tokens without a matching recognised word share the time of the recognised words between
   their matched neighbours in proportion to their character length.
3. Energy refinement (both routes): the first word starts at speech onset and the last ends at
   speech offset (5 ms RMS envelope, -40 dB re. peak: `speech_mask`, the TTS backends' detector); each
   word is shrunk to the speech inside its span, so pauses belong to no word.
Tokens that are punctuation only ("—", "...") get a zero-length span where they sit.

Accuracy against Piper's exact phoneme-duration alignments: benchmarks/alignment.py,
benchmarks/results/alignment.md.
"""

from __future__ import annotations

import difflib
import itertools
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from factory.asr import ASR_SAMPLE_RATE, load_model, normalize, to_16k, transcribe
from factory.audio.vad import moving_power
from factory.models import WordTiming
from factory.render.base import TTSError
from factory.render.text import place_words, speech_mask

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.tokenizer import Tokenizer

FORCED_MAX_SECONDS = 29.5
MAX_FORCED_TOKENS = 400  # Whisper's decoder holds 448 positions
# Boundary refinement, tuned on Piper renderings (benchmarks/alignment.py): Whisper's DTW
# boundaries come early; shift, then snap to the energy minimum in [-before, +after].
SHIFT = 0.04
SNAP_BEFORE = 0.06
SNAP_AFTER = 0.06
_LOCK = threading.Lock()
_TOKENIZERS: dict[str, Tokenizer] = {}


def _key(token: str) -> str:
    return "".join(normalize(token)) or re.sub(r"\W", "", token.lower())


def _speakable(token: str) -> bool:
    return re.search(r"\w", token) is not None


def _tokenizer(model: WhisperModel, language: str) -> Tokenizer:
    from faster_whisper.tokenizer import Tokenizer  # lazy: optional heavy dependency (Whisper)

    with _LOCK:
        tok = _TOKENIZERS.get(language)
        if tok is None:
            tok = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)
            _TOKENIZERS[language] = tok
        return tok


def forced_spans(
    pcm16k: np.ndarray, tokens: Sequence[str], language: str = "en", cpu_threads: int = 1
) -> list[tuple[float, float] | None]:
    """Whisper DTW alignment of `tokens` to 16 kHz audio (<= 30 s). None for unspeakable tokens."""
    from faster_whisper.audio import pad_or_trim  # lazy: optional heavy dependency (Whisper)

    model = load_model(cpu_threads)
    tokenizer = _tokenizer(model, language)
    ids: list[int] = []
    ranges: list[tuple[int, int] | None] = []
    for tok in tokens:
        if not _speakable(tok):
            ranges.append(None)
            continue
        piece = tokenizer.encode(" " + tok)
        ranges.append((len(ids), len(ids) + len(piece)))
        ids += piece
    if not ids:
        raise TTSError(f"nothing speakable to align in {' '.join(tokens)!r}")
    if len(ids) > MAX_FORCED_TOKENS:
        return matched_spans(pcm16k, tokens, language, cpu_threads)
    features = model.feature_extractor(pcm16k)
    num_frames = min(features.shape[-1], model.feature_extractor.nb_max_frames)
    encoder_output = model.encode(pad_or_trim(features[:, :num_frames]))
    result = model.model.align(encoder_output, tokenizer.sot_sequence, [ids], num_frames, median_filter_width=7)[0]
    pairs = np.array(result.alignments)
    text_idx, time_idx = pairs[:, 0], pairs[:, 1]
    jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
    jump_times = time_idx[jumps] / model.tokens_per_second
    out: list[tuple[float, float] | None] = []
    for r in ranges:
        if r is None:
            out.append(None)
        else:
            a, b = r
            out.append((float(jump_times[min(a, len(jump_times) - 1)]), float(jump_times[min(b, len(jump_times) - 1)])))
    return out


def matched_spans(
    pcm16k: np.ndarray, tokens: Sequence[str], language: str = "en", cpu_threads: int = 1
) -> list[tuple[float, float] | None]:
    """Spans from a transcription with word timestamps, matched to `tokens` (any length)."""
    duration = len(pcm16k) / ASR_SAMPLE_RATE
    asr = transcribe(pcm16k, ASR_SAMPLE_RATE, language, word_timestamps=True, cpu_threads=cpu_threads).words
    speak = [i for i, t in enumerate(tokens) if _speakable(t)]
    keys = [_key(tokens[i]) for i in speak]
    akeys = [_key(w.word) for w in asr]
    spans: dict[int, tuple[float, float]] = {}
    ops = difflib.SequenceMatcher(a=keys, b=akeys, autojunk=False).get_opcodes()
    # first matched pairs (exact, or 1:1 substitutions), then fill the rest between them
    pending: list[tuple[int, int, int, int]] = []
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for k in range(i2 - i1):
                w = asr[j1 + k]
                spans[k + i1] = (w.start, w.end)
        else:
            pending.append((i1, i2, j1, j2))
    for i1, i2, j1, j2 in pending:
        if i1 == i2:
            continue  # recognised words with no text token: ignore
        lo = spans[i1 - 1][1] if i1 > 0 else 0.0
        hi = spans[i2][0] if i2 in spans else duration
        if j2 > j1:  # recognised words in the gap: use their extent
            lo = max(lo, asr[j1].start)
            if asr[j2 - 1].end > lo:
                hi = min(hi, asr[j2 - 1].end)
        weights = [len(keys[i]) or 1 for i in range(i1, i2)]
        if hi - lo < 0.05 * (i2 - i1):  # no room: share the neighbours' time too
            a = i1 - 1 if i1 > 0 and (i1 - 1) in spans else i1
            b = i2 if i2 in spans else i2 - 1
            lo = spans[a][0] if a in spans else lo
            hi = spans[b][1] if b in spans else hi
            rng = range(a, b + 1)
            weights = [len(keys[i]) or 1 for i in rng]
        else:
            rng = range(i1, i2)
        edges = lo + (hi - lo) * np.concatenate([[0.0], np.cumsum(weights)]) / sum(weights)
        for k, i in enumerate(rng):
            spans[i] = (float(edges[k]), float(edges[k + 1]))
    out: list[tuple[float, float] | None] = [None] * len(tokens)
    for n, i in enumerate(speak):
        out[i] = spans.get(n, (0.0, 0.0))
    return out


def _envelope(audio: np.ndarray, sample_rate: int, hop: float = 0.005) -> tuple[np.ndarray, float]:
    """Log-energy envelope (dB) on a `hop` grid, 20 ms windows (the mean of what lies inside the
    audio at its ends, so an edge does not look like a pause)."""
    h = max(1, int(hop * sample_rate))
    energy = moving_power(audio, 4 * h, hop=h, edges="inside")
    return 10 * np.log10(energy + 1e-10), h / sample_rate


def snap_boundaries(
    spans: list[tuple[float, float] | None],
    audio: np.ndarray,
    sample_rate: int,
    shift: float,
    before: float,
    after: float,
) -> list[tuple[float, float] | None]:
    """Move each boundary between two adjacent words (Whisper gives one time for both) by
    `shift`, then to the energy minimum within [-before, +after] of it."""
    env, hop = _envelope(audio, sample_rate)
    idx = [i for i, s in enumerate(spans) if s is not None]
    out = list(spans)
    for a, b in itertools.pairwise(idx):
        left, right = out[a], out[b]
        assert left is not None and right is not None  # idx holds only the spoken spans
        t = (left[1] + right[0]) / 2 + shift
        if before > 0 or after > 0:
            f0, f1 = max(0, int((t - before) / hop)), min(len(env), int((t + after) / hop) + 1)
            if f1 > f0:
                t = (f0 + int(np.argmin(env[f0:f1]))) * hop
        out[a] = (left[0], t)
        out[b] = (t, right[1])
    return out


def refine(
    spans: Sequence[tuple[float, float] | None],
    tokens: Sequence[str],
    audio: np.ndarray,
    sample_rate: int,
    shift: float = SHIFT,
    before: float = SNAP_BEFORE,
    after: float = SNAP_AFTER,
) -> list[WordTiming]:
    """Snap inner boundaries to energy minima, pin the outer edges to speech, make spans
    monotonic and inside the speech, and shrink each word to the speech inside it."""
    mask = speech_mask(np.asarray(audio, dtype=np.float32), sample_rate)
    active = np.flatnonzero(mask)
    speech_on, speech_off = active[0] / sample_rate, (active[-1] + 1) / sample_rate
    spoken = [i for i, s in enumerate(spans) if s is not None]
    if not spoken:
        raise TTSError(f"nothing speakable to align in {' '.join(tokens)!r}")
    spans = snap_boundaries(list(spans), audio, sample_rate, shift, before, after)
    first, last = spoken[0], spoken[-1]
    head = spans[first]
    assert head is not None  # first and last are spoken
    spans[first] = (speech_on, head[1])
    tail = spans[last]  # read after the line above: first may be last
    assert tail is not None
    spans[last] = (min(tail[0], speech_off), speech_off)
    return place_words(tokens, spans, mask, speech_on, speech_off, sample_rate)


def align_words(
    audio: np.ndarray,
    sample_rate: int,
    text: str,
    language: str = "en",
    *,
    method: str = "auto",
    cpu_threads: int = 1,
    shift: float = SHIFT,
    before: float = SNAP_BEFORE,
    after: float = SNAP_AFTER,
) -> list[WordTiming]:
    """One WordTiming per `text.split()` token (`words[i].word == text.split()[i]`), times in
    seconds from the start of `audio`. `method`: "forced" (Whisper DTW on the text, <= 30 s),
    "asr" (transcribe + match), or "auto" (forced when the audio fits one window)."""
    tokens = text.split()
    if not tokens:
        raise TTSError("cannot align empty text")
    audio = np.asarray(audio, dtype=np.float32).ravel()
    if audio.size == 0:
        raise TTSError("cannot align empty audio")
    pcm = to_16k(audio, sample_rate)
    duration = len(pcm) / ASR_SAMPLE_RATE
    if method == "auto":
        method = "forced" if duration <= FORCED_MAX_SECONDS else "asr"
    if method == "forced":
        if duration > 30.0:
            raise TTSError(f"forced alignment takes <= 30 s of audio, got {duration:.1f} s")
        spans = forced_spans(pcm, tokens, language, cpu_threads)
    elif method == "asr":
        spans = matched_spans(pcm, tokens, language, cpu_threads)
    else:
        raise ValueError(f"unknown alignment method {method!r}")
    return refine(spans, tokens, audio, sample_rate, shift, before, after)
