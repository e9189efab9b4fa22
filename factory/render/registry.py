"""Backend lookup by name, one cached instance per backend per process (models load once)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from factory.render.base import BackendUnavailable, TTSBackend


def _piper() -> TTSBackend:
    from factory.render.piper_backend import PiperBackend

    return PiperBackend()


def _espeak() -> TTSBackend:
    from factory.render.espeak_backend import EspeakBackend

    return EspeakBackend()


def _kokoro() -> TTSBackend:
    from factory.render.kokoro_backend import KokoroBackend

    return KokoroBackend()


def _coqui() -> TTSBackend:
    # Needs torch + coqui-tts (its own environment: scripts/setup_coqui.sh, or the GPU extra);
    # raises BackendUnavailable saying so where they are missing.
    from factory.render.coqui_backend import CoquiBackend

    return CoquiBackend()


_FACTORIES: dict[str, Callable[[], TTSBackend]] = {
    "piper": _piper,
    "espeak": _espeak,
    "kokoro": _kokoro,
    "coqui": _coqui,
}

BACKENDS = tuple(_FACTORIES)


@cache
def get_backend(name: str) -> TTSBackend:
    """The backend called `name` ("piper", "espeak", "kokoro", "coqui")."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise BackendUnavailable(f"unknown TTS backend {name!r}; known: {list(_FACTORIES)}") from None
    return factory()
