"""Backend lookup by name, one cached instance per (backend, options) per process (models load
once). Each backend validates its own options (`tts.backend_options.<name>` in the config)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any

from pydantic import ValidationError

from factory.languages import base
from factory.models import Voice
from factory.render.base import BackendOptions, BackendUnavailable, TTSBackend, TTSError
from factory.render.coqui import CoquiBackend
from factory.render.espeak_backend import EspeakBackend
from factory.render.kokoro_backend import KokoroBackend
from factory.render.piper_backend import PiperBackend
from factory.render.pool import PooledBackend
from factory.render.service_backend import ServiceBackend
from factory.workers import can_spawn


def _options(cls: Any, options: Mapping[str, Any] | None) -> BackendOptions:
    option_cls = getattr(cls, "Options", BackendOptions)
    try:
        return option_cls(**dict(options or {}))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BackendUnavailable(f"tts.backend_options.{cls.name}: {problems}") from None


# The backends by name. coqui needs torch + coqui-tts (its own environment: scripts/setup_coqui.sh,
# or the GPU extra) to be built; it raises BackendUnavailable saying so where they are missing.
_CLASSES: dict[str, Any] = {
    "piper": PiperBackend,
    "espeak": EspeakBackend,
    "kokoro": KokoroBackend,
    "coqui": CoquiBackend,
}

BACKENDS = tuple(_CLASSES)


def get_backend(name: str, options: Mapping[str, Any] | None = None) -> TTSBackend:
    """The backend called `name` ("piper", "espeak", "kokoro", "coqui"), built with `options`."""
    return _get(name, json.dumps(dict(options or {}), sort_keys=True))


@cache
def _get(name: str, options_json: str) -> TTSBackend:
    try:
        cls = _CLASSES[name]
    except KeyError:
        raise BackendUnavailable(f"unknown TTS backend {name!r}; known: {list(_CLASSES)}") from None
    return cls(_options(cls, json.loads(options_json)))


def voice_languages(voice: Voice, options: Mapping[str, Any] | None = None) -> frozenset[str]:
    """The languages (primary subtags) `voice` can speak, as its backend declares them without
    rendering (each backend class's `languages`: espeak's voices list for its voice file, Kokoro's
    languages, a Piper model's config, a Coqui model's languages), with `options` (config
    `tts.backend_options.<backend>`). Raises `TTSError` for a voice the backend has no such
    speaker for, `BackendUnavailable` where it cannot tell here (a library or model file missing)."""
    cls = _CLASSES.get(voice.backend)
    if cls is None:
        raise BackendUnavailable(f"unknown TTS backend {voice.backend!r}; known: {list(_CLASSES)}")
    return cls.languages(voice, _options(cls, options))


def cannot_speak(voice: Voice, language: str, options: Mapping[str, Any] | None = None) -> str | None:
    """Why `voice` cannot speak `language` (its backend's declaration, `voice_languages`), or None
    when it can, or when the backend cannot tell here (the render check reports a missing backend)."""
    try:
        speaks = voice_languages(voice, options)
    except BackendUnavailable:
        return None
    except TTSError as exc:
        return f"voice {voice.id}: {exc}"
    if base(language) in speaks:
        return None
    return (
        f"voice {voice.id} is declared {voice.language}, but its backend ({voice.backend}) speaks "
        f"{', '.join(sorted(speaks))} with it, not {base(language)}"
    )


CPU_BACKENDS = ("piper", "kokoro", "espeak")  # worth a process pool; coqui batches on its device


def backend_for(
    name: str, options: Mapping[str, Any] | None = None, *, processes: int = 1, service_url: str | None = None
) -> TTSBackend:
    """How a run renders with backend `name` (config `tts.service_url`, `tts.processes`): the
    TTS service's client when `service_url` is set, else a process pool of `processes` workers
    for a CPU backend when `processes` > 1, else the backend in-process. All three have the
    same `cache_identity()` and the same `synthesize_many`, so `CachedBackend` wraps any of
    them and a cache filled one way serves the others. One instance per arguments (pools and
    connections are reused)."""
    return _backend_for(name, json.dumps(dict(options or {}), sort_keys=True), processes, service_url)


@cache
def _backend_for(name: str, options_json: str, processes: int, service_url: str | None) -> TTSBackend:
    if service_url:
        return ServiceBackend(service_url, name)
    # A daemonic process (a Dask worker's default) may not start the pool's children.
    if processes > 1 and name in CPU_BACKENDS and can_spawn():
        return PooledBackend(name, json.loads(options_json), build=get_backend, processes=processes)
    return _get(name, options_json)
