"""The production LLM backend: any OpenAI-compatible chat server (vLLM's `vllm serve`,
llama-cpp-python's `llama_cpp.server`), over HTTP with bounded concurrency and retries.

All requests run on the process's HTTP loop (`factory.http_client`: httpx on one event loop in a
daemon thread), so the sync `complete()` works from any thread — including one whose own loop is
running (Prefect tasks) — and the concurrency limit holds across sync callers, `acomplete()`
callers and `complete_many()`. Retries follow `factory.retry.RetryPolicy`.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import httpx
from tenacity import RetryCallState

from factory import http_client
from factory.llm.base import LLMError, LLMUnavailable
from factory.retry import RetryPolicy

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
class HTTPStats:
    """What a backend asked of its server and what that cost, for the run summary: requests (each
    counted once, however many attempts it took; /models included), HTTP attempts, retries by
    cause with the backoff they slept, and chat completions that failed for good, by cause.
    Causes: connect, timeout, disconnect, http_429, http_5xx, bad_body (a 200 whose body is not
    the JSON asked for), http_4xx, format_rejected."""

    requests: int = 0
    attempts: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    backoff_s: float = 0.0
    # Requests in flight: the area under the in-flight curve (request-seconds; divided by a wall
    # time, the mean in flight) and its peak, for the run summary's utilisation.
    busy_s: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    # Written on the backend's loop thread, read (snapshot) from any other.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def snapshot(self) -> HTTPStats:
        with self._lock:
            return HTTPStats(
                self.requests,
                self.attempts,
                Counter(self.retries),
                Counter(self.failures),
                self.backoff_s,
                self.busy_s,
                self.in_flight,
                self.max_in_flight,
            )

    def since(self, before: HTTPStats) -> dict[str, Any]:
        """The counts accrued after `before` (a `snapshot()`), as plain JSON-ready values."""
        now = self.snapshot()
        return {
            "requests": now.requests - before.requests,
            "attempts": now.attempts - before.attempts,
            "retries": dict(sorted((now.retries - before.retries).items())),
            "failures": dict(sorted((now.failures - before.failures).items())),
            "backoff_s": round(now.backoff_s - before.backoff_s, 3),
            "busy_s": round(now.busy_s - before.busy_s, 3),
            "max_in_flight": now.max_in_flight,
        }

    def add(self, counter: str | None = None, cause: str = "", **amounts: float) -> None:
        with self._lock:
            if counter:
                getattr(self, counter)[cause] += 1
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def started(self) -> float:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return time.monotonic()

    def finished(self, started: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self.busy_s += time.monotonic() - started

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


@dataclass
class _Client:
    """This backend's connections and in-flight limit on the HTTP loop (rebuilt after a fork)."""

    client: httpx.AsyncClient
    semaphore: asyncio.Semaphore
    pid: int = field(default_factory=os.getpid)


