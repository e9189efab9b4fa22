"""Dataset script sources (factory.script.source): the shipped dialogue set, the spoken-style
rewrite keeping the source's content, the mix by weight, provenance, and config errors (exit 2).
No TTS and no LLM model: a few seconds in all."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from factory.cli import app
from factory.config import DatasetSource, load_config
from factory.locations import dialogue_set_dir
from factory.models import Channel, Mode, Script
from factory.runtime import runtime_for
from factory.script.scenario import draw_scenario
from factory.script.source import (
    SourceDialogue,
    SourceError,
    load_source,
    prepare_turns,
    provenance,
    rewrite_turn_llm,
    scenario_for,
    spoken_style,
    write_from_source,
)
from factory.script.text_checks import TurnRejected
from factory.stages import choose_source, plan_sample, script_for, source_columns
from tests.test_writer import ScriptedLLM

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "dialogues" / "en-everyday.jsonl"
# Auxiliaries that spoken style may contract away ("will not" -> "won't", "does not" -> "doesn't").
CONTRACTIBLE = {"cannot", "will", "have", "does", "were", "would", "should", "could"}


def _lines() -> list[dict]:
    return [json.loads(line) for line in SHIPPED.read_text().splitlines() if line.strip()]


def test_the_shipped_set_is_packaged_and_in_the_documented_format() -> None:
    lines = _lines()
    assert (dialogue_set_dir() / "en-everyday.jsonl").read_bytes() == SHIPPED.read_bytes()
    assert len(lines) >= 24 and len({d["id"] for d in lines}) == len(lines)
    for d in lines:  # the fields dialogues/README.md promises, checked on the raw JSON
        assert {"id", "language", "mode", "topic", "license", "source", "turns"} <= set(d)
        assert d["license"] == "CC0-1.0" and d["language"] == "en" and d["mode"] in ("assistant", "peer")
        assert 6 <= len(d["turns"]) <= 10 and {t["role"] for t in d["turns"]} == {"user", "agent"}


def _script(dialogue: SourceDialogue, key: str = "train-0000000") -> Script:
    cfg = load_config(overrides=["dialogue.sources=[{kind: dataset, path: en-everyday}]"])
    n = len(prepare_turns(dialogue, cfg))
    base = draw_scenario(key, np.random.default_rng(0), {dialogue.mode: 1.0}, (n, n))
    src = cfg.dialogue.sources[0]
    assert isinstance(src, DatasetSource)
    return write_from_source(
        None, scenario_for(base, dialogue, n), dialogue, provenance(src, dialogue, "rules"), cfg, key
    )


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_the_rules_rewrite_keeps_every_content_word_of_every_shipped_dialogue() -> None:
    for raw in _lines():
        script = _script(SourceDialogue.model_validate(raw))
        spoken = " ".join(t.text for t in script.turns)
        have = _words(spoken)
        want = {w for t in raw["turns"] for w in _words(t["text"]) if len(w) >= 4} - CONTRACTIBLE
        assert want <= have, (raw["id"], sorted(want - have))
        assert not re.search(r"\d", spoken), (raw["id"], spoken)  # every number said in words
        # each side keeps its own words, in the source's order of speakers
        assert [t.speaker.value for t in script.turns] == [t["role"] for t in raw["turns"]]
        assert script.source is not None and script.source.dialogue_id == raw["id"]
        assert script.source.license == "CC0-1.0" and script.source.rewrite == "rules"
        assert any(m.type == "filler" for m in script.marks)  # the planner's marks, as for an LLM script


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        (
            "A single ticket is $8 and a return costs $14.",
            "A single ticket is eight dollars and a return costs fourteen dollars.",
        ),
        ("The first bus leaves at 4:30, then 10:05.", "The first bus leaves at four thirty, then ten oh five."),
        ("Use about 1.5 cups for 15 minutes.", "Use about one point five cups for fifteen minutes."),
        ("The app uses 40% of it since 1995.", "The app uses forty percent of it since nineteen ninety-five."),
        ("I do not know what it is.", "I don't know what it is."),  # "it is" at a clause end stays whole
        ("It is late, so let us go. You cannot stay.", "It's late, so let's go. You can't stay."),
        ("I am sure we are fine and I will not wait.", "I'm sure we're fine and I won't wait."),
    ],
)
def test_spoken_style_by_rules(written: str, spoken: str) -> None:
    assert spoken_style(written) == spoken


def test_an_overlong_turn_is_split_at_sentence_ends_without_losing_a_word() -> None:
    names = "one two three four five six seven eight nine ten eleven twelve".split()
    long = " ".join(f"Step {n} of the plan keeps this answer going a while." for n in names)
    assert len(long.split()) == 132  # an assistant agent turn holds at most 50 words (the default)
    dialogue = SourceDialogue(
        id="x",
        mode=Mode.assistant,
        topic="t",
        license="CC0-1.0",
        source="test",
        turns=[{"role": "user", "text": "Tell me."}, {"role": "agent", "text": long}],  # type: ignore[list-item]
    )
    turns = prepare_turns(dialogue, load_config())
    agent = [t.text for t in turns if t.speaker is Channel.agent]
    assert len(agent) == 3 and all(len(t.split()) <= 50 for t in agent)
    assert " ".join(agent).split() == long.split()


def test_an_llm_rewrite_that_drops_content_is_rejected_and_the_next_attempt_kept() -> None:
    llm = ScriptedLLM(["Sure, that sounds good to me!", "**Single tickets** are $8, and you pay by card on the bus."])
    text = rewrite_turn_llm(
        llm, "A single ticket is $8, and you can pay with a card on the bus.", seed=5, attempts=2, temperature=0.7
    )
    assert text == "Single tickets are eight dollars, and you pay by card on the bus."
    assert llm.seeds == [5, 6]
    with pytest.raises(TurnRejected) as info:
        rewrite_turn_llm(
            ScriptedLLM(["Okay, bye now."]), "The museum opens at 9 on Mondays.", seed=1, attempts=1, temperature=0.7
        )
    assert info.value.reason == "content_lost"


def test_sources_mix_by_weight_drawn_per_sample_id() -> None:
    cfg = load_config(
        overrides=["dialogue.sources=[{kind: llm, weight: 0.75}, {kind: dataset, path: en-everyday, weight: 0.25}]"]
    )
    picks = [choose_source(cfg, f"train-{i:07d}") for i in range(2000)]
    assert picks == [choose_source(cfg, f"train-{i:07d}") for i in range(2000)]  # a draw, not a state
    share = picks.count(1) / len(picks)
    assert abs(share - 0.25) < 4 * (0.25 * 0.75 / len(picks)) ** 0.5  # four standard errors
    # auto: rules beside the embedded tiny model, the LLM beside a served one, rules without an LLM source
    assert cfg.rewrite_of(cfg.dialogue.sources[1]) == "rules" and cfg.uses_llm
    served = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"backend": "http"})})
    assert served.rewrite_of(served.dialogue.sources[1]) == "llm"
    alone = load_config(overrides=["dialogue.sources=[{kind: dataset, path: en-everyday}]", "llm.backend=http"])
    assert alone.rewrite_of(alone.dialogue.sources[0]) == "rules" and not alone.uses_llm


def test_a_dataset_sample_carries_its_provenance_and_language_to_the_manifest() -> None:
    cfg = load_config(overrides=["dialogue.sources=[{kind: dataset, path: en-everyday}]", "run.seed=5"])
    rt = runtime_for(cfg)
    plan = plan_sample(rt, "train-0000003", "train-0000003")
    assert plan.dialogue is not None
    raw = next(d for d in _lines() if d["id"] == plan.dialogue.id)
    assert (plan.scenario.topic, plan.scenario.mode.value, plan.scenario.language) == (
        raw["topic"],
        raw["mode"],
        raw["language"],
    )
    script = script_for(rt, plan)
    assert script.model_validate_json(script.model_dump_json()) == script  # provenance survives the row codec
    assert source_columns(script) == {
        "source_kind": "dataset",
        "source_dataset": "en-everyday",
        "source_path": "en-everyday",
        "source_id": raw["id"],
        "source_license": raw["license"],
    }
    assert "llm" not in rt.__dict__  # nothing loaded the LLM


def test_an_llm_script_serialises_as_before_sources_existed() -> None:
    script = Script(scenario_id="s", turns=[{"speaker": "user", "text": "Hi."}, {"speaker": "agent", "text": "Hello."}])  # type: ignore[list-item]
    assert "source" not in json.loads(script.model_dump_json())  # the LLM runs' bytes are unchanged


def _hf_folder(tmp: Path, rows: list[dict]) -> Path:
    import datasets

    folder = tmp / "sharegpt"
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    return folder


SHAREGPT = [
    {
        "id": "sg-1",
        "conversations": [
            {"from": "system", "value": "You are helpful."},
            {"from": "human", "value": "What is the capital of France?"},
            {"from": "gpt", "value": "The capital of France is Paris, home to about 2 million people."},
        ],
    }
]


def test_a_hugging_face_dataset_with_a_role_mapping(tmp_path: Path) -> None:
    folder = _hf_folder(tmp_path, SHAREGPT)
    src = DatasetSource(
        path=str(folder),
        turns_column="conversations",
        role_key="from",
        text_key="value",
        roles={"human": "user", "gpt": "agent", "system": "skip"},
        id_column="id",
        license="CC-BY-4.0",
    )
    d = load_source(src).dialogue(0)
    assert (d.id, d.license, [t.role for t in d.turns]) == ("sg-1", "CC-BY-4.0", [Channel.user, Channel.agent])
    assert d.turns[1].text.startswith("The capital of France")


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"path": "no-such-set"}, "'no-such-set'"),
        ({"turns_column": "messages"}, "turns_column 'messages'"),
        ({"turns_column": "conversations", "role_key": "from", "text_key": "value"}, "speaker 'system'"),
    ],
)
def test_a_bad_path_column_or_role_mapping_is_a_config_error(tmp_path: Path, overrides: dict, named: str) -> None:
    folder = _hf_folder(tmp_path, SHAREGPT)
    src = DatasetSource.model_validate({"path": str(folder), "roles": {"human": "user", "gpt": "agent"}, **overrides})
    with pytest.raises(SourceError, match=re.escape(named)):
        load_source(src)


def test_generate_exits_2_naming_a_bad_source(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["generate", "--out", str(tmp_path), "--set", "dialogue.sources=[{kind: dataset, path: no-such-set}]"],
    )
    assert result.exit_code == 2, result.output
    assert "no-such-set" in result.output


def test_a_barge_in_is_never_planned_into_a_split_turns_own_continuation() -> None:
    """A turn split in two is one speaker twice in a row: the second part cannot interrupt the first
    (the timeline rejected such a script: "barge_in ends before it starts")."""
    cfg = load_config(
        overrides=[
            "dialogue.sources=[{kind: dataset, path: en-everyday}]",
            "dialogue.assistant_agent_words=[5, 12]",  # every agent answer splits
            "dialogue.peer_words=[5, 12]",
            "behaviour.barge_ins_per_dialogue=4",
            "behaviour.barge_in_dialogue_share=1",
        ]
    )
    src = cfg.dialogue.sources[0]
    assert isinstance(src, DatasetSource)
    cut = split = 0
    for k, raw in enumerate(_lines()):
        dialogue = SourceDialogue.model_validate(raw)
        n = len(prepare_turns(dialogue, cfg))
        base = draw_scenario("s", np.random.default_rng(k), {dialogue.mode: 1.0}, (n, n))
        script = write_from_source(
            None, scenario_for(base, dialogue, n), dialogue, provenance(src, dialogue, "rules"), cfg, f"k{k}"
        )
        speakers = [t.speaker for t in script.turns]
        split += any(a is b for a, b in zip(speakers, speakers[1:], strict=False))
        for m in script.marks:
            if m.type == "barge_in":
                cut += 1
                assert speakers[m.turn + 1] is not speakers[m.turn], (raw["id"], m)
    assert split >= len(_lines()) // 2 and cut >= len(_lines())  # barge-ins planned, never into a continuation


def test_a_barge_in_into_a_dataset_turn_lets_the_listener_hear_what_later_turns_take_up() -> None:
    """The dataset wrote every turn for the whole turn before it: a cut may only drop words that no
    later turn takes up again (the interrupter answers what it heard, and nobody later refers to
    what was never said), and never the first half of the turn's last question."""
    from factory.script.text_checks import content_words

    cfg = load_config(
        overrides=[
            "dialogue.sources=[{kind: dataset, path: en-everyday}]",
            "behaviour.barge_ins_per_dialogue=2",
            "behaviour.barge_in_dialogue_share=1",
        ]
    )
    src = cfg.dialogue.sources[0]
    assert isinstance(src, DatasetSource)
    cuts = 0
    for k, raw in enumerate(_lines()):
        dialogue = SourceDialogue.model_validate(raw)
        n = len(prepare_turns(dialogue, cfg))
        base = draw_scenario("s", np.random.default_rng(k), {dialogue.mode: 1.0}, (n, n))
        for key in (f"a{k}", f"b{k}"):
            script = write_from_source(
                None, scenario_for(base, dialogue, n), dialogue, provenance(src, dialogue, "rules"), cfg, key
            )
            turns = script.turns
            for m in (m for m in script.marks if m.type == "barge_in"):
                cuts += 1
                words = turns[m.turn].text.split()
                heard, rest = words[: m.heard_words], words[m.heard_words :]
                known = content_words(" ".join(heard)) | {w for t in turns[: m.turn] for w in content_words(t.text)}
                later = {w for t in turns[m.turn + 1 :] for w in content_words(t.text)}
                assert not (content_words(" ".join(rest)) - known) & later, (raw["id"], key, heard, rest)
                if "?" in " ".join(rest):  # a question cut: at least half of it heard
                    starts = [0] + [j + 1 for j, w in enumerate(words[:-1]) if w.endswith((".", "!", "?"))]
                    last_q = max(j for j, w in enumerate(words) if w.endswith("?"))
                    begun = max(s for s in starts if s <= last_q)
                    assert m.heard_words >= begun + (last_q + 1 - begun + 1) // 2, (raw["id"], heard, rest)
    # the rate holds: a drawn turn that cannot be cut so gives way to another one
    assert cuts >= 1.5 * 2 * len(_lines()), cuts
