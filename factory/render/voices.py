"""The voice bank: `Voice` entries from `voices/*.yaml` (carried by the package, found through
`factory.locations`) or a user's file or folder, with speaker-disjoint splits.

A *group* is one underlying speaker (defaults to the voice id); prosody variants of one model
speaker share a group. Every group lives in exactly one split, so no speaker heard in training
appears in dev or test.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import yaml
from pydantic import ValidationError

from factory.languages import base
from factory.locations import voice_bank_dir
from factory.models import Voice


class VoiceBankError(ValueError):
    """The voice bank is malformed, leaks a speaker across splits, or lacks what was asked."""


def group_of(voice: Voice) -> str:
    return voice.group or voice.id


def speaks(voice: Voice, language: str) -> bool:
    """Whether `voice` speaks `language`: the same primary subtag (a voice of en-GB speaks en)."""
    return base(voice.language) == base(language)


class VoiceBank:
    def __init__(self, voices: Iterable[Voice]) -> None:
        self._voices: dict[str, Voice] = {}
        for voice in sorted(voices, key=lambda v: v.id):  # file order must not change picks
            if voice.id in self._voices:
                raise VoiceBankError(f"duplicate voice id {voice.id!r}")
            self._voices[voice.id] = voice
        splits: dict[str, set[str]] = defaultdict(set)
        for voice in self._voices.values():
            splits[group_of(voice)].add(voice.split)
        leaks = {g: sorted(s) for g, s in splits.items() if len(s) > 1}
        if leaks:
            detail = "; ".join(
                f"group {g!r} in {s} (voices {[v.id for v in self._voices.values() if group_of(v) == g]})"
                for g, s in sorted(leaks.items())
            )
            raise VoiceBankError(f"speaker leak across splits: {detail}; a group must stay in one split")

    @classmethod
    def load(cls, source: str | Path | None = None) -> VoiceBank:
        """From a YAML file or every `*.yaml` in a folder; each file is a list of voices. None: the
        packaged bank (the repository's `voices/`)."""
        path = Path(source) if source is not None else voice_bank_dir()
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise VoiceBankError(f"no voice files at {path}")
        voices: list[Voice] = []
        for file in files:
            entries = yaml.safe_load(file.read_text(encoding="utf-8")) or []
            if not isinstance(entries, list):
                raise VoiceBankError(f"{file}: expected a list of voices, got {type(entries).__name__}")
            for n, entry in enumerate(entries):
                try:
                    voices.append(Voice.model_validate(entry))
                except ValidationError as exc:
                    raise VoiceBankError(f"{file}: voice #{n} ({entry!r:.80}) is invalid: {exc}") from exc
        return cls(voices)

    def __iter__(self) -> Iterator[Voice]:
        return iter(self._voices.values())

    def __len__(self) -> int:
        return len(self._voices)

    @property
    def ids(self) -> list[str]:
        return list(self._voices)

    def get(self, voice_id: str) -> Voice:
        try:
            return self._voices[voice_id]
        except KeyError:
            raise VoiceBankError(f"unknown voice {voice_id!r}; known: {self.ids}") from None

    def by_split(self, split: str, language: str | None = None) -> list[Voice]:
        """The voices of `split`; with `language`, only those speaking it (see `speaks`)."""
        return [v for v in self._voices.values() if v.split == split and (language is None or speaks(v, language))]

    def groups(self, split: str, language: str | None = None) -> set[str]:
        return {group_of(v) for v in self.by_split(split, language)}

    def partners(self, first: Voice) -> list[Voice]:
        """The voices `pick_pair` may draw beside `first`: another speaker of its split, of the
        highest contrast on offer (a different backend and gender count one each), so the two
        channels are easy to tell apart."""

        def contrast(v: Voice) -> int:
            gender = v.gender != first.gender and "unknown" not in (v.gender, first.gender)
            return int(v.backend != first.backend) + int(gender)

        others = [v for v in self.by_split(first.split, first.language) if group_of(v) != group_of(first)]
        best = max((contrast(v) for v in others), default=0)
        return [v for v in others if contrast(v) == best]

    def pick_other(self, split: str, used: list[Voice], rng: np.random.Generator, language: str = "en") -> Voice:
        """A voice of `split` speaking `language` that is none of `used`'s speakers (background
        speech in a dialogue), on one of their backends where the split has one, so it renders in
        the same batches."""
        groups, backends = {group_of(v) for v in used}, {v.backend for v in used}
        others = [v for v in self.by_split(split, language) if group_of(v) not in groups]
        same = [v for v in others if v.backend in backends]
        pool = same or others
        if not pool:
            raise VoiceBankError(f"split {split!r} has no voice besides {[v.id for v in used]} for background speech")
        return pool[int(rng.integers(len(pool)))]

    def drawable_pairs(self, split: str, language: str = "en") -> list[tuple[Voice, Voice]]:
        """Every (user, agent) pair `pick_pair` can return for `split` and `language` (for checks over the bank)."""
        return [(first, other) for first in self.by_split(split, language) for other in self.partners(first)]

    def pick_pair(self, split: str, rng: np.random.Generator, language: str = "en") -> tuple[Voice, Voice]:
        """Two voices of `split` speaking `language` that are different speakers (see `partners`)."""
        voices = self.by_split(split, language)
        if len(self.groups(split, language)) < 2:
            have = [v.id for v in voices]
            raise VoiceBankError(
                f"split {split!r} needs {language} voices of >= 2 groups for a pair; has {have or 'none'}"
            )
        first = voices[int(rng.integers(len(voices)))]
        pool = self.partners(first)
        return first, pool[int(rng.integers(len(pool)))]
