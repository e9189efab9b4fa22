"""Fuzzing `parse_script` with malformed whole-dialogue responses.

A seeded generator mutates valid responses in the ways capable models (and broken servers) get
them wrong; hypothesis adds arbitrary JSON and arbitrary text. For every input: no exception
other than `ScriptRejected` escapes, every rejection carries a documented reason, and nothing
invalid is accepted.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factory.models import Channel, Filler, Restart, Script
from factory.script.marks import resolve_conflicts
from factory.script.outcomes import REASONS, ScriptRejected
from factory.script.parse import parse_script
from factory.script.response import script_messages
from factory.script.text_checks import check_turn
from tests.test_script_parse import SCENARIO, SENTENCES, valid_response

N_CASES = 1200
MIN_WORDS, MAX_WORDS = 2, 60
PROMPT = script_messages(SCENARIO, SCENARIO.n_turns)[0]["content"]
FOREIGN = [
    "Je pense que nous devrions partir demain matin avant la pluie.",
    "Ich glaube, wir sollten morgen früh losfahren, bevor es regnet.",
    "我觉得我们应该明天早上出发。",
    "Мы должны выехать завтра утром.",
    "明日の朝に出発しましょう。",
]
GARBAGE_VALUES = [
    None,
    True,
    0,
    -1,
    10**30,
    1e308,
    float("nan"),
    "",
    "∞",
    [],
    {},
    [[[]]],
    {"a": {"b": {}}},
    "x" * 5000,
    -(10**18),
    3.7,
    "12",
    [1, 2, 3],
]


def _json(value) -> str:
    return json.dumps(value, allow_nan=True)


def _mutate(rng: np.random.Generator, response: dict) -> tuple[str, str]:
    """One malformed (or, sometimes, merely messy) raw response and the name of its mutation."""
    turns = response["turns"]
    t = int(rng.integers(len(turns)))
    pick = lambda seq: seq[int(rng.integers(len(seq)))]
    kind = pick(MUTATIONS)
    raw = None
    if kind == "truncate":
        s = _json(response)
        raw = s[: int(rng.integers(0, len(s)))]
    elif kind == "delete_char":
        s = _json(response)
        i = int(rng.integers(len(s)))
        raw = s[:i] + s[i + 1 :]
    elif kind == "insert_char":
        s = _json(response)
        i = int(rng.integers(len(s)))
        raw = s[:i] + pick(list("{}[]\",:'\\ x\n")) + s[i:]
    elif kind == "single_quotes":
        raw = _json(response).replace('"', "'")
    elif kind == "trailing_commas":
        raw = _json(response).replace("]", ",]").replace("}", ",}")
    elif kind == "fenced_prose":
        raw = (
            pick(["Here you go:\n```json\n", "```\n", "Sure! "])
            + _json(response)
            + pick(["\n```", "\n```\nEnjoy!", ""])
        )
    elif kind == "wrong_speaker":
        turns[t]["speaker"] = pick(
            ["narrator", "", None, 3, "USER ", "Assistant", "AI", "human", "Nova", "priya", ["user"], "customer", "Bob"]
        )
    elif kind == "missing_speaker":
        del turns[t]["speaker"]
    elif kind == "same_speaker":
        for turn in turns:
            turn["speaker"] = "agent"
    elif kind == "swap_to_repeat":
        turns[t]["speaker"] = turns[t - 1]["speaker"] if t else turns[1]["speaker"]
    elif kind == "empty_turn":
        turns[t]["text"] = pick(["", "   ", "\n", "(laughs)", "**", "...", "-", "🙂"])
    elif kind == "missing_text":
        del turns[t]["text"]
    elif kind == "runaway_turn":
        turns[t]["text"] = " ".join(SENTENCES) * int(rng.integers(1, 6))
    elif kind == "mark_out_of_range":
        key = pick(["before_word", "after_word", "word", "heard_words"])
        typ = {
            "before_word": "filler",
            "after_word": pick(["pause", "backchannel", "laugh"]),
            "word": "restart",
            "heard_words": "barge_in",
        }[key]
        turns[t]["marks"].append(
            {
                "type": typ,
                key: pick([-1, 500, 10**12, 10**30, len(turns[t]["text"].split())]),
                "token": "um",
                "seconds": 0.5,
            }
        )
    elif kind == "conflicting_marks":
        n = len(turns[t]["text"].split())
        turns[t]["marks"] += [{"type": "barge_in", "heard_words": int(rng.integers(1, n + 2))} for _ in range(2)]
        turns[t]["marks"] += [
            {"type": "backchannel", "after_word": int(rng.integers(0, n)), "token": "yeah"} for _ in range(3)
        ]
        turns[-1]["marks"].append({"type": "barge_in", "heard_words": 2})
    elif kind == "duplicate_marks":
        turns[t]["marks"] = turns[t]["marks"] * 3
    elif kind == "prompt_echo":
        lines = [ln for ln in PROMPT.splitlines() if len(ln.split()) >= 8]
        turns[t]["text"] = pick(lines)
    elif kind == "turn_echo":
        turns[t]["text"] = turns[t - 1]["text"] if t else turns[1]["text"]
    elif kind == "repetition_loop":
        unit = pick(["I think so", "yes", "the router is", "okay okay", "and then we"])
        turns[t]["text"] = " ".join([unit] * int(rng.integers(5, 15)))  # "yes yes yes" is speech
    elif kind == "non_english":
        turns[t]["text"] = pick(FOREIGN)
    elif kind == "random_bytes":
        raw = bytes(rng.integers(0, 256, size=int(rng.integers(1, 400)), dtype=np.uint8)).decode("latin-1")
    elif kind == "random_bytes_in_text":
        turns[t]["text"] = bytes(rng.integers(0, 256, size=60, dtype=np.uint8)).decode("utf-8", errors="replace")
    elif kind == "nested_garbage":
        depth = int(rng.integers(1, 3000))
        raw = pick(["[", '{"turns":', '{"a":[']) * depth
    elif kind == "wrong_type":
        field = pick(["turns", "text", "marks", "mark", "speaker", "turn"])
        value = pick(GARBAGE_VALUES)
        if field == "turns":
            response["turns"] = value
        elif field == "turn":
            turns[t] = value
        elif field == "mark":
            turns[t]["marks"].append(value)
        elif field == "marks":
            turns[t]["marks"] = value
        else:
            turns[t][field] = value
    elif kind == "huge_numbers":
        for mark in turns[t]["marks"]:
            for key in mark:
                if key != "type" and key != "token":
                    mark[key] = pick([10**40, -(10**40), 1e308, float("inf"), float("nan"), 2**63])
        turns[t]["marks"].append({"type": "pause", "after_word": 1, "seconds": pick([1e308, -5, float("nan"), "long"])})
    elif kind == "wrong_mark_types":
        turns[t]["marks"].append(
            {
                "type": pick(["dance", "interruption", "Laughter", 5, None, "pause"]),
                "after_word": pick([1, "1", 1.0, 1.5, True, None]),
                "token": pick([None, 7, "uh"]),
            }
        )
    elif kind == "stage_and_labels":
        turns[t]["text"] = pick(["Nova: ", "**Priya:** ", "User: ", "- ", "1. "]) + turns[t]["text"] + " (smiles)"
    elif kind == "drop_turns":
        response["turns"] = turns[: int(rng.integers(0, 2))]
    elif kind == "extra_turns":
        response["turns"] = turns + valid_response(rng, n_turns=4)["turns"]
    elif kind == "meta":
        turns[t]["text"] = "As an AI language model, here's my response to the user about the router."
    return (raw if raw is not None else _json(response)), kind


MUTATIONS = [
    "truncate",
    "delete_char",
    "insert_char",
    "single_quotes",
    "trailing_commas",
    "fenced_prose",
    "wrong_speaker",
    "missing_speaker",
    "same_speaker",
    "swap_to_repeat",
    "empty_turn",
    "missing_text",
    "runaway_turn",
    "mark_out_of_range",
    "conflicting_marks",
    "duplicate_marks",
    "prompt_echo",
    "turn_echo",
    "repetition_loop",
    "non_english",
    "random_bytes",
    "random_bytes_in_text",
    "nested_garbage",
    "wrong_type",
    "huge_numbers",
    "wrong_mark_types",
    "stage_and_labels",
    "drop_turns",
    "extra_turns",
    "meta",
]


def assert_valid(script: Script) -> None:
    """Everything an accepted script must be."""
    Script.model_validate(script.model_dump())  # marks point inside the text
    assert len(script.turns) >= 2
    assert all(a.speaker is not b.speaker for a, b in zip(script.turns, script.turns[1:]))  # merged
    assert len(script.turns) <= SCENARIO.n_turns
    assert resolve_conflicts(script.turns, script.marks) == script.marks  # nothing conflicting or out of range
    victims = {m.turn for m in script.marks if m.type == "barge_in"}
    assert len(victims) == sum(m.type == "barge_in" for m in script.marks) and len(script.turns) - 1 not in victims
    for i, turn in enumerate(script.turns):
        words = turn.text.split()
        assert (
            MIN_WORDS
            <= len(
                [
                    w
                    for j, w in enumerate(words)
                    if not any(
                        isinstance(m, Filler | Restart) and m.turn == i and m.word_index == j for m in script.marks
                    )
                ]
            )
            <= MAX_WORDS
        )
        allow = ("as an ai", "i am an ai", "i'm an ai") if turn.speaker is Channel.agent else ()
        check_turn(turn.text, min_words=MIN_WORDS, allow_meta=allow)
    for m in script.marks:
        word = script.turns[m.turn].text.split()[getattr(m, "word_index", 0)]
        if isinstance(m, Filler):
            assert word == m.token
        if isinstance(m, Restart):
            assert word.endswith("-") and script.turns[m.turn].text.split()[m.word_index + 1].lower().startswith(
                word[:-1].lower()
            )


def run(raw) -> str:
    """'ok' or the rejection reason; any other exception fails the test."""
    try:
        script, report = parse_script(raw, SCENARIO, min_words=MIN_WORDS, max_words=MAX_WORDS, min_turns=2)
    except ScriptRejected as rejected:
        assert rejected.reason in REASONS and rejected.reason, rejected
        return rejected.reason
    assert_valid(script)
    assert all(v > 0 for part in report.as_dict().values() for v in part.values())
    return "ok"


def test_fuzz_mutations():
    rng = np.random.default_rng(20240611)
    outcomes: Counter = Counter()
    by_kind: dict[str, Counter] = {}
    for _ in range(N_CASES):
        response = valid_response(rng, n_turns=int(rng.integers(2, 5)))
        raw, kind = _mutate(rng, response)
        if rng.random() < 0.1:  # a token-limit cut on top
            raw, kind = raw[: len(raw) // 2], kind + "+truncate"
        result = run(raw)
        outcomes[result] += 1
        by_kind.setdefault(kind, Counter())[result] += 1
    assert sum(outcomes.values()) == N_CASES >= 1000
    # Both sides are exercised: repairs accept many, the rest are rejected with varied reasons.
    assert outcomes["ok"] >= 0.2 * N_CASES and N_CASES - outcomes["ok"] >= 0.2 * N_CASES, outcomes
    assert len(outcomes) >= 10, outcomes
    # Mutations that can never be valid are never accepted.
    for kind in (
        "random_bytes",
        "nested_garbage",
        "non_english",
        "repetition_loop",
        "prompt_echo",
        "same_speaker",
        "runaway_turn",
        "meta",
    ):
        assert by_kind.get(kind, Counter())["ok"] == 0, (kind, by_kind.get(kind))
    # Messy-but-repairable ones are mostly accepted.
    for kind in (
        "single_quotes",
        "trailing_commas",
        "fenced_prose",
        "mark_out_of_range",
        "conflicting_marks",
        "duplicate_marks",
        "stage_and_labels",
        "extra_turns",
    ):
        counts = by_kind.get(kind, Counter())
        assert counts["ok"] >= 0.5 * sum(counts.values()), (kind, counts)


def test_valid_responses_all_accepted():
    rng = np.random.default_rng(7)
    for _ in range(200):
        assert run(_json(valid_response(rng, n_turns=int(rng.integers(2, 5))))) == "ok"


# --------------------------------------------------------------------------- hypothesis
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
_speakers = st.sampled_from(["user", "agent", "assistant", "AI", "human", "Nova", "Priya", "narrator", "", "User"])
_index = st.integers(min_value=-3, max_value=80) | st.sampled_from([10**20, -(10**20)])
_mark = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("filler"), "before_word": _index, "token": st.sampled_from(["um", "uh,", "x y", ""])}
    ),
    st.fixed_dictionaries({"type": st.just("restart"), "word": _index}),
    st.fixed_dictionaries(
        {"type": st.just("pause"), "after_word": _index, "seconds": st.floats(allow_nan=True, allow_infinity=True)}
    ),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["backchannel", "laugh", "failed_interruption"]),
            "after_word": _index,
            "token": st.sampled_from(["yeah", "mm-hmm", "haha", "??", ""]),
        }
    ),
    st.fixed_dictionaries({"type": st.just("barge_in"), "heard_words": _index}),
    _json_values,
)
_turn = st.fixed_dictionaries(
    {
        "speaker": _speakers,
        "text": st.sampled_from(SENTENCES)
        | st.text(max_size=80)
        | st.lists(st.sampled_from(SENTENCES), min_size=1, max_size=4).map(" ".join),
        "marks": st.lists(_mark, max_size=8),
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_turn, min_size=0, max_size=6))
def test_property_structured(turns):
    run(json.dumps({"turns": turns}))


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_property_any_json(value):
    assert run(json.dumps(value)) != "ok"  # no dict with a turns list of valid turns is likely here


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_property_any_text(raw):
    run(raw)
