"""Client of the TTS service (`factory.render.service`, `duplex-factory tts-serve`): a TTS
backend whose renders happen on a shared server that batches across clients.

`ServiceBackend(url, backend_name)` has the backend protocol: `synthesize`, `synthesize_many`
(all requests in flight at once, up to `concurrency`, so the server can batch them with other
clients'), and `cache_identity()`, fetched from the server: the REAL backend's identity, so
the TTS cache keys are those of rendering in-process. Build it with
`factory.render.registry.backend_for(name, options, service_url=cfg.tts.service_url)`.

Errors: a text or voice the backend refuses comes back as that request's `TTSError` with the
server's message; a server that cannot be reached (after `retries` tries) raises
`BackendUnavailable` naming the URL and the command that starts it; a render that takes longer
than `timeout_s`, or a 5xx answer, is retried, then fails its slot with a TTSError. Tries and
backoff follow `factory.retry.RetryPolicy`; requests go out through `factory.http_client` (httpx
on the process's one HTTP loop).
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from factory import http_client
from factory.models import Utterance, Voice, WordTiming
from factory.render.base import BackendUnavailable, SynthesisRequest, TTSError, synthesize_one
from factory.retry import RetryPolicy

# Worth another try: the server is (re)starting or unreachable, slow, or failed on its side.
_TRANSIENT = (httpx.TransportError, TimeoutError)
# A service document (identity, health) that does not come: no server, or not this one.
_NOT_THERE = (*_TRANSIENT, httpx.HTTPStatusError, ValueError)


class _Retry(Exception):
    """A 5xx answer: the server's fault, worth another try."""


def decode_utterance(body: dict[str, Any]) -> Utterance:
    audio = np.frombuffer(base64.b64decode(body["audio_b64"]), dtype="<f4").astype(np.float32)
    return Utterance(
        text=body["text"],
        voice_id=body["voice_id"],
        sample_rate=int(body["sample_rate"]),
        audio=audio,
        words=[WordTiming.model_validate(w) for w in body["words"]],
    )


class ServiceBackend:
    """`backend_name` rendered by the TTS service at `url`."""

    def __init__(
        self,
        url: str,
        backend_name: str,
        *,
        timeout_s: float = 300.0,
        retries: int = 3,
        concurrency: int = 64,
        backoff_s: float = 0.5,
    ) -> None:
        self.url = url.rstrip("/")
        self.name = backend_name
        self.timeout_s, self.retries, self.concurrency, self.backoff_s = timeout_s, retries, concurrency, backoff_s
        self._policy = RetryPolicy(retries, backoff_s)
        self._identity: str | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ServiceBackend({self.url!r}, {self.name!r})"

    def _down(self, exc: BaseException) -> BackendUnavailable:
        port = self.url.rsplit(":", 1)[-1].split("/")[0] if self.url.count(":") > 1 else "8020"
        return BackendUnavailable(
            f"the TTS service at {self.url} cannot be reached ({type(exc).__name__}: {exc}); start it on the "
            f"GPU box with `duplex-factory tts-serve --backends {self.name} --host 0.0.0.0 --port {port}`, "
            "or set tts.service_url to null to render in this process"
        )

    # ------------------------------------------------------------------ identity
    def cache_identity(self) -> str:
        with self._lock:
            if self._identity is None:
                hosted = http_client.run(self._get_json("/v1/identity"))
                if self.name not in hosted:
                    raise BackendUnavailable(
                        f"the TTS service at {self.url} does not host backend {self.name!r} (it hosts "
                        f"{sorted(hosted)}); restart it with --backends including {self.name}"
                    )
                self._identity = str(hosted[self.name])
            return self._identity

    def health(self) -> dict[str, Any]:
        """The server's /health document (batch fill per backend)."""
        return http_client.run(self._get_json("/health"))

    async def _get_json(self, path: str) -> dict[str, Any]:
        try:
            async with http_client.new_client(concurrency=1, timeout_s=min(self.timeout_s, 30)) as client:
                async for attempt in self._policy.aio(_NOT_THERE):
                    with attempt:
                        resp = await client.get(self.url + path)
                        resp.raise_for_status()
                        return resp.json()
        except _NOT_THERE as exc:
            raise self._down(exc) from exc
        raise AssertionError("unreachable: the retry policy either returns or re-raises")

    # ------------------------------------------------------------------ renders
    def synthesize(self, text: str, voice: Voice, *, rate: float = 1.0) -> Utterance:
        return synthesize_one(self, SynthesisRequest(text, voice, rate))

    def synthesize_many(self, requests: Sequence[SynthesisRequest]) -> list[Utterance | TTSError]:
        """All requests in flight at once (up to `concurrency`), results in request order."""
        if not requests:
            return []
        return http_client.run(self._many(list(requests)))

    async def _many(self, requests: list[SynthesisRequest]) -> list[Utterance | TTSError]:
        gate = asyncio.Semaphore(self.concurrency)
        async with http_client.new_client(concurrency=self.concurrency, timeout_s=self.timeout_s) as client:
            return list(await asyncio.gather(*(self._one(client, gate, r) for r in requests)))

    async def _one(
        self, client: httpx.AsyncClient, gate: asyncio.Semaphore, r: SynthesisRequest
    ) -> Utterance | TTSError:
        payload = {"backend": self.name, "text": r.text, "voice": r.voice.model_dump(mode="json"), "rate": r.rate}
        try:
            # The gate is held per attempt, never across a backoff sleep.
            async for attempt in self._policy.aio((*_TRANSIENT, _Retry)):
                with attempt:
                    async with gate:
                        try:
                            resp = await client.post(self.url + "/v1/render", json=payload)
                        except httpx.TimeoutException as exc:
                            raise TimeoutError(f"no answer within {self.timeout_s:g} s") from exc
                    if resp.status_code == 200:
                        return decode_utterance(resp.json())
                    try:
                        body = resp.json()
                    except ValueError:
                        body = resp.text
                    message = body.get("error") if isinstance(body, dict) else str(body)
                    if resp.status_code == 404:
                        raise BackendUnavailable(f"{self.url}: {message}")
                    if resp.status_code in (400, 422):  # the request's fault: no retry
                        return TTSError(f"TTS service ({self.url}): {message}")
                    raise _Retry(f"TTS service ({self.url}) answered {resp.status_code}: {message}")
        except httpx.TransportError as exc:  # connection refused, reset...: the server is not there
            raise self._down(exc) from exc
        except (TimeoutError, _Retry) as exc:
            return TTSError(f"TTS service ({self.url}) failed {r.text[:40]!r} after {self.retries} tries: {exc}")
        raise AssertionError("unreachable: the retry policy either returns or re-raises")
