"""Build (chosen, rejected) versions of a finished Sample by editing its timeline and mix recipe.

A pair covers the dialogue up to the turn where the agent's behaviour differs (the user's
barge-in, or the agent's answer) and is cut there, so what follows, written for the chosen
behaviour, is not in either side. Every edit lengthens or moves one recipe piece and rewrites the
timeline to match; both sides are mixed through `factory.audio.mix.mix` from the renders in the
TTS cache (`factory.run.rebuild.load_source`), so they are made of the same rendered utterances.

- `talks_over`: the interrupted agent keeps talking to the end of its planned turn.
- `stops_late`: the agent stops at the first word end at least `late_s` after the user's onset.
- `answers_early`: the agent's answer starts `early_s` before the user has finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from factory.audio.mix import mix
from factory.models import (
    BargeInEvent,
    Channel,
    EndOfTurnEvent,
    EndReason,
    MixRecipe,
    OverlapEvent,
    Sample,
    Timeline,
    TurnKind,
)
from factory.run.rebuild import load_source
from factory.timeline.place import overlap_events
from factory.tts_cache import CacheLike

OVERLAP_OK_S = 0.25  # a chosen answer may start this much before the user ends (human turn-end overlap)
TAIL_S = 0.5  # silence kept after a pair's last speech
Kind = Literal["talks_over", "stops_late", "answers_early"]


@dataclass
class Pair:
    sample_id: str
    kind: Kind
    turn: int  # the agent turn whose behaviour differs
    chosen: tuple[Timeline, np.ndarray]
    rejected: tuple[Timeline, np.ndarray]


def _q(t: float, sr: int) -> float:
    return round(t * sr) / sr


def _segment(sample: Sample, last: int) -> tuple[Timeline, MixRecipe]:
    """The dialogue's turns 0..`last` (turn ids follow start times; recipe piece i is turn i)."""
    tl, sr = sample.timeline, sample.sample_rate
    recipe = sample.meta.recipe.model_copy(deep=True)
    turns = [t for t in tl.turns if t.id <= last]
    for t in turns:
        piece = recipe.pieces[t.id]
        if piece.channel is not t.channel or piece.offset != round(t.start * sr):
            raise ValueError(f"{sample.id}: recipe piece {t.id} is not turn {t.id}")
    recipe.pieces = recipe.pieces[: last + 1]
    kept = {t.id for t in turns}
    events = [
        e
        for e in tl.events
        if not isinstance(e, OverlapEvent)
        and all(getattr(e, f, None) in kept for f in ("turn", "victim_turn", "during_turn") if hasattr(e, f))
    ]
    words = [w for w in tl.words if w.turn in kept]
    return _rebuilt(tl, turns, words, events, sr), recipe


def _rebuilt(tl: Timeline, turns, words, events, sr: int) -> Timeline:
    events = [e for e in events if not isinstance(e, OverlapEvent)] + overlap_events(turns)
    events.sort(key=lambda e: (e.start, e.end, e.type))
    duration = _q(max(t.end for t in turns) + TAIL_S, sr)
    return tl.model_copy(update={"turns": turns, "words": words, "events": events, "duration": duration})


def _fit(recipe: MixRecipe, timeline: Timeline) -> MixRecipe:
    recipe.n_samples = round(timeline.duration * recipe.sample_rate)
    return recipe


def _speak_until(tl: Timeline, recipe: MixRecipe, turn_id: int, heard: int) -> tuple[Timeline, MixRecipe] | None:
    """Turn `turn_id` spoken up to word `heard` (all words: uncut); None when it would run into
    a later piece of its own channel."""
    sr = recipe.sample_rate
    recipe = recipe.model_copy(deep=True)
    turn = tl.turn(turn_id)
    words = [w for w in tl.words if w.turn == turn_id]
    piece = recipe.pieces[turn_id]
    uncut = heard >= len(words)
    full = piece.source.n_samples + sum(s.length for s in piece.silences)
    length = full if uncut else round(words[heard - 1].end * sr) - piece.offset
    later = [p.offset for p in recipe.pieces if p.channel is turn.channel and p.offset > piece.offset]
    if later and piece.offset + length + int(0.05 * sr) > min(later):
        return None
    piece.length, piece.cut, piece.fade = length, not uncut, 0 if uncut else piece.fade
    end = (piece.offset + length) / sr
    turns = [
        t.model_copy(
            update={
                "end": end,
                "end_reason": EndReason.complete if uncut else EndReason.interrupted,
                "spoken_text": " ".join(w.word for w in words[:heard]),
            }
        )
        if t.id == turn_id
        else t
        for t in tl.turns
    ]
    new_words, k = [], 0
    for w in tl.words:
        if w.turn == turn_id:
            w = w.model_copy(update={"spoken": k < heard})
            k += 1
        new_words.append(w)
    events = []
    for e in tl.events:
        if isinstance(e, BargeInEvent) and e.victim_turn == turn_id:
            if uncut:
                continue  # no longer a barge-in: the agent never yielded
            e = e.model_copy(update={"end": end, "victim_stop": end})
        events.append(e)
    if uncut:
        events.append(EndOfTurnEvent(channel=turn.channel, turn=turn_id, start=end, end=end))
    timeline = _rebuilt(tl, turns, new_words, events, sr)
    return timeline, _fit(recipe, timeline)


