"""The structured script path end to end with a real model: the embedded SmolLM2 under a JSON
grammar (the same request a vLLM server gets as guided decoding). The tiny model's dialogues
are poor, but every outcome must be a valid, calibrated Script or a rejection with a reason."""

from __future__ import annotations

import pytest

from factory.config import load_config
from factory.llm.embedded import LlamaCppBackend
from factory.models import BargeIn, Mode, Script
from factory.script.compose import write_script_structured
from factory.script.parse import REASONS
from factory.script.scenario import draw_scenario
from factory.script.writer import TurnRejected
from factory.seeding import rng_for


@pytest.fixture(scope="module")
def llm() -> LlamaCppBackend:
    return LlamaCppBackend()


@pytest.mark.parametrize("seed", [1, 2])
def test_structured_scripts_are_valid_or_rejected_with_reason(llm: LlamaCppBackend, seed: int) -> None:
    cfg = load_config(None, ["llm.script_mode=structured", "dialogue.n_turns=[4, 4]", "llm.turn_attempts=2"])
    scenario = draw_scenario(f"s{seed}", rng_for(seed, "s", "scenario"), {Mode.assistant: 1.0}, (4, 4))
    try:
        script = write_script_structured(llm, scenario, cfg, f"s{seed}")
    except TurnRejected as exc:
        assert exc.reason in REASONS | {
            "empty",
            "too_short",
            "prompt_echo",
            "repetition_loop",
            "wrong_language",
            "meta",
        }
        return
    Script.model_validate(script.model_dump())
    assert sum(isinstance(m, BargeIn) for m in script.marks) >= cfg.behaviour.min_barge_ins
    cut = next(m for m in script.marks if isinstance(m, BargeIn))
    assert cut.turn + 1 < len(script.turns)
