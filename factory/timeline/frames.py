"""The frame view: a timeline on a fixed 100 Hz grid, as arrays a trainer can index directly.

10 ms divides every grid the target models use (12.5, 25 and 50 Hz frames, 160 ms chunks, 0.8 s
blocks, 1 s units), so one 100 Hz view serves them all through `resample`. The view is derived,
never stored: the timeline stays the single source of truth.

Frame i covers [i / rate, (i + 1) / rate). A span [start, end) marks the frames whose centre it
covers, so two spans that touch never share a frame and an edge moves by at most half a frame
(a span shorter than a frame still marks the one frame it starts in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from factory.models import (
    BargeInEvent,
    Channel,
    IgnoredEvent,
    NonSpeechEvent,
    OverlapEvent,
    Timeline,
)

FRAME_RATE = 100.0


class AgentState(IntEnum):
    """What a duplex agent should be doing in a frame: the control target of its channel."""

    listen = 0
    speak = 1  # the agent holds a turn (or says a backchannel / laugh)
    must_stop = 2  # the user has barged in and the agent has not stopped yet


@dataclass(frozen=True)
class FrameView:
    """Per-frame labels of one dialogue. Arrays with a leading 2 are per channel (0 = user,
    1 = agent, as in the audio); index arrays hold -1 where nothing is there."""

    rate: float  # frames per second
    activity: np.ndarray  # (2, n) bool: the channel is inside a spoken word
    word: np.ndarray  # (2, n) int32: index into timeline.words of that word
    turn: np.ndarray  # (2, n) int32: id of the turn the channel holds (pauses inside a turn included)
    overlap: np.ndarray  # (n,) bool: both channels hold a turn (the timeline's overlap events)
    barge_in_onset: np.ndarray  # (2, n) bool: the channel starts a barge-in in this frame
    agent_state: np.ndarray  # (n,) int8 AgentState
    # (n,) bool: sound on the user's channel the agent must not answer (side talk, background
    # speech, non-speech): not a turn, not activity; the agent keeps its state through it
    ignore: np.ndarray

    @property
    def n_frames(self) -> int:
        return self.overlap.shape[0]


def n_frames(duration: float, rate: float = FRAME_RATE) -> int:
    """Frames covering `duration` seconds, the last one possibly partial (as frame_activity counts)."""
    return math.ceil(round(duration * rate, 6))


def _first_frame(t: float, rate: float) -> int:
    """The first frame whose centre is at or after `t`."""
    return math.ceil(round(t * rate - 0.5, 6))


def _frames(start: float, end: float, rate: float, n: int) -> slice:
    first = _first_frame(start, rate)
    last = max(_first_frame(end, rate), first + 1) if end > start else first
    return slice(max(first, 0), min(last, n))


def frame_view(timeline: Timeline, rate: float = FRAME_RATE) -> FrameView:
    """The view of `timeline`, built at 100 Hz (then `resample`d to `rate`): voice activity and
    word index from the spoken words, turn index from the turns, overlap and barge-in onsets from
    the events, and the agent's control state (speak while it holds a turn, must-stop from a
    user's barge-in onset to the agent's stop), and the ignore spans from the side-talk,
    background-speech and non-speech events."""
    if rate != FRAME_RATE:
        return resample(frame_view(timeline), rate)
    n = n_frames(timeline.duration, rate)
    word = np.full((2, n), -1, np.int32)
    turn = np.full((2, n), -1, np.int32)
    overlap = np.zeros(n, bool)
    onset = np.zeros((2, n), bool)
    ignore = np.zeros(n, bool)
    for i, w in enumerate(timeline.words):
        if w.spoken:
            word[w.channel.index, _frames(w.start, w.end, rate, n)] = i
    for t in timeline.turns:
        turn[t.channel.index, _frames(t.start, t.end, rate, n)] = t.id
    agent_state = np.where(turn[Channel.agent.index] >= 0, AgentState.speak, AgentState.listen).astype(np.int8)
    for e in timeline.events:
        if isinstance(e, OverlapEvent):
            overlap[_frames(e.start, e.end, rate, n)] = True
        elif isinstance(e, BargeInEvent):
            onset[e.by.index, min(_first_frame(e.onset, rate), n - 1)] = True
            if e.by is Channel.user:
                agent_state[_frames(e.onset, e.victim_stop, rate, n)] = AgentState.must_stop
        elif isinstance(e, IgnoredEvent):
            ignore[_frames(e.start, e.end, rate, n)] = True
    return FrameView(
        rate=rate,
        activity=word >= 0,
        word=word,
        turn=turn,
        overlap=overlap,
        barge_in_onset=onset,
        agent_state=agent_state,
        ignore=ignore,
    )


def ignore_spans(timeline: Timeline) -> list[dict[str, object]]:
    """The events the agent must not answer as plain spans, for exporters that carry them beside
    their states: `{"type", "start", "end", "channel", "text"}` (text: the words, or `[cough]`)."""
    return [
        {
            "type": e.type,
            "start": round(e.start, 6),
            "end": round(e.end, 6),
            "channel": e.channel.value,
            "text": e.text if not isinstance(e, NonSpeechEvent) else f"[{e.sound}]",
        }
        for e in timeline.ignored_events()
    ]


def _blocks(x: np.ndarray, factor: int, fill: int | bool) -> np.ndarray:
    """(..., n) -> (..., ceil(n / factor), factor), the last block padded with `fill`."""
    n_out = math.ceil(x.shape[-1] / factor)
    padded = np.full((*x.shape[:-1], n_out * factor), fill, x.dtype)
    padded[..., : x.shape[-1]] = x
    return padded.reshape(*x.shape[:-1], n_out, factor)


def _held(blocks: np.ndarray) -> np.ndarray:
    """A state holds in a block when it covers at least half of it (ties count as held)."""
    return blocks.mean(-1) >= 0.5


def _index_of_blocks(blocks: np.ndarray) -> np.ndarray:
    """The index covering most of each block (ties: the earlier), where indices hold the block; else -1."""
    same = blocks[..., :, None] == blocks[..., None, :]
    counts = np.where(blocks >= 0, same.sum(-1), 0)
    best = np.take_along_axis(blocks, counts.argmax(-1)[..., None], -1)[..., 0]
    return np.where(_held(blocks >= 0), best, -1).astype(blocks.dtype)


def resample(view: FrameView, rate: float) -> FrameView:
    """The view at a coarser `rate` whose frame is a whole number of 10 ms frames (12.5, 25,
    50 Hz...). States (activity, word, turn, overlap, speak) take what covers most of a block, so
    edges stay unbiased; a barge-in onset or a must-stop anywhere in a block marks the block,
    because a model must not miss a signal to act on."""
    factor = view.rate / rate if rate > 0 else 0.0
    if factor < 1 or abs(factor - round(factor)) > 1e-9:
        raise ValueError(f"frame rate {rate} Hz is not {view.rate} Hz / a whole number (e.g. 50, 25, 12.5)")
    factor = round(factor)
    if factor == 1:
        return view
    state = _blocks(view.agent_state, factor, AgentState.listen)
    agent_state = np.where(
        (state == AgentState.must_stop).any(-1),
        AgentState.must_stop,
        np.where(_held(state != AgentState.listen), AgentState.speak, AgentState.listen),
    ).astype(np.int8)
    word = _index_of_blocks(_blocks(view.word, factor, -1))
    return FrameView(
        rate=rate,
        activity=word >= 0,
        word=word,
        turn=_index_of_blocks(_blocks(view.turn, factor, -1)),
        overlap=_held(_blocks(view.overlap, factor, False)),
        barge_in_onset=np.any(_blocks(view.barge_in_onset, factor, False), axis=-1),
        agent_state=agent_state,
        ignore=_held(_blocks(view.ignore, factor, False)),
    )
