"""The structured script path end to end with a real model: the embedded SmolLM2 under a JSON
grammar (the same request a vLLM server gets as guided decoding). The tiny model's dialogues
are poor, but every outcome must be a valid, calibrated Script or a rejection with a known
reason, and some seeds must give a Script: a run where every script is rejected is a failure,
not a pass."""

from __future__ import annotations

import json

import jsonschema
import pytest

from factory.config import load_config
from factory.llm.embedded import LlamaCppBackend
from factory.llm.http import OpenAIHTTPBackend
from factory.models import BargeIn, Mode, Script
from factory.script.compose import write_script_structured
from factory.script.outcomes import REASONS
from factory.script.scenario import draw_scenario
from factory.script.writer import TurnRejected
from factory.seeding import rng_for
from tests.servers import Reply, completion_body

# Seed 5 first: on these machines (2-core AMD EPYC, llama.cpp built with GGML_NATIVE=OFF) seeds 1-4
# are rejected (wrong_speakers x 3, too_short; ~16-26 CPU-s each) and 5 gives a Script, so the
# test spent ~110 CPU-s reaching it. Another machine's tokens may differ: the rest follow.
SEEDS = (5, 1, 2, 3, 4, 6)
# Seeds are tried in order until one gives a Script and at least this many outcomes were checked:
# each seed is a full grammar-constrained generation on the CPU model (~60-120 s of a CI worker),
# and the later seeds only matter where the early ones are all rejected (the model's tokens differ
# by machine). The rejection reasons themselves are tested on scripted replies
# (test_a_script_too_short_to_hold_a_barge_in_is_another_attempt, tests/test_script_parse.py).
ENOUGH_OUTCOMES = 1
# The per-turn checks' reasons (writer.TurnRejected) besides the parser's.
KNOWN_REASONS = REASONS | {"empty", "too_short", "prompt_echo", "repetition_loop", "wrong_language", "meta"}


@pytest.fixture(scope="module")
def llm() -> LlamaCppBackend:
    return LlamaCppBackend()


def test_structured_scripts_are_valid_or_rejected_with_reason(llm: LlamaCppBackend) -> None:
    cfg = load_config(None, ["llm.script_mode=structured", "dialogue.n_turns=[4, 4]", "llm.turn_attempts=2"])
    accepted, rejected = [], []
    for seed in SEEDS:
        scenario = draw_scenario(f"s{seed}", rng_for(seed, "s", "scenario"), {Mode.assistant: 1.0}, (4, 4))
        try:
            script = write_script_structured(llm, scenario, cfg, f"s{seed}")
        except TurnRejected as exc:
            assert exc.reason in KNOWN_REASONS, (seed, exc.reason, exc.detail)
            rejected.append((seed, exc.reason))
            continue
        Script.model_validate(script.model_dump())
        cut = [m for m in script.marks if isinstance(m, BargeIn)]
        assert len(cut) >= cfg.behaviour.min_barge_ins, (seed, script.marks)
        assert all(m.turn + 1 < len(script.turns) for m in cut), (seed, script.marks)
        accepted.append(seed)
        if len(accepted) + len(rejected) >= ENOUGH_OUTCOMES:
            break
    assert accepted, f"every seed's script was rejected: {rejected}"


TWO_TURNS = {
    "turns": [
        {"speaker": "user", "text": "Could you help me plan a short weekend trip to the coast?", "marks": []},
        {
            "speaker": "agent",
            "text": "Of course. A coastal weekend works best with a quiet town, a walk along the cliffs on "
            "Saturday morning, and a fish supper by the harbour before the drive home on Sunday.",
            "marks": [],
        },
    ]
}


def test_a_script_too_short_to_hold_a_barge_in_is_another_attempt(fake_server) -> None:
    # Two turns parse (half of four), but an assistant dialogue can only cut the agent's turn
    # and the agent's only turn is the last: no barge-in fits, so each attempt is rejected
    # instead of handing TTS a script the timeline must reject.
    server = fake_server([], then=Reply(body=completion_body(json.dumps(TWO_TURNS))))
    cfg = load_config(
        None,
        ["llm.script_mode=structured", "dialogue.n_turns=[4, 4]", "llm.turn_attempts=3", "behaviour.min_barge_ins=1"],
    )
    scenario = draw_scenario("s1", rng_for(1, "s", "scenario"), {Mode.assistant: 1.0}, (4, 4))
    with OpenAIHTTPBackend(server.base_url, max_retries=0) as llm, pytest.raises(TurnRejected) as err:
        write_script_structured(llm, scenario, cfg, "s1")
    assert err.value.reason == "too_few_turns" and "0 barge-ins" in err.value.detail, err.value.detail
    assert len(server.requests) == cfg.llm.turn_attempts
    # Guided decoding is asked for exactly the scenario's turns (a server that honours the
    # schema cannot close the list early, as SmolLM2 on vLLM did with 2 of 4).
    schema = server.requests[0]["json"]["response_format"]["json_schema"]["schema"]
    assert (schema["properties"]["turns"]["minItems"], schema["properties"]["turns"]["maxItems"]) == (4, 4)
    jsonschema.validate(TWO_TURNS | {"turns": TWO_TURNS["turns"] * 2}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(TWO_TURNS, schema)
