"""LLM backends behind one protocol, chosen by name from config."""

from __future__ import annotations

import os
from typing import Any

from factory.llm.base import LLMBackend, LLMError, LLMUnavailable
from factory.llm.embedded import LlamaCppBackend
from factory.llm.http import OpenAIHTTPBackend

__all__ = ["LLMBackend", "LLMError", "LLMUnavailable", "get_llm"]


def get_llm(backend: str, **options: Any) -> LLMBackend:
    """Builds a backend by name: "embedded" (llama.cpp in-process) or "http"
    (an OpenAI-compatible server such as vLLM). For "http", `api_key_env` names the environment
    variable holding the API key, so the key itself never sits in a config file."""
    if backend == "embedded":
        return LlamaCppBackend(**options)
    if backend == "http":
        key_env = options.pop("api_key_env", None)
        if key_env is not None:
            if not os.environ.get(key_env):
                raise LLMUnavailable(f"llm.api_key_env names ${key_env}, which is not set")
            options["api_key"] = os.environ[key_env]
        return OpenAIHTTPBackend(**options)
    raise LLMUnavailable(f"unknown LLM backend {backend!r}; choose 'embedded' or 'http'")
