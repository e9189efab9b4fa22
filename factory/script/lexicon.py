"""The behaviour planner's lexicon per language: what a filler, a backchannel (aizuchi), a laugh
and a cut-off interruption sound like, how often a listener reacts, and the phrases of the events
the agent must not answer (side talk, background speech).

Data, not code: one YAML file per language in `factory/script/lexicon/` (each file cites where its
listener-reaction rate comes from). The config's `behaviour` token lists and
`backchannels_per_minute` override a language's file when set; `behaviour_for` returns the
behaviour section the planner uses for one dialogue's language.
"""

from __future__ import annotations

from functools import lru_cache

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from factory.config import BehaviourSection
from factory.languages import base
from factory.locations import lexicon_dir


class LexiconError(ValueError):
    """A language has no lexicon file, or its file is malformed."""


class Lexicon(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    language: str
    fillers: list[str] = Field(min_length=1)
    backchannels: list[str] = Field(min_length=1)
    laughs: list[str] = Field(min_length=1)
    failed_interruptions: list[str] = Field(min_length=1)
    backchannels_per_minute: float = Field(ge=0, le=60)
    backchannels_source: str = Field(min_length=1, description="where the listener-reaction rate comes from")
    words_per_second: float = Field(
        gt=0, le=10, description="speaking rate in this language's words (languages.words): counts from rates"
    )
    words_per_second_source: str = Field(min_length=1, description="where the speaking rate comes from")
    voice_prompts: list[str] = Field(min_length=2, description="topic-free sentences the agent's voice prompt says")
    side_talk: list[str] = Field(default_factory=list, description="what the user says to someone else in the room")
    background_speech: list[str] = Field(
        default_factory=list, description="what a TV, a radio or other people in the room say (about 2 s)"
    )


def lexicon_languages() -> list[str]:
    """The languages a lexicon is packaged for."""
    return sorted(p.stem for p in lexicon_dir().glob("*.yaml"))


@lru_cache(maxsize=16)
def load_lexicon(language: str) -> Lexicon:
    """The packaged lexicon of `language` (its primary subtag: en-GB reads en.yaml)."""
    path = lexicon_dir() / f"{base(language)}.yaml"
    if not path.is_file():
        raise LexiconError(
            f"no behaviour lexicon for language {language!r} (fillers, backchannels, laughs): add "
            f"{path.name} to {lexicon_dir()}; packaged: {', '.join(lexicon_languages())}"
        )
    try:
        return Lexicon.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, ValidationError) as exc:
        raise LexiconError(f"lexicon {path} is invalid: {exc}") from None


def behaviour_for(cfg: BehaviourSection, language: str) -> BehaviourSection:
    """`cfg` with every unset token list and the backchannel rate taken from `language`'s lexicon."""
    lex = load_lexicon(language)
    defaults = {
        "filler_tokens": lex.fillers,
        "backchannel_tokens": lex.backchannels,
        "laugh_tokens": lex.laughs,
        "failed_interruption_tokens": lex.failed_interruptions,
        "backchannels_per_minute": lex.backchannels_per_minute,
    }
    return cfg.model_copy(update={k: v for k, v in defaults.items() if getattr(cfg, k) is None})


def tokens(values: list[str] | None) -> list[str]:
    """A token list of a section resolved by `behaviour_for` (never None there)."""
    if values is None:
        raise LexiconError("behaviour tokens are unresolved: pass the section through behaviour_for(cfg, language)")
    return values


def rate(value: float | None) -> float:
    """`backchannels_per_minute` of a section resolved by `behaviour_for`."""
    if value is None:
        raise LexiconError("backchannels_per_minute is unresolved: pass the section through behaviour_for")
    return value
