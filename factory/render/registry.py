"""Backend lookup by name, one cached instance per (backend, options) per process (models load
once). Each backend validates its own options (`tts.backend_options.<name>` in the config)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from pydantic import ValidationError

from factory.render.base import BackendOptions, BackendUnavailable, TTSBackend
from factory.render.coqui import CoquiBackend
from factory.render.espeak_backend import EspeakBackend
from factory.render.kokoro_backend import KokoroBackend
from factory.render.piper_backend import PiperBackend
from factory.render.pool import PooledBackend
from factory.render.service_backend import ServiceBackend
from factory.workers import can_spawn


def _build(cls: Any, options: dict[str, Any]) -> TTSBackend:
    option_cls = getattr(cls, "Options", BackendOptions)
    try:
        parsed = option_cls(**options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BackendUnavailable(f"tts.backend_options.{cls.name}: {problems}") from None
    return cls(parsed)


def _piper(options: dict[str, Any]) -> TTSBackend:
    return _build(PiperBackend, options)


def _espeak(options: dict[str, Any]) -> TTSBackend:
    return _build(EspeakBackend, options)


def _kokoro(options: dict[str, Any]) -> TTSBackend:
    return _build(KokoroBackend, options)


def _coqui(options: dict[str, Any]) -> TTSBackend:
    # Needs torch + coqui-tts (its own environment: scripts/setup_coqui.sh, or the GPU extra);
    # raises BackendUnavailable saying so where they are missing.
    return _build(CoquiBackend, options)


_FACTORIES: dict[str, Callable[[dict[str, Any]], TTSBackend]] = {
    "piper": _piper,
    "espeak": _espeak,
    "kokoro": _kokoro,
    "coqui": _coqui,
}

BACKENDS = tuple(_FACTORIES)


def get_backend(name: str, options: Mapping[str, Any] | None = None) -> TTSBackend:
    """The backend called `name` ("piper", "espeak", "kokoro", "coqui"), built with `options`."""
    return _get(name, json.dumps(dict(options or {}), sort_keys=True))


@cache
def _get(name: str, options_json: str) -> TTSBackend:
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise BackendUnavailable(f"unknown TTS backend {name!r}; known: {list(_FACTORIES)}") from None
    return factory(json.loads(options_json))


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
