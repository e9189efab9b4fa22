"""Unit tests of the whole-dialogue parser: every repair, every drop, every rejection reason."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from factory.models import (
    Backchannel,
    BargeIn,
    Channel,
    Filler,
    Laugh,
    Mode,
    Persona,
    Restart,
    Scenario,
    Script,
    SilentPause,
)
from factory.script.marks import resolve_conflicts
from factory.script.outcomes import REASONS, ScriptRejected
from factory.script.parse import parse_script
from factory.script.response import SCRIPT_RESPONSE_SCHEMA, script_messages
from factory.script.response_reader import MARK_INDEX_KEY
from factory.script.text_checks import check_turn

SCENARIO = Scenario(
    id="s-1",
    mode=Mode.assistant,
    topic="fixing a slow home wifi network",
    setting="at home in the evening",
    style="friendly",
    user=Persona(name="Priya", description="a software developer who asks precise questions"),
    agent=Persona(name="Nova", description="a patient home technology helper"),
    n_turns=4,
)

# Natural sentences: English enough for check_turn, distinct enough not to echo each other.
SENTENCES = [
    "My internet has been really slow since yesterday evening.",
    "Have you tried restarting the router and waiting a full minute?",
    "Yes, I did that twice, but nothing changed at all.",
    "Okay, then let's check how many devices are on the network right now.",
    "There are probably ten, counting the phones and the old tablet.",
    "That could be it, because older devices can slow down the whole connection.",
    "Should I just turn the tablet off for a while?",
    "Sure, and then run a speed test from the laptop near the router.",
    "It says forty megabits, which is better than before.",
    "Great, so the tablet was part of the problem after all.",
    "What about the channel, should I change that too?",
    "If your neighbours use the same channel, moving to another one often helps.",
    "I can see about six other networks from my kitchen.",
    "Then pick a channel with fewer of them, the app will show which.",
    "Thanks, I will try that after dinner tonight.",
    "No problem, and tell me how it goes tomorrow.",
    "Do you think I need a new router eventually?",
    "Maybe, if it is more than five years old it is worth an upgrade.",
    "Mine came with the flat, so I honestly have no idea.",
    "Look for a sticker on the bottom, it usually shows the model year.",
    "Found it, it says two thousand sixteen.",
    "Then a new one would make a real difference for video calls.",
    "How much should I expect to spend on a decent one?",
    "A good home router costs around eighty to a hundred and twenty dollars.",
]


def valid_response(rng: np.random.Generator, n_turns: int = 4, with_marks: bool = True) -> dict:
    """A well-formed response: alternating speakers, distinct sentences, plausible marks."""
    order = rng.permutation(len(SENTENCES))
    turns, k = [], 0
    for i in range(n_turns):
        n_sent = int(rng.integers(1, 3))
        text = " ".join(SENTENCES[j] for j in order[k : k + n_sent])
        k += n_sent
        n = len(text.split())
        marks = []
        if with_marks:
            if rng.random() < 0.5:
                marks.append({"type": "filler", "before_word": int(rng.integers(n)), "token": "um"})
            if rng.random() < 0.3:
                marks.append({"type": "restart", "word": int(rng.integers(n))})
            if rng.random() < 0.4 and n > 2:
                marks.append({"type": "pause", "after_word": int(rng.integers(n - 1)), "seconds": 0.5})
            if rng.random() < 0.5 and n > 4:
                marks.append({"type": "backchannel", "after_word": int(rng.integers(1, n - 2)), "token": "mm-hmm"})
            if rng.random() < 0.2 and n > 4:
                marks.append({"type": "laugh", "after_word": int(rng.integers(1, n - 2))})
            if rng.random() < 0.3 and i < n_turns - 1 and n >= 4:
                marks.append({"type": "barge_in", "heard_words": int(rng.integers(2, n))})
        turns.append({"speaker": "user" if i % 2 == 0 else "agent", "text": text, "marks": marks})
    return {"turns": turns}


def parse(raw, **kw) -> tuple[Script, dict]:
    kw.setdefault("min_words", 1)
    kw.setdefault("max_words", 60)
    script, report = parse_script(raw if isinstance(raw, str) else json.dumps(raw), SCENARIO, **kw)
    return script, report.as_dict()


def reject(raw, **kw) -> ScriptRejected:
    with pytest.raises(ScriptRejected) as info:
        parse(raw, **kw)
    assert info.value.reason in REASONS
    return info.value


def dialogue(*texts: str, marks: list[list[dict]] | None = None, speakers: list[str] | None = None) -> dict:
    speakers = speakers or ["user" if i % 2 == 0 else "agent" for i in range(len(texts))]
    marks = marks or [[] for _ in texts]
    return {"turns": [{"speaker": s, "text": t, "marks": m} for s, t, m in zip(speakers, texts, marks, strict=True)]}


TWO = (SENTENCES[0], SENTENCES[1] + " " + SENTENCES[3])


# --------------------------------------------------------------------------- format
def test_schema_is_valid_and_accepts_the_format():
    jsonschema.Draft202012Validator.check_schema(SCRIPT_RESPONSE_SCHEMA)
    rng = np.random.default_rng(0)
    for _ in range(20):
        jsonschema.validate(valid_response(rng), SCRIPT_RESPONSE_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"turns": [{"speaker": "AI", "text": "x", "marks": []}]}, SCRIPT_RESPONSE_SCHEMA)


def test_schema_asks_for_what_the_reader_reads():
    """Each mark kind the schema (generated from the response models) offers is read by the
    reader from the field the schema requires for it, and the prompt's example is a valid response."""
    kinds = SCRIPT_RESPONSE_SCHEMA["properties"]["turns"]["items"]["properties"]["marks"]["items"]["anyOf"]
    offered = {kind["properties"]["type"]["const"]: kind for kind in kinds}
    assert set(offered) == set(MARK_INDEX_KEY)
    for name, kind in offered.items():
        assert MARK_INDEX_KEY[name] in kind["required"], name
    assert "$defs" not in json.dumps(SCRIPT_RESPONSE_SCHEMA)  # self-contained, as guided decoding gets it
    example = json.loads(script_messages(SCENARIO, 4)[0]["content"].split("Example of the format: ", 1)[1])
    jsonschema.validate(example, SCRIPT_RESPONSE_SCHEMA)
    for bad in (
        {"turns": example["turns"][:1]},  # fewer than two turns
        {"turns": [*example["turns"][:1], {**example["turns"][1], "marks": [{"type": "barge_in", "heard_words": 0}]}]},
        {"turns": [*example["turns"][:1], {**example["turns"][1], "marks": [{"type": "pause", "after_word": 1}]}]},
        {"turns": [*example["turns"][:1], {**example["turns"][1], "extra": 1}]},
        {"turns": [{**t, "marks": [{"type": "filler", "before_word": 0, "token": "hmm"}]} for t in example["turns"]]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCRIPT_RESPONSE_SCHEMA)


def test_messages():
    messages = script_messages(SCENARIO, 6)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "Exactly 6 turns" in messages[0]["content"] and SCENARIO.topic in messages[1]["content"]
    assert "Priya" in messages[0]["content"] and "Nova" in messages[0]["content"]


def test_valid_response_round_trip():
    rng = np.random.default_rng(1)
    for _ in range(30):
        script, _ = parse(valid_response(rng))
        Script.model_validate(script.model_dump())
        assert [t.speaker for t in script.turns] == [Channel.user, Channel.agent] * 2
        assert resolve_conflicts(script.turns, script.marks) == script.marks


# --------------------------------------------------------------------------- marks written into the text
def test_filler_and_restart_written_into_text():
    raw = dialogue(
        "So I think the router is broken.",
        SENTENCES[1],
        marks=[
            [
                {"type": "filler", "before_word": 2, "token": "uh,"},
                {"type": "restart", "word": 3},
                {"type": "pause", "after_word": 4, "seconds": 0.4},
                {"type": "filler", "before_word": 0, "token": "um"},
            ],
            [],
        ],
    )
    script, report = parse(raw)
    assert script.turns[0].text == "Um so I uh, think the- the router is broken."
    fillers = [m for m in script.marks if isinstance(m, Filler)]
    assert [(m.word_index, m.token) for m in fillers] == [(0, "Um"), (3, "uh,")]
    assert [m.word_index for m in script.marks if isinstance(m, Restart)] == [5]
    pause = next(m for m in script.marks if isinstance(m, SilentPause))
    assert script.turns[0].text.split()[pause.word_index] == "router"  # after original word 4
    assert report == {"repairs": {}, "dropped": {}}


def test_listener_marks_and_barge_in_reindexed_after_insertions():
    raw = dialogue(
        SENTENCES[0],
        "Okay, then let's check how many devices are on the network right now.",
        SENTENCES[2],
        marks=[
            [],
            [
                {"type": "filler", "before_word": 1, "token": "um"},
                {"type": "backchannel", "after_word": 4, "token": "yeah"},
                {"type": "barge_in", "heard_words": 7},
            ],
            [],
        ],
    )
    script, _ = parse(raw, min_turns=3)
    words = script.turns[1].text.split()
    bc = next(m for m in script.marks if isinstance(m, Backchannel))
    cut = next(m for m in script.marks if isinstance(m, BargeIn))
    assert words[bc.word_index] == "how" and words[cut.heard_words - 1] == "devices"


def test_bad_tokens_defaulted():
    raw = dialogue(
        *TWO,
        marks=[
            [{"type": "filler", "before_word": 1, "token": "um well you know"}],
            [{"type": "backchannel", "after_word": 3, "token": "<b>!!</b>"}],
        ],
    )
    script, report = parse(raw)
    assert {m.token for m in script.marks} == {"um", "mm-hmm"}
    assert report["repairs"]["token_defaulted"] == 2


# --------------------------------------------------------------------------- JSON repairs
def test_code_fence_and_prose():
    raw = "Sure! Here is the dialogue:\n```json\n" + json.dumps(dialogue(*TWO)) + "\n```\nHope this helps."
    script, report = parse(raw)
    assert len(script.turns) == 2 and report["repairs"]["stripped_wrapping"] == 1


def test_trailing_commas():
    raw = json.dumps(dialogue(*TWO)).replace("[]", '[{"type": "laugh", "after_word": 2},]').replace("}]}", "},]}")
    script, report = parse(raw)
    assert report["repairs"]["json_repaired"] == 1 and len(script.turns) == 2


def test_single_quotes_with_apostrophes():
    raw = (
        "{'turns': [{'speaker': 'user', 'text': \"I'm on the \\\"slow\\\" plan, it's awful.\", 'marks': []}, "
        "{'speaker': 'agent', 'text': 'Let's check the router's lights first, that's quick.', 'marks': []}]}"
    )
    script, report = parse(raw)
    assert script.turns[1].text == "Let's check the router's lights first, that's quick."
    assert report["repairs"]["json_repaired"] == 1


def test_missing_comma_and_stray_character():
    raw = (
        json.dumps(dialogue(*TWO)).replace('"user", "text"', '"user" "text"').replace('"marks": []}]', '"marks": x[]}]')
    )
    script, report = parse(raw)
    assert [t.text for t in script.turns] == list(TWO) and report["repairs"]["json_repaired"] == 1


def test_truncated_response_keeps_complete_turns():
    full = json.dumps(dialogue(SENTENCES[0], SENTENCES[1], SENTENCES[2], SENTENCES[3]))
    cut = full[: full.index(SENTENCES[3]) + 10]
    script, report = parse(cut)
    assert len(script.turns) == 3 and report["repairs"]["truncated"] == 1
    # a cut with single quotes as well: closed first, then json_repair; the half turn is still dropped
    script, report = parse(cut.replace('"', "'"))
    assert [t.text for t in script.turns] == SENTENCES[:3] and report["repairs"]["truncated"] == 1


def test_bare_list_and_aliases():
    raw = [
        {"role": "Human", "content": TWO[0]},
        {"speaker": "assistant", "text": TWO[1]},
        {"speaker": "Priya", "text": SENTENCES[4]},
        {"speaker": "NOVA", "text": SENTENCES[5]},
    ]
    script, report = parse(raw)
    assert [t.speaker.value for t in script.turns] == ["user", "agent", "user", "agent"]
    assert report["repairs"]["bare_turn_list"] == 1 and report["repairs"]["speaker_alias"] == 4


@pytest.mark.parametrize(
    "alias,channel",
    [
        ("AI", "agent"),
        ("customer", "user"),
        ("human", "user"),
        ("Assistant", "agent"),
        ("nova", "agent"),
        ("priya", "user"),
    ],
)
def test_speaker_alias(alias, channel):
    speakers = [alias, "agent" if channel == "user" else "user"]
    script, _ = parse(dialogue(*TWO, speakers=speakers))
    assert script.turns[0].speaker.value == channel


def test_merge_same_speaker_reindexes_marks():
    first = "My internet has been really slow."
    raw = dialogue(
        first,
        "It started yesterday evening.",
        TWO[1],
        speakers=["user", "user", "agent"],
        marks=[[{"type": "barge_in", "heard_words": 3}], [{"type": "pause", "after_word": 1, "seconds": 0.5}], []],
    )
    script, report = parse(raw, min_turns=2)
    assert len(script.turns) == 2 and script.turns[0].text == first + " It started yesterday evening."
    pause = next(m for m in script.marks if isinstance(m, SilentPause))
    assert pause.word_index == 6 + 1
    assert report["repairs"]["merged_turns"] == 1 and report["dropped"]["barge_in_in_merged_turn"] == 1


def test_cleaning_shifts_marks():
    raw = dialogue(
        "Priya: **Hi** (smiles) my internet is slow today.",
        TWO[1],
        marks=[
            [
                {"type": "backchannel", "after_word": 4, "token": "yeah"},  # "internet"
                {"type": "filler", "before_word": 2, "token": "um"},
            ],
            [],
        ],
    )  # "(smiles)": gone
    script, report = parse(raw)
    assert script.turns[0].text == "Hi my internet is slow today."
    bc = next(m for m in script.marks if isinstance(m, Backchannel))
    assert script.turns[0].text.split()[bc.word_index] == "internet"
    assert report["dropped"]["mark_lost_in_cleaning"] == 1 and report["repairs"]["cleaned_text"] == 1


def test_long_turn_truncated_and_marks_past_it_dropped():
    long = " ".join(SENTENCES[:4])  # 42 words
    raw = dialogue(TWO[0], long, marks=[[], [{"type": "laugh", "after_word": 40}, {"type": "laugh", "after_word": 3}]])
    script, report = parse(raw, max_words=25)
    assert len(script.turns[1].text.split()) <= 25
    assert [m.word_index for m in script.marks] == [3] and report["dropped"]["mark_lost_in_cleaning"] == 1


def test_turns_past_n_turns_cut():
    script, report = parse(dialogue(*SENTENCES[:6]))
    assert len(script.turns) == SCENARIO.n_turns and report["repairs"]["turns_truncated"] == 2


# --------------------------------------------------------------------------- drops
def test_out_of_range_marks_dropped():
    marks = [
        {"type": "filler", "before_word": 99, "token": "um"},
        {"type": "pause", "after_word": 10**30},
        {"type": "restart", "word": -1},
        {"type": "backchannel", "after_word": "three"},
        {"type": "pause", "after_word": 8, "seconds": 0.3},  # after the last word
        {"type": "dance", "after_word": 1},
        "garbage",
        {"type": "laugh", "after_word": True},
    ]
    script, report = parse(dialogue(TWO[0], TWO[1], marks=[marks, []]))
    assert script.marks == []
    assert sum(report["dropped"].values()) == len(marks)


def test_conflicting_marks_dropped():
    t1 = TWO[1]  # 23 words
    marks = [
        [],
        [
            {"type": "barge_in", "heard_words": 8},
            {"type": "barge_in", "heard_words": 5},
            {"type": "backchannel", "after_word": 12, "token": "yeah"},  # after the cut
            {"type": "backchannel", "after_word": 3, "token": "yeah"},
            {"type": "laugh", "after_word": 3},  # same word as a backchannel
            {"type": "filler", "before_word": 2, "token": "um"},
            {"type": "filler", "before_word": 2, "token": "uh"},
            {"type": "restart", "word": 1},
            {"type": "restart", "word": 1},
        ],
        [{"type": "barge_in", "heard_words": 3}],
    ]
    script, report = parse(dialogue(TWO[0], t1, SENTENCES[4], marks=marks), min_turns=2)
    kinds = sorted(m.type for m in script.marks)
    assert kinds == ["backchannel", "barge_in", "filler", "restart"]
    d = report["dropped"]
    assert d["second_barge_in"] == 1 and d["listener_after_cut"] == 1 and d["barge_in_on_last_turn"] == 1
    assert d["conflicting_marks"] == 3


def test_restart_on_non_word_dropped():
    script, report = parse(dialogue("I have 40 megabits now.", TWO[1], marks=[[{"type": "restart", "word": 2}], []]))
    assert script.marks == [] and report["dropped"]["unrestartable_word"] == 1


def test_pause_seconds_repaired():
    raw = dialogue(
        *TWO, marks=[[{"type": "pause", "after_word": 1, "seconds": 9}], [{"type": "pause", "after_word": 1}]]
    )
    script, report = parse(raw)
    assert sorted(m.duration for m in script.marks) == [0.45, 3.0]
    assert report["repairs"] == {"pause_seconds_clamped": 1, "pause_seconds_defaulted": 1}


def test_resolve_conflicts_is_idempotent():
    rng = np.random.default_rng(4)
    for _ in range(20):
        script, _ = parse(valid_response(rng))
        assert resolve_conflicts(script.turns, resolve_conflicts(script.turns, script.marks)) == script.marks


# --------------------------------------------------------------------------- rejections
@pytest.mark.parametrize(
    "raw,reason",
    [
        ("", "invalid_json"),
        ("I'm sorry, I can't write that.", "invalid_json"),
        ('{"turns": [{"speaker": "user", "te', "invalid_json"),
        ("[" * 5000 + "]" * 5000, "invalid_json"),  # nesting past the recursion limit
        ("[" * 50 + "]" * 50, "malformed_turn"),
        ('{"dialogue": "none"}', "no_turns"),
        ('{"turns": []}', "no_turns"),
        ('"just a string"', "no_turns"),
        ('{"turns": ["hello", "hi"]}', "malformed_turn"),
    ],
)
def test_rejected_raw(raw, reason):
    assert reject(raw).reason == reason


def test_rejection_reasons():
    assert reject(dialogue(*TWO, speakers=["narrator", "agent"])).reason == "wrong_speakers"
    assert reject(dialogue(*TWO, speakers=["user", "user"])).reason == "wrong_speakers"
    assert reject({"turns": [{"speaker": "user", "text": TWO[0]}, {"text": TWO[1]}]}).reason == "wrong_speakers"
    assert reject(dialogue(TWO[0], "   ")).reason == "empty_turn"
    assert reject(dialogue(TWO[0], "(nods) **")).reason == "empty_turn"
    assert (
        reject({"turns": [{"speaker": "user", "text": TWO[0]}, {"speaker": "agent", "text": 42}]}).reason
        == "empty_turn"
    )
    assert reject(dialogue(TWO[0], " ".join(SENTENCES) * 3), max_words=30).reason == "runaway_turn"
    assert reject(dialogue(*TWO), min_turns=3).reason == "too_few_turns"
    assert reject(dialogue(TWO[0], "Okay okay okay okay okay sure.")).reason == "repetition_loop"
    assert (
        reject(dialogue(TWO[0], "Je pense que le routeur est vraiment trop vieux pour ça.")).reason == "wrong_language"
    )
    assert reject(dialogue(TWO[0], "这个路由器太旧了")).reason == "wrong_language"
    echo = script_messages(SCENARIO, 4)[0]["content"].splitlines()[1]
    assert reject(dialogue(TWO[0], echo)).reason == "prompt_echo"
    assert reject(dialogue(TWO[0], TWO[0])).reason == "prompt_echo"  # copies the earlier turn
    assert reject(dialogue(TWO[0], "As an AI language model, here's my response to the user.")).reason == "meta"
    assert reject(dialogue("Fine.", TWO[1]), min_words={Channel.user: 3, Channel.agent: 5}).reason == "too_short"


def test_only_script_rejected_escapes_on_wrong_python_types():
    for raw in (None, 12, b"\xff\xfe{", [1, 2]):
        with pytest.raises(ScriptRejected):
            parse_script(raw, SCENARIO)  # type: ignore[arg-type]


def test_accepted_turns_pass_check_turn():
    rng = np.random.default_rng(5)
    for _ in range(20):
        script, _ = parse(valid_response(rng))
        for turn in script.turns:
            check_turn(turn.text, min_words=1)
        assert all(isinstance(m, Filler | Restart | SilentPause | Backchannel | Laugh | BargeIn) for m in script.marks)


def test_a_turn_garbled_into_one_token_is_too_short():
    """Fuzz case 7552 (benchmarks/results/fuzz.md): "DM!T." normalises to two words but is one
    token for the TTS; the word minimum counts tokens."""
    from factory.script.text_checks import TurnRejected, check_turn

    with pytest.raises(TurnRejected) as rejected:
        check_turn("DM!T.", min_words=2)
    assert rejected.value.reason == "too_short"
    check_turn("Okay, sure.", min_words=2)
