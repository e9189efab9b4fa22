"""The scenario bank: topics x settings x personas x styles x modes, drawn by seed.

The bank is data, one per language (`factory/script/bank/<language>/*.yaml`, plus an optional
user file or folder from `dialogue.scenario_bank` that extends every language's bank) so it can
grow without code changes; `bank_size()` reports how many distinct scenarios it can produce (a
400K run needs far more than 400K).

A bank file is a mapping with any of `topics`, `settings`, `styles`, `user_personas`,
`agent_personas`. Files load in name order, packaged ones first; each extends the lists loaded
before it, except the fields it names in `replace`, which it replaces. Entries keep their order
and repeats are dropped, because a draw picks by position: the same files and seed give the same
scenario.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from factory.languages import base
from factory.locations import scenario_bank_dir, scenario_bank_root
from factory.models import Mode, Persona, Scenario

BankField = Literal["topics", "settings", "styles", "user_personas", "agent_personas"]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class ScenarioBankError(ValueError):
    """A scenario-bank file is unreadable or malformed, or the merged bank lacks a field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BankFile(_Strict):
    """One YAML file of the bank, as written."""

    replace: list[BankField] = Field(
        default_factory=list, description="fields whose earlier entries this file replaces instead of extending"
    )
    topics: list[Text] = Field(default_factory=list, description="what a dialogue is about")
    settings: list[Text] = Field(default_factory=list, description="where and when it happens")
    styles: list[Text] = Field(default_factory=list, description="how it is spoken")
    user_personas: list[Persona] = Field(default_factory=list, description="who speaks on channel 0")
    agent_personas: list[Persona] = Field(default_factory=list, description="who speaks on channel 1")

    @model_validator(mode="after")
    def _replaces_what_it_sets(self) -> BankFile:
        empty = [name for name in self.replace if not getattr(self, name)]
        if empty:
            raise ValueError(f"replace names {empty}, which this file gives no entries for (the bank would be empty)")
        return self


class ScenarioBank(_Strict):
    """The merged bank a draw picks from; every field needs at least one entry."""

    topics: tuple[str, ...] = Field(min_length=1)
    settings: tuple[str, ...] = Field(min_length=1)
    styles: tuple[str, ...] = Field(min_length=1)
    user_personas: tuple[Persona, ...] = Field(min_length=1)
    agent_personas: tuple[Persona, ...] = Field(min_length=1)

    def size(self, modes: int = len(Mode)) -> int:
        """Distinct scenarios this bank can draw (per turn-count choice)."""
        return (
            len(self.topics)
            * len(self.settings)
            * len(self.styles)
            * len(self.user_personas)
            * len(self.agent_personas)
            * modes
        )


def _bank_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        files = sorted([*source.glob("*.yaml"), *source.glob("*.yml")])
        if files:
            return files
        raise ScenarioBankError(f"scenario bank folder {source} has no *.yaml files")
    raise ScenarioBankError(f"scenario bank {source} does not exist")


def _read_file(path: Path) -> BankFile:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ScenarioBankError(f"scenario bank file {path}: not readable YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioBankError(f"scenario bank file {path}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return BankFile.model_validate(data)
    except ValidationError as exc:
        allowed = ", ".join(BankFile.model_fields)
        lines = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"]) or "<file>"
            msg = f"unknown field (allowed: {allowed})" if e["type"] == "extra_forbidden" else e["msg"]
            lines.append(f"  {where}: {msg} (got {e.get('input')!r:.80})")
        raise ScenarioBankError(f"scenario bank file {path} is invalid:\n" + "\n".join(lines)) from None


def _merge(files: list[Path]) -> ScenarioBank:
    merged: dict[str, list] = {name: [] for name in ScenarioBank.model_fields}
    for path in files:
        bank_file = _read_file(path)
        for name, entries in merged.items():
            if name in bank_file.replace:
                entries.clear()
            for entry in getattr(bank_file, name):
                if entry not in entries:  # a repeat would only double its odds
                    entries.append(entry)
    missing = [name for name, entries in merged.items() if not entries]
    if missing:
        raise ScenarioBankError(f"scenario bank from {[str(f) for f in files]} has no entries for {missing}")
    return ScenarioBank(**{name: tuple(entries) for name, entries in merged.items()})


def bank_languages() -> list[str]:
    """The languages a scenario bank is packaged for."""
    return sorted(p.name for p in scenario_bank_root().iterdir() if p.is_dir())


@lru_cache(maxsize=8)
def load_bank(user: Path | None = None, language: str = "en") -> ScenarioBank:
    """The packaged bank of `language` (its primary subtag), extended or partly replaced by `user`
    (a YAML file or a folder of them)."""
    packaged = scenario_bank_dir(base(language))
    if not packaged.is_dir():
        raise ScenarioBankError(
            f"no scenario bank for language {language!r}: add {packaged}/ (topics, settings, styles, personas); "
            f"packaged: {', '.join(bank_languages())}"
        )
    files = _bank_files(packaged)
    if user is not None:
        files += _bank_files(Path(user))
    return _merge(files)


def bank_size(modes: int = len(Mode), bank: ScenarioBank | None = None) -> int:
    """Distinct scenarios the bank (default: the packaged one) can draw (per turn-count choice)."""
    return (bank or load_bank()).size(modes)


def draw_language(rng: np.random.Generator, weights: dict[str, float]) -> str:
    """One dialogue's language from `dialogue.language`'s weights; one language draws nothing, so a
    one-language run's other draws are what they were before languages could mix."""
    if len(weights) == 1:
        return next(iter(weights))
    codes = sorted(weights)
    p = np.array([weights[c] for c in codes], dtype=float)
    return codes[int(rng.choice(len(codes), p=p / p.sum()))]


def draw_scenario(
    sample_id: str,
    rng: np.random.Generator,
    mode_weights: dict[Mode, float],
    n_turns: tuple[int, int],
    bank: ScenarioBank | None = None,
    language: str = "en",
) -> Scenario:
    """Every choice comes from `rng`, in a fixed order, so a seed and a bank fix the scenario;
    `bank` is `language`'s (default: its packaged one)."""
    bank = bank or load_bank(language=language)
    modes = sorted(mode_weights, key=lambda m: m.value)
    weights = np.array([mode_weights[m] for m in modes], dtype=float)
    mode = modes[int(rng.choice(len(modes), p=weights / weights.sum()))]
    user = bank.user_personas[int(rng.integers(len(bank.user_personas)))]
    agent = bank.agent_personas[int(rng.integers(len(bank.agent_personas)))]
    return Scenario(
        id=sample_id,
        mode=mode,
        topic=bank.topics[int(rng.integers(len(bank.topics)))],
        setting=bank.settings[int(rng.integers(len(bank.settings)))],
        style=bank.styles[int(rng.integers(len(bank.styles)))],
        language=language,
        user=user.model_copy(),
        agent=agent.model_copy(),
        n_turns=int(rng.integers(n_turns[0], n_turns[1] + 1)),
    )
