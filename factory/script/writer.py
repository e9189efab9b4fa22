"""The content writer: the LLM writes a dialogue one spoken turn at a time.

Turn by turn, because a barge-in truncates a turn and the next turn must answer what was
actually heard (`history[i].text` is the heard text). The prompt is built for the smallest
embedded model (SmolLM2-135M-Instruct): the speaker to write is the chat "assistant", the
other speaker the chat "user", so the model does what it was tuned for — answer the last
message — and the instructions sit in the system message, in the second person.
"""

from __future__ import annotations

import logging

from factory.config import DialogueSection, LLMSection
from factory.languages import spaced
from factory.llm.base import LLMBackend
from factory.models import Channel, Mode, Persona, Scenario, ScriptTurn
from factory.script.text_checks import (
    AGENT_META,
    TurnRejected,
    check_turn,
    check_turn_unspaced,
    clean_turn,
    clean_turn_unspaced,
)

__all__ = ["TurnRejected", "build_messages", "turn_length", "write_turn"]

log = logging.getLogger(__name__)

HISTORY_TURNS = 6  # enough context for a reply; keeps the prompt short for a 2k context
DEFAULT_TEMPERATURE: float = LLMSection.model_fields["temperature"].default  # runs pass llm.temperature
_TERMINAL = (".", "!", "?")


def turn_length(mode: Mode, speaker: Channel, dialogue: DialogueSection | None = None) -> tuple[int, int]:
    """(min_words, max_words) for a turn from the run config's `dialogue` section (its defaults
    when None): assistant answers run long, the user's turns and peer turns stay short, as in
    BayLing/LSLM-style and Fisher-style data."""
    dialogue = dialogue or DialogueSection()
    if mode is Mode.peer:
        return dialogue.peer_words
    return dialogue.assistant_agent_words if speaker is Channel.agent else dialogue.assistant_user_words


def _length_hint(max_words: int) -> str:
    # A 135M model cannot count words; sentence counts it roughly follows.
    if max_words <= 20:
        return "one short sentence"
    if max_words <= 35:
        return "one or two short sentences"
    return "two to four sentences"


def _role_brief(scenario: Scenario, speaker: Channel) -> str:
    me, other = _personas(scenario, speaker)
    if scenario.mode is Mode.peer:
        return f"You are {me.name}, {me.description}. You are chatting with {other.name}, {other.description}."
    if speaker is Channel.agent:
        return (
            f"You are {me.name}, {me.description}. You are a voice assistant talking with "
            f"{other.name}, {other.description}. Answer helpfully and concretely."
        )
    return (
        f"You are {me.name}, {me.description}. You are talking to {other.name}, an AI voice "
        f"assistant. Ask short questions and follow-ups, as a person would."
    )


def _personas(scenario: Scenario, speaker: Channel) -> tuple[Persona, Persona]:
    return (scenario.agent, scenario.user) if speaker is Channel.agent else (scenario.user, scenario.agent)


def system_prompt(
    scenario: Scenario,
    speaker: Channel,
    max_words: int,
    interrupted: bool,
    cut_off: bool = False,
    replying: bool = True,
) -> str:
    lines = [
        _role_brief(scenario, speaker),
        f"Setting: {scenario.setting}. Topic: {scenario.topic}. Style: {scenario.style}.",
        (
            f"Say your next line out loud in {_length_hint(max_words)}. Plain spoken English only: "
            "no lists, no markdown, no emojis, no names or labels."
        ),
    ]
    if replying:  # the 135M model's habit is to say the last message again: ask for an answer to it
        lines.append(
            "Answer what they just said first, with something new, in your own words. Do not repeat their words."
        )
    if interrupted:
        lines.append("You cut them off mid-sentence: react to what they said so far.")
    if cut_off:
        lines.append("They cut you off: answer their point, do not repeat what they said.")
    return "\n".join(lines)


def _heard(turn: ScriptTurn) -> str:
    text = turn.text.strip()
    return text if text.endswith(_TERMINAL) else text + "..."


def build_messages(
    scenario: Scenario, history: list[ScriptTurn], speaker: Channel, max_words: int
) -> list[dict[str, str]]:
    """Chat messages asking for `speaker`'s next turn. Consecutive turns of one side merge, and
    the list always ends with the other side so the model answers rather than continues."""
    recent = history[-HISTORY_TURNS:]
    interrupted = bool(recent) and recent[-1].speaker is not speaker and not recent[-1].text.strip().endswith(_TERMINAL)
    cut_off = (
        len(recent) >= 2
        and recent[-1].speaker is not speaker
        and recent[-2].speaker is speaker
        and not recent[-2].text.strip().endswith(_TERMINAL)
    )
    system = system_prompt(scenario, speaker, max_words, interrupted, cut_off, replying=bool(recent))
    messages = [{"role": "system", "content": system}]
    if not recent and speaker is Channel.agent and scenario.mode is Mode.assistant:  # dialogue.agent_opens
        messages.append({"role": "user", "content": "(The user has just connected. Greet them and offer your help.)"})
        return messages
    if not recent:
        messages.append({"role": "user", "content": f"(You start the conversation. Bring up: {scenario.topic}.)"})
        return messages
    for turn in recent:
        role = "assistant" if turn.speaker is speaker else "user"
        if messages[-1]["role"] == role:
            messages[-1]["content"] += " " + _heard(turn)
        else:
            messages.append({"role": role, "content": _heard(turn)})
    if messages[-1]["role"] == "assistant":
        messages.append({"role": "user", "content": "(Go on.)"})
    return messages


def write_turn(
    llm: LLMBackend,
    scenario: Scenario,
    history: list[ScriptTurn],
    speaker: Channel,
    *,
    seed: int,
    min_words: int,
    max_words: int,
    attempts: int = 3,
    temperature: float = DEFAULT_TEMPERATURE,
) -> str:
    """Writes `speaker`'s next turn: clean plain text of `min_words`..`max_words` words.
    Retries with seeds `seed + 1`, `seed + 2`, ... and raises `TurnRejected` with the last
    reason when every attempt fails."""
    messages = build_messages(scenario, history, speaker, max_words)
    previous = history[-1].text if history and history[-1].speaker is not speaker else None
    names = [scenario.user.name, scenario.agent.name]
    references = [messages[0]["content"], scenario.user.description, scenario.agent.description]
    references += [t.text for t in history[-HISTORY_TURNS:]]
    allow_meta = AGENT_META if scenario.mode is Mode.assistant and speaker is Channel.agent else ()
    # Room to overshoot: the cleaner cuts at a sentence end rather than mid-word.
    max_tokens = int(max_words * 1.6) + 16
    last = TurnRejected("empty", "no attempt made")
    for attempt in range(attempts):
        raw = llm.complete(messages, max_tokens=max_tokens, temperature=temperature, seed=seed + attempt)
        try:
            if not spaced(scenario.language):
                text = clean_turn_unspaced(raw, scenario.language, min_words=min_words, max_words=max_words)
                check_turn_unspaced(text, scenario.language, min_words=min_words, references=references)
                return text
            text = clean_turn(raw, names=names, min_words=min_words, max_words=max_words)
            check_turn(text, min_words=min_words, references=references, allow_meta=allow_meta, previous=previous)
            return text
        except TurnRejected as rejected:
            log.debug("turn attempt %d rejected: %s", attempt, rejected)
            last = rejected
    raise last
