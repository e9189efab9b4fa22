"""Reading a whole-dialogue response's turns and proposed marks as the model wrote them.

Tolerant of the usual slips (other names for keys, speakers and mark types; indices written
as strings or floats; one speaker's turn split in two), each repair counted in the
`ParseReport`; marks that cannot be read are dropped and counted; turns that cannot be read
reject the response. Indices stay in the model's word coordinates: `parse` moves them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from factory.models import Channel, Scenario
from factory.script.outcomes import ParseReport, ScriptRejected

__all__ = ["MARK_INDEX_KEY", "RawMark", "RawTurn", "merge_same_speaker", "read_turns"]

TEXT_MAX_CHARS = 20_000  # a turn's text beyond this is a decoding runaway
MAX_MARKS = 64  # marks read per turn; the rest are dropped as malformed

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


@dataclass
class RawMark:
    type: str
    index: int  # in the model's word coordinates of its turn (before_word / word / after_word / heard_words)
    token: str | None = None
    seconds: float | None = None


# The field holding each mark kind's word index, as `response`'s models name it (a test keeps them in step).
MARK_INDEX_KEY = {
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


def _read_mark(item: Any, report: ParseReport) -> RawMark | None:
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
    key = MARK_INDEX_KEY.get(kind)
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
    return RawMark(
        kind, index, token if isinstance(token, str) else None, float(seconds) if seconds is not None else None
    )


@dataclass
class RawTurn:
    speaker: Channel
    text: str
    marks: list[RawMark]


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


def read_turns(data: Any, scenario: Scenario, report: ParseReport) -> list[RawTurn]:
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
    out: list[RawTurn] = []
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
        if len(text) > TEXT_MAX_CHARS:
            raise ScriptRejected("runaway_turn", f"turn {i} has {len(text)} characters")
        raw_marks = item.get("marks", [])
        if not isinstance(raw_marks, list):
            report.dropped["malformed_mark"] += 1
            raw_marks = []
        marks = [m for m in (_read_mark(x, report) for x in raw_marks[:MAX_MARKS]) if m is not None]
        report.dropped["malformed_mark"] += max(len(raw_marks) - MAX_MARKS, 0)
        out.append(RawTurn(speaker, text, marks))
    return out


def merge_same_speaker(turns: list[RawTurn], report: ParseReport) -> list[RawTurn]:
    """Consecutive turns of one speaker become one; their marks move by the words before them.
    A barge-in on a part that is not the last one no longer has a next speaker: dropped."""
    merged: list[RawTurn] = []
    for turn in turns:
        if merged and merged[-1].speaker is turn.speaker:
            report.repairs["merged_turns"] += 1
            head = merged[-1]
            offset = len(head.text.split())
            for m in head.marks:
                if m.type == "barge_in":
                    report.dropped["barge_in_in_merged_turn"] += 1
            head.marks = [m for m in head.marks if m.type != "barge_in"]
            head.marks += [RawMark(m.type, m.index + offset, m.token, m.seconds) for m in turn.marks]
            head.text = head.text.rstrip() + " " + turn.text.strip()
        else:
            merged.append(RawTurn(turn.speaker, turn.text, list(turn.marks)))
    return merged
