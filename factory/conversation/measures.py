"""Turn-taking measures of a two-party conversation from per-channel voice activity, as Heldner &
Edlund (2010) define them (see `/work/shared/reference/conversation.md`), so the factory's audio
can be set against the human numbers measured the same way (Switchboard: 10 ms frame states,
180 ms bridge).

The input is one bool per 10 ms frame per channel (from `factory.audio.vad`; the audit's
`measure_stereo` goes from stereo audio to these measures). Steps:

1. Each channel's silences shorter than `bridge_s` (180 ms) between two stretches of speech are
   bridged; the runs that remain are the speaker's IPUs (inter-pausal units).
2. Every frame gets a state: none, A only, B only, both.
3. Runs of silence (none) and of overlap (both) are classed by the single-speaker states right
   next to them: silence between different speakers is a **gap**, between the same speaker a
   **pause**; overlap between different speakers is a **between-overlap** (the floor changes in
   overlap), with the same speaker on both sides a **within-overlap** (a backchannel or a failed
   interruption). A run with "both", "none" or the edge of the recording on a side is left
   unclassed, as in H&E.
4. Floor-transfer offsets (FTO): +gap duration, -between-overlap duration, in time order.

Durations are whole frames times `frame_s`, so a measure on constructed activity comes out exactly
as constructed (to the frame). Everything here is a pure function of the arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

FRAME_S = 0.010
BRIDGE_S = 0.180  # silences shorter than this inside one speaker's speech are bridged (H&E)
FTO_QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)
BACKCHANNEL_MAX_S = 1.0  # a backchannel-like IPU is at most this long (Switchboard tokens ~0.4 s)
BACKCHANNEL_CONTEXT_S = 1.0  # ... and the partner speaks within this much before and after it


class State(IntEnum):
    """A frame's state: bit 0 = speaker A (channel 0) speaks, bit 1 = speaker B (channel 1)."""

    none = 0
    a = 1
    b = 2
    both = 3


@dataclass(frozen=True)
class Segment:
    """One classed run of silence or overlap: [start, end) in seconds, with the speaker (0 or 1)
    holding the single-speaker state before and after it."""

    kind: str  # "gap" | "pause" | "between_overlap" | "within_overlap"
    start: float
    end: float
    before: int
    after: int

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class ConversationMeasures:
    """The measures of one conversation. Lists hold one duration (seconds) per event, in time order."""

    frame_s: float
    duration: float  # seconds covered by the frames
    speech_s: float  # seconds where anyone speaks (after bridging)
    both_s: float  # seconds where both speak
    ipus: tuple[list[tuple[float, float]], list[tuple[float, float]]]  # per speaker: (start, end)
    segments: list[Segment] = field(default_factory=list)
    fto: list[float] = field(default_factory=list)  # +gap / -between-overlap, in time order
    backchannels: list[tuple[int, float, float]] = field(default_factory=list)  # (speaker, start, end)

    def _of(self, kind: str) -> list[float]:
        return [s.duration for s in self.segments if s.kind == kind]

    @property
    def gaps(self) -> list[float]:
        return self._of("gap")

    @property
    def pauses(self) -> list[float]:
        """Within-speaker pauses: joint silences with the same speaker on both sides."""
        return self._of("pause")

    @property
    def between_overlaps(self) -> list[float]:
        return self._of("between_overlap")

    @property
    def within_overlaps(self) -> list[float]:
        return self._of("within_overlap")

    @property
    def ipu_durations(self) -> list[float]:
        return sorted(e - s for ipus in self.ipus for s, e in ipus)

    @property
    def overlap_share(self) -> float:
        """Frames where both speak / frames where anyone speaks."""
        return self.both_s / self.speech_s if self.speech_s else float("nan")

    @property
    def transitions_in_overlap(self) -> float:
        """Share of floor transfers made in overlap (between-overlaps / (gaps + between-overlaps))."""
        return float(np.mean(np.asarray(self.fto) < 0)) if self.fto else float("nan")

    @property
    def fto_within_500ms(self) -> float:
        return float(np.mean(np.abs(self.fto) <= 0.5 + 1e-9)) if self.fto else float("nan")

    @property
    def backchannels_per_minute(self) -> float:
        return len(self.backchannels) / (self.duration / 60) if self.duration else float("nan")

    def fto_quantiles(self, qs: tuple[float, ...] = FTO_QUANTILES) -> dict[float, float]:
        if not self.fto:
            return {q: float("nan") for q in qs}
        return dict(zip(qs, np.quantile(self.fto, qs).tolist()))

    def summary(self) -> dict[str, float]:
        """Flat scalar measures (a table row). Medians of empty lists are NaN, counts are 0."""
        out: dict[str, float] = {
            "duration_s": self.duration,
            "overlap_share": self.overlap_share,
            "n_transitions": float(len(self.fto)),
            "transitions_in_overlap": self.transitions_in_overlap,
            "fto_within_500ms": self.fto_within_500ms,
            "fto_mean_s": float(np.mean(self.fto)) if self.fto else float("nan"),
        }
        for q, v in self.fto_quantiles().items():
            out[f"fto_p{round(q * 100):02d}_s"] = v
        for name, values in (
            ("gap", self.gaps),
            ("pause", self.pauses),
            ("between_overlap", self.between_overlaps),
            ("within_overlap", self.within_overlaps),
            ("ipu", self.ipu_durations),
        ):
            out[f"n_{name}s"] = float(len(values))
            out[f"{name}_median_s"] = float(np.median(values)) if values else float("nan")
        out["ipu_mean_s"] = float(np.mean(self.ipu_durations)) if self.ipu_durations else float("nan")
        out["backchannels_per_minute"] = self.backchannels_per_minute
        return out


