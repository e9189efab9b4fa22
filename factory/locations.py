"""Where the factory's own files are: the data the package carries, and the per-user caches.

Data (the voice bank, the scenario banks, lexicons and function-word lists per language, the dialogue sets) is found
through the installed package (`importlib.resources`), never through the working directory, so
every command works from any folder, from a checkout (editable install) and from a wheel alike. The voice bank is the
repository's top-level `voices/`; `factory/voices` links to it, so the package (and the wheel
built from it, pyproject's package-data) carries it. The dialogue sets (`dialogues/`, linked as
`factory/dialogues`) travel the same way.

Caches live in the platform's per-user cache folder (`platformdirs`: `~/.cache/duplex-factory` on
Linux, honouring `XDG_CACHE_HOME`), or under `$DUPLEX_CACHE` when that is set; the config's
`tts.cache_dir` and `augment.cache_dir` move each one anywhere else.

Imports nothing of the factory, so any module may use it.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

import platformdirs

APP = "duplex-factory"
CACHE_ENV = "DUPLEX_CACHE"


def package_data(*parts: str) -> Path:
    """A file or folder the `factory` package carries (it may not exist: callers say what is missing)."""
    # A package installed as files (wheel or editable), never zipped: the banks are read as folders.
    return Path(str(files("factory").joinpath(*parts)))


def voice_bank_dir() -> Path:
    """The packaged voice bank (the repository's `voices/`)."""
    return package_data("voices")


def dialogue_set_dir() -> Path:
    """The packaged dialogue sets (the repository's `dialogues/`, linked as `factory/dialogues`)."""
    return package_data("dialogues")


def scenario_bank_root() -> Path:
    """The packaged scenario banks, one folder per language (`factory/script/bank/<language>`)."""
    return package_data("script", "bank")


def scenario_bank_dir(language: str = "en") -> Path:
    """The packaged scenario bank of `language` (a primary subtag: en, ja)."""
    return scenario_bank_root() / language


def lexicon_dir() -> Path:
    """The behaviour planner's lexicons, one YAML file per language (`factory/script/lexicon`)."""
    return package_data("script", "lexicon")


def function_words_dir() -> Path:
    """The function-word lists, one YAML file per language (`factory/script/function_words`)."""
    return package_data("script", "function_words")


def cache_root() -> Path:
    """The per-user cache folder: `$DUPLEX_CACHE`, else the platform's (`platformdirs`)."""
    return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_path(APP))


def user_cache(name: str) -> Path:
    """One cache under `cache_root()` (`tts`, `augment`, `whisper-base`)."""
    return cache_root() / name
