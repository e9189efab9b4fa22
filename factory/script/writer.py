"""The content writer: the LLM writes a dialogue one spoken turn at a time.

Turn by turn, because a barge-in truncates a turn and the next turn must answer what was
actually heard (`history[i].text` is the heard text). The prompt is built for the smallest
embedded model (SmolLM2-135M-Instruct): the speaker to write is the chat "assistant", the
other speaker the chat "user", so the model does what it was tuned for — answer the last
message — and the instructions sit in the system message, in the second person.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from string import Formatter
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from factory.config import DialogueSection, LLMSection, RunConfig
from factory.languages import base, spaced
from factory.llm.base import LLMBackend
from factory.locations import package_data
from factory.models import Channel, Mode, Persona, Scenario, ScriptTurn
from factory.script.text_checks import (
    AGENT_META,
    TurnRejected,
    check_turn,
    check_turn_unspaced,
    clean_turn,
    clean_turn_unspaced,
)

__all__ = [
    "TurnRejected",
    "WriterPromptError",
    "build_messages",
    "turn_length",
    "write_turn",
    "writer_gaps",
    "writer_prompts",
]

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


class WriterPromptError(ValueError):
    """A language has no writer prompts, or its file is malformed."""


_FIELDS = {  # the placeholders each line may use; the first set of each must all appear
    "role": ({"me", "me_description", "other"}, {"me", "me_description", "other", "other_description"}),
    "scene": ({"setting", "topic", "style"}, {"setting", "topic", "style"}),
    "summary": ({"summary"}, {"summary"}),
    "say": ({"length"}, {"length"}),
    "open": ({"topic"}, {"topic"}),
}


_LINES = ("scene", "summary", "say", "reply", "interrupted", "cut_off", "greet", "open", "go_on")


def _check_fields(name: str, text: str, need: set[str], allowed: set[str]) -> None:
    used = {field for _, field, _, _ in Formatter().parse(text) if field is not None}
    if not need <= used <= allowed:
        raise ValueError(f"{name}: {text!r} uses {sorted(used)}; it needs {sorted(need)}, may use {sorted(allowed)}")


_PERSONAS = {"user", "user_description", "agent", "agent_description"}
_ASK = {"setting", "topic", "style", "n_turns"}


class StructuredPrompts(BaseModel):
    """The whole-dialogue prompt of `llm.script_mode: structured` in one language
    (`factory.script.response.script_messages`): the system message's lines, a valid example
    response in the language (checked against the response format there), and the user message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    intro: str
    roles: dict[Literal["assistant", "peer"], str]
    opening: dict[Literal["agent", "user"], str]
    rules: list[str]
    example: str
    example_response: dict[str, Any]
    ask: str

    @model_validator(mode="after")
    def _placeholders(self) -> StructuredPrompts:
        if set(self.roles) != {"assistant", "peer"} or set(self.opening) != {"agent", "user"}:
            raise ValueError("structured: roles needs assistant and peer; opening needs agent and user")
        for mode, text in self.roles.items():
            _check_fields(f"structured.roles.{mode}", text, _PERSONAS, _PERSONAS)
        for line in (self.intro, self.example, *self.opening.values()):
            _check_fields("structured", line, set(), set())
        for line in self.rules:
            _check_fields("structured.rules", line, set(), {"n_turns", "opening"})
        used = {f for line in self.rules for _, f, _, _ in Formatter().parse(line) if f is not None}
        if used != {"n_turns", "opening"}:
            raise ValueError(f"structured.rules must use {{n_turns}} and {{opening}}; they use {sorted(used)}")
        _check_fields("structured.ask", self.ask, _ASK, _ASK)
        return self


