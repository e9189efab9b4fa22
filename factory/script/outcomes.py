"""What parsing a whole-dialogue response ends in: a `Script` with a `ParseReport` of what was
repaired and dropped, or `ScriptRejected` with one of the documented `REASONS`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["REASONS", "ParseReport", "ScriptRejected"]

# Every reason code `ScriptRejected` can carry.
REASONS = frozenset(
    {
        "invalid_json",  # no JSON object could be read, even after the tolerant repairs
        "no_turns",  # no "turns" list (or it is empty)
        "malformed_turn",  # a turn is not an object
        "wrong_speakers",  # a speaker is missing or not a participant, only one side speaks, or the wrong one opens
        "empty_turn",  # a turn has no speakable text (before or after cleaning)
        "too_short",  # a turn has fewer than min_words words after cleaning
        "runaway_turn",  # a turn is far longer than max_words (a decoding runaway, not a long turn)
        "mangled_turn",  # cleaning removed most of a turn (markup, code, JSON, stage directions in the text)
        "too_few_turns",  # fewer turns than the dialogue needs after merging
        "prompt_echo",  # a turn copies the instructions or an earlier turn
        "repetition_loop",  # a turn loops
        "wrong_language",  # a turn is not English
        "meta",  # a turn talks about the task ("as an AI language model", "next turn")
        "mark_out_of_range",  # not raised by parse_script (such marks are dropped and counted); for callers
        "conflicting_marks",  # likewise: conflicting marks are dropped and counted in ParseReport.dropped
        "invalid_script",  # the assembled Script failed model validation (a bug guard)
    }
)


class ScriptRejected(Exception):
    """A whole-dialogue response could not be repaired. `reason` is one of `REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class ParseReport:
    """What `parse_script` repaired and dropped, as counts keyed by a short code (manifest-ready)."""

    repairs: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {"repairs": dict(sorted(self.repairs.items())), "dropped": dict(sorted(self.dropped.items()))}
