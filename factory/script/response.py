"""The whole-dialogue response a capable LLM writes: its format as pydantic models (the JSON
Schema sent for guided decoding is generated from them), the prompt that asks for it, and the
inverse of parsing (a `Script` written back in this format).

Word indices are 0-based positions in `text.split()` of the model's own text (a language written
without spaces, Japanese, is asked for its words, `languages.words`, separated by spaces there;
`parse` joins them and moves the marks onto the joined text's words):

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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from factory.languages import base, script_language
from factory.languages import words as lang_words
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
from factory.script.lexicon import load_lexicon
from factory.script.writer import StructuredPrompts, WriterPromptError, writer_prompts

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


FILLER_TOKENS = ("um", "uh", "um,", "uh,", "er", "like")


class FillerProposal(_Format):
    type: Literal["filler"]
    before_word: _Index
    token: str = Field(json_schema_extra={"enum": list(FILLER_TOKENS)})


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
def response_schema(n_turns: int | None = None, language: str = "en") -> dict[str, Any]:
    """`ScriptResponse`'s JSON Schema with its `$defs` inlined: one self-contained schema, as
    every guided-decoding backend reads it the same way (llama.cpp's grammar converter names
    rules after `$ref`s), so the grammar and hence the seeded output do not depend on the models'
    class names. With `n_turns`, the turn list has exactly that many items: under guided decoding
    a small model otherwise closes the list early (SmolLM2-135M on vLLM wrote 2 of 4 turns, which
    the parser accepts as half a dialogue but which leaves no turn to cut for a barge-in). For a
    language other than English, a filler's token is one of that language's lexicon fillers (with
    and without their comma) instead of English's. Read-only: the dict is shared."""
    schema = ScriptResponse.model_json_schema()
    out = {"$schema": "https://json-schema.org/draft/2020-12/schema", **_inline_refs(schema, schema.get("$defs", {}))}
    if n_turns is not None:
        out["properties"]["turns"] |= {"minItems": n_turns, "maxItems": n_turns}
    if base(language) != "en":
        tokens = filler_tokens(language)
        for kind in out["properties"]["turns"]["items"]["properties"]["marks"]["items"]["anyOf"]:
            if kind["properties"]["type"].get("const") == "filler":
                kind["properties"]["token"] = {"enum": list(tokens), "title": "Token", "type": "string"}
    return out


def filler_tokens(language: str) -> tuple[str, ...]:
    """The filler tokens a structured response in `language` may propose: English's fixed set
    (`FillerProposal`), else the language's lexicon fillers, each with and without its comma."""
    if base(language) == "en":
        return FILLER_TOKENS
    fillers = load_lexicon(language).fillers
    return tuple(dict.fromkeys(t for f in fillers for t in (f, f.rstrip(",、"))))


SCRIPT_RESPONSE_SCHEMA: dict[str, Any] = response_schema()


def _structured(language: str) -> StructuredPrompts:
    prompts = writer_prompts(language)
    if prompts.structured is None:
        raise WriterPromptError(
            f"no structured-mode prompt for language {prompts.language!r} (its writer prompts have no `structured` "
            "section; use llm.script_mode=turns)"
        )
    return prompts.structured


def _word_of(mark: MarkProposal) -> int:
    """The word a proposed mark points at (a barge-in: the last word heard)."""
    if isinstance(mark, BargeInProposal):
        return mark.heard_words - 1
    if isinstance(mark, FillerProposal):
        return mark.before_word
    if isinstance(mark, RestartProposal):
        return mark.word
    return mark.after_word


@functools.lru_cache(maxsize=16)
def example_response(language: str = "en") -> str:
    """The structured prompt's example in `language`, as the model sees it: its writer prompts'
    `structured.example_response`, validated as a `ScriptResponse` (a malformed example is a
    `WriterPromptError` naming the language)."""
    try:
        example = ScriptResponse.model_validate(_structured(language).example_response)
    except ValidationError as exc:
        raise WriterPromptError(f"structured.example_response of language {language!r}: {exc}") from exc
    for turn in example.turns:
        for mark in turn.marks:
            if _word_of(mark) >= len(turn.text.split()):
                raise WriterPromptError(
                    f"structured.example_response of {language!r}: {mark!r} points past {turn.text!r}"
                )
            if isinstance(mark, FillerProposal) and mark.token not in filler_tokens(language):
                raise WriterPromptError(
                    f"structured.example_response of {language!r}: filler {mark.token!r} is not one of "
                    f"{filler_tokens(language)}"
                )
    return json.dumps(example.model_dump(mode="json"), ensure_ascii=False)


def script_messages(scenario: Scenario, n_turns: int, agent_opens: bool = False) -> list[dict[str, str]]:
    """Chat messages asking a capable model for a whole dialogue with proposed behaviour marks,
    as one JSON object matching `response_schema`, in the dialogue's language (its writer prompts'
    `structured` section, `factory/script/writer_prompts/`); `agent_opens`: the agent greets first
    (`dialogue.agent_opens`, assistant mode)."""
    prompts = _structured(scenario.language)
    opening = prompts.opening["agent" if agent_opens else "user"]
    personas = {
        "user": scenario.user.name,
        "user_description": scenario.user.description,
        "agent": scenario.agent.name,
        "agent_description": scenario.agent.description,
    }
    system = "\n".join(
        [
            prompts.intro,
            prompts.roles["assistant" if scenario.mode is Mode.assistant else "peer"].format(**personas),
            *(line.format(n_turns=n_turns, opening=opening) for line in prompts.rules),
            prompts.example + example_response(scenario.language),
        ]
    )
    user = prompts.ask.format(setting=scenario.setting, topic=scenario.topic, style=scenario.style, n_turns=n_turns)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def script_to_response(script: Script) -> dict[str, Any]:
    """The inverse of `parse_script`: a Script as the LLM-facing JSON (inserted filler and cut-off
    tokens taken out of the text, marks in the model's word coordinates). For few-shot examples,
    benchmarks and round-trip tests."""
    turns = []
    language = script_language("".join(t.text for t in script.turns))
    for i, turn in enumerate(script.turns):
        words = lang_words(turn.text, language)  # the model's words, spaces between them in any language
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
