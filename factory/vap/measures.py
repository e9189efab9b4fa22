"""VAP targets, turn-taking events and their scores, numpy only (Ekstedt & Skantze 2022, "Voice
Activity Projection: Self-supervised Learning of Turn-taking Events", Interspeech).

Simplification of VAP's projection: instead of one of 256 classes (4 binary bins per channel),
each of the 8 bins (2 channels x 4 bins of 0.24, 0.40, 0.56, 0.80 s over the next 2 s, on the
80 ms grid) is predicted on its own as the share of the bin that channel is active: the same
future window, 8 independent sigmoids.

Events, from the run's voice activity (channel states: none, one, both), each scored by one number
from the model's projection, the decision threshold chosen on the train split's events and applied
to the held-out split (balanced accuracy; a constant guess such as the majority class scores 0.5):

- `shift_hold`: at a mutual silence (>= 0.16 s) between one speaker alone and one speaker alone:
  shift (the other speaks next) or hold. Score over its first 0.24 s: the other's projected
  activity minus the last speaker's.
- `shift_prediction`: in the 0.48 s before a turn end followed by a shift (positive), against
  0.48 s of one speaker alone with the other silent for the 2 s after (negative). Same score.
- `backchannel_prediction`: in the 0.48 s before a listener's short IPU (<= 1 s) begins inside the
  speaker's speech, the speaker going on after it (positive), against the same negatives. Score:
  the listener's projected activity over the next 0.64 s.
- `barge_in_stop`: 0.08-0.24 s after the listener starts speaking over the speaker: the speaker
  stops within 1.04 s, stays silent for 1.04 s, the newcomer holding the floor (positive), or the
  speaker goes on (active in most of the next 1.52 s and at its end: negative). Score: minus the
  speaker's projected activity 0.64-2 s ahead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODEL_RATE = 12.5  # Hz: the model's grid; every export rate that is a whole multiple of it is grouped onto it
BIN_FRAMES = (3, 5, 7, 10)  # 80 ms frames: 0.24 + 0.40 + 0.56 + 0.80 = 2.0 s
HORIZON = sum(BIN_FRAMES)
WINDOW = 6  # frames before an event (0.48 s)
MIN_SILENCE = 2  # frames (0.16 s)
SHORT_IPU = 12  # frames (0.96 s): a listener's IPU this short is a backchannel
STOP_WITHIN = 13  # frames (1.04 s)
GOES_ON = 19  # frames (1.52 s)
MEASURES = ("shift_hold", "shift_prediction", "backchannel_prediction", "barge_in_stop")
NONE, USER, AGENT, BOTH = 0, 1, 2, 3


def targets(activity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 2, 4) share of each future bin each channel is active, and the (T,) mask of frames
    whose whole 2 s horizon lies inside the dialogue."""
    a = activity.astype(np.float32)
    n = a.shape[1]
    cum = np.concatenate([np.zeros((2, 1), np.float32), np.cumsum(a, axis=1)], axis=1)
    out = np.zeros((n, 2, len(BIN_FRAMES)), np.float32)
    t = np.arange(n)
    start = 1
    for b, width in enumerate(BIN_FRAMES):
        lo, hi = np.minimum(t + start, n), np.minimum(t + start + width, n)
        out[:, :, b] = ((cum[:, hi] - cum[:, lo]) / width).T
        start += width
    return out, t + HORIZON < n


def states(activity: np.ndarray) -> np.ndarray:
    return activity[0].astype(np.int8) * USER + activity[1].astype(np.int8) * AGENT


