"""Whole-dialogue scripts from a capable LLM: one JSON response with proposed behaviour marks.

A capable model served over HTTP (vLLM with JSON-schema guided decoding) writes the whole
dialogue and proposes where hesitations, backchannels, laughs and barge-ins happen. Guided
decoding makes the *shape* right most of the time, not the *content*: indices point past the
text, two barge-ins hit one turn, the model loops or echoes the prompt. `parse_script` repairs
what can be repaired, drops marks that cannot stand (counting every repair and drop in a
`ParseReport` for the manifest), and rejects the rest with `ScriptRejected(reason, detail)`.
No exception other than `ScriptRejected` leaves `parse_script`.

LLM-facing format (word indices are 0-based positions in `text.split()` of the model's own text):

    {"turns": [{"speaker": "user" | "agent", "text": "...", "marks": [
        {"type": "filler", "before_word": 3, "token": "um"},          # said before word 3
        {"type": "restart", "word": 1},                               # word 1 cut off, said again
        {"type": "pause", "after_word": 2, "seconds": 0.5},           # silence after word 2
        {"type": "backchannel", "after_word": 5, "token": "mm-hmm"},  # the listener, after word 5
        {"type": "laugh", "after_word": 4, "token": "haha"},          # the listener laughs
        {"type": "failed_interruption", "after_word": 6, "token": "But I-"},
        {"type": "barge_in", "heard_words": 7}]}]}                    # next turn cuts in after 7 words

Fillers and restarts are written into the text here, exactly as `behaviour.insert_hesitations`
writes them: a `Filler` mark sits at the index of its inserted token, a `Restart` mark at the
index of the cut-off "word-" token; every other mark is re-indexed into the final text.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import json_repair
from pydantic import ValidationError

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
    Scenario,
    Script,
    ScriptTurn,
    SilentPause,
)
from factory.script.text_checks import TurnRejected, check_turn, clean_turn

__all__ = [
    "REASONS",
    "SCRIPT_RESPONSE_SCHEMA",
    "ParseReport",
    "ScriptRejected",
    "parse_script",
    "resolve_conflicts",
    "script_messages",
    "script_to_response",
]

# Every reason code `ScriptRejected` can carry.
REASONS = frozenset(
    {
        "invalid_json",  # no JSON object could be read, even after the tolerant repairs
        "no_turns",  # no "turns" list (or it is empty)
        "malformed_turn",  # a turn is not an object
        "wrong_speakers",  # a speaker is missing or not a participant, or only one side speaks
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

MAX_RAW_CHARS = 200_000
MANGLED_SHARE, MANGLED_MIN_WORDS = 0.5, 8  # a turn of 8+ words that cleaning halves is rejected
RUNAWAY_FACTOR = 3  # a turn over RUNAWAY_FACTOR * max_words raw words is rejected, not truncated
_TEXT_MAX_CHARS = 20_000
_TOKEN_WORD = re.compile(r"^[A-Za-z][A-Za-z'\-]{0,11},?$")
_LISTENER_TOKEN = re.compile(r"^[A-Za-z][A-Za-z ,'\-]{0,24}[A-Za-z\-.!?]?$")
_PUNCT = ",.;:!?"
DEFAULT_FILLER = "um"
DEFAULT_BACKCHANNEL = "mm-hmm"
DEFAULT_LAUGH = "haha"
DEFAULT_FAILED = "But I-"

_USER_ALIASES = {
    "user",
    "human",
    "customer",
    "caller",
    "client",
    "person",
    "me",
    "speaker a",
    "a",
    "speaker 1",
    "speaker1",
    "patient",
    "student",
}
_AGENT_ALIASES = {
    "agent",
    "assistant",
    "ai",
    "bot",
    "model",
    "ai assistant",
    "voice assistant",
    "speaker b",
    "b",
    "speaker 2",
    "speaker2",
    "support",
    "gpt",
    "chatbot",
    "system",
}
_AGENT_META = ("as an ai", "i am an ai", "i'm an ai")


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


# --------------------------------------------------------------------------- schema + prompt
_INDEX = {"type": "integer", "minimum": 0, "maximum": 400}
SCRIPT_RESPONSE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "DialogueScript",
    "type": "object",
    "additionalProperties": False,
    "required": ["turns"],
    "properties": {
        "turns": {
            "type": "array",
            "minItems": 2,
            "maxItems": 64,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["speaker", "text", "marks"],
                "properties": {
                    "speaker": {"type": "string", "enum": ["user", "agent"]},
                    "text": {"type": "string", "minLength": 1, "maxLength": 2000},
                    "marks": {
                        "type": "array",
                        "maxItems": 24,
                        "items": {
                            "anyOf": [
                                {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["type", "before_word", "token"],
                                    "properties": {
                                        "type": {"const": "filler"},
                                        "before_word": _INDEX,
                                        "token": {"type": "string", "enum": ["um", "uh", "um,", "uh,", "er", "like"]},
                                    },
                                },
                                {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["type", "word"],
                                    "properties": {"type": {"const": "restart"}, "word": _INDEX},
                                },
                                {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["type", "after_word", "seconds"],
                                    "properties": {
                                        "type": {"const": "pause"},
                                        "after_word": _INDEX,
                                        "seconds": {"type": "number", "minimum": 0.1, "maximum": 3.0},
                                    },
                                },
                                {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["type", "after_word", "token"],
                                    "properties": {
                                        "type": {"const": "backchannel"},
                                        "after_word": _INDEX,
                                        "token": {"type": "string", "maxLength": 24},
                                    },
                                },
                                {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["type", "after_word"],
                                    "properties": {
                                        "type": {"const": "laugh"},
                                        "after_word": _INDEX,
                                        "token": {"type": "string", "maxLength": 16},
                                    },
                                },
                                {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["type", "after_word", "token"],
                                    "properties": {
                                        "type": {"const": "failed_interruption"},
                                        "after_word": _INDEX,
                                        "token": {"type": "string", "maxLength": 24},
                                    },
                                },
                                {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["type", "heard_words"],
                                    "properties": {
                                        "type": {"const": "barge_in"},
                                        "heard_words": {**_INDEX, "minimum": 1},
                                    },
                                },
                            ]
                        },
                    },
                },
            },
        },
    },
}

_EXAMPLE = {
    "turns": [
        {
            "speaker": "user",
            "text": "Hey, do you know a good way to keep basil alive indoors?",
            "marks": [{"type": "filler", "before_word": 1, "token": "um"}],
        },
        {
            "speaker": "agent",
            "text": "Sure. Basil wants at least six hours of sun, so a south window is best, and "
            "you should water it when the top of the soil feels dry.",
            "marks": [
                {"type": "backchannel", "after_word": 9, "token": "mm-hmm"},
                {"type": "barge_in", "heard_words": 13},
            ],
        },
        {
            "speaker": "user",
            "text": "Oh, my only window faces north though.",
            "marks": [{"type": "restart", "word": 1}],
        },
    ]
}


def script_messages(scenario: Scenario, n_turns: int) -> list[dict[str, str]]:
    """Chat messages asking a capable model for a whole dialogue with proposed behaviour marks,
    as one JSON object matching `SCRIPT_RESPONSE_SCHEMA`."""
    if scenario.mode is Mode.assistant:
        roles = (
            f'"user" is {scenario.user.name}, {scenario.user.description}, who talks to "agent", '
            f"{scenario.agent.name}, an AI voice assistant ({scenario.agent.description}). The agent answers "
            "helpfully in two to four spoken sentences; the user speaks in short questions and follow-ups."
        )
    else:
        roles = (
            f'"user" is {scenario.user.name}, {scenario.user.description}; "agent" is {scenario.agent.name}, '
            f"{scenario.agent.description}. They are two people chatting; both keep their turns short."
        )
    system = "\n".join(
        [
            "You write realistic spoken two-person dialogues for speech synthesis, as JSON.",
            roles,
            "Rules:",
            f"- Exactly {n_turns} turns, alternating speakers, starting with the user.",
            "- Plain spoken English only: no markdown, lists, emojis, stage directions or speaker names in the text.",
            "- Do not write fillers (um, uh) or cut-off words into the text: propose them as marks instead.",
            "- Marks point at words by 0-based index into the turn's text split on spaces.",
            (
                "- filler: a filled pause said before word `before_word`. restart: word `word` is cut off and said "
                "again. pause: a short silence after word `after_word` (not the last word)."
            ),
            (
                "- backchannel / laugh / failed_interruption: the OTHER speaker reacts briefly after word "
                "`after_word` while this turn goes on."
            ),
            (
                "- barge_in: the NEXT turn interrupts this one after `heard_words` words; the next turn must respond "
                "only to those words. Never on the last turn; at most one per turn."
            ),
            (
                "- Real talk has about 3 fillers and 1 restart per 100 words, a backchannel every 15 seconds, and "
                "about one interruption per dialogue. Do not overdo them."
            ),
            "Example of the format: " + json.dumps(_EXAMPLE),
        ]
    )
    user = (
        f"Setting: {scenario.setting}. Topic: {scenario.topic}. Style: {scenario.style}.\n"
        f"Write the {n_turns}-turn dialogue as JSON now."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def script_to_response(script: Script) -> dict[str, Any]:
    """The inverse of `parse_script`: a Script as the LLM-facing JSON (inserted filler and cut-off
    tokens taken out of the text, marks in the model's word coordinates). For few-shot examples,
    benchmarks and round-trip tests."""
    turns = []
    for i, turn in enumerate(script.turns):
        words = turn.text.split()
        mine = [m for m in script.marks if m.turn == i]
        inserted = {m.word_index for m in mine if isinstance(m, Filler | Restart)}
        content = [j for j in range(len(words)) if j not in inserted]
        written = {j: k for k, j in enumerate(content)}  # final index -> model index

        def next_word(j: int, written: dict[int, int] = written, n: int = len(words)) -> int:
            return next(written[k] for k in range(j + 1, n) if k in written)

        def after_word(j: int, written: dict[int, int] = written) -> int | None:
            # a mark after an inserted token moves to the word before it
            return next((written[k] for k in range(j, -1, -1) if k in written), None)

        out_words = [words[j] for j in content]
        marks: list[dict[str, Any]] = []
        for m in mine:
            if isinstance(m, Filler):
                k = next_word(m.word_index)
                if k == 0 and m.word_index == 0 and out_words and out_words[0][:1].islower():
                    out_words[0] = out_words[0][:1].upper() + out_words[0][1:]
                marks.append({"type": "filler", "before_word": k, "token": m.token.lower() if k == 0 else m.token})
                continue
            if isinstance(m, Restart):
                marks.append({"type": "restart", "word": next_word(m.word_index)})
                continue
            k = after_word(m.heard_words - 1 if isinstance(m, BargeIn) else m.word_index)
            if k is None:
                continue  # attached to a turn-initial inserted token: not expressible in model words
            if isinstance(m, SilentPause):
                marks.append({"type": "pause", "after_word": k, "seconds": m.duration})
            elif isinstance(m, BargeIn):
                marks.append({"type": "barge_in", "heard_words": k + 1})
            else:
                marks.append({"type": m.type, "after_word": k, "token": m.token})
        turns.append({"speaker": turn.speaker.value, "text": " ".join(out_words), "marks": marks})
    return {"turns": turns}


# --------------------------------------------------------------------------- tolerant JSON
def _strip_wrapping(raw: str) -> str:
    """Drops code fences and prose around the outermost JSON object or array."""
    fence = re.search(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", raw, flags=re.DOTALL)
    if fence and ("{" in fence.group(1) or "[" in fence.group(1)):
        raw = fence.group(1)
    starts = [i for i in (raw.find("{"), raw.find("[")) if i >= 0]
    if not starts:
        return raw.strip()
    start = min(starts)
    end = max(raw.rfind("}"), raw.rfind("]"))
    return raw[start : end + 1] if end > start else raw[start:]


def _close_truncated(text: str) -> str | None:
    """A response cut by the token limit: everything up to the last complete element of the
    top-level container's list, with the open brackets closed. None when nothing is left open
    (not truncated), "" when the cut came before any complete element.

    Kept by hand rather than left to json_repair, which closes the open string and brackets
    where the cut fell: a turn cut mid-sentence would then be accepted as if it were whole."""
    stack: list[str] = []
    last: tuple[int, list[str]] | None = None
    in_string = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append(ch)
        elif ch in "}]":
            if not stack:
                return None  # more closed than opened: not a cut, json_repair's case
            stack.pop()
            if stack in (["{", "["], ["["]):
                last = (i, list(stack))
        i += 1
    if not stack:
        return None
    if last is None:
        return ""
    pos, open_ = last
    return text[: pos + 1] + "".join("]" if b == "[" else "}" for b in reversed(open_))


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _FAIL


_FAIL = object()


def load_json(raw: str, report: ParseReport) -> Any:
    """`json.loads` first; then, each counted in `report.repairs`: prose and code fences
    stripped, a token-limit cut closed after its last complete element, and `json_repair` for
    the rest (single quotes, trailing or missing commas, stray characters, unquoted keys)."""
    value = _loads(raw)
    if value is not _FAIL:
        return value
    text = _strip_wrapping(raw)
    if text != raw.strip():
        report.repairs["stripped_wrapping"] += 1
        value = _loads(text)
        if value is not _FAIL:
            return value
    closed = _close_truncated(text)
    if closed == "":
        raise ScriptRejected("invalid_json", f"cut off before the first complete turn: {raw[:80]!r}")
    if closed is not None:
        report.repairs["truncated"] += 1
        text = closed
        value = _loads(text)
        if value is not _FAIL:
            return value
    try:
        value = json_repair.loads(text, skip_json_loads=True)
    except (ValueError, TypeError, IndexError, RecursionError):
        value = None
    # json_repair reads any text as *something* (prose becomes ""); only a container can be a script.
    if not isinstance(value, dict | list) or not value:
        raise ScriptRejected("invalid_json", f"unreadable after repairs: {raw[:80]!r}")
    report.repairs["json_repaired"] += 1
    return value


# --------------------------------------------------------------------------- marks
@dataclass
class _RawMark:
    type: str
    index: int  # in the model's word coordinates of its turn (before_word / word / after_word / heard_words)
    token: str | None = None
    seconds: float | None = None


_MARK_INDEX_KEY = {
    "filler": "before_word",
    "restart": "word",
    "pause": "after_word",
    "backchannel": "after_word",
    "laugh": "after_word",
    "failed_interruption": "after_word",
    "barge_in": "heard_words",
}
_MARK_TYPE_ALIASES = {
    "interruption": "barge_in",
    "bargein": "barge_in",
    "barge-in": "barge_in",
    "silent_pause": "pause",
    "silence": "pause",
    "filled_pause": "filler",
    "repair": "restart",
    "laughter": "laugh",
    "back_channel": "backchannel",
}


def _as_index(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= 10_000 else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and 0 <= value <= 10_000:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 5:
        return int(value.strip())
    return None


def _read_mark(item: Any, report: ParseReport) -> _RawMark | None:
    if not isinstance(item, dict):
        report.dropped["malformed_mark"] += 1
        return None
    kind = item.get("type")
    if not isinstance(kind, str):
        report.dropped["malformed_mark"] += 1
        return None
    kind = kind.strip().lower()
    if kind in _MARK_TYPE_ALIASES:
        report.repairs["mark_type_alias"] += 1
        kind = _MARK_TYPE_ALIASES[kind]
    key = _MARK_INDEX_KEY.get(kind)
    if key is None:
        report.dropped["unknown_mark_type"] += 1
        return None
    raw_index = item.get(key, item.get("word_index", item.get("word")))
    index = _as_index(raw_index)
    if index is None:
        report.dropped[
            "mark_out_of_range"
            if isinstance(raw_index, int | float) and not isinstance(raw_index, bool)
            else "malformed_mark"
        ] += 1
        return None
    token = item.get("token")
    seconds = item.get("seconds", item.get("duration"))
    if kind == "pause":
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds <= 0
        ):
            seconds = 0.45
            report.repairs["pause_seconds_defaulted"] += 1
        elif not 0.1 <= seconds <= 3.0:
            seconds = min(max(float(seconds), 0.1), 3.0)
            report.repairs["pause_seconds_clamped"] += 1
    return _RawMark(
        kind, index, token if isinstance(token, str) else None, float(seconds) if seconds is not None else None
    )


def _token(raw: str | None, pattern: re.Pattern[str], default: str, report: ParseReport) -> str:
    if raw is not None and pattern.match(raw.strip()):
        return raw.strip()
    report.repairs["token_defaulted"] += 1
    return default


def _mark_index(mark: Mark) -> int:
    return mark.heard_words - 1 if isinstance(mark, BargeIn) else mark.word_index


def resolve_conflicts(turns: list[ScriptTurn], marks: list[Mark], dropped: Counter | None = None) -> list[Mark]:
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
    words_of = [t.text.split() for t in turns]
    for mark in sorted(marks, key=lambda m: not isinstance(m, BargeIn)):  # barge-ins first: they bound the rest
        if mark.turn >= len(turns):
            dropped["mark_out_of_range"] += 1
            continue
        words = words_of[mark.turn]
        index = _mark_index(mark)
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
    kept.sort(key=lambda m: (m.turn, _mark_index(m), m.type))
    return kept


# --------------------------------------------------------------------------- turns
@dataclass
class _Turn:
    speaker: Channel
    text: str
    marks: list[_RawMark]


def _speaker(value: Any, scenario: Scenario) -> Channel | None:
    if not isinstance(value, str):
        return None
    key = re.sub(r"[\s_\-]+", " ", value.strip().lower().strip("*:#"))
    user_names = {scenario.user.name.lower(), scenario.user.name.lower().split(" ")[0]}
    agent_names = {scenario.agent.name.lower(), scenario.agent.name.lower().split(" ")[0]}
    if key in user_names - agent_names or key in _USER_ALIASES:
        return Channel.user
    if key in agent_names - user_names or key in _AGENT_ALIASES:
        return Channel.agent
    return None


def _read_turns(data: Any, scenario: Scenario, report: ParseReport) -> list[_Turn]:
    if isinstance(data, dict):
        turns = data.get("turns", data.get("dialogue", data.get("conversation")))
        if turns is not data.get("turns"):
            report.repairs["turns_key_alias"] += 1
    elif isinstance(data, list):
        report.repairs["bare_turn_list"] += 1
        turns = data
    else:
        raise ScriptRejected("no_turns", f"top level is {type(data).__name__}")
    if not isinstance(turns, list) or not turns:
        raise ScriptRejected("no_turns", "no non-empty 'turns' list")
    out: list[_Turn] = []
    for i, item in enumerate(turns):
        if not isinstance(item, dict):
            raise ScriptRejected("malformed_turn", f"turn {i} is {type(item).__name__}")
        raw_speaker = item.get("speaker", item.get("role"))
        speaker = _speaker(raw_speaker, scenario)
        if speaker is None:
            raise ScriptRejected("wrong_speakers", f"turn {i} speaker {str(raw_speaker)[:40]!r}")
        if raw_speaker not in ("user", "agent"):
            report.repairs["speaker_alias"] += 1
        text = item.get("text", item.get("content"))
        if not isinstance(text, str) or not text.strip():
            raise ScriptRejected("empty_turn", f"turn {i} has no text")
        if len(text) > _TEXT_MAX_CHARS:
            raise ScriptRejected("runaway_turn", f"turn {i} has {len(text)} characters")
        raw_marks = item.get("marks", [])
        if not isinstance(raw_marks, list):
            report.dropped["malformed_mark"] += 1
            raw_marks = []
        marks = [m for m in (_read_mark(x, report) for x in raw_marks[:64]) if m is not None]
        report.dropped["malformed_mark"] += max(len(raw_marks) - 64, 0)
        out.append(_Turn(speaker, text, marks))
    return out


def _merge_same_speaker(turns: list[_Turn], report: ParseReport) -> list[_Turn]:
    """Consecutive turns of one speaker become one; their marks move by the words before them.
    A barge-in on a part that is not the last one no longer has a next speaker: dropped."""
    merged: list[_Turn] = []
    for turn in turns:
        if merged and merged[-1].speaker is turn.speaker:
            report.repairs["merged_turns"] += 1
            head = merged[-1]
            offset = len(head.text.split())
            for m in head.marks:
                if m.type == "barge_in":
                    report.dropped["barge_in_in_merged_turn"] += 1
            head.marks = [m for m in head.marks if m.type != "barge_in"]
            head.marks += [_RawMark(m.type, m.index + offset, m.token, m.seconds) for m in turn.marks]
            head.text = head.text.rstrip() + " " + turn.text.strip()
        else:
            merged.append(_Turn(turn.speaker, turn.text, list(turn.marks)))
    return merged


def _norm(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def _align(old: list[str], new: list[str]) -> dict[int, int]:
    """Old word index -> new word index for words cleaning kept (normalised equal)."""
    if [_norm(w) for w in old] == [_norm(w) for w in new]:
        return {i: i for i in range(len(old))}
    matcher = difflib.SequenceMatcher(a=[_norm(w) for w in old], b=[_norm(w) for w in new], autojunk=False)
    mapping: dict[int, int] = {}
    for a, b, size in matcher.get_matching_blocks():
        for k in range(size):
            mapping[a + k] = b + k
    return mapping


def _limits(value: int | Mapping[Channel, int], speaker: Channel) -> int:
    return int(value[speaker]) if isinstance(value, Mapping) else int(value)


def _build_turn(
    index: int, turn: _Turn, words: list[str], marks: list[_RawMark], report: ParseReport
) -> tuple[str, list[Mark]]:
    """Writes fillers and restarts into the words (as `insert_hesitations` does) and moves every
    mark into the final text's word positions. `marks` are in `words` coordinates."""
    n = len(words)
    filler_before: dict[int, str] = {}
    restart_at: set[int] = set()
    rest: list[_RawMark] = []
    for m in marks:
        if m.type == "barge_in":
            if not 1 <= m.index <= n:
                report.dropped["mark_out_of_range"] += 1
                continue
        elif not 0 <= m.index < n:
            report.dropped["mark_out_of_range"] += 1
            continue
        if m.type == "filler":
            if m.index in filler_before:
                report.dropped["conflicting_marks"] += 1
                continue
            filler_before[m.index] = _token(m.token, _TOKEN_WORD, DEFAULT_FILLER, report)
        elif m.type == "restart":
            stem = words[m.index].strip(_PUNCT)
            if m.index in restart_at or not stem or not re.fullmatch(r"[A-Za-z']+", stem):
                report.dropped["conflicting_marks" if m.index in restart_at else "unrestartable_word"] += 1
                continue
            restart_at.add(m.index)
        else:
            rest.append(m)
    out: list[str] = []
    final: list[Mark] = []
    position: list[int] = []
    for i, word in enumerate(words):
        if i in filler_before:
            token = filler_before[i]
            if i == 0:
                token = token[:1].upper() + token[1:]
                if not (word == "I" or word.startswith(("I'", "I,"))):
                    word = word[:1].lower() + word[1:]
            final.append(Filler(turn=index, word_index=len(out), token=token))
            out.append(token)
        if i in restart_at:
            final.append(Restart(turn=index, word_index=len(out)))
            out.append(word.strip(_PUNCT) + "-")
        position.append(len(out))
        out.append(word)
    for m in rest:
        if m.type == "barge_in":
            final.append(BargeIn(turn=index, heard_words=position[m.index - 1] + 1))
        elif m.type == "pause":
            final.append(SilentPause(turn=index, word_index=position[m.index], duration=round(m.seconds or 0.45, 3)))
        elif m.type == "backchannel":
            token = _token(m.token, _LISTENER_TOKEN, DEFAULT_BACKCHANNEL, report)
            final.append(Backchannel(turn=index, word_index=position[m.index], token=token))
        elif m.type == "laugh":
            token = DEFAULT_LAUGH if m.token is None else _token(m.token, _LISTENER_TOKEN, DEFAULT_LAUGH, report)
            final.append(Laugh(turn=index, word_index=position[m.index], token=token))
        elif m.type == "failed_interruption":
            token = _token(m.token, _LISTENER_TOKEN, DEFAULT_FAILED, report)
            final.append(FailedInterruption(turn=index, word_index=position[m.index], token=token))
    return " ".join(out), final


_TURN_REASONS = {
    "empty": "empty_turn",
    "too_short": "too_short",
    "prompt_echo": "prompt_echo",
    "repetition_loop": "repetition_loop",
    "wrong_language": "wrong_language",
    "meta": "meta",
}


def parse_script(
    raw: str | bytes,
    scenario: Scenario,
    *,
    min_words: int | Mapping[Channel, int] = 1,
    max_words: int | Mapping[Channel, int] = 60,
    min_turns: int | None = None,
    llm: str = "",
) -> tuple[Script, ParseReport]:
    """Validates and repairs one whole-dialogue response into a `Script`.

    `min_words`/`max_words` apply per turn (an int, or one per speaker). `min_turns` defaults
    to half the scenario's turns (at least 2); turns past `scenario.n_turns` are cut off.
    Raises `ScriptRejected(reason, detail)` with `reason` in `REASONS`, nothing else."""
    try:
        return _parse(raw, scenario, min_words, max_words, min_turns, llm)
    except ScriptRejected:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, OverflowError) as error:
        # Belt and braces: a case the repairs did not foresee is a rejection, not a crash.
        raise ScriptRejected("invalid_script", f"{type(error).__name__}: {str(error)[:120]}") from error


