"""Whole-dialogue scripts from a capable LLM: one JSON response (`response`) with proposed
behaviour marks, validated, repaired or rejected into a `Script`.

Guided decoding makes the *shape* right most of the time, not the *content*: indices point past
the text, two barge-ins hit one turn, the model loops or echoes the prompt. `parse_script` reads
the response tolerantly (`tolerant_json`, `response_reader`), cleans each turn's text and moves
the marks along, writes fillers and restarts into the text as the planner does
(`marks.write_hesitations`), drops marks that cannot stand (`marks.resolve_conflicts`) and rejects
the rest. Every repair and drop is counted in a `ParseReport` for the manifest; no exception
other than `ScriptRejected` leaves `parse_script`.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from factory.languages import base, spaced
from factory.languages import words as lang_words
from factory.models import BargeIn, Channel, Mark, Scenario, Script, ScriptTurn, SilentPause
from factory.script.lexicon import load_lexicon
from factory.script.marks import LISTENER_MARKS, WRITTEN_PUNCTUATION, resolve_conflicts, write_hesitations
from factory.script.outcomes import ParseReport, ScriptRejected
from factory.script.response import script_messages
from factory.script.response_reader import RawMark, merge_same_speaker, read_turns
from factory.script.text_checks import (
    AGENT_META,
    TurnRejected,
    check_turn,
    check_turn_unspaced,
    clean_turn,
    clean_turn_unspaced,
    letter_class,
)
from factory.script.tolerant_json import load_json

__all__ = ["parse_script"]

MAX_RAW_CHARS = 200_000
MANGLED_SHARE, MANGLED_MIN_WORDS = 0.5, 8  # a turn of 8+ words that cleaning halves is rejected
RUNAWAY_FACTOR = 3  # a turn over RUNAWAY_FACTOR * max_words raw words is rejected, not truncated


@dataclass(frozen=True)
class _Tokens:
    """What a proposed token may look like in one language, and its stand-ins when it does not: a
    filler is one word (letters of the language, `text_checks.letter_class`), a listener's token a
    few; an unusable token becomes the first of the language's lexicon entries of its kind."""

    filler: re.Pattern[str]
    listener: re.Pattern[str]
    default_filler: str
    default_listener: dict[str, str]


@functools.lru_cache(maxsize=16)
def _tokens(language: str) -> _Tokens:
    letter = f"[{letter_class(language)}]"
    lexicon = load_lexicon(language)
    return _Tokens(
        filler=re.compile(rf"^{letter}(?:{letter}|['\-]){{0,11}}[,、]?$"),
        listener=re.compile(rf"^{letter}(?:{letter}|[ ,'\-]){{0,24}}(?:{letter}|[\-.!?])?$"),
        default_filler=lexicon.fillers[0].rstrip(",、"),
        default_listener={
            "backchannel": lexicon.backchannels[0],
            "laugh": lexicon.laughs[0],
            "failed_interruption": lexicon.failed_interruptions[0],
        },
    )


def _token(raw: str | None, pattern: re.Pattern[str], default: str, report: ParseReport) -> str:
    if raw is not None and pattern.match(raw.strip()):
        return raw.strip()
    report.repairs["token_defaulted"] += 1
    return default


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


def _align_unspaced(old: list[str], cleaned: str, new: list[str]) -> tuple[dict[int, int], dict[int, int]]:
    """For a language written without spaces, whose model text separates its words by spaces
    (the structured format's indices): old (model) word index -> the index of the final word
    (`languages.words` of the cleaned text) holding its first, and its last, character kept."""
    src = "".join(old)
    owner = [k for k, w in enumerate(new) for _ in w]  # final word of each character of `cleaned`
    to_dst: dict[int, int] = {}
    for a, b, size in difflib.SequenceMatcher(a=src, b=cleaned, autojunk=False).get_matching_blocks():
        to_dst.update({a + k: b + k for k in range(size) if b + k < len(owner)})
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    start = 0
    for i, word in enumerate(old):
        kept = [to_dst[c] for c in range(start, start + len(word)) if c in to_dst]
        if kept:
            first[i], last[i] = owner[kept[0]], owner[kept[-1]]
        start += len(word)
    return first, last


def _limits(value: int | Mapping[Channel, int], speaker: Channel) -> int:
    return int(value[speaker]) if isinstance(value, Mapping) else int(value)