def _runs(x: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    d = np.diff(np.concatenate([[0], x.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


@dataclass(frozen=True)
class Event:
    measure: str
    frames: tuple[int, ...]  # the frames whose projections are scored
    speaker: int  # channel index of the speaker (the last speaker, for shift_hold)
    label: bool


def _alone(st: np.ndarray, lo: int, hi: int, ch: int) -> bool:
    return 0 <= lo < hi <= len(st) and bool((st[lo:hi] == (USER, AGENT)[ch]).all())


def events(activity: np.ndarray) -> list[Event]:
    """Every scorable event of one dialogue (frames whose 2 s horizon is inside the dialogue)."""
    st = states(activity)
    n = len(st)
    out: list[Event] = []
    solo = {USER: 0, AGENT: 1}
    for s, e in _runs(st == NONE):
        if s == 0 or e >= n or e - s < MIN_SILENCE or st[s - 1] not in solo or st[e] not in solo:
            continue
        prev, nxt = solo[int(st[s - 1])], solo[int(st[e])]
        frames = tuple(range(s, min(s + 3, e)))
        if frames[-1] + HORIZON < n:
            out.append(Event("shift_hold", frames, prev, nxt != prev))
        if nxt != prev and _alone(st, s - WINDOW, s, prev) and s - 1 + HORIZON < n:
            out.append(Event("shift_prediction", tuple(range(s - WINDOW, s)), prev, True))
    for ch in (0, 1):
        other = 1 - ch
        # negatives of both predictions: the speaker alone for 0.48 s, the other silent for the 2 s after
        quiet = np.convolve(~activity[other], np.ones(HORIZON, int), "valid") == HORIZON  # quiet[t]: t..t+HORIZON-1
        for t in range(WINDOW, n - HORIZON, WINDOW):
            if _alone(st, t - WINDOW, t, ch) and quiet[t]:
                frames = tuple(range(t - WINDOW, t))
                out.append(Event("shift_prediction", frames, ch, False))
                out.append(Event("backchannel_prediction", frames, ch, False))
        for s, e in _runs(activity[other]):
            if s == 0 or not activity[ch, s - 1] or s - 1 + HORIZON >= n:
                continue
            if e - s <= SHORT_IPU and _alone(st, s - WINDOW, s, ch) and activity[ch, e : e + 7].any():
                out.append(Event("backchannel_prediction", tuple(range(s - WINDOW, s)), ch, True))
            # the speaker's run that the newcomer starts over
            end = s
            while end < n and activity[ch, end]:
                end += 1
            stop = end - s <= STOP_WITHIN and not activity[ch, end : end + STOP_WITHIN].any() and end < n
            stop = stop and bool(activity[other, end])
            goes_on = activity[ch, s : s + GOES_ON].mean() >= 0.5 and activity[ch, s + GOES_ON - 3 : s + GOES_ON].any()
            frames = tuple(range(s + 1, min(s + 3, end)))
            if (stop or goes_on) and frames and frames[-1] + HORIZON < n:
                out.append(Event("barge_in_stop", frames, ch, stop))
    return out


def score(event: Event, projection: np.ndarray) -> float:
    """One number per event from the (T, 2, 4) projection: high means the positive label."""
    p = projection[list(event.frames)]
    weights = np.asarray(BIN_FRAMES, np.float32) / HORIZON
    me, other = event.speaker, 1 - event.speaker
    if event.measure in ("shift_hold", "shift_prediction"):
        return float(((p[:, other] - p[:, me]) @ weights).mean())
    if event.measure == "backchannel_prediction":
        return float(((p[:, other, :2] @ weights[:2]) / weights[:2].sum()).mean())
    return float(-((p[:, me, 2:] @ weights[2:]) / weights[2:].sum()).mean())


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float | None:
    """Mean of the recalls of both classes; None when a class is missing."""
    labels, predicted = labels.astype(bool), predicted.astype(bool)
    if labels.all() or not labels.any():
        return None
    return float((predicted[labels].mean() + (~predicted[~labels]).mean()) / 2)


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold (score > it means positive) with the best balanced accuracy on these events;
    0.0 when a class is missing."""
    if labels.all() or not labels.any():
        return 0.0
    cands = np.unique(scores)
    cands = np.concatenate([[cands[0] - 1.0], (cands[1:] + cands[:-1]) / 2]) if len(cands) > 1 else cands - 1.0
    accs = [balanced_accuracy(labels, scores > c) or 0.0 for c in cands]
    return float(cands[int(np.argmax(accs))])
