"""The TTS backend protocol. One file per backend beside this one."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from factory.models import Utterance, Voice


class TTSError(RuntimeError):
    """A backend could not render a text (bad input, missing model, broken audio)."""


class BackendUnavailable(TTSError):
    """The backend's package or weights are missing; the message says what to install."""


@runtime_checkable
class TTSBackend(Protocol):
    name: str

    def synthesize(self, text: str, voice: Voice, *, rate: float = 1.0) -> Utterance:
        """Render `text` with `voice`. Returns mono float32 audio trimmed to speech (no leading
        or trailing silence beyond a few ms) and one WordTiming per whitespace token of `text`,
        in order, `words[i].word == text.split()[i]`, monotonic, inside the audio."""
        ...