class WriterPrompts(BaseModel):
    """The LLM's prompts in one language (`factory/script/writer_prompts/<language>.yaml`): the
    turn writer's system message's parts and the fixed lines it sends as the other speaker, the
    structured mode's whole-dialogue prompt (`structured`, optional; a language written without
    spaces asks for its words separated by spaces there, `parse`) and the dataset-rewrite system message
    (`rewrite`, `factory.script.source.rewrite_turn_llm`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    language: str
    role: dict[Literal["peer", "agent", "user"], str]
    scene: str
    summary: str
    say: str
    length: dict[Literal["short", "medium", "long"], str]
    reply: str
    interrupted: str
    cut_off: str
    greet: str
    open: str
    go_on: str
    rewrite: str
    structured: StructuredPrompts | None = None

    @model_validator(mode="after")
    def _placeholders(self) -> WriterPrompts:
        if set(self.role) != {"peer", "agent", "user"} or set(self.length) != {"short", "medium", "long"}:
            raise ValueError("role needs peer, agent and user; length needs short, medium and long")
        lines = [("role", text) for text in self.role.values()] + [("length", text) for text in self.length.values()]
        lines += [(name, getattr(self, name)) for name in (*_LINES, "rewrite")]
        for name, text in lines:
            need, allowed = _FIELDS.get(name, (set(), set()))
            _check_fields(name, text, need, allowed)
        return self


def prompts_dir() -> Path:
    return package_data("script", "writer_prompts")


def writer_prompts(language: str = "en") -> WriterPrompts:
    """The writer's prompts for `language` (its primary subtag: es-MX uses es.yaml); raises
    `WriterPromptError` naming the missing or malformed file."""
    return _load_prompts(base(language))


@lru_cache(maxsize=16)
def _load_prompts(code: str) -> WriterPrompts:
    path = prompts_dir() / f"{code}.yaml"
    if not path.is_file():
        have = ", ".join(sorted(p.stem for p in prompts_dir().glob("*.yaml")))
        raise WriterPromptError(f"no writer prompts for language {code!r}: add {path} (have: {have})")
    try:
        prompts = WriterPrompts.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (ValidationError, yaml.YAMLError) as exc:
        raise WriterPromptError(f"{path}: {exc}") from exc
    if prompts.language != code:
        raise WriterPromptError(f"{path} says language {prompts.language!r}, not {code!r}")
    return prompts


ENGLISH_ONLY_MODEL = "the packaged embedded model (SmolLM2-135M-Instruct) writes English only"


def writer_gaps(cfg: RunConfig) -> list[str]:
    """What keeps the LLM from writing each language of `dialogue.language`: its prompts
    (`writer_prompts`; with `llm.script_mode: structured`, their `structured` section),
    and a model that writes it (the packaged embedded SmolLM2 is English only; another GGUF in
    `llm.model_path`, or a served model, is taken at its word). Empty when no source asks the LLM
    (to write dialogues, or to rewrite a dataset's: `RunConfig.uses_llm`)."""
    if not cfg.uses_llm:
        return []
    structured = cfg.llm.script_mode == "structured" and any(s.kind == "llm" for s in cfg.dialogue.sources)
    gaps = []
    for language in cfg.dialogue.language_weights:
        try:
            prompts: WriterPrompts | None = writer_prompts(language)
        except WriterPromptError as exc:
            gaps.append(str(exc))
            prompts = None
        if structured and prompts is not None and prompts.structured is None:
            gaps.append(
                f"language {language}: {prompts_dir() / f'{base(language)}.yaml'} has no `structured` section "
                "(llm.script_mode=structured)"
            )
        if base(language) != "en" and cfg.llm.backend == "embedded" and cfg.llm.model_path is None:
            gaps.append(
                f"language {language}: {ENGLISH_ONLY_MODEL}; write {language} with llm.backend=http and a "
                f"multilingual model, or take its dialogues from a dataset source only "
                f"(dialogue.sources=[{{kind: dataset, path: {base(language)}-everyday}}])"
            )
    return gaps


def _length_hint(max_words: int, prompts: WriterPrompts) -> str:
    # A 135M model cannot count words; sentence counts it roughly follows.
    if max_words <= 20:
        return prompts.length["short"]
    if max_words <= 35:
        return prompts.length["medium"]
    return prompts.length["long"]


def _role_brief(scenario: Scenario, speaker: Channel, prompts: WriterPrompts) -> str:
    me, other = _personas(scenario, speaker)
    role = "peer" if scenario.mode is Mode.peer else "agent" if speaker is Channel.agent else "user"
    return prompts.role[role].format(
        me=me.name, me_description=me.description, other=other.name, other_description=other.description
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
    summary: str = "",
) -> str:
    """The system message, in the dialogue's language (`writer_prompts`)."""
    prompts = writer_prompts(scenario.language)
    lines = [
        _role_brief(scenario, speaker, prompts),
        prompts.scene.format(setting=scenario.setting, topic=scenario.topic, style=scenario.style),
    ]
    if summary:  # a long dialogue's older turns, out of the window (factory.script.summary)
        lines.append(prompts.summary.format(summary=summary))
    lines.append(prompts.say.format(length=_length_hint(max_words, prompts)))
    if replying:  # the 135M model's habit is to say the last message again: ask for an answer to it
        lines.append(prompts.reply)
    if interrupted:
        lines.append(prompts.interrupted)
    if cut_off:
        lines.append(prompts.cut_off)
    return "\n".join(lines)


def _heard(turn: ScriptTurn) -> str:
    text = turn.text.strip()
    return text if text.endswith(_TERMINAL) else text + "..."


def build_messages(
    scenario: Scenario, history: list[ScriptTurn], speaker: Channel, max_words: int, summary: str = ""
) -> list[dict[str, str]]:
    """Chat messages asking for `speaker`'s next turn. Consecutive turns of one side merge, and
    the list always ends with the other side so the model answers rather than continues. Only the
    last `HISTORY_TURNS` turns are sent; `summary` (a long dialogue's running summary of the older
    ones, `factory.script.summary`) goes into the system message."""
    recent = history[-HISTORY_TURNS:]
    interrupted = bool(recent) and recent[-1].speaker is not speaker and not recent[-1].text.strip().endswith(_TERMINAL)
    cut_off = (
        len(recent) >= 2
        and recent[-1].speaker is not speaker
        and recent[-2].speaker is speaker
        and not recent[-2].text.strip().endswith(_TERMINAL)
    )
    system = system_prompt(scenario, speaker, max_words, interrupted, cut_off, replying=bool(recent), summary=summary)
    prompts = writer_prompts(scenario.language)
    messages = [{"role": "system", "content": system}]
    if not recent and speaker is Channel.agent and scenario.mode is Mode.assistant:  # dialogue.agent_opens
        messages.append({"role": "user", "content": prompts.greet})
        return messages
    if not recent:
        messages.append({"role": "user", "content": prompts.open.format(topic=scenario.topic)})
        return messages
    for turn in recent:
        role = "assistant" if turn.speaker is speaker else "user"
        if messages[-1]["role"] == role:
            messages[-1]["content"] += " " + _heard(turn)
        else:
            messages.append({"role": role, "content": _heard(turn)})
    if messages[-1]["role"] == "assistant":
        messages.append({"role": "user", "content": prompts.go_on})
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
    summary: str = "",
) -> str:
    """Writes `speaker`'s next turn: clean plain text of `min_words`..`max_words` words.
    Retries with seeds `seed + 1`, `seed + 2`, ... and raises `TurnRejected` with the last
    reason when every attempt fails. A turn that copies the summary is a prompt echo."""
    messages = build_messages(scenario, history, speaker, max_words, summary)
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
            check_turn(
                text,
                min_words=min_words,
                references=references,
                allow_meta=allow_meta,
                previous=previous,
                language=scenario.language,
            )
            return text
        except TurnRejected as rejected:
            log.debug("turn attempt %d rejected: %s", attempt, rejected)
            last = rejected
    raise last
