"""The `Runtime`: what a run needs besides its config, built once from the validated config and
passed explicitly to every stage: the LLM backend, the TTS backends (in-process, a process pool
or the TTS service's client: decided here and nowhere else), the voice bank, the scenario bank and
the dataset script sources (`dialogue.sources`).

Backends are expensive (model weights, worker pools, connections), so they are shared per process
by the options that decide them: two runs in one process that differ only in run id or seed share
one LLM and one TTS model. This module is the only place that looks anything up by config.

A Runtime crosses into a worker process as its config alone (`__reduce__`) and is rebuilt there by
`runtime_for`, once per (process, config), so a worker loads its models once for every shard.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from functools import cached_property
from typing import Any, TypeVar

from factory.config import ConfigError, DatasetSource, RunConfig
from factory.doctor import PreflightError, diagnose, language_gaps
from factory.llm import get_llm
from factory.llm.base import LLMBackend
from factory.locations import voice_bank_dir
from factory.models import BackendName, Channel, Voice
from factory.render.base import BatchStats, TTSBackend, TTSError
from factory.render.cache import CachedBackend
from factory.render.registry import backend_for, get_backend
from factory.render.voices import VoiceBank
from factory.script.scenario import ScenarioBank, load_bank
from factory.script.source import DialogueSet, load_source
from factory.seeding import rng_for

T = TypeVar("T")

_SHARED: dict[tuple, Any] = {}
_SHARED_LOCK = threading.RLock()


def _shared(key: tuple, build: Callable[[], T]) -> T:
    """One instance per key per process, even when shard threads ask at once (two would split a
    backend's statistics and load its model twice)."""
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = build()
        return _SHARED[key]


def forget_shared() -> None:
    """Drop the process's shared backends (tests that swap a backend's implementation)."""
    with _SHARED_LOCK:
        _SHARED.clear()


class Runtime:
    """The built parts of one run's config (see the module docstring). Cheap to make: each part
    is built on first use, under a lock, so a stage that needs no LLM never loads one."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self._lock = threading.RLock()
        self._tts: dict[BackendName, TTSBackend] = {}

    def __reduce__(self):  # a worker process rebuilds its own from the config
        return (runtime_for, (self.cfg,))

    def __repr__(self) -> str:
        return f"Runtime({self.cfg.run_id!r})"

    # ------------------------------------------------------------------ parts
    @cached_property
    def voices(self) -> VoiceBank:
        path = self.cfg.tts.voice_bank or voice_bank_dir()
        return _shared(("voices", str(path.resolve())), lambda: VoiceBank.load(path))

    def scenarios(self, language: str = "en") -> ScenarioBank:
        """The scenario bank of `language` (the packaged one, extended by `dialogue.scenario_bank`)."""
        user = self.cfg.dialogue.scenario_bank
        return _shared(("scenarios", str(user), language), lambda: load_bank(user, language))

    @cached_property
    def dialogue_sets(self) -> list[DialogueSet | None]:
        """`dialogue.sources` loaded, in order (None for the LLM source); raises `SourceError`."""
        return [
            _shared(("source", s.model_dump_json()), lambda s=s: load_source(s))
            if isinstance(s, DatasetSource)
            else None
            for s in self.cfg.dialogue.sources
        ]

    @cached_property
    def llm(self) -> LLMBackend:
        llm = self.cfg.llm
        if llm.backend == "embedded":
            options: dict[str, Any] = {"model_path": llm.model_path, "n_threads": llm.n_threads}
        else:
            options = {
                "base_url": llm.base_url,
                "model": llm.model,
                "concurrency": llm.concurrency,
                "timeout_s": llm.timeout_s,
                "max_retries": llm.max_retries,
                "api_key_env": llm.api_key_env,
            }
        key = ("llm", llm.backend, json.dumps(options, sort_keys=True, default=str))
        with self._lock:
            return _shared(key, lambda: get_llm(llm.backend, **options))

    def tts(self, name: BackendName) -> TTSBackend:
        """The TTS backend `name` as this run renders with it: through the TTS service when
        `tts.service_url` is set, a process pool of a CPU backend when `tts.processes` (default:
        `run.processes`) is above 1, else in this process; behind the run's TTS cache."""
        with self._lock:
            if name not in self._tts:
                tts = self.cfg.tts
                options = tts.backend_options.get(name, {})
                processes = tts.processes if tts.processes is not None else self.cfg.run.worker_processes
                key = ("tts", name, json.dumps(options, sort_keys=True), processes, tts.service_url, str(tts.cache_dir))
                key += (json.dumps(tts.cache_storage_options, sort_keys=True, default=str),)

                def build() -> TTSBackend:
                    if tts.service_url or processes > 1:
                        backend = backend_for(name, options, processes=processes, service_url=tts.service_url)
                    else:
                        backend = get_backend(name, options)
                    if tts.cache_dir is None:
                        return backend
                    return CachedBackend(backend, tts.cache_dir, storage_options=tts.cache_storage_options)

                self._tts[name] = _shared(key, build)
            return self._tts[name]

    def tts_batch_stats(self, name: BackendName) -> BatchStats | None:
        """The batch fill backend `name` records, looking through the cache wrapper (None when it
        cannot be built or does not batch)."""
        try:
            backend = self.tts(name)
        except TTSError:
            return None
        inner = backend.backend if isinstance(backend, CachedBackend) else backend
        stats = getattr(inner, "batch_stats", None)
        return stats if isinstance(stats, BatchStats) else None

    # ------------------------------------------------------------------ decisions
    def pick_voices(self, key: str, language: str = "en") -> dict[Channel, Voice]:
        """The dialogue's two voices: the fixed ones, or a pair of `language`'s voices in the split."""
        tts = self.cfg.tts
        if tts.user_voice or tts.agent_voice:
            if not (tts.user_voice and tts.agent_voice):
                raise ValueError("set both tts.user_voice and tts.agent_voice, or neither")
            return {Channel.user: self.voices.get(tts.user_voice), Channel.agent: self.voices.get(tts.agent_voice)}
        rng = rng_for(self.cfg.run.seed, key, "voices")
        user, agent = self.voices.pick_pair(self.cfg.run.split, rng, language)
        return {Channel.user: user, Channel.agent: agent}

    def pick_background_voice(self, key: str, used: list[Voice], language: str = "en") -> Voice:
        """The voice of a dialogue's background speech: another speaker of the run's split."""
        rng = rng_for(self.cfg.run.seed, key, "background-voice")
        return self.voices.pick_other(self.cfg.run.split, used, rng, language)

    def voice_backends(self) -> list[BackendName]:
        """The TTS backends this run's voices render with (fixed voices, or the split's)."""
        if self.cfg.tts.user_voice or self.cfg.tts.agent_voice:
            voices = list(self.pick_voices("preflight").values())
        else:
            languages = self.cfg.dialogue.language_weights
            voices = [v for lang in languages for v in self.voices.by_split(self.cfg.run.split, lang)]
        return sorted({v.backend for v in voices})

    def check_languages(self) -> None:
        """Every language of `dialogue.language` has voices in the split (and the fixed voices speak
        it), a behaviour lexicon and a scenario bank: else a `ConfigError` naming what is missing."""
        gaps = language_gaps(self)
        if gaps:
            raise ConfigError("dialogue.language cannot be generated:\n" + "\n".join(f"  {g}" for g in gaps))

    def check_paths(self) -> None:
        """The cheap part of `preflight`, done before a Prefect server starts: `factory.doctor`'s
        cheap checks (the voice bank and the split's speakers or the fixed voice ids, the scenario
        bank, the embedded LLM's weights file or the LLM server's /models, the run folder and the
        destination writable). Raises `PreflightError` naming every failed check."""
        self.check_languages()
        diagnosis = diagnose(self, cheap=True)
        if diagnosis.failed:
            raise PreflightError(diagnosis)

    def preflight(self) -> None:
        """Fail fast, before any shard starts, on what would fail every sample: `check_paths`,
        then the LLM (loaded, or its server reached) and the TTS backends of the split's voices."""
        self.check_paths()
        for name in self.voice_backends():
            self.tts(name)  # builds it (or reaches the TTS service) once, as the shards will
        if self.cfg.uses_llm:  # a run of dataset dialogues rewritten by rules loads no LLM
            _ = self.llm


_RUNTIMES: dict[str, Runtime] = {}


def runtime_for(cfg: RunConfig) -> Runtime:
    """This process's Runtime of `cfg` (one per config and process)."""
    key = cfg.model_dump_json()
    with _SHARED_LOCK:
        if key not in _RUNTIMES:
            if len(_RUNTIMES) >= 32:  # a long-lived process (a test session, a Dask worker) sees many runs
                _RUNTIMES.pop(next(iter(_RUNTIMES)))
            _RUNTIMES[key] = Runtime(cfg)
        return _RUNTIMES[key]
