"""The LLM backend protocol: chat messages in, text out."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


class LLMError(RuntimeError):
    """The backend failed to produce a completion (after its own retries)."""


class LLMUnavailable(LLMError):
    """The backend's package, weights or server are missing; the message says what to do."""


@runtime_checkable
class LLMBackend(Protocol):
    name: str

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
        json_schema: dict[str, Any] | None = None,
        stop: list[str] | None = None,
    ) -> str:
        """One chat completion. Deterministic for the same arguments on the same backend."""
        ...
