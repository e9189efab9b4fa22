"""Behaviour marks on a script's turns: writing hesitations into a turn, and which marks can stand together.

Both script paths write marks here: the planner draws where fillers and restarts go, the
structured parser reads where the model proposed them, and `write_hesitations` writes them into
the text the same way for both (a `Filler` sits at the index of its inserted token, a `Restart` at
the index of the cut-off "word-" token). `resolve_conflicts` keeps the marks that can stand
together, for the parser and the calibration alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from factory.languages import join
from factory.languages import words as lang_words
from factory.models import (
    Backchannel,
    BargeIn,
    FailedInterruption,
    Filler,
    Laugh,
    ListenerMark,
    Mark,
    Restart,
    ScriptTurn,
    SilentPause,
)

__all__ = [
    "LISTENER_MARKS",
    "WRITTEN_PUNCTUATION",
    "WrittenTurn",
    "mark_index",
    "mark_order",
    "resolve_conflicts",
    "with_index",
    "write_hesitations",
]

WRITTEN_PUNCTUATION = ",.;:!?、。！？"  # stripped from a word before it is cut off ("I think," -> "I- I think,")
# Listener marks by type: short speech of the other side over a turn.
LISTENER_MARKS: dict[str, type[ListenerMark]] = {
    "backchannel": Backchannel,
    "laugh": Laugh,
    "failed_interruption": FailedInterruption,
}


def mark_index(mark: Mark) -> int:
    """The word a mark sits at: a barge-in's last heard word, else its `word_index`."""
    return mark.heard_words - 1 if isinstance(mark, BargeIn) else mark.word_index


def with_index(mark: Mark, index: int) -> Mark:
    """`mark` moved to word `index` (the inverse of `mark_index`)."""
    if isinstance(mark, BargeIn):
        return mark.model_copy(update={"heard_words": index + 1})
    return mark.model_copy(update={"word_index": index})


def mark_order(mark: Mark) -> tuple[int, int, str]:
    """The order a composed script's marks are stored in: turn, then position, then type."""
    return mark.turn, getattr(mark, "word_index", getattr(mark, "heard_words", 0)), mark.type


@dataclass(frozen=True)
class WrittenTurn:
    """A turn with its hesitations written in: its words, the Filler and Restart marks in their
    positions, and `position[j]`, where word `j` of the words before writing now is."""

    words: list[str]
    marks: list[Mark]
    position: list[int]
    language: str = "en"

    @property
    def text(self) -> str:
        return join(self.words, self.language)


def write_hesitations(
    words: list[str],
    turn: int,
    filler_before: Mapping[int, str],
    restart_at: Collection[int],
    language: str = "en",
) -> WrittenTurn:
    """Writes a filler token before each word in `filler_before` and a cut-off copy ("word-")
    before each word in `restart_at`. A turn-initial filler takes the capital ("Um, you know"
    rather than "um, You know"), except before "I"."""
    out: list[str] = []
    marks: list[Mark] = []
    position: list[int] = []
    for i, word in enumerate(words):
        if i in filler_before:
            token = filler_before[i]
            if i == 0:
                token = token[:1].upper() + token[1:]
                if not (word == "I" or word.startswith(("I'", "I,"))):
                    word = word[:1].lower() + word[1:]
            marks.append(Filler(turn=turn, word_index=len(out), token=token))
            out.append(token)
        if i in restart_at:
            marks.append(Restart(turn=turn, word_index=len(out)))
            out.append(word.strip(WRITTEN_PUNCTUATION) + "-")
        position.append(len(out))
        out.append(word)
    return WrittenTurn(out, marks, position, language)


def resolve_conflicts(
    turns: list[ScriptTurn], marks: list[Mark], dropped: Counter | None = None, language: str = "en"
) -> list[Mark]:
    """Keeps the marks that can stand together; counts the rest in `dropped` by code.

    Out of range: a mark outside its turn's words; a pause after the last word or after a
    cut-off token; a barge-in that hears the whole turn or none of it. Conflicts: a barge-in on
    the last turn; a second barge-in on one turn; a listener mark (backchannel, laugh, failed
    interruption) at or after a barge-in cut, or at the same word as another listener mark;
    two marks of one kind at the same word. First come, first kept."""
    dropped = Counter() if dropped is None else dropped
    kept: list[Mark] = []
    cut: dict[int, int] = {}
    seen: set[tuple[str, int, int]] = set()
    listener_at: set[tuple[int, int]] = set()
    words_of = [lang_words(t.text, language) for t in turns]  # `languages.words`: Japanese has no spaces
    for mark in sorted(marks, key=lambda m: not isinstance(m, BargeIn)):  # barge-ins first: they bound the rest
        if mark.turn >= len(turns):
            dropped["mark_out_of_range"] += 1
            continue
        words = words_of[mark.turn]
        index = mark_index(mark)
        if not 0 <= index < len(words):
            dropped["mark_out_of_range"] += 1
            continue
        if isinstance(mark, BargeIn):
            if mark.turn == len(turns) - 1:
                dropped["barge_in_on_last_turn"] += 1
            elif mark.turn in cut:
                dropped["second_barge_in"] += 1
            elif mark.heard_words >= len(words):
                dropped["mark_out_of_range"] += 1
            else:
                cut[mark.turn] = mark.heard_words
                kept.append(mark)
            continue
        if isinstance(mark, SilentPause) and (index == len(words) - 1 or words[index].endswith("-")):
            dropped["mark_out_of_range"] += 1
            continue
        if isinstance(mark, Backchannel | Laugh | FailedInterruption):
            if mark.turn in cut and index >= cut[mark.turn] - 1:
                dropped["listener_after_cut"] += 1
                continue
            if (mark.turn, index) in listener_at:
                dropped["conflicting_marks"] += 1
                continue
            listener_at.add((mark.turn, index))
        key = (mark.type, mark.turn, index)
        if key in seen:
            dropped["conflicting_marks"] += 1
            continue
        seen.add(key)
        kept.append(mark)
    kept.sort(key=lambda m: (m.turn, mark_index(m), m.type))
    return kept