class _Retryable(Exception):
    def __init__(self, reason: str, cause: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.cause = cause
        self.retry_after = retry_after


def _failure(message: str, cause: str) -> LLMError:
    """An LLMError that says, for the stats, why the request failed."""
    error = LLMError(message)
    error.cause = cause  # type: ignore[attr-defined]
    return error


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

    Retries (`factory.retry`) `max_retries` times with exponential backoff and deterministic jitter on
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
        self._policy = RetryPolicy(max_retries + 1, backoff_s, max_backoff_s)
        self.usage = Usage()
        self.stats = HTTPStats()
        self._api_key = api_key
        # None until the server has answered a structured request; then remembered.
        self._schema_mode: SchemaMode | None = None
        self._state: _Client | None = None
        self._state_lock = threading.Lock()
        self.name = f"http:{model or base_url}"  # until the server names its model
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
        self._client()
        return await http_client.run_async(self._complete(request))

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
        http_client.run(state.client.aclose())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for Dask/Ray workers: the client is rebuilt on first use there.
        state = self.__dict__.copy()
        state["_state"] = None
        del state["_state_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._state_lock = threading.Lock()

    # -- the client on the HTTP loop ---------------------------------------------------------

    def _client(self) -> _Client:
        with self._state_lock:
            # After a fork the parent's connections are not this process's: build anew.
            if self._state is None or self._state.pid != os.getpid():
                headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
                client = http_client.new_client(
                    concurrency=self.concurrency,
                    timeout_s=self.timeout_s,
                    connect_timeout_s=min(self.timeout_s, 10.0),
                    headers=headers,
                )
                self._state = _Client(client, asyncio.Semaphore(self.concurrency))
            return self._state

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        self._client()
        if http_client.on_loop_thread():
            coro.close()
            raise RuntimeError("a blocking LLM call from the HTTP loop's own thread would deadlock; await acomplete()")
        return http_client.run(coro)

    # -- requests (run on the HTTP loop) -----------------------------------------------------

    async def _served_model(self) -> str:
        body = await self._send("GET", "/models", None, seed=0, check=dict.items)
        models = [m["id"] for m in body.get("data", []) if isinstance(m, dict) and m.get("id")]
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
        try:
            if request.json_schema is None:
                body = await self._send("POST", "/chat/completions", payload, request.seed, check=_content)
            else:
                body = await self._complete_structured(payload, request.json_schema, request.seed)
        except LLMError as exc:
            self.stats.add("failures", getattr(exc, "cause", "other"))
            raise
        content = _content(body)
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
                    "POST", "/chat/completions", {**payload, **_response_format(mode, schema)}, seed, check=_content
                )
            except _FormatRejected:
                if i + 1 < len(modes):
                    continue
                raise
            self._schema_mode = mode
            return body
        raise AssertionError("unreachable")

    async def _send(
        self, method: str, path: str, payload: dict[str, Any] | None, seed: int, check: Callable[[dict], object]
    ) -> dict:
        """One logical request with retries; `check(body)` raises (KeyError, IndexError, TypeError)
        on a body of the wrong shape, which is retried like a truncated one."""
        state = self._client()
        url = self.base_url + path
        self.stats.add(requests=1)

        def wait(retry: RetryCallState) -> float:
            failure = retry.outcome.exception() if retry.outcome else None
            return self._backoff(seed, retry.attempt_number - 1, getattr(failure, "retry_after", None))

        def count_retry(retry: RetryCallState) -> None:
            failure = retry.outcome.exception() if retry.outcome else None
            sleep = retry.next_action.sleep if retry.next_action else 0.0
            self.stats.add("retries", getattr(failure, "cause", "other"), backoff_s=sleep)

        # The semaphore is held per attempt, never across a backoff sleep.
        retrying = self._policy.aio(_Retryable, wait=wait, before_sleep=count_retry)
        tries = 0
        try:
            async for attempt in retrying:
                tries = attempt.retry_state.attempt_number
                with attempt:
                    async with state.semaphore:
                        self.stats.add(attempts=1)
                        started = self.stats.started()
                        try:
                            body = await self._send_once(state.client, method, url, payload)
                        finally:
                            self.stats.finished(started)
                        try:
                            check(body)
                        except (KeyError, IndexError, TypeError, AttributeError) as exc:
                            raise _Retryable(
                                f"unexpected response shape: {self._redact(str(body))[:300]}", "bad_body"
                            ) from exc
                        return body
        except _Retryable as exc:
            raise self._give_up(url, exc, tries) from exc
        raise AssertionError("unreachable: the retry policy either returns or re-raises")

    async def _send_once(self, client: httpx.AsyncClient, method: str, url: str, payload: dict | None) -> dict:
        try:
            response = await client.request(method, url, json=payload)
        except httpx.ConnectError as exc:
            raise _Unreachable(self._redact(str(exc)) or type(exc).__name__, "connect") from exc
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out after {self.timeout_s:g} s ({type(exc).__name__})", "timeout") from exc
        except httpx.TransportError as exc:  # reset connection, broken chunking...
            raise _Retryable(f"{type(exc).__name__}: {self._redact(str(exc))}", "disconnect") from exc
        # A server may echo the credentials it refused (OpenAI's 401 names the key): never into a message.
        text = self._redact(response.text)
        if payload is not None and response.status_code >= 400 and _rejects_json_schema(payload, text):
            raise _FormatRejected(
                f"{self.name}: the server does not accept response_format "
                f"{payload['response_format']['type']!r}: {text[:300]}"
            )
        if response.status_code == 429 or response.status_code >= 500:
            cause = "http_429" if response.status_code == 429 else "http_5xx"
            raise _Retryable(f"HTTP {response.status_code}: {text[:300]}", cause, _retry_after(response))
        if response.status_code >= 400:
            raise _failure(f"{self.name}: {method} {url} -> HTTP {response.status_code}: {text[:500]}", "http_4xx")
        try:
            return response.json()
        except ValueError as exc:  # a truncated or garbled body: the next attempt may be whole
            raise _Retryable(f"non-JSON body: {text[:300]!r}", "bad_body") from exc

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "<api key>") if self._api_key else text

    def _backoff(self, seed: int, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        # Jitter spreads retries of concurrent requests apart; seeded by the request's seed so
        # a run's timing behaviour is reproducible too.
        jitter = random.Random(seed * 1_000_003 + attempt).uniform(0.5, 1.0)
        return self._policy.delay(attempt + 1) * jitter

    def _give_up(self, url: str, exc: _Retryable, attempts: int) -> LLMError:
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        if isinstance(exc, _Unreachable):
            error: LLMError = LLMUnavailable(
                f"no OpenAI-compatible LLM server reachable at {self.base_url} ({url}: {exc}; {tries}). "
                f"Start one, e.g. {start_command(self.base_url)}, or use llm.backend=embedded"
            )
        else:
            error = LLMError(f"{self.name}: {url} failed after {tries}: {exc}")
        error.cause = exc.cause  # type: ignore[attr-defined]
        return error


class _Unreachable(_Retryable):
    """Connection refused / no route: retried (the server may be restarting), then reported as
    LLMUnavailable."""


class _FormatRejected(LLMError):
    """The server refused the structured-output request format (not the request itself)."""

    cause = "format_rejected"


def _content(body: dict) -> str | None:
    """The first choice's text; raises KeyError/IndexError/TypeError on another shape."""
    content = body["choices"][0]["message"]["content"]
    if content is not None and not isinstance(content, str):
        raise TypeError(f"content is {type(content).__name__}")
    return content


def _rejects_json_schema(payload: dict[str, Any], text: str) -> bool:
    # llama-cpp-python's server answers `json_schema` with HTTP 500 "Input should be 'text' or
    # 'json_object'"; other servers that lack it say much the same with a 400/422. Matching the
    # words keeps a genuine error (bad schema, prompt too long) from switching modes.
    return (
        payload.get("response_format", {}).get("type") == "json_schema"
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
