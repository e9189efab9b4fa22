"""The production LLM backend: any OpenAI-compatible chat server (vLLM's `vllm serve`,
llama-cpp-python's `llama_cpp.server`), over HTTP with bounded concurrency and retries.

All requests run on one private event loop in a daemon thread, so the sync `complete()` works
from any thread — including one whose own loop is running (Prefect tasks) — and the
concurrency limit holds across sync callers, `acomplete()` callers and `complete_many()`.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from factory.llm.base import LLMError, LLMUnavailable

# Servers disagree on seed width (llama.cpp: uint32, "all ones" = random); 31 bits is safe in
# all of them and keeps distinct seeds distinct for any realistic run.
_SEED_MODULUS = 2**31 - 1
_SCHEMA_NAME = "response"

# How structured output is asked for. OpenAI/vLLM: `json_schema` (guided decoding);
# llama-cpp-python's server only knows `json_object` with a `schema` (grammar-constrained).
SchemaMode = Literal["json_schema", "json_object"]


@dataclass(frozen=True)
class ChatRequest:
    """One `complete()` call's arguments, for `complete_many()`."""

    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    seed: int
    json_schema: dict[str, Any] | None = None
    stop: list[str] | None = None


@dataclass
class Usage:
    """Token counts reported by the server, summed over successful requests."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class _Loop:
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    client: httpx.AsyncClient
    semaphore: asyncio.Semaphore
    pid: int = field(default_factory=os.getpid)


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def _normalise_base_url(base_url: str) -> str:
    url = base_url.rstrip("/")
    # A bare host ("http://gpu-box:8000") means the conventional OpenAI prefix.
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


def start_command(base_url: str) -> str:
    """The command that starts a vLLM server where `base_url` points."""
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (
        f"`vllm serve <model> --host 0.0.0.0 --port {port}` (or "
        f"`python -m vllm.entrypoints.openai.api_server --model <model> --host 0.0.0.0 --port {port}`)"
    )


class OpenAIHTTPBackend:
    """`LLMBackend` over an OpenAI-compatible `/v1/chat/completions` endpoint.

    Retries (tenacity) `max_retries` times with exponential backoff and deterministic jitter on
    connection errors, timeouts, 429 (honouring Retry-After) and 5xx; other 4xx fail at once.
    `seed` is sent with every request. What the server makes of it: vLLM repeats a text for the
    same seed, but batching with other in-flight requests changes the numerics (exact repeats need
    `VLLM_BATCH_INVARIANT=1` on the server, or concurrency 1); llama-cpp-python's server reuses
    the previous request's KV prefix, so its texts depend on what ran before.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        api_key: str | None = None,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = _normalise_base_url(base_url)
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.usage = Usage()
        self._api_key = api_key
        # None until the server has answered a structured request; then remembered.
        self._schema_mode: SchemaMode | None = None
        self._state: _Loop | None = None
        self._state_lock = threading.Lock()
        # Asked at once when not given, so a missing server fails here, not mid-run.
        try:
            self.model: str = model or self._run(self._served_model())
        except LLMError:
            self.close()
            raise
        self.name = f"http:{self.model}"

    # -- public API -------------------------------------------------------------------------

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
        request = ChatRequest(messages, max_tokens, temperature, seed, json_schema, stop)
        return self._run(self._complete(request))

    async def acomplete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
        json_schema: dict[str, Any] | None = None,
        stop: list[str] | None = None,
    ) -> str:
        request = ChatRequest(messages, max_tokens, temperature, seed, json_schema, stop)
        future = asyncio.run_coroutine_threadsafe(self._complete(request), self._loop().loop)
        return await asyncio.wrap_future(future)

    def complete_many(self, requests: Sequence[ChatRequest]) -> list[str | LLMError]:
        """Runs all requests, at most `concurrency` at a time; results in request order, a
        failed request's slot holding its error (one failure does not sink the batch)."""

        async def gather() -> list[str | LLMError]:
            results = await asyncio.gather(*(self._complete(r) for r in requests), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, LLMError):
                    raise result
            return list(results)  # type: ignore[arg-type]

        return self._run(gather())

    def close(self) -> None:
        with self._state_lock:
            state, self._state = self._state, None
        if state is None or state.pid != os.getpid():
            return
        asyncio.run_coroutine_threadsafe(state.client.aclose(), state.loop).result()
        state.loop.call_soon_threadsafe(state.loop.stop)
        state.thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for Dask/Ray workers: the loop and client are rebuilt on first use there.
        state = self.__dict__.copy()
        state["_state"] = None
        del state["_state_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._state_lock = threading.Lock()

    # -- the private loop -------------------------------------------------------------------

    def _loop(self) -> _Loop:
        with self._state_lock:
            # After a fork the parent's loop thread does not exist in the child: start anew.
            if self._state is None or self._state.pid != os.getpid():
                self._state = self._start_loop()
            return self._state

    def _start_loop(self) -> _Loop:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="llm-http", daemon=True)
        thread.start()

        async def build() -> _Loop:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0)),
                # Keep-alive slots for every in-flight request, so bursts reuse connections.
                limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
            )
            return _Loop(loop, thread, client, asyncio.Semaphore(self.concurrency))

        return asyncio.run_coroutine_threadsafe(build(), loop).result()

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        state = self._loop()
        if threading.current_thread() is state.thread:
            coro.close()
            raise RuntimeError("a blocking LLM call from the backend's own loop would deadlock; await acomplete()")
        return asyncio.run_coroutine_threadsafe(coro, state.loop).result()

    # -- requests (run on the private loop) -------------------------------------------------

    async def _served_model(self) -> str:
        body = await self._send("GET", "/models", None, seed=0)
        models = [m.get("id") for m in body.get("data", []) if isinstance(m, dict) and m.get("id")]
        if not models:
            raise LLMUnavailable(f"the LLM server at {self.base_url} serves no model: {str(body)[:300]}")
        return models[0]

    async def _complete(self, request: ChatRequest) -> str:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.seed % _SEED_MODULUS,
        }
        if request.stop:
            payload["stop"] = request.stop
        if request.json_schema is None:
            body = await self._send("POST", "/chat/completions", payload, request.seed)
        else:
            body = await self._complete_structured(payload, request.json_schema, request.seed)
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"{self.name}: unexpected response shape: {str(body)[:300]}") from exc
        usage = body.get("usage") or {}
        self.usage.requests += 1
        self.usage.prompt_tokens += usage.get("prompt_tokens", 0)
        self.usage.completion_tokens += usage.get("completion_tokens", 0)
        return content or ""

    async def _complete_structured(self, payload: dict[str, Any], schema: dict[str, Any], seed: int) -> dict:
        modes: list[SchemaMode] = [self._schema_mode] if self._schema_mode else ["json_schema", "json_object"]
        for i, mode in enumerate(modes):
            try:
                body = await self._send(
                    "POST", "/chat/completions", {**payload, **_response_format(mode, schema)}, seed
                )
            except _FormatRejected:
                if i + 1 < len(modes):
                    continue
                raise
            self._schema_mode = mode
            return body
        raise AssertionError("unreachable")

    async def _send(self, method: str, path: str, payload: dict[str, Any] | None, seed: int) -> dict:
        state = self._loop()
        url = self.base_url + path

        def wait(retry: RetryCallState) -> float:
            failure = retry.outcome.exception() if retry.outcome else None
            return self._backoff(seed, retry.attempt_number - 1, getattr(failure, "retry_after", None))

        # The semaphore is held per attempt, never across a backoff sleep.
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait,
            reraise=True,
        )
        tries = 0
        try:
            async for attempt in retrying:
                tries = attempt.retry_state.attempt_number
                with attempt:
                    async with state.semaphore:
                        return await self._send_once(state.client, method, url, payload)
        except _Retryable as exc:
            raise self._give_up(url, exc, tries) from exc
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    async def _send_once(self, client: httpx.AsyncClient, method: str, url: str, payload: dict | None) -> dict:
        try:
            response = await client.request(method, url, json=payload)
        except httpx.ConnectError as exc:
            raise _Unreachable(str(exc) or type(exc).__name__) from exc
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out after {self.timeout_s:g} s ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:  # reset connection, broken chunking...
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400 and _rejects_json_schema(payload, response.text):
            raise _FormatRejected(
                f"{self.name}: the server does not accept response_format "
                f"{payload['response_format']['type']!r}: {response.text[:300]}"
            )
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}: {response.text[:300]}", _retry_after(response))
        if response.status_code >= 400:
            raise LLMError(f"{self.name}: {method} {url} -> HTTP {response.status_code}: {response.text[:500]}")
        try:
            return response.json()
        except ValueError as exc:
            raise LLMError(f"{self.name}: {url} returned non-JSON: {response.text[:300]}") from exc

    def _backoff(self, seed: int, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        # Jitter spreads retries of concurrent requests apart; seeded by the request's seed so
        # a run's timing behaviour is reproducible too.
        jitter = random.Random(seed * 1_000_003 + attempt).uniform(0.5, 1.0)
        return min(self.backoff_s * 2**attempt, self.max_backoff_s) * jitter

    def _give_up(self, url: str, exc: _Retryable, attempts: int) -> LLMError:
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        if isinstance(exc, _Unreachable):
            return LLMUnavailable(
                f"no OpenAI-compatible LLM server reachable at {self.base_url} ({url}: {exc}; {tries}). "
                f"Start one, e.g. {start_command(self.base_url)}, or use llm.backend=embedded"
            )
        return LLMError(f"{self.name}: {url} failed after {tries}: {exc}")


class _Unreachable(_Retryable):
    """Connection refused / no route: retried (the server may be restarting), then reported as
    LLMUnavailable."""


class _FormatRejected(LLMError):
    """The server refused the structured-output request format (not the request itself)."""


def _rejects_json_schema(payload: dict[str, Any] | None, text: str) -> bool:
    # llama-cpp-python's server answers `json_schema` with HTTP 500 "Input should be 'text' or
    # 'json_object'"; other servers that lack it say much the same with a 400/422. Matching the
    # words keeps a genuine error (bad schema, prompt too long) from switching modes.
    return (
        payload is not None
        and payload.get("response_format", {}).get("type") == "json_schema"
        and "response_format" in text
        and "json_object" in text
    )


def _response_format(mode: SchemaMode, schema: dict[str, Any]) -> dict[str, Any]:
    if mode == "json_schema":
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": _SCHEMA_NAME, "schema": schema, "strict": True},
            }
        }
    return {"response_format": {"type": "json_object", "schema": schema}}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # the HTTP-date form; fall back to our own backoff
        return None
