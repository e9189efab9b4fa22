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
than `timeout_s` is retried, then fails its slot with a TTSError.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import numpy as np

from factory.models import Utterance, Voice, WordTiming
from factory.render.base import BackendUnavailable, SynthesisRequest, TTSError, synthesize_one


def _run(coro: Any) -> Any:
    """asyncio.run, also from a thread whose own event loop is running (then on a helper thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


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
                hosted = _run(self._get_json("/v1/identity"))
                if self.name not in hosted:
                    raise BackendUnavailable(
                        f"the TTS service at {self.url} does not host backend {self.name!r} (it hosts "
                        f"{sorted(hosted)}); restart it with --backends including {self.name}"
                    )
                self._identity = str(hosted[self.name])
            return self._identity

    def health(self) -> dict[str, Any]:
        """The server's /health document (batch fill per backend)."""
        return _run(self._get_json("/health"))

    async def _get_json(self, path: str) -> dict[str, Any]:
        last: BaseException | None = None
        for attempt in range(self.retries):
            try:
                timeout = aiohttp.ClientTimeout(total=min(self.timeout_s, 30))
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    async with session.get(self.url + path) as resp:
                        resp.raise_for_status()
                        return await resp.json()
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = exc
                await asyncio.sleep(self.backoff_s * 2**attempt)
        assert last is not None
        raise self._down(last)

    # ------------------------------------------------------------------ renders
    def synthesize(self, text: str, voice: Voice, *, rate: float = 1.0) -> Utterance:
        return synthesize_one(self, SynthesisRequest(text, voice, rate))

    def synthesize_many(self, requests: Sequence[SynthesisRequest]) -> list[Utterance | TTSError]:
        """All requests in flight at once (up to `concurrency`), results in request order.
        Runs its own event loop (on a helper thread when called from async code)."""
        if not requests:
            return []
        return _run(self._many(list(requests)))

    async def _many(self, requests: list[SynthesisRequest]) -> list[Utterance | TTSError]:
        gate = asyncio.Semaphore(self.concurrency)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            return list(await asyncio.gather(*(self._one(session, gate, r) for r in requests)))

    async def _one(
        self, session: aiohttp.ClientSession, gate: asyncio.Semaphore, r: SynthesisRequest
    ) -> Utterance | TTSError:
        payload = {"backend": self.name, "text": r.text, "voice": r.voice.model_dump(mode="json"), "rate": r.rate}
        last: BaseException | None = None
        for attempt in range(self.retries):
            async with gate:
                try:
                    async with session.post(self.url + "/v1/render", json=payload) as resp:
                        if resp.status == 200:
                            return decode_utterance(await resp.json())
                        body = await resp.json(content_type=None)
                        message = body.get("error") if isinstance(body, dict) else str(body)
                        if resp.status in (400, 404, 422):  # the request's fault: no retry
                            if resp.status == 404:
                                raise BackendUnavailable(f"{self.url}: {message}")
                            return TTSError(f"TTS service ({self.url}): {message}")
                        last = TTSError(f"TTS service ({self.url}) answered {resp.status}: {message}")
                except aiohttp.ClientConnectionError as exc:
                    last = exc
                except TimeoutError as exc:
                    last = TimeoutError(f"no answer within {self.timeout_s:g} s")
                    last.__cause__ = exc
            await asyncio.sleep(self.backoff_s * 2**attempt)
        if isinstance(last, aiohttp.ClientConnectionError):
            raise self._down(last)
        return TTSError(f"TTS service ({self.url}) failed {r.text[:40]!r} after {self.retries} tries: {last}")
