"""A TTS service: one process on a GPU box hosts registry backends for many factory workers and
batches their requests ACROSS clients, the way vLLM does for the LLM.

    duplex-factory tts-serve --backends coqui,espeak --host 0.0.0.0 --port 8020 \\
        --batch-size 16 --max-wait-ms 20

Per hosted backend one batcher: the first queued request opens a batch, requests arriving
within `max_wait_ms` join it up to `batch_size`, and the batch is rendered with ONE
`synthesize_many` call (padded VITS batches on the GPU, a process pool for CPU backends) in a
thread of its own, so the event loop keeps taking requests and the next batch fills while this
one renders. A backend renders one batch at a time (a model is not called concurrently).

Wire format (JSON over HTTP, aiohttp on both ends; `factory.render.service_backend` is the client):

* `POST /v1/render` `{"backend": "coqui", "text": "...", "voice": <Voice JSON>, "rate": 1.0}`
  -> 200 `{"text", "voice_id", "sample_rate", "words": [{"word","start","end"}...],
  "audio_b64": base64 of the audio as little-endian float32}`; 422 `{"error": msg, "type":
  "TTSError"}` when that text or voice cannot be rendered (the backend's own message); 404
  for a backend this server does not host; 400 for a malformed body.
* `GET /v1/identity` -> `{name: cache_identity()}` of each hosted backend: clients key the TTS
  cache with the real backend's identity, so audio cached through the service and in-process
  is interchangeable.
* `GET /health` -> `{"ok", "backends", "batch_size", "max_wait_ms", "stats": {name:
  {"batches", "items", "capacity", "fill", "queued", "max_batch"}}}` (fill = items per batch
  over batch_size: how full the service kept its batches).

Voice files (`voice.model` folders, `voice.reference` clips) are read on the server's machine.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web
from pydantic import ValidationError

from factory.models import Utterance, Voice
from factory.render.base import BatchStats, SynthesisRequest, TTSBackend, TTSError, synthesize_many

DEFAULT_PORT = 8020


def encode_utterance(utt: Utterance) -> dict[str, Any]:
    audio = np.ascontiguousarray(utt.audio, dtype="<f4")
    return {
        "text": utt.text,
        "voice_id": utt.voice_id,
        "sample_rate": utt.sample_rate,
        "words": [w.model_dump() for w in utt.words],
        "audio_b64": base64.b64encode(audio.tobytes()).decode("ascii"),
    }


@dataclass
class _Hosted:
    backend: TTSBackend
    identity: str
    pending: list[tuple[SynthesisRequest, asyncio.Future]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stats: BatchStats = field(default_factory=BatchStats)
    max_batch: int = 0
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1))


class TTSService:
    """The aiohttp application around `backends` ({name: backend}); see the module docstring."""

    def __init__(self, backends: Mapping[str, TTSBackend], *, batch_size: int = 16, max_wait_ms: float = 20.0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if not backends:
            raise ValueError("a TTS service needs at least one backend")
        self.backends = dict(backends)
        self.batch_size = batch_size
        self.max_wait_ms = max_wait_ms
        self._hosted: dict[str, _Hosted] = {}
        self._tasks: list[asyncio.Task] = []

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 2**20)
        app.router.add_post("/v1/render", self._render)
        app.router.add_get("/v1/identity", self._identity)
        app.router.add_get("/health", self._health)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    # ------------------------------------------------------------------ batching
    async def _start(self, _app: web.Application) -> None:
        for name, backend in self.backends.items():
            # identity up front: a backend that cannot be built fails the start, not a request
            hosted = _Hosted(backend, backend.cache_identity())
            self._hosted[name] = hosted
            self._tasks.append(asyncio.create_task(self._batcher(hosted), name=f"tts-batcher-{name}"))

    async def _stop(self, _app: web.Application) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for hosted in self._hosted.values():
            hosted.executor.shutdown(wait=False, cancel_futures=True)

    async def _batcher(self, hosted: _Hosted) -> None:
        # A list and an Event rather than an asyncio.Queue: cancelling `wait_for(queue.get())`
        # at the deadline can drop an item on 3.11; a missed wake-up loses nothing.
        loop = asyncio.get_running_loop()
        while True:
            while not hosted.pending:
                hosted.wake.clear()
                await hosted.wake.wait()
            # requests that arrived while the last batch rendered are here already; wait out
            # the rest of max_wait_ms for more, up to batch_size
            deadline = loop.time() + self.max_wait_ms / 1000
            while len(hosted.pending) < self.batch_size:
                left = deadline - loop.time()
                if left <= 0:
                    break
                hosted.wake.clear()
                try:
                    await asyncio.wait_for(hosted.wake.wait(), left)
                except TimeoutError:
                    break
            batch, hosted.pending = hosted.pending[: self.batch_size], hosted.pending[self.batch_size :]
            live = [(req, fut) for req, fut in batch if not fut.done()]  # a gone client's slot
            if not live:
                continue
            requests = [req for req, _ in live]
            try:
                results = await loop.run_in_executor(hosted.executor, synthesize_many, hosted.backend, requests)
            except Exception as exc:  # noqa: BLE001 — a backend bug fails this batch, not the service
                results = [TTSError(f"{type(exc).__name__}: {exc}")] * len(requests)
            hosted.stats.add(len(requests), self.batch_size)
            hosted.max_batch = max(hosted.max_batch, len(requests))
            for (_, fut), result in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

    # ------------------------------------------------------------------ endpoints
    async def _render(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            name = body["backend"]
            req = SynthesisRequest(str(body["text"]), Voice.model_validate(body["voice"]), float(body.get("rate", 1.0)))
        except ValidationError as exc:
            return _error(422, f"invalid voice: {exc}")
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, f"malformed render request ({type(exc).__name__}: {exc}); see factory.render.service")
        hosted = self._hosted.get(name)
        if hosted is None:
            return _error(404, f"this TTS service does not host backend {name!r}; it hosts {sorted(self._hosted)}")
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        hosted.pending.append((req, fut))
        hosted.wake.set()
        try:
            result = await fut
        except asyncio.CancelledError:  # the client went away: its slot is skipped
            fut.cancel()
            raise
        if isinstance(result, TTSError):
            return _error(422, str(result))
        return web.json_response(encode_utterance(result))

    async def _identity(self, _request: web.Request) -> web.Response:
        return web.json_response({name: h.identity for name, h in self._hosted.items()})

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "ok": True,
                "backends": sorted(self._hosted),
                "batch_size": self.batch_size,
                "max_wait_ms": self.max_wait_ms,
                "stats": {
                    name: {**h.stats.as_dict(), "queued": len(h.pending), "max_batch": h.max_batch}
                    for name, h in self._hosted.items()
                },
            }
        )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "type": "TTSError"}, status=status)


def serve(service: TTSService, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Run until interrupted (the `tts-serve` command)."""
    web.run_app(service.app(), host=host, port=port, print=None)


class ServiceThread:
    """The service on a background thread (tests, benchmarks, a worker hosting its own):
    `with ServiceThread(service) as url: ...`; port 0 picks a free port."""

    def __init__(self, service: TTSService, host: str = "127.0.0.1", port: int = 0) -> None:
        self.service, self.host, self.port = service, host, port
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tts-service", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self.service.app())
        try:
            self._loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.host, self.port)
            self._loop.run_until_complete(site.start())
            port = runner.addresses[0][1]
            self.url = f"http://{self.host}:{port}"
        except BaseException as exc:  # noqa: BLE001 — handed to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(runner.cleanup())
            self._loop.close()

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 300
        while not self._ready.wait(0.1):
            if time.monotonic() > deadline:
                raise TTSError("TTS service did not start within 300 s")
        if self._error is not None:
            raise self._error
        return self.url

    def __exit__(self, *exc: object) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
