"""Fault injection for the production path: an OpenAI-compatible proxy on 127.0.0.1 that forwards
to a real server (llama-cpp-python's, from tests/servers.py) and spoils a seeded share of the chat
requests, and a TTS backend wrapper that fails a share of its renders.

Which request is spoiled, and how, is drawn from `rng_for(seed, <request digest>#<n-th time seen>,
"fault")`: the same requests in any order get the same faults, so a run is repeatable whatever
the concurrency, and a retried request draws anew. Only POST /chat/completions is spoiled, so the
faults the proxy counts are exactly the ones a run's summary must account for.

Used by tests/test_faults.py, tests/test_secrets.py and benchmarks/faults.py.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from factory.models import Utterance, Voice
from factory.render.base import TTSBackend, TTSError
from factory.seeding import derive_seed, rng_for

# What each fault looks like to the client, and the retry cause factory.llm.http counts for it.
FAULT_CAUSES = {
    "drop": "disconnect",  # connection closed before any answer
    "http_429": "http_429",  # rate limited, with Retry-After
    "http_500": "http_5xx",
    "slow": "timeout",  # no answer before the client's timeout
    "malformed": "bad_body",  # 200 with a body that is not JSON
    "truncated": "disconnect",  # 200 whose body stops half way (Content-Length promises more)
}
FAULTS = tuple(FAULT_CAUSES)


@dataclass
class FaultProxy:
    """What the proxy did: faults injected by kind, requests forwarded upstream, requests seen."""

    base_url: str
    upstream: str
    seed: int
    rate: float
    slow_s: float
    retry_after_s: int
    api_key: str | None
    force: list[str] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    forwarded: int = 0
    seen: Counter[str] = field(default_factory=Counter)  # chat requests by digest
    lock: threading.Lock = field(default_factory=threading.Lock)

    def draw(self, body: bytes) -> str | None:
        """The fault for this chat request (None: pass it through)."""
        with self.lock:
            if self.force:
                return self.force.pop(0)
            digest = hashlib.sha256(body).hexdigest()[:16]
            self.seen[digest] += 1
            rng = rng_for(self.seed, f"{digest}#{self.seen[digest]}", "fault")
        if rng.random() >= self.rate:
            return None
        return FAULTS[int(rng.integers(len(FAULTS)))]

    def expected_retries(self) -> Counter[str]:
        """The retries by cause a client must have made for the faults injected so far."""
        causes: Counter[str] = Counter()
        for kind, n in self.injected.items():
            causes[FAULT_CAUSES[kind]] += n
        return causes


@contextmanager
def fault_proxy(
    upstream: str,
    *,
    seed: int = 0,
    rate: float = 0.10,
    slow_s: float = 5.0,
    retry_after_s: int = 1,
    api_key: str | None = None,
    force: list[str] | None = None,
) -> Iterator[FaultProxy]:
    """Serves `<base_url>/models` and `/chat/completions` on 127.0.0.1, forwarding to `upstream`
    (an OpenAI-compatible base URL ending in /v1). `slow_s`: how long a "slow" fault stalls
    (set it past the client's timeout). `api_key`: demand `Authorization: Bearer <api_key>`, and
    answer anything else with 401 naming the key sent, as OpenAI does. `force`: faults for the
    first chat requests, before the seeded draws."""
    state = FaultProxy("", upstream.rstrip("/"), seed, rate, slow_s, retry_after_s, api_key, list(force or []))
    client = httpx.Client(timeout=600.0)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do: a drop must be noticed mid-connection

        def log_message(self, *args: object) -> None:
            pass

        def _reply(
            self, status: int, data: bytes, headers: dict[str, str] | None = None, length: int | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data) if length is None else length))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def _authorised(self) -> bool:
            if state.api_key is None:
                return True
            sent = self.headers.get("Authorization", "")
            if sent == f"Bearer {state.api_key}":
                return True
            body = {"error": {"message": f"Incorrect API key provided: {sent.removeprefix('Bearer ')}", "code": 401}}
            self._reply(401, json.dumps(body).encode())
            return False

        def _forward(self, method: str, body: bytes | None) -> httpx.Response:
            with state.lock:
                state.forwarded += 1
            headers = {"Content-Type": "application/json"}
            if "Authorization" in self.headers:
                headers["Authorization"] = self.headers["Authorization"]
            return client.request(method, state.upstream + self.path.removeprefix("/v1"), content=body, headers=headers)

        def do_GET(self) -> None:
            if self._authorised():
                upstream = self._forward("GET", None)
                self._reply(upstream.status_code, upstream.content)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not self._authorised():
                return
            fault = state.draw(body) if self.path.endswith("/chat/completions") else None
            if fault:
                with state.lock:
                    state.injected[fault] += 1
            try:
                self._post(body, fault)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up first
                self.close_connection = True

        def _post(self, body: bytes, fault: str | None) -> None:
            if fault == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault == "http_429":
                self._reply(429, b'{"error": "rate limited"}', {"Retry-After": str(state.retry_after_s)})
                return
            if fault == "http_500":
                self._reply(500, b'{"error": "injected server error"}')
                return
            if fault == "slow":
                time.sleep(state.slow_s)
                self.close_connection = True
                return
            upstream = self._forward("POST", body)
            data = upstream.content
            if fault == "malformed" and upstream.status_code == 200:
                self._reply(200, b'{"choices": [{"message": {"content": "cut' + b"\x00}" * 3)
            elif fault == "truncated" and upstream.status_code == 200:
                self.close_connection = True
                self._reply(200, data[: len(data) // 2], length=len(data))
            else:
                self._reply(upstream.status_code, data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        client.close()


class FlakyTTS:
    """A TTS backend that fails `rate` of its renders with TTSError, chosen by a hash of (seed,
    voice, text, rate) so the same render always fails or always succeeds; the rest go to `inner`."""

    def __init__(self, inner: TTSBackend, rate: float = 0.10, seed: int = 0) -> None:
        self.inner, self.rate, self.seed = inner, rate, seed
        self.name = inner.name
        self.calls = 0
        self.failed: list[tuple[str, str, float]] = []  # (voice id, text, rate)
        self._lock = threading.Lock()

    def cache_identity(self) -> str:
        return self.inner.cache_identity()

    def synthesize(self, text: str, voice: Voice, *, rate: float = 1.0) -> Utterance:
        draw = derive_seed(self.seed, f"{voice.id}\x1f{text}\x1f{rate!r}", "tts-fault") / 2**63
        with self._lock:
            self.calls += 1
            if draw < self.rate:
                self.failed.append((voice.id, text, rate))
        if draw < self.rate:
            raise TTSError(f"injected TTS failure for {text[:40]!r}")
        return self.inner.synthesize(text, voice, rate=rate)

    def __getattr__(self, name: str) -> object:  # anything else a backend offers (key, options...)
        return getattr(self.inner, name)
