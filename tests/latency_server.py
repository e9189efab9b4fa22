"""Simulated GPU services that record their own utilisation, outside the code under test.

`LatencyServer`: an OpenAI-compatible chat server on 127.0.0.1 that answers every request after
a latency and records how many requests were in flight: the stand-in for a busy vLLM server in
the throughput test, `benchmarks/scale.py` and `benchmarks/utilisation.py`. The latency is
`latency_s + per_request_s x` the requests in flight when it arrives (a decoder's step grows with
its batch; `per_request_s` 0: fixed).

    with LatencyServer(latency_s=0.5) as server:
        cfg = ... llm.backend=http, llm.base_url=server.base_url ...
        ...
        server.max_in_flight, server.n_requests, server.mean_in_flight()

`LatencyServer(reply=fn, record=True)` answers `fn(request body)` and keeps every request body in
`server.requests`: what a client really sent, as a server receives it.

`TTSStandIn`: the factory's own TTS service (`factory.render.service`) hosting, as `espeak`, a
backend whose batch call costs a fixed `batch_s` for up to `batch_size` renders (a GPU's padded
batch costs about the same full or not); it renders real espeak audio (same bytes as espeak in
process) and sleeps out the rest of `batch_s`, recording every batch (start, end, renders).

    with TTSStandIn(batch_size=16, batch_s=0.4) as tts:
        cfg = ... tts.service_url=tts.url ...
        tts.mean_batch(), tts.busy_share(start, end)

Answers are plain English sentences of about 0.8 x the turn's word limit (read back from
`max_tokens`, which the writer sets to `1.6 * max_words + 16`), drawn from the request's seed, so
the writer's checks accept them and the same seed gives the same text.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import numpy as np

from factory.models import Utterance, Voice
from factory.render.base import SynthesisRequest, TTSBackend, synthesize_many, synthesize_one
from factory.render.registry import get_backend
from factory.render.service import ServiceThread, TTSService

MODEL = "latency-stand-in"
# The dialogues the benchmarks run against the stand-ins: short words, no behaviour minimums (a
# stand-in answer carries no marks), two fast espeak voices, no Whisper QA, so a run measures the
# machinery, not synthesis or re-draws.
STAND_IN_BEHAVIOUR = [  # a stand-in answer carries no marks: no behaviour minimums
    "behaviour.min_fillers=0",
    "behaviour.min_backchannels=0",
    "behaviour.min_barge_ins=0",
]
STAND_IN_SYNTHESIS = [  # also tests/scale.FAST's, with its own word limits
    *STAND_IN_BEHAVIOUR,
    "tts.user_voice=espeak-gb-m3",
    "tts.agent_voice=espeak-us-f3",
    "tts.qa_wer_threshold=null",
]
STAND_IN_DIALOGUES = [
    "dialogue.assistant_agent_words=[5, 14]",
    "dialogue.assistant_user_words=[3, 8]",
    "dialogue.peer_words=[4, 12]",
    *STAND_IN_SYNTHESIS,
]
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

    def __init__(
        self,
        latency_s: float = 0.5,
        per_request_s: float = 0.0,
        reply: Callable[[dict], str] | None = None,
        record: bool = False,
    ) -> None:
        self.latency_s = latency_s
        self.per_request_s = per_request_s
        self.reply = reply  # the answer to a request body; None: `answer(seed, max_tokens)`
        self.requests: list[dict] | None = [] if record else None  # with `record`: every request body, in order
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

    def steady_mean_in_flight(self, trim: float = 0.1) -> float:
        """Time-weighted mean of requests in flight over the steady part of the server's span:
        from the first request to the last answer, less `trim` of it at each end (ramp-up and
        drain)."""
        with self._lock:
            events = list(self.events)
        if len(events) < 2:
            return 0.0
        t0, t1 = events[0][0], events[-1][0]
        lo, hi = t0 + trim * (t1 - t0), t1 - trim * (t1 - t0)
        return step_mean(events, lo, hi)

    def busy_request_seconds(self) -> float:
        """Request-seconds served: the area under the in-flight curve."""
        with self._lock:
            events = list(self.events)
        return sum((t1 - t0) * n for (t0, n), (t1, _) in zip(events, events[1:]))

    def _enter(self) -> float:
        """Count a request in; its latency."""
        with self._lock:
            self.n_requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.events.append((time.monotonic(), self.in_flight))
            return self.latency_s + self.per_request_s * self.in_flight

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
                if server.requests is not None:
                    with server._lock:
                        server.requests.append(request)
                latency = server._enter()
                try:
                    time.sleep(latency)
                    if server.reply is not None:
                        text = server.reply(request)
                    else:
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


def step_mean(events: Sequence[tuple[float, float]], lo: float, hi: float) -> float:
    """Time-weighted mean over [lo, hi] of a step function given as (time, value from then on)."""
    if hi <= lo or not events:
        return 0.0
    area = 0.0
    for (t0, n), (t1, _) in zip(events, [*events[1:], (hi, 0)]):
        a, b = max(t0, lo), min(t1, hi)
        if b > a:
            area += (b - a) * n
    return area / (hi - lo)


class BatchCostBackend:
    """A TTS backend whose batch call costs `batch_s` for up to `batch_size` renders: `inner`
    renders them (real audio), then the call sleeps out the rest of `batch_s`. Records each
    batch as (start, end, renders) on the monotonic clock."""

    def __init__(self, inner: TTSBackend, batch_size: int, batch_s: float) -> None:
        self.inner, self.batch_size, self.batch_s = inner, batch_size, batch_s
        self.name = inner.name
        self.batches: list[tuple[float, float, int]] = []
        self._lock = threading.Lock()

    def cache_identity(self) -> str:
        return self.inner.cache_identity()  # the same audio as `inner`: the same cache keys

    def synthesize(self, text: str, voice: Voice, *, rate: float = 1.0) -> Utterance:
        return synthesize_one(self, SynthesisRequest(text, voice, rate))

    def synthesize_many(self, requests: Sequence[SynthesisRequest]) -> list[Utterance | Exception]:
        out: list[Utterance | Exception] = []
        for i in range(0, len(requests), self.batch_size):
            chunk = requests[i : i + self.batch_size]
            start = time.monotonic()
            out += synthesize_many(self.inner, chunk)
            time.sleep(max(0.0, self.batch_s - (time.monotonic() - start)))
            with self._lock:
                self.batches.append((start, time.monotonic(), len(chunk)))
        return out


class TTSStandIn:
    """The TTS service on a thread of this process hosting a `BatchCostBackend` over espeak
    (`url` for `tts.service_url`). Start on enter, stop on exit."""

    def __init__(self, batch_size: int = 16, batch_s: float = 0.4, max_wait_ms: float = 20.0) -> None:
        self.batch_size = batch_size
        self.backend = BatchCostBackend(get_backend("espeak"), batch_size, batch_s)
        self._thread = ServiceThread(
            TTSService({"espeak": self.backend}, batch_size=batch_size, max_wait_ms=max_wait_ms)
        )
        self.url = ""

    def __enter__(self) -> Self:
        self.url = self._thread.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.__exit__(*exc)

    def batches(self, lo: float = float("-inf"), hi: float = float("inf")) -> list[tuple[float, float, int]]:
        """The batches that started in [lo, hi]."""
        with self.backend._lock:  # noqa: SLF001 - its owner reads its record
            return [b for b in self.backend.batches if lo <= b[0] <= hi]

    def mean_batch(self, lo: float = float("-inf"), hi: float = float("inf")) -> float:
        sizes = [n for _, _, n in self.batches(lo, hi)]
        return sum(sizes) / len(sizes) if sizes else 0.0

    def busy_share(self, lo: float, hi: float) -> float:
        """Share of [lo, hi] the backend spent in batch calls."""
        busy = sum(max(0.0, min(e, hi) - max(s, lo)) for s, e, _ in self.batches())
        return busy / (hi - lo) if hi > lo else 0.0