def _parse(
    raw: str | bytes,
    scenario: Scenario,
    min_words: int | Mapping[Channel, int],
    max_words: int | Mapping[Channel, int],
    min_turns: int | None,
    llm: str,
) -> tuple[Script, ParseReport]:
    report = ParseReport()
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str) or not raw.strip():
        raise ScriptRejected("invalid_json", "empty response")
    if len(raw) > MAX_RAW_CHARS:
        raise ScriptRejected("invalid_json", f"response of {len(raw)} characters")
    data = load_json(raw, report)
    turns = _read_turns(data, scenario, report)
    turns = _merge_same_speaker(turns, report)
    if len(turns) > scenario.n_turns:
        report.repairs["turns_truncated"] += len(turns) - scenario.n_turns
        turns = turns[: scenario.n_turns]
    needed = max(2, scenario.n_turns // 2) if min_turns is None else max(2, min_turns)
    if len({t.speaker for t in turns}) < 2:
        raise ScriptRejected("wrong_speakers", "only one side speaks")
    if len(turns) < needed:
        raise ScriptRejected("too_few_turns", f"{len(turns)} turns after merging < {needed}")
    if turns[-1].marks and any(m.type == "barge_in" for m in turns[-1].marks):
        report.dropped["barge_in_on_last_turn"] += sum(m.type == "barge_in" for m in turns[-1].marks)
        turns[-1].marks = [m for m in turns[-1].marks if m.type != "barge_in"]

    names = [scenario.user.name, scenario.agent.name]
    prompt = script_messages(scenario, scenario.n_turns)[0]["content"]
    references = [prompt, scenario.user.description, scenario.agent.description]
    script_turns: list[ScriptTurn] = []
    contents: list[str] = []
    marks: list[Mark] = []
    for i, turn in enumerate(turns):
        low, high = _limits(min_words, turn.speaker), _limits(max_words, turn.speaker)
        old = turn.text.split()
        if len(old) > RUNAWAY_FACTOR * max(high, 1):
            raise ScriptRejected("runaway_turn", f"turn {i} has {len(old)} words, limit {high}")
        cleaned = clean_turn(turn.text, names=names, min_words=low, max_words=high)
        if not cleaned.split():
            raise ScriptRejected("empty_turn", f"turn {i} has nothing speakable")
        new = cleaned.split()
        if new != old:
            report.repairs["cleaned_text"] += 1
            kept = len(new) if len(old) <= high else len(clean_turn(turn.text, names=names, max_words=10**6).split())
            if len(old) >= MANGLED_MIN_WORDS and kept < MANGLED_SHARE * len(old):
                raise ScriptRejected("mangled_turn", f"turn {i}: cleaning kept {kept} of {len(old)} words")
        mapping = _align(old, new)
        moved: list[_RawMark] = []
        for m in turn.marks:
            if m.type == "barge_in":  # heard_words counts words; its last heard word must survive
                last = mapping.get(m.index - 1) if 1 <= m.index <= len(old) else None
                target = None if last is None else last + 1
            else:
                target = mapping.get(m.index) if m.index < len(old) else None
            if target is None:
                report.dropped[
                    "mark_out_of_range"
                    if m.index >= len(old) or m.index == 0 and m.type == "barge_in"
                    else "mark_lost_in_cleaning"
                ] += 1
                continue
            moved.append(_RawMark(m.type, target, m.token, m.seconds))
        text, turn_marks = _build_turn(i, turn, new, moved, report)
        allow_meta = _AGENT_META if turn.speaker is Channel.agent else ()
        try:
            # What the model wrote (fillers inserted can hide a loop, an echo or meta talk), then the final text.
            check_turn(cleaned, min_words=low, references=references + contents, allow_meta=allow_meta)
            check_turn(text, min_words=low, references=references + contents, allow_meta=allow_meta)
        except TurnRejected as rejected:
            raise ScriptRejected(
                _TURN_REASONS.get(rejected.reason, "empty_turn"), f"turn {i}: {rejected.detail}"
            ) from None
        script_turns.append(ScriptTurn(speaker=turn.speaker, text=text, responds_to=i - 1 if i else None))
        contents.append(cleaned)
        marks.extend(turn_marks)

    marks = resolve_conflicts(script_turns, marks, report.dropped)
    try:
        script = Script(scenario_id=scenario.id, turns=script_turns, marks=marks, llm=llm)
    except ValidationError as error:
        raise ScriptRejected("invalid_script", str(error)[:200]) from None
    report.repairs = Counter({k: v for k, v in report.repairs.items() if v})
    report.dropped = Counter({k: v for k, v in report.dropped.items() if v})
    return script, report
