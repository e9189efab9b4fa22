"""The TTS backend protocol. One file per backend beside this one; no backend imports another
(shared helpers live in `text` and `phonemize`)."""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from factory.models import Utterance, Voice

# The project's own post-processing of every render (tokenising, trimming to speech, fitting
# word spans, the energy VAD that finds speech, the espeak-IPA helper): its source is part of
# every backend's cache identity, so changing it never reuses audio made by the old code.
POSTPROCESS_MODULES = ("factory.render.text", "factory.render.phonemize", "factory.audio.vad", "factory.audio.edit")


class TTSError(RuntimeError):
    """A backend could not render a text (bad input, missing model, broken audio)."""


class BackendUnavailable(TTSError):
    """The backend's package or weights are missing; the message says what to install."""


class BackendOptions(BaseModel):
    """A backend's construction options (config `tts.backend_options.<name>`); each backend
    subclasses this with its own fields, so a typo is a validation error naming the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@cache
def code_identity(*modules: str) -> str:
    """Hash of the source files of `modules` (those that exist; a package: every .py file in
    it): changes whenever their code does."""
    h = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        if spec.submodule_search_locations:  # a package (the coqui backend)
            root = Path(spec.origin).parent
            for path in sorted(root.rglob("*.py")):
                rel = path.relative_to(root).as_posix()
                h.update(f"{name}/{rel}".encode() + b"\0" + path.read_bytes())
            continue
        h.update(name.encode() + b"\0" + Path(spec.origin).read_bytes())
    return h.hexdigest()[:16]


def package_versions(*packages: str) -> str:
    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "-"

    return ";".join(f"{p}={version(p)}" for p in packages)


def render_identity(backend_module: str, packages: tuple[str, ...], *extra: str) -> str:
    """The usual cache identity: the backend module, the installed versions of the packages it
    renders with, `extra` (options that change the audio), and the hash of its own code plus
    the shared post-processing."""
    parts = [
        backend_module,
        package_versions(*packages),
        *extra,
        f"code={code_identity(backend_module, *POSTPROCESS_MODULES)}",
    ]
    return ";".join(p for p in parts if p)


@runtime_checkable
class TTSBackend(Protocol):
    name: str

    def cache_identity(self) -> str:
        """Everything besides (voice, text, rate) that decides the audio: model files, package
        versions, options, and the code that renders and post-processes it (see
        `render_identity`). The TTS cache keys on it."""
        ...

    def synthesize(self, text: str, voice: Voice, *, rate: float = 1.0) -> Utterance:
        """Render `text` with `voice`. Returns mono float32 audio trimmed to speech (no leading
        or trailing silence beyond a few ms) and one WordTiming per whitespace token of `text`,
        in order, `words[i].word == text.split()[i]`, monotonic, inside the audio."""
        ...


# --------------------------------------------------------------------------- batches
@dataclass(frozen=True)
class SynthesisRequest:
    """One render of a batch: what `synthesize(text, voice, rate=rate)` takes."""

    text: str
    voice: Voice
    rate: float = 1.0


@dataclass
class BatchStats:
    """How full a backend's batches were: `items` renders in `batches` model calls of room for
    `capacity` each (1 for backends that render one at a time). Summed into the run summary."""

    batches: int = 0
    items: int = 0
    capacity: int = 0

    @property
    def fill(self) -> float:
        """Mean share of a batch's room that held a render (1.0 = every batch full)."""
        return self.items / self.capacity if self.capacity else 0.0

    def add(self, items: int, room: int) -> None:
        self.batches += 1
        self.items += items
        self.capacity += room

    def as_dict(self) -> dict[str, float]:
        return {"batches": self.batches, "items": self.items, "capacity": self.capacity, "fill": round(self.fill, 4)}


def synthesize_many(backend: TTSBackend, requests: Sequence[SynthesisRequest]) -> list[Utterance | Exception]:
    """Render a batch, in request order; a failed render's slot holds its exception (one bad
    text does not sink the batch): a `TTSError` for what the backend could not render, any
    other exception for a bug, which the pipeline rejects as `internal_error` with its
    traceback. Uses the backend's own `synthesize_many` when it has one (padded GPU batches, a
    process pool, a TTS service), else renders one at a time."""
    own = getattr(backend, "synthesize_many", None)
    if own is not None:
        return own(requests)
    out: list[Utterance | Exception] = []
    for r in requests:
        try:
            out.append(backend.synthesize(r.text, r.voice, rate=r.rate))
        except Exception as exc:  # noqa: BLE001 - kept in its slot, reported per render
            out.append(exc)
    return out


def synthesize_one(backend: TTSBackend, request: SynthesisRequest) -> Utterance:
    """`synthesize` for a backend whose real path is `synthesize_many` (a pool, a service): a
    batch of one, its error raised."""
    result = backend.synthesize_many([request])[0]  # type: ignore[attr-defined]
    if isinstance(result, Exception):
        raise result
    return result
