"""Script stage: the LLM writes the dialogue turn by turn, the behaviour planner marks it.

Turn by turn, because a barge-in cuts a turn short and the interrupter (and everyone after)
must respond to what was actually heard, not to the planned text.
"""

from __future__ import annotations

from factory.behaviour import MIN_VICTIM_WORDS, barge_in_cut, barge_in_victims, insert_hesitations, plan_listener_marks
from factory.config import RunConfig
from factory.llm.base import LLMBackend
from factory.models import BargeIn, Channel, Mark, Mode, Scenario, Script, ScriptTurn
from factory.seeding import derive_seed, rng_for
from factory.writer import write_turn


def word_limits(scenario: Scenario, speaker: Channel, cfg: RunConfig) -> tuple[int, int]:
    if scenario.mode is Mode.peer:
        return cfg.dialogue.peer_words
    return cfg.dialogue.assistant_agent_words if speaker is Channel.agent else cfg.dialogue.assistant_user_words


def write_script(llm: LLMBackend, scenario: Scenario, cfg: RunConfig, sample_key: str) -> Script:
    """Raises `TurnRejected` when the LLM cannot write a usable turn within its attempts."""
    seed = cfg.run.seed
    rng = rng_for(seed, sample_key, "behaviour")
    speakers = [Channel.user if i % 2 == 0 else Channel.agent for i in range(scenario.n_turns)]
    victims = barge_in_victims(scenario.mode, speakers, rng, cfg.behaviour)
    filler_turn = int(rng.integers(len(speakers))) if cfg.behaviour.min_fillers else -1

    turns: list[ScriptTurn] = []
    heard: list[ScriptTurn] = []
    marks: list[Mark] = []
    pending_victim = False  # a planned barge-in whose turn was too short moves to a later eligible turn
    for i, speaker in enumerate(speakers):
        low, high = word_limits(scenario, speaker, cfg)
        may_be_cut = (i in victims or pending_victim) and i < len(speakers) - 1
        if may_be_cut and (scenario.mode is Mode.peer or speaker is Channel.agent):
            low = min(max(low, MIN_VICTIM_WORDS), high)  # long enough to be cut mid-way
        text = write_turn(
            llm, scenario, heard, speaker,
            seed=derive_seed(seed, sample_key, f"llm-turn-{i}"),
            min_words=low, max_words=high, attempts=cfg.llm.turn_attempts,
        )
        text, turn_marks = insert_hesitations(
            text, i, rng, cfg.behaviour, cfg.timing.pause_median, force_filler=(i == filler_turn)
        )
        marks.extend(turn_marks)
        turn = ScriptTurn(speaker=speaker, text=text, responds_to=i - 1 if i else None)
        turns.append(turn)

        words = text.split()
        if may_be_cut and (scenario.mode is Mode.peer or speaker is Channel.agent):
            if len(words) >= MIN_VICTIM_WORDS:
                heard_words = barge_in_cut(len(words), rng)
                marks.append(BargeIn(turn=i, heard_words=heard_words))
                # The next writer sees the cut-off text, marked as cut off, as a listener would.
                heard.append(ScriptTurn(speaker=speaker, text=" ".join(words[:heard_words]) + " —"))
                pending_victim = False
                continue
            pending_victim = True
        heard.append(turn)

    marks.extend(plan_listener_marks(turns, marks, rng, cfg.behaviour, scenario.mode))
    marks.sort(key=lambda m: (m.turn, getattr(m, "word_index", getattr(m, "heard_words", 0)), m.type))
    return Script(scenario_id=scenario.id, turns=turns, marks=marks, llm=llm.name)

