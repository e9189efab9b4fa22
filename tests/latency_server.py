"""An OpenAI-compatible chat server on 127.0.0.1 that answers every request after a fixed latency
and records how many requests were in flight: the stand-in for a busy vLLM server in the
throughput test and `benchmarks/scale.py`. What it measures (concurrency) comes from the
server side, outside the code under test.

    with LatencyServer(latency_s=0.5) as server:
        cfg = ... llm.backend=http, llm.base_url=server.base_url ...
        ...
        server.max_in_flight, server.n_requests, server.in_flight_timeline()

Answers are plain English sentences of about 0.8 x the turn's word limit (read back from
`max_tokens`, which the writer sets to `1.6 * max_words + 16`), drawn from the request's seed, so
the writer's checks accept them and the same seed gives the same text.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import numpy as np

MODEL = "latency-stand-in"
_WORDS = (
    "the we could try that next week and see how it goes for you I think it is a good plan "
    "maybe later today would work better if the weather holds then we can book a table near "
    "the station so nobody has to walk far in the rain after work most people like the idea "
    "of an early start because the roads are quiet and the train is cheaper before nine"
).split()


def answer(seed: int, max_tokens: int) -> str:
    """A deterministic spoken line for (seed, max_tokens)."""
    rng = np.random.default_rng(seed)
    n_words = max(4, int(0.8 * (max_tokens - 16) / 1.6))
    words = [str(w) for w in rng.choice(_WORDS, size=n_words)]
    sentences, start = [], 0
    while start < n_words:
        end = min(n_words, start + int(rng.integers(6, 12)))
        sentence = " ".join(words[start:end])
        sentences.append(sentence[0].upper() + sentence[1:] + ".")
        start = end
    return " ".join(sentences)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # listen() backlog: the default 5 resets a burst of new connections


class LatencyServer:
    """Start on enter, stop on exit. Thread-safe counters: `n_requests`, `max_in_flight`,
    and `events` ((monotonic time, in-flight count after the change))."""

    def __init__(self, latency_s: float = 0.5) -> None:
        self.latency_s = latency_s
        self.n_requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.events: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="latency-server", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def reset(self) -> None:
        with self._lock:
            self.n_requests = self.max_in_flight = 0
            self.events = []

    def mean_in_flight(self, busy_only: bool = False) -> float:
        """Time-weighted mean of requests in flight between the first request and the last answer;
        with `busy_only`, over the time at least one request was in flight (a GPU server's batch
        fill: idle gaps, e.g. a client slowed by a loaded machine, do not count)."""
        with self._lock:
            events = list(self.events)
        if len(events) < 2:
            return 0.0
        spans = [(t1 - t0, n) for (t0, n), (t1, _) in zip(events, events[1:])]
        area = sum(dt * n for dt, n in spans)
        time = sum(dt for dt, n in spans if n > 0) if busy_only else events[-1][0] - events[0][0]
        return area / time if time else 0.0

    def busy_request_seconds(self) -> float:
        """Request-seconds served: the area under the in-flight curve."""
        with self._lock:
            events = list(self.events)
        return sum((t1 - t0) * n for (t0, n), (t1, _) in zip(events, events[1:]))

    def _enter(self) -> None:
        with self._lock:
            self.n_requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.events.append((time.monotonic(), self.in_flight))

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.events.append((time.monotonic(), self.in_flight))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connections

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _reply(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._reply({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                server._enter()
                try:
                    time.sleep(server.latency_s)
                    text = answer(int(request.get("seed") or 0), int(request.get("max_tokens") or 64))
                finally:
                    server._leave()
                self._reply(
                    {
                        "id": "cmpl-latency",
                        "object": "chat.completion",
                        "model": MODEL,
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 0, "completion_tokens": len(text.split()), "total_tokens": 0},
                    }
                )

        return Handler
