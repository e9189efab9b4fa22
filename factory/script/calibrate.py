"""Calibration of the behaviour marks a capable LLM proposed (the HTTP whole-dialogue path).

An LLM places marks where they make sense but cannot hit calibrated rates: it proposes too
few of one kind and too many of another. `calibrate_marks` keeps the valid proposals, adds
marks where there are fewer than the configured targets (through the planner's own functions
in `factory.script.planner`, so both paths draw marks the same way) and removes proposals beyond
twice the target. Scripts from the tiny embedded model carry no marks and go through
`scripting.write_script`, whose planner marks them as it writes.

Targets (`BehaviourSection`): fillers, restarts and pauses per 100 content words (words the
model wrote, not inserted fillers or cut-off tokens); backchannels and laughs per minute of
speech at the language's speaking rate (`Lexicon.words_per_second`); barge-ins and failed interruptions per dialogue.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from factory.config import BehaviourSection
from factory.languages import join as lang_join
from factory.languages import words as lang_words
from factory.models import (
    Backchannel,
    BargeIn,
    Channel,
    FailedInterruption,
    Filler,
    Laugh,
    Mark,
    Mode,
    Restart,
    Script,
    ScriptTurn,
    SilentPause,
)
from factory.script.lexicon import rate
from factory.script.marks import mark_index, resolve_conflicts, with_index
from factory.script.planner import (
    MIN_VICTIM_WORDS,
    barge_in_cut,
    barge_in_victims,
    cut_range,
    heard_floor,
    insert_hesitations,
    plan_backchannels,
    speech_minutes,
)

__all__ = ["EXCESS_FACTOR", "calibrate_marks", "content_words", "measure_rates"]

EXCESS_FACTOR = 2.0  # proposals beyond this multiple of the expected count are removed
HESITATION_PASSES = 2


def content_words(script: Script, language: str = "en") -> int:
    """Words the writer wrote: every word minus inserted filler tokens and cut-off restart tokens."""
    inserted = sum(isinstance(m, Filler | Restart) for m in script.marks)
    return sum(len(lang_words(t.text, language)) for t in script.turns) - inserted


def measure_rates(script: Script) -> dict[str, float]:
    """Counts and the base each rate is measured on: content words and minutes of speech."""
    kinds = Counter(m.type for m in script.marks)
    return {
        "content_words": float(content_words(script)),
        "speech_minutes": speech_minutes(script.turns),
        **{
            k: float(kinds.get(k, 0))
            for k in ("filler", "restart", "pause", "backchannel", "laugh", "failed_interruption", "barge_in")
        },
    }


# --------------------------------------------------------------------------- editing one turn
def _remove_token(
    turns: list[ScriptTurn], marks: list[Mark], mark: Filler | Restart, language: str = "en"
) -> list[Mark]:
    """Removes an inserted filler or cut-off restart token from its turn's text; marks after it
    move one word back, marks attached to it move to the word before (or go, at word 0)."""
    t, k = mark.turn, mark.word_index
    words = lang_words(turns[t].text, language)
    del words[k]
    if k == 0 and words and isinstance(mark, Filler):
        words[0] = words[0][:1].upper() + words[0][1:]
    turns[t] = turns[t].model_copy(update={"text": lang_join(words, language)})
    out: list[Mark] = []
    for m in marks:
        if m is mark:
            continue
        if m.turn != t or mark_index(m) < k:
            out.append(m)
        elif mark_index(m) > k:
            out.append(with_index(m, mark_index(m) - 1))
        elif k > 0 and not isinstance(m, Filler | Restart):  # attached to the removed token
            out.append(with_index(m, k - 1))
    return out


def _add_hesitations(
    turns: list[ScriptTurn],
    marks: list[Mark],
    t: int,
    rng: np.random.Generator,
    cfg: BehaviourSection,
    pause_median: float,
    force_filler: bool = False,
    language: str = "en",
) -> list[Mark]:
    """Runs `insert_hesitations` on turn `t` and moves the turn's existing marks to the new word
    positions (the inserted tokens are exactly the new Filler and Restart marks' positions)."""
    text, new = insert_hesitations(
        turns[t].text, t, rng, cfg, pause_median, force_filler=force_filler, language=language
    )
    new_words = lang_words(text, language)
    inserted = {m.word_index for m in new if isinstance(m, Filler | Restart)}
    position = [i for i in range(len(new_words)) if i not in inserted]  # old word j -> position[j]
    turns[t] = turns[t].model_copy(update={"text": text})
    out: list[Mark] = []
    for m in marks:
        if m.turn != t:
            out.append(m)
            continue
        moved = with_index(m, position[mark_index(m)])
        if isinstance(moved, Filler):  # a turn-initial filler may have been lowercased by a new one before it
            moved = moved.model_copy(update={"token": new_words[moved.word_index]})
        out.append(moved)
    # A new filler next to an existing one ("um uh,") or a restart of a filler token reads as noise.
    fillers = {m.word_index for m in out if isinstance(m, Filler)}
    for m in new:
        if isinstance(m, Filler) and ({m.word_index - 1, m.word_index + 1} & fillers):
            continue
        if isinstance(m, Restart) and m.word_index + 1 in fillers:
            continue
        out.append(m)
    # Drop the tokens of skipped new fillers/restarts from the text again.
    kept_tokens = {(m.type, m.word_index) for m in out if isinstance(m, Filler | Restart) and m.turn == t}
    skipped = [m for m in new if isinstance(m, Filler | Restart) and (m.type, m.word_index) not in kept_tokens]
    for m in sorted(skipped, key=lambda m: -m.word_index):
        out.append(m)
        out = _remove_token(turns, out, m, language)
    return out


def _cap(expected: float) -> int:
    return math.ceil(EXCESS_FACTOR * expected)


def _remove_excess(
    turns: list[ScriptTurn],
    marks: list[Mark],
    kind: type,
    cap: int,
    rng: np.random.Generator,
    report: Counter,
    language: str = "en",
) -> list[Mark]:
    found = [m for m in marks if isinstance(m, kind)]
    if len(found) <= cap:
        return marks
    drop = [found[i] for i in sorted(rng.choice(len(found), size=len(found) - cap, replace=False))]
    report[f"removed_{found[0].type}"] += len(drop)
    if kind in (Filler, Restart):  # their tokens are in the text: remove from the back of each turn first
        tokens = [m for m in drop if isinstance(m, Filler | Restart)]  # all of drop, typed
        for m in sorted(tokens, key=lambda m: (m.turn, -m.word_index)):
            marks = _remove_token(turns, marks, m, language)
        return marks
    ids = {id(m) for m in drop}
    return [m for m in marks if id(m) not in ids]


# --------------------------------------------------------------------------- calibration
def calibrate_marks(
    script: Script,
    rng: np.random.Generator,
    cfg: BehaviourSection,
    pause_median: float,
    *,
    mode: Mode = Mode.peer,
    add_barge_ins: bool = True,
    report: Counter | None = None,
    language: str = "en",
    written_whole: bool = False,
) -> Script:
    """Keeps the valid proposed marks, adds marks toward the targets where there are too few,
    removes those beyond `EXCESS_FACTOR` x the expected count. `mode` decides who may be
    interrupted and who backchannels (as in the planner). A barge-in added here cuts a turn the
    model wrote in full, so the next turn may answer words that are never heard: pass
    `add_barge_ins=False` to only keep (and cap) the model's own. `report` (optional) receives
    counts of what was dropped, added and removed. Words are `language`'s (`languages.words`).
    `written_whole`: every turn was written before any cut (a dataset's dialogue, whose turns
    cannot be re-written): a barge-in added here lets the listener hear what later turns refer to
    (`planner.heard_floor`), and when a drawn turn cannot be cut so, another turn is (the rest in
    a random order), so the rate holds."""
    report = Counter() if report is None else report
    turns = [t.model_copy() for t in script.turns]
    marks = resolve_conflicts(turns, list(script.marks), report, language)

    # Hesitations, per 100 content words.
    words = max(content_words(Script(scenario_id=script.scenario_id, turns=turns, marks=marks), language), 1)
    expected = {
        Filler: cfg.fillers_per_100_words * words / 100,
        Restart: cfg.restarts_per_100_words * words / 100,
        SilentPause: cfg.pauses_per_100_words * words / 100,
    }
    for kind, exp in expected.items():
        marks = _remove_excess(turns, marks, kind, _cap(exp), rng, report, language)
    for attempt in range(HESITATION_PASSES):
        have = {kind: sum(isinstance(m, kind) for m in marks) for kind in expected}
        missing = {kind: max(exp - have[kind], 0.0) for kind, exp in expected.items()}
        if attempt:  # fillers collide (two drawn at one clause boundary, ~15 % lost): top up fillers only
            missing[Restart] = missing[SilentPause] = 0.0
        if max(missing.values()) < 0.5:
            break
        # Rates that make the expected number of additions equal to what is missing.
        add_cfg = cfg.model_copy(
            update={
                "fillers_per_100_words": 100 * missing[Filler] / words,
                "restarts_per_100_words": 100 * missing[Restart] / words,
                "pauses_per_100_words": 100 * missing[SilentPause] / words,
            }
        )
        before = Counter(m.type for m in marks)
        for t in range(len(turns)):
            marks = _add_hesitations(turns, marks, t, rng, add_cfg, pause_median, language=language)
        marks = resolve_conflicts(turns, marks, report, language)
        after = Counter(m.type for m in marks)
        for kind in ("filler", "restart", "pause"):
            report[f"added_{kind}"] += max(after[kind] - before[kind], 0)
    if cfg.min_fillers and sum(isinstance(m, Filler) for m in marks) < cfg.min_fillers:
        zero = cfg.model_copy(
            update={"fillers_per_100_words": 0.0, "restarts_per_100_words": 0.0, "pauses_per_100_words": 0.0}
        )
        t = int(rng.integers(len(turns)))
        if not any(isinstance(m, Filler) and m.turn == t and m.word_index == 0 for m in marks):
            marks = _add_hesitations(turns, marks, t, rng, zero, pause_median, force_filler=True, language=language)
            report["added_filler"] += 1

    # Barge-ins, per dialogue: drawn as the planner draws them (a share with none, a dispersed rest).
    speakers = [t.speaker for t in turns]
    marks = _remove_excess(turns, marks, BargeIn, _cap(cfg.barge_ins_per_dialogue), rng, report, language)
    victims_now = {m.turn for m in marks if isinstance(m, BargeIn)}
    wanted = barge_in_victims(mode, speakers, rng, cfg)  # dispersed per dialogue, as the planner draws them
    to_add = min(len(wanted), _cap(cfg.barge_ins_per_dialogue)) - len(victims_now) if add_barge_ins else 0
    order = sorted(wanted - victims_now)
    floor = [0] * len(turns)
    if written_whole and to_add > 0:
        floor = heard_floor(turns, language)
        others = [t for t in range(len(turns)) if t not in wanted and t not in victims_now]
        order += [others[int(k)] for k in rng.permutation(len(others))]
    for t in order:
        if to_add <= 0:
            break
        n = len(lang_words(turns[t].text, language))
        cut_turns = {m.turn for m in marks if isinstance(m, BargeIn)}
        if any(abs(t - v) <= 1 for v in cut_turns):
            continue  # next to a cut turn: the conflict resolution would drop one of the two
        if (
            n >= MIN_VICTIM_WORDS
            and t > 0
            and t < len(turns) - 1
            and speakers[t + 1] is not speakers[t]
            and (mode is Mode.peer or speakers[t] is Channel.agent)
            and floor[t] <= cut_range(n)[1]
        ):
            marks.append(BargeIn(turn=t, heard_words=barge_in_cut(n, rng, floor[t])))
            report["added_barge_in"] += 1
            to_add -= 1
    marks = resolve_conflicts(turns, marks, report, language)  # listener marks past a new cut go

    # Listener marks, per minute of speech (laughs) or per dialogue (failed interruptions).
    minutes = max(speech_minutes(turns, language), 1e-9)
    exp_bc = rate(cfg.backchannels_per_minute) * minutes  # cfg resolved by lexicon.behaviour_for
    marks = _remove_excess(turns, marks, Backchannel, _cap(exp_bc), rng, report, language)
    marks = _remove_excess(turns, marks, Laugh, _cap(cfg.laughs_per_minute * minutes), rng, report, language)
    n_failed = _cap(cfg.failed_interruptions_per_dialogue)
    marks = _remove_excess(turns, marks, FailedInterruption, n_failed, rng, report, language)
    have_bc = sum(isinstance(m, Backchannel) for m in marks)
    if have_bc < exp_bc or have_bc < cfg.min_backchannels:
        add_cfg = cfg.model_copy(
            update={
                "backchannels_per_minute": max(exp_bc - have_bc, 0.0) / minutes,
                "min_backchannels": max(cfg.min_backchannels - have_bc, 0),
            }
        )
        taken = {(m.turn, m.word_index) for m in marks if isinstance(m, Backchannel | Laugh | FailedInterruption)}
        planned = plan_backchannels(turns, marks, rng, add_cfg, mode, language)
        new = [b for b in planned if (b.turn, b.word_index) not in taken]
        marks += new
        report["added_backchannel"] += len(new)

    marks = resolve_conflicts(turns, marks, report, language)
    # A filler's token is the word at its index (insertion before it may have changed its case).
    words_of = [lang_words(t.text, language) for t in turns]
    marks = [
        m.model_copy(update={"token": words_of[m.turn][m.word_index]}) if isinstance(m, Filler) else m for m in marks
    ]
    return Script(scenario_id=script.scenario_id, turns=turns, marks=marks, llm=script.llm)