def _start_early(tl: Timeline, recipe: MixRecipe, turn_id: int, early_s: float) -> tuple[Timeline, MixRecipe] | None:
    """Agent turn `turn_id` (an answer) moved to start `early_s` before the user's turn ends."""
    sr = recipe.sample_rate
    recipe = recipe.model_copy(deep=True)
    turn = tl.turn(turn_id)
    users = [t for t in tl.turns if t.channel is Channel.user and t.kind is TurnKind.turn and t.start < turn.start]
    if not users:
        return None
    user = max(users, key=lambda t: t.end)
    if turn.start < user.end - OVERLAP_OK_S or user.end - early_s <= user.start:
        return None  # already well inside the user's turn (not a "chosen"), or the user's turn is too short
    new_start = _q(user.end - early_s, sr)
    if any(t.channel is Channel.agent and t.id != turn_id and t.end + 0.05 > new_start for t in tl.turns):
        return None  # the agent's own earlier speech (a backchannel) is in the way
    shift = new_start - turn.start
    recipe.pieces[turn_id].offset = round(new_start * sr)

    def moved(x: float) -> float:
        return _q(x + shift, sr)

    turns = [t.model_copy(update={"start": new_start, "end": moved(t.end)}) if t.id == turn_id else t for t in tl.turns]
    words = [
        w.model_copy(update={"start": moved(w.start), "end": moved(w.end)}) if w.turn == turn_id else w
        for w in tl.words
    ]
    events = [
        e.model_copy(update={"start": moved(e.start), "end": moved(e.end)})
        if getattr(e, "turn", None) == turn_id
        else e
        for e in tl.events
    ]
    timeline = _rebuilt(tl, turns, words, events, sr)
    return timeline, _fit(recipe, timeline)


def preference_pairs(
    sample: Sample,
    cache_dir: CacheLike | None,
    max_stop_s: float = 1.0,
    late_s: float = 1.5,
    early_s: float = 1.0,
    kinds: tuple[Kind, ...] = ("talks_over", "stops_late", "answers_early"),
) -> list[Pair]:
    """Pairs of one sample. Chosen sides are the sample's own behaviour where the agent behaves:
    a user barge-in it stops for within `max_stop_s`, an answer that starts after the user's turn."""
    tl = sample.timeline
    sources = [load_source(cache_dir, p.source, sample.sample_rate) for p in sample.meta.recipe.pieces]

    def mixed(timeline: Timeline, recipe: MixRecipe) -> tuple[Timeline, np.ndarray]:
        return timeline, mix(recipe, sources[: len(recipe.pieces)])

    pairs: list[Pair] = []
    for e in tl.events:
        if not isinstance(e, BargeInEvent) or e.by is not Channel.user or e.victim_stop - e.onset > max_stop_s:
            continue
        seg = _segment(sample, e.turn)
        words = [w for w in seg[0].words if w.turn == e.victim_turn]
        edits: list[tuple[Kind, int]] = []
        if words[-1].end - e.onset > max_stop_s:  # the rest of the turn runs past the allowed stop
            edits.append(("talks_over", len(words)))
        late = next((k + 1 for k, w in enumerate(words) if w.end >= e.onset + late_s), None)
        if late is not None and late < len(words):
            edits.append(("stops_late", late))
        for kind, heard in edits:
            edited = _speak_until(*seg, e.victim_turn, heard) if kind in kinds else None
            if edited is not None:
                pairs.append(Pair(sample.id, kind, e.victim_turn, mixed(*seg), mixed(*edited)))
    if "answers_early" in kinds:
        cut = {e.victim_turn for e in tl.events if isinstance(e, BargeInEvent)}
        for t in tl.turns:
            if t.channel is Channel.agent and t.kind is TurnKind.turn and t.end_reason is EndReason.complete:
                if t.id in cut or any(isinstance(e, BargeInEvent) and e.turn == t.id for e in tl.events):
                    continue  # an interruption, not an answer
                seg = _segment(sample, t.id)
                edited = _start_early(*seg, t.id, early_s)
                if edited is not None:
                    pairs.append(Pair(sample.id, "answers_early", t.id, mixed(*seg), mixed(*edited)))
                    break  # one per sample
    return pairs
