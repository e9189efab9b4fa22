"""The whole-dialogue response a capable LLM writes: its format as pydantic models (the JSON
Schema sent for guided decoding is generated from them), the prompt that asks for it, and the
inverse of parsing (a `Script` written back in this format).

Word indices are 0-based positions in `text.split()` of the model's own text:

    {"turns": [{"speaker": "user" | "agent", "text": "...", "marks": [
        {"type": "filler", "before_word": 3, "token": "um"},          # said before word 3
        {"type": "restart", "word": 1},                               # word 1 cut off, said again
        {"type": "pause", "after_word": 2, "seconds": 0.5},           # silence after word 2
        {"type": "backchannel", "after_word": 5, "token": "mm-hmm"},  # the listener, after word 5
        {"type": "laugh", "after_word": 4, "token": "haha"},          # the listener laughs
        {"type": "failed_interruption", "after_word": 6, "token": "But I-"},
        {"type": "barge_in", "heard_words": 7}]}]}                    # next turn cuts in after 7 words

The models only shape what the model is asked for: `parse.parse_script` reads responses
tolerantly (aliases, strings for numbers, missing fields), not through these models.
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from factory.models import (
    BackgroundSpeech,
    BargeIn,
    Filler,
    Mode,
    NonSpeech,
    Restart,
    Scenario,
    Script,
    SideTalk,
    SilentPause,
)

__all__ = [
    "SCRIPT_RESPONSE_SCHEMA",
    "MarkProposal",
    "ScriptResponse",
    "TurnResponse",
    "script_messages",
    "script_to_response",
]

_Index = Annotated[int, Field(ge=0, le=400)]


class _Format(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FillerProposal(_Format):
    type: Literal["filler"]
    before_word: _Index
    token: Literal["um", "uh", "um,", "uh,", "er", "like"]


class RestartProposal(_Format):
    type: Literal["restart"]
    word: _Index


class PauseProposal(_Format):
    type: Literal["pause"]
    after_word: _Index
    seconds: float = Field(ge=0.1, le=3.0)


class BackchannelProposal(_Format):
    type: Literal["backchannel"]
    after_word: _Index
    token: str = Field(max_length=24)


class LaughProposal(_Format):
    type: Literal["laugh"]
    after_word: _Index
    token: str = Field(default="haha", max_length=16)  # optional: the model may leave the laugh's sound to us


class FailedInterruptionProposal(_Format):
    type: Literal["failed_interruption"]
    after_word: _Index
    token: str = Field(max_length=24)


class BargeInProposal(_Format):
    type: Literal["barge_in"]
    heard_words: int = Field(ge=1, le=400)


# A plain union (JSON Schema `anyOf`), not a discriminated one: `oneOf` with a `discriminator`
# mapping is not understood by every guided-decoding backend.
MarkProposal = (
    FillerProposal
    | RestartProposal
    | PauseProposal
    | BackchannelProposal
    | LaughProposal
    | FailedInterruptionProposal
    | BargeInProposal
)


class TurnResponse(_Format):
    speaker: Literal["user", "agent"]
    text: str = Field(min_length=1, max_length=2000)
    marks: list[MarkProposal] = Field(max_length=24)


class ScriptResponse(_Format):
    model_config = ConfigDict(title="DialogueScript")

    turns: list[TurnResponse] = Field(min_length=2, max_length=64)


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline_refs(defs[node["$ref"].removeprefix("#/$defs/")], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


@functools.cache
def response_schema(n_turns: int | None = None) -> dict[str, Any]:
    """`ScriptResponse`'s JSON Schema with its `$defs` inlined: one self-contained schema, as
    every guided-decoding backend reads it the same way (llama.cpp's grammar converter names
    rules after `$ref`s), so the grammar and hence the seeded output do not depend on the models'
    class names. With `n_turns`, the turn list has exactly that many items: under guided decoding
    a small model otherwise closes the list early (SmolLM2-135M on vLLM wrote 2 of 4 turns, which
    the parser accepts as half a dialogue but which leaves no turn to cut for a barge-in). Read-only:
    the dict is shared."""
    schema = ScriptResponse.model_json_schema()
    out = {"$schema": "https://json-schema.org/draft/2020-12/schema", **_inline_refs(schema, schema.get("$defs", {}))}
    if n_turns is not None:
        out["properties"]["turns"] |= {"minItems": n_turns, "maxItems": n_turns}
    return out


SCRIPT_RESPONSE_SCHEMA: dict[str, Any] = response_schema()

_EXAMPLE = ScriptResponse(
    turns=[
        TurnResponse(
            speaker="user",
            text="Hey, do you know a good way to keep basil alive indoors?",
            marks=[FillerProposal(type="filler", before_word=1, token="um")],
        ),
        TurnResponse(
            speaker="agent",
            text="Sure. Basil wants at least six hours of sun, so a south window is best, and "
            "you should water it when the top of the soil feels dry.",
            marks=[
                BackchannelProposal(type="backchannel", after_word=9, token="mm-hmm"),
                BargeInProposal(type="barge_in", heard_words=13),
            ],
        ),
        TurnResponse(
            speaker="user",
            text="Oh, my only window faces north though.",
            marks=[RestartProposal(type="restart", word=1)],
        ),
    ]
)


def script_messages(scenario: Scenario, n_turns: int, agent_opens: bool = False) -> list[dict[str, str]]:
    """Chat messages asking a capable model for a whole dialogue with proposed behaviour marks,
    as one JSON object matching `SCRIPT_RESPONSE_SCHEMA`; `agent_opens`: the agent greets first
    (`dialogue.agent_opens`, assistant mode)."""
    opening = (
        "starting with the agent, who greets the user and offers help in one short sentence"
        if agent_opens
        else "starting with the user"
    )
    if scenario.mode is Mode.assistant:
        roles = (
            f'"user" is {scenario.user.name}, {scenario.user.description}, who talks to "agent", '
            f"{scenario.agent.name}, an AI voice assistant ({scenario.agent.description}). The agent answers "
            "helpfully in two to four spoken sentences; the user speaks in short questions and follow-ups."
        )
    else:
        roles = (
            f'"user" is {scenario.user.name}, {scenario.user.description}; "agent" is {scenario.agent.name}, '
            f"{scenario.agent.description}. They are two people chatting; both keep their turns short."
        )
    system = "\n".join(
        [
            "You write realistic spoken two-person dialogues for speech synthesis, as JSON.",
            roles,
            "Rules:",
            f"- Exactly {n_turns} turns, alternating speakers, {opening}.",
            "- Plain spoken English only: no markdown, lists, emojis, stage directions or speaker names in the text.",
            "- Do not write fillers (um, uh) or cut-off words into the text: propose them as marks instead.",
            "- Marks point at words by 0-based index into the turn's text split on spaces.",
            (
                "- filler: a filled pause said before word `before_word`. restart: word `word` is cut off and said "
                "again. pause: a short silence after word `after_word` (not the last word)."
            ),
            (
                "- backchannel / laugh / failed_interruption: the OTHER speaker reacts briefly after word "
                "`after_word` while this turn goes on."
            ),
            (
                "- barge_in: the NEXT turn interrupts this one after `heard_words` words; the next turn must respond "
                "only to those words. Never on the last turn; at most one per turn."
            ),
            (
                "- Real talk has about 3 fillers and 1 restart per 100 words, a backchannel every 15 seconds, and "
                "about one interruption per dialogue. Do not overdo them."
            ),
            "Example of the format: " + json.dumps(_EXAMPLE.model_dump(mode="json")),
        ]
    )
    user = (
        f"Setting: {scenario.setting}. Topic: {scenario.topic}. Style: {scenario.style}.\n"
        f"Write the {n_turns}-turn dialogue as JSON now."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def script_to_response(script: Script) -> dict[str, Any]:
    """The inverse of `parse_script`: a Script as the LLM-facing JSON (inserted filler and cut-off
    tokens taken out of the text, marks in the model's word coordinates). For few-shot examples,
    benchmarks and round-trip tests."""
    turns = []
    for i, turn in enumerate(script.turns):
        words = turn.text.split()
        mine = [m for m in script.marks if m.turn == i]
        inserted = {m.word_index for m in mine if isinstance(m, Filler | Restart)}
        content = [j for j in range(len(words)) if j not in inserted]
        written = {j: k for k, j in enumerate(content)}  # final index -> model index

        def next_word(j: int, written: dict[int, int] = written, n: int = len(words)) -> int:
            return next(written[k] for k in range(j + 1, n) if k in written)

        def after_word(j: int, written: dict[int, int] = written) -> int | None:
            # a mark after an inserted token moves to the word before it
            return next((written[k] for k in range(j, -1, -1) if k in written), None)

        out_words = [words[j] for j in content]
        marks: list[dict[str, Any]] = []
        for m in mine:
            if isinstance(m, SideTalk | BackgroundSpeech | NonSpeech):
                continue  # not in the model's format: the planner adds them after it
            if isinstance(m, Filler):
                k = next_word(m.word_index)
                if k == 0 and m.word_index == 0 and out_words and out_words[0][:1].islower():
                    out_words[0] = out_words[0][:1].upper() + out_words[0][1:]
                marks.append({"type": "filler", "before_word": k, "token": m.token.lower() if k == 0 else m.token})
                continue
            if isinstance(m, Restart):
                marks.append({"type": "restart", "word": next_word(m.word_index)})
                continue
            k = after_word(m.heard_words - 1 if isinstance(m, BargeIn) else m.word_index)
            if k is None:
                continue  # attached to a turn-initial inserted token: not expressible in model words
            if isinstance(m, SilentPause):
                marks.append({"type": "pause", "after_word": k, "seconds": m.duration})
            elif isinstance(m, BargeIn):
                marks.append({"type": "barge_in", "heard_words": k + 1})
            else:
                marks.append({"type": m.type, "after_word": k, "token": m.token})
        turns.append({"speaker": turn.speaker.value, "text": " ".join(out_words), "marks": marks})
    return {"turns": turns}
