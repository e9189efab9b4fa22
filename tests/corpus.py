"""The synthetic dialogue corpus of the planner-path tests, built once per test run (the session
fixture `planned_corpus` in tests/conftest.py): 500 dialogues through the real planner path
(`write_script` with a synthetic LLM), word-shaped noise bursts standing in for TTS, with the
silences real voices leave after punctuation (tests/test_timeline.py), mixed into stereo and
measured with the audit's Heldner & Edlund measures. tests/test_turn_taking.py checks all of them
against human conversation, tests/test_calibration.py the scripts of the first 200 against the
behaviour targets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from factory.audit.measures import measure_stereo
from factory.config import RunConfig
from factory.conversation.measures import ConversationMeasures
from factory.models import Mode, Script, Timeline
from factory.script.compose import write_script
from factory.script.scenario import draw_scenario
from factory.seeding import rng_for
from factory.timeline.place import build_timeline
from tests.test_timeline import SR, VOICES, burst_renders

N_DIALOGUES = 500
WORDS = [
    "i",
    "think",
    "we",
    "could",
    "try",
    "the",
    "other",
    "way",
    "if",
    "it",
    "is",
    "not",
    "too",
    "late",
    "and",
    "you",
    "know",
    "that",
    "sounds",
    "good",
    "but",
    "maybe",
    "we",
    "should",
    "check",
    "first",
    "what",
    "time",
    "the",
    "shop",
    "opens",
    "tomorrow",
    "because",
    "my",
    "sister",
    "wants",
    "to",
    "come",
    "with",
    "us",
    "so",
    "let",
    "me",
    "ask",
    "her",
    "about",
    "it",
    "then",
    "we",
    "can",
    "go",
    "after",
    "lunch",
    "or",
    "later",
    "in",
    "the",
    "day",
    "when",
    "the",
    "weather",
    "is",
    "better",
    "right",
    "now",
    "it",
    "is",
    "raining",
    "a",
    "lot",
    "here",
    "and",
    "the",
    "bus",
    "was",
    "slow",
    "this",
    "morning",
    "actually",
    "the",
    "car",
    "needs",
    "new",
    "tyres",
    "soon",
    "which",
    "will",
    "cost",
    "some",
    "money",
    "so",
    "we",
    "have",
    "to",
    "plan",
    "our",
    "budget",
    "for",
    "the",
    "next",
    "month",
    "as",
    "well",
]


class SyntheticLLM:
    """Writes plain English turns of a seeded length between half and all of the word budget
    (`write_turn` asks for `max_tokens = 1.6 * max_words + 16`)."""

    name = "synthetic"

    def complete(self, messages, *, max_tokens, temperature, seed, json_schema=None, stop=None) -> str:
        rng = np.random.default_rng(seed)
        max_words = max(int((max_tokens - 16) / 1.6), 2)
        n = int(rng.integers(max(max_words // 2, 2), max_words + 1))
        words = [str(rng.choice(WORDS)) for _ in range(n)]
        for i in range(3, n - 2, 7):  # clause boundaries, where fillers like to go
            words[i] += ","
        words[0] = words[0].capitalize()
        return re.sub(r"\bi\b", "I", " ".join(words)) + "."


def planned_dialogue(cfg: RunConfig, k: int):
    """(mode, script, timeline, stereo audio) of dialogue `k` through the planner path."""
    key = f"cal-{k}"  # first named by tests/test_calibration.py, whose checks read these scripts
    scenario = draw_scenario(
        key, rng_for(cfg.run.seed, key, "scenario"), cfg.dialogue.mode_weights, cfg.dialogue.n_turns
    )
    script = write_script(SyntheticLLM(), scenario, cfg, key)
    rng = np.random.default_rng(k)
    rendered, reactions = burst_renders(script, rng, punctuation_pauses=True)  # pauses as real voices leave
    timeline, placements = build_timeline(
        key,
        script,
        rendered,
        reactions,
        VOICES,
        rng_for(cfg.run.seed, key, "timeline"),
        cfg.timing,
        0.008,
        scenario.mode,
    )
    stereo = np.zeros((round(timeline.duration * SR), 2), np.float32)
    for p in placements:  # the mixer's sum; the energy VAD is per channel and gain-free
        stereo[p.start : p.start + len(p.audio), p.channel.index] += p.audio
    return scenario.mode, script, timeline, stereo


@dataclass
class PlannedDialogue:
    mode: Mode
    script: Script
    timeline: Timeline
    measures: ConversationMeasures  # of the stereo audio (energy VAD); the audio itself is not kept


def build_corpus(n: int = N_DIALOGUES) -> list[PlannedDialogue]:
    cfg = RunConfig()
    out = []
    for k in range(n):
        mode, script, timeline, stereo = planned_dialogue(cfg, k)
        out.append(PlannedDialogue(mode, script, timeline, measure_stereo(stereo, SR, vad="energy")))
    return out
