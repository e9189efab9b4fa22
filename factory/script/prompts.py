"""The agent's conditioning prompts: a text role prompt composed from the scenario, and the
sentence its voice prompt says.

Models like PersonaPlex (a Moshi fine-tune) are conditioned on a short text role prompt and a
clip of the voice they should speak with. The role prompt follows the two prompt styles
PersonaPlex's README shows (NVIDIA/personaplex@3428dfd README.md "Prompting Guide"): an assistant
role ("You are a wise and friendly teacher. Answer questions ...") and casual conversation ("You
enjoy having a good conversation. Have a casual discussion about ..."). It is a pure function of
the scenario, so it needs no seed.

The voice prompt is one of a few fixed, topic-free sentences in the dialogue's language (its
lexicon's `voice_prompts`, `factory/script/lexicon/`), in an order drawn from the sample's
own "voice_prompt" generator (no other stage's draws move), skipping any sentence the script
itself says, so the clip is never a piece of the dialogue.
"""

from __future__ import annotations

import numpy as np

from factory.models import Mode, Scenario, Script
from factory.script.lexicon import load_lexicon


def role_prompt(scenario: Scenario) -> str:
    """The agent's role prompt: who it is, what the conversation is for, how it speaks."""
    agent, user = scenario.agent, scenario.user
    if scenario.mode is Mode.assistant:
        return (
            f"You are {agent.name}, {agent.description}. "
            f"Help the user with {scenario.topic}. "
            f"The user is {user.name}, {user.description}, talking to you {scenario.setting}. "
            f"Keep your tone {scenario.style}."
        )
    return (
        "You enjoy having a good conversation. "
        f"Have a {scenario.style} conversation about {scenario.topic}, {scenario.setting}. "
        f"You are {agent.name}, {agent.description}, talking with {user.name}, {user.description}."
    )


def voice_prompt_text(rng: np.random.Generator, script: Script, language: str = "en") -> str:
    """The voice prompt's sentence: the first of `language`'s lexicon (`voice_prompts`), in the
    order `rng` draws, that no turn of `script` says (compared without case or punctuation)."""
    sentences = load_lexicon(language).voice_prompts
    said = {_plain(t.text) for t in script.turns}
    order = rng.permutation(len(sentences))
    return next(
        (sentences[int(i)] for i in order if _plain(sentences[int(i)]) not in said),
        sentences[int(order[0])],  # unreachable unless a script says all of them
    )


def _plain(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())
