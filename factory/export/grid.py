"""Timeline -> frame grid. Times come from the timeline; frames follow `factory.timeline.frames`
(the 100 Hz FrameView): frame i covers [i / rate, (i + 1) / rate), and an instant t falls on the
first frame whose centre is at or after t (`frame_of`), so an edge moves by at most half a frame."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from factory.export.errors import ExportError
from factory.export.report import RuleCounter
from factory.models import Channel, Sample, Timeline
from factory.timeline.frames import n_frames as frames_covering
from factory.tokenize import AudioTokenizer


def samples_per_frame(sample_rate: int, frame_rate: float, counter: RuleCounter | None = None) -> int:
    """Whole samples per frame, or the `frame_rate_not_dividing_sample_rate` error."""
    spf = sample_rate / frame_rate
    if abs(spf - round(spf)) > 1e-9:
        if counter is not None:
            counter.add("frame_rate_not_dividing_sample_rate")
        raise ExportError(
            f"frame rate {frame_rate} Hz does not divide the sample rate {sample_rate} Hz "
            f"({spf:.3f} samples per frame); pick a frame rate with whole samples per frame "
            f"(e.g. 12.5, 25 or 50 Hz) or resample the run (rule frame_rate_not_dividing_sample_rate)"
        )
    return round(spf)


def frame_of(t: float, rate: float) -> int:
    """The frame an instant falls on: the first frame whose centre is at or after `t` (the
    FrameView's convention, `factory.timeline.frames`)."""
    return max(math.ceil(round(t * rate - 0.5, 6)), 0)


def n_frames(timeline: Timeline, rate: float) -> int:
    return frames_covering(timeline.duration, rate)


@dataclass
class PlacedWord:
    """A word's tokens on the frame grid: `tokens[k]` sits in frame `first + k`."""

    index: int  # into timeline.words
    first: int
    tokens: list[int]
    shifted: bool = False


def place_words(
    words: Sequence[tuple[int, float, float, list[int]]],
    rate: float,
    n: int,
    duration: float,
    counter: RuleCounter,
    tokens_per_frame: int = 1,
) -> list[PlacedWord]:
    """Place each (word index, start, end, tokens) on a grid of `n` frames at `rate`, one token
    per frame (or `tokens_per_frame`), first token at `frame_of(start)`, in time order. Applies
    and counts word_past_end (drop), word_end_clipped, word_overlaps_previous_tokens (shift)
    and tokens_past_end (drop)."""
    placed: list[PlacedWord] = []
    free = 0  # first slot not yet taken, in token slots
    for index, start, end, tokens in sorted(words, key=lambda w: (w[1], w[0])):
        if start >= duration:
            counter.add("word_past_end")
            continue
        if end > duration:
            counter.add("word_end_clipped")
        slot = frame_of(start, rate) * tokens_per_frame
        shifted = slot < free
        if shifted:
            counter.add("word_overlaps_previous_tokens")
            slot = free
        room = n * tokens_per_frame - slot
        kept = tokens[: max(room, 0)]
        if len(kept) < len(tokens):
            counter.add("tokens_past_end", len(tokens) - len(kept))
        if not kept:
            continue
        placed.append(PlacedWord(index=index, first=slot, tokens=list(kept), shifted=shifted))
        free = slot + len(kept)
    return placed


def fit_frames(tokens: np.ndarray, n: int, counter: RuleCounter) -> np.ndarray:
    """[n_q, T] -> [n_q, n]: trim, or repeat the last frame (rule audio_frames_adjusted)."""
    tokens = np.asarray(tokens, np.int64)
    if tokens.ndim == 1:
        tokens = tokens[None]
    t = tokens.shape[1]
    if t == n:
        return tokens
    counter.add("audio_frames_adjusted")
    if t > n:
        return tokens[:, :n]
    last = tokens[:, -1:] if t else np.zeros((tokens.shape[0], 1), np.int64)
    return np.concatenate([tokens, np.repeat(last, n - t, axis=1)], axis=1)


def channel_audio(sample: Sample, channel: Channel, augmented: bool = False) -> np.ndarray:
    audio = sample.augmented if augmented and sample.augmented is not None else sample.stems
    return np.ascontiguousarray(audio[:, channel.index], dtype=np.float32)


def silence_tokens(tokenizer: AudioTokenizer, sr: int, n: int = 1) -> np.ndarray:
    """[n_q, n] tokens of digital silence: what pads a channel past the end of its audio."""
    frame = round(sr / tokenizer.frame_rate)
    codes = np.asarray(tokenizer.encode(np.zeros(frame * (n + 2), np.float32), sr), np.int64)
    return codes[:, 1 : n + 1] if codes.shape[1] >= n + 2 else np.repeat(codes[:, :1], n, axis=1)