def _build_turn(
    index: int, words: list[str], marks: list[RawMark], report: ParseReport, language: str = "en"
) -> tuple[str, list[Mark]]:
    """Writes fillers and restarts into the words and moves every other mark into the final
    text's word positions. `marks` are in `words` coordinates."""
    n = len(words)
    tokens = _tokens(base(language))
    restartable = re.compile(f"(?:[{letter_class(language)}]|')+")
    filler_before: dict[int, str] = {}
    restart_at: set[int] = set()
    rest: list[RawMark] = []
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
            filler_before[m.index] = _token(m.token, tokens.filler, tokens.default_filler, report)
        elif m.type == "restart":
            stem = words[m.index].strip(WRITTEN_PUNCTUATION)
            if m.index in restart_at or not stem or not restartable.fullmatch(stem):
                report.dropped["conflicting_marks" if m.index in restart_at else "unrestartable_word"] += 1
                continue
            restart_at.add(m.index)
        else:
            rest.append(m)
    written = write_hesitations(words, index, filler_before, restart_at, language)
    final = list(written.marks)
    position = written.position
    for m in rest:
        if m.type == "barge_in":
            final.append(BargeIn(turn=index, heard_words=position[m.index - 1] + 1))
        elif m.type == "pause":
            final.append(SilentPause(turn=index, word_index=position[m.index], duration=round(m.seconds or 0.45, 3)))
        else:  # a listener mark; a laugh may leave its sound to us
            default = tokens.default_listener[m.type]
            no_token = m.type == "laugh" and m.token is None
            token = default if no_token else _token(m.token, tokens.listener, default, report)
            final.append(LISTENER_MARKS[m.type](turn=index, word_index=position[m.index], token=token))
    return written.text, final


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
    turns = merge_same_speaker(read_turns(data, scenario, report), report)
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
    language = scenario.language
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
        if spaced(language):
            cleaned = clean_turn(turn.text, names=names, min_words=low, max_words=high)
            new = cleaned.split()
        else:  # the model separates its words by spaces; the text is written without them
            cleaned = clean_turn_unspaced(turn.text, language, min_words=low, max_words=high)
            new = lang_words(cleaned, language)
        if not new:
            raise ScriptRejected("empty_turn", f"turn {i} has nothing speakable")
        if not spaced(language):
            if cleaned != "".join(old):
                report.repairs["cleaned_text"] += 1
            first, mapping = _align_unspaced(old, cleaned, new)
        elif new != old:
            report.repairs["cleaned_text"] += 1
            kept = len(new) if len(old) <= high else len(clean_turn(turn.text, names=names, max_words=10**6).split())
            if len(old) >= MANGLED_MIN_WORDS and kept < MANGLED_SHARE * len(old):
                raise ScriptRejected("mangled_turn", f"turn {i}: cleaning kept {kept} of {len(old)} words")
            first = mapping = _align(old, new)
        else:
            first = mapping = _align(old, new)
        moved: list[RawMark] = []
        for m in turn.marks:
            if m.type == "barge_in":  # heard_words counts words; its last heard word must survive
                last = mapping.get(m.index - 1) if 1 <= m.index <= len(old) else None
                target = None if last is None else last + 1
            elif m.type in ("filler", "restart"):  # said before the word: where the word begins
                target = first.get(m.index) if m.index < len(old) else None
            else:
                target = mapping.get(m.index) if m.index < len(old) else None
            if target is None:
                report.dropped[
                    "mark_out_of_range"
                    if m.index >= len(old) or m.index == 0 and m.type == "barge_in"
                    else "mark_lost_in_cleaning"
                ] += 1
                continue
            moved.append(RawMark(m.type, target, m.token, m.seconds))
        text, turn_marks = _build_turn(i, new, moved, report, language)
        allow_meta = AGENT_META if turn.speaker is Channel.agent else ()
        try:
            # What the model wrote (fillers inserted can hide a loop, an echo or meta talk), then the final text.
            for said in (cleaned, text):
                if spaced(language):
                    check_turn(
                        said, min_words=low, references=references + contents, allow_meta=allow_meta, language=language
                    )
                else:
                    check_turn_unspaced(said, language, min_words=low, references=references + contents)
        except TurnRejected as rejected:
            raise ScriptRejected(
                _TURN_REASONS.get(rejected.reason, "empty_turn"), f"turn {i}: {rejected.detail}"
            ) from None
        script_turns.append(ScriptTurn(speaker=turn.speaker, text=text, responds_to=i - 1 if i else None))
        contents.append(cleaned)
        marks.extend(turn_marks)

    marks = resolve_conflicts(script_turns, marks, report.dropped, language)
    try:
        script = Script(scenario_id=scenario.id, turns=script_turns, marks=marks, llm=llm)
    except ValidationError as error:
        raise ScriptRejected("invalid_script", str(error)[:200]) from None
    report.repairs = Counter({k: v for k, v in report.repairs.items() if v})
    report.dropped = Counter({k: v for k, v in report.dropped.items() if v})
    return script, report