def bridge(active: np.ndarray, bridge_frames: int) -> np.ndarray:
    """Fill silences shorter than `bridge_frames` frames that lie between two runs of speech
    (leading and trailing silence stay)."""
    out = np.asarray(active, bool).copy()
    if bridge_frames <= 1 or not out.any():
        return out
    for start, end in _runs(~out):
        if start > 0 and end < len(out) and end - start < bridge_frames:
            out[start:end] = True
    return out


def frame_states(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame `State` (int8) of two activity arrays; the shorter one counts as silent past its end."""
    a, b = _same_length(a, b)
    return (a.astype(np.int8) | (b.astype(np.int8) << 1)).astype(np.int8)


def classify_segments(states: np.ndarray, frame_s: float = FRAME_S) -> list[Segment]:
    """Gaps, pauses, between- and within-overlaps of a state sequence (see the module docstring)."""
    states = np.asarray(states)
    runs = _state_runs(states)
    segments = []
    for i, (state, start, end) in enumerate(runs):
        if state not in (State.none, State.both) or i == 0 or i == len(runs) - 1:
            continue
        before, after = runs[i - 1][0], runs[i + 1][0]
        if before not in (State.a, State.b) or after not in (State.a, State.b):
            continue
        same = before == after
        if state == State.none:
            kind = "pause" if same else "gap"
        else:
            kind = "within_overlap" if same else "between_overlap"
        segments.append(Segment(kind, start * frame_s, end * frame_s, int(before) - 1, int(after) - 1))
    return segments


def ipus(active: np.ndarray, frame_s: float = FRAME_S) -> list[tuple[float, float]]:
    """(start, end) seconds of each run of (already bridged) speech."""
    return [(s * frame_s, e * frame_s) for s, e in _runs(np.asarray(active, bool))]


def backchannel_ipus(
    a: np.ndarray,
    b: np.ndarray,
    frame_s: float = FRAME_S,
    max_s: float = BACKCHANNEL_MAX_S,
    context_s: float = BACKCHANNEL_CONTEXT_S,
) -> list[tuple[int, float, float]]:
    """Backchannel-like IPUs (speaker, start, end): short (<= `max_s`) and not taking the floor,
    i.e. the partner speaks within `context_s` before the IPU starts (or during it) and again
    within `context_s` after it ends (or during it). Takes bridged activity."""
    a, b = _same_length(a, b)
    channels = (a, b)
    context = round(context_s / frame_s)
    out = []
    for speaker in (0, 1):
        partner = channels[1 - speaker]
        for s, e in _runs(channels[speaker]):
            if (e - s) * frame_s > max_s + 1e-9:
                continue
            before = partner[max(0, s - context) : e].any()
            after = partner[s : min(len(partner), e + context)].any()
            if before and after:
                out.append((speaker, s * frame_s, e * frame_s))
    return sorted(out, key=lambda x: (x[1], x[0]))


def measure(
    a: np.ndarray,
    b: np.ndarray,
    frame_s: float = FRAME_S,
    bridge_s: float = BRIDGE_S,
    backchannel_max_s: float = BACKCHANNEL_MAX_S,
    backchannel_context_s: float = BACKCHANNEL_CONTEXT_S,
) -> ConversationMeasures:
    """All measures of one conversation from raw per-channel activity (bool per frame)."""
    a, b = _same_length(a, b)
    frames = round(bridge_s / frame_s)
    a, b = bridge(a, frames), bridge(b, frames)
    states = frame_states(a, b)
    segments = classify_segments(states, frame_s)
    fto = [s.duration if s.kind == "gap" else -s.duration for s in segments if s.kind in ("gap", "between_overlap")]
    return ConversationMeasures(
        frame_s=frame_s,
        duration=len(states) * frame_s,
        speech_s=float((states != State.none).sum()) * frame_s,
        both_s=float((states == State.both).sum()) * frame_s,
        ipus=(ipus(a, frame_s), ipus(b, frame_s)),
        segments=segments,
        fto=fto,
        backchannels=backchannel_ipus(a, b, frame_s, backchannel_max_s, backchannel_context_s),
    )


def _same_length(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, bool).ravel(), np.asarray(b, bool).ravel()
    n = max(len(a), len(b))
    return np.pad(a, (0, n - len(a))), np.pad(b, (0, n - len(b)))


def _runs(active: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame indices of each run of True."""
    edges = np.diff(np.concatenate([[0], np.asarray(active, np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _state_runs(states: np.ndarray) -> list[tuple[int, int, int]]:
    """(state, start, end) of each run of equal states."""
    if not len(states):
        return []
    change = np.flatnonzero(np.diff(states)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(states)]])
    return [(int(states[s]), int(s), int(e)) for s, e in zip(starts, ends)]
