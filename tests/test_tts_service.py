"""The TTS service on 127.0.0.1 with the real espeak and piper backends, several concurrent
clients: the server's own /health stats show multi-item batches, and the audio bytes equal
the same backend rendering in-process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from factory.models import Voice
from factory.render.base import BackendUnavailable, SynthesisRequest, TTSError
from factory.render.cache import CachedBackend
from factory.render.registry import backend_for, get_backend
from factory.render.service import ServiceThread, TTSService
from factory.render.service_backend import ServiceBackend
from factory.render.voices import VoiceBank

TEXTS = [
    "Hello there, how are you?",
    "Mm-hmm.",
    "I think we should meet at ten tomorrow.",
    "Sure, that works for me.",
    "Okay, see you then.",
]


def same(a, b):
    assert a.audio.dtype == b.audio.dtype == np.float32
    assert a.audio.tobytes() == b.audio.tobytes()
    assert a.words == b.words and a.text == b.text and a.sample_rate == b.sample_rate and a.voice_id == b.voice_id


@pytest.fixture(scope="module")
def voices():
    bank = VoiceBank.load()
    return bank.get("espeak-us-f3"), bank.get("espeak-us-m7"), Voice(id="t-piper", backend="piper")


@pytest.fixture(scope="module")
def url():
    service = TTSService(
        {"espeak": get_backend("espeak"), "piper": get_backend("piper")}, batch_size=8, max_wait_ms=100
    )
    with ServiceThread(service) as url:
        yield url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_identity_is_the_real_backends(url):
    for name in ("espeak", "piper"):
        client = ServiceBackend(url, name)
        assert client.cache_identity() == get_backend(name).cache_identity()
    voice = VoiceBank.load().get("espeak-us-f3")
    assert CachedBackend(ServiceBackend(url, "espeak"), "/tmp/x").key("hi", voice, 1.0) == CachedBackend(
        get_backend("espeak"), "/tmp/x"
    ).key("hi", voice, 1.0)
    assert isinstance(backend_for("espeak", service_url=url), ServiceBackend)


def test_concurrent_clients_are_batched_and_bit_identical(url, voices):
    f3, m7, piper = voices
    jobs = {
        "a": [SynthesisRequest(t, f3) for t in TEXTS],
        "b": [SynthesisRequest(t, m7, 1.2) for t in TEXTS],
        "c": [SynthesisRequest(t, f3, 0.9) for t in TEXTS[::-1]],
        "p": [SynthesisRequest(t, piper) for t in TEXTS[:3]],
    }
    before = ServiceBackend(url, "espeak").health()["stats"]
    results: dict[str, list] = {}

    def client(key):
        backend = "piper" if key == "p" else "espeak"
        results[key] = ServiceBackend(url, backend).synthesize_many(jobs[key])

    threads = [threading.Thread(target=client, args=(k,)) for k in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    health = ServiceBackend(url, "espeak").health()
    for key, reqs in jobs.items():
        direct = get_backend("piper" if key == "p" else "espeak")
        assert len(results[key]) == len(reqs)
        for r, got in zip(reqs, results[key], strict=True):
            same(got, direct.synthesize(r.text, r.voice, rate=r.rate))
    espeak = health["stats"]["espeak"]
    items = espeak["items"] - before["espeak"]["items"]
    batches = espeak["batches"] - before["espeak"]["batches"]
    assert items == 15
    assert batches < items and espeak["max_batch"] > 1  # requests of several clients shared batches
    assert health["stats"]["piper"]["items"] - before["piper"]["items"] == 3
    assert 0 < espeak["fill"] <= 1 and health["batch_size"] == 8


def test_bad_requests_get_the_backends_message(url, voices):
    f3 = voices[0]
    client = ServiceBackend(url, "espeak")
    got = client.synthesize_many(
        [
            SynthesisRequest(TEXTS[0], f3),
            SynthesisRequest("   ", f3),
            SynthesisRequest(TEXTS[1], f3.model_copy(update={"params": {"shout": 3}})),
        ]
    )
    same(got[0], get_backend("espeak").synthesize(TEXTS[0], f3))
    assert isinstance(got[1], TTSError) and "cannot synthesise empty text" in str(got[1])
    assert isinstance(got[2], TTSError) and "shout" in str(got[2])
    with pytest.raises(TTSError, match="empty text"):
        client.synthesize("", f3)
    with pytest.raises(BackendUnavailable, match="does not host backend 'kokoro'"):
        ServiceBackend(url, "kokoro").cache_identity()
    with pytest.raises(BackendUnavailable, match="does not host backend 'kokoro'"):
        ServiceBackend(url, "kokoro").synthesize(TEXTS[0], Voice(id="k", backend="kokoro"))


def test_cache_around_the_client_is_the_in_process_cache(url, voices, tmp_path):
    f3, m7, _ = voices
    reqs = [SynthesisRequest(t, f3 if i % 2 else m7) for i, t in enumerate(TEXTS)] + [SynthesisRequest(TEXTS[0], m7)]
    through = CachedBackend(ServiceBackend(url, "espeak"), tmp_path / "c").synthesize_many(reqs)
    local = CachedBackend(get_backend("espeak"), tmp_path / "c")  # the same folder: all hits
    for r, got in zip(reqs, through, strict=True):
        same(got, local.synthesize(r.text, r.voice, rate=r.rate))
    assert local.cache_stats.hits == len(reqs) and local.cache_stats.misses == 0


def test_server_down_names_the_url_and_the_command(voices):
    dead = f"http://127.0.0.1:{free_port()}"
    client = ServiceBackend(dead, "espeak", retries=2, backoff_s=0.05)
    with pytest.raises(BackendUnavailable, match=r"cannot be reached.*duplex-factory tts-serve --backends espeak"):
        client.synthesize(TEXTS[0], voices[0])
    with pytest.raises(BackendUnavailable, match=dead):
        client.cache_identity()


class Slow:
    """The real espeak backend behind a delay longer than the client's timeout."""

    name = "espeak"

    def __init__(self, delay):
        self.backend, self.delay = get_backend("espeak"), delay

    def cache_identity(self):
        return self.backend.cache_identity()

    def synthesize(self, text, voice, *, rate=1.0):
        time.sleep(self.delay)
        return self.backend.synthesize(text, voice, rate=rate)


def test_slow_render_times_out_after_retries(voices):
    with ServiceThread(TTSService({"espeak": Slow(0.8)}, batch_size=4, max_wait_ms=0)) as url:
        client = ServiceBackend(url, "espeak", timeout_s=0.3, retries=2, backoff_s=0.05)
        t0 = time.monotonic()
        (got,) = client.synthesize_many([SynthesisRequest(TEXTS[1], voices[0])])
        assert isinstance(got, TTSError) and "after 2 tries: no answer within 0.3 s" in str(got)
        assert time.monotonic() - t0 < 5
        patient = ServiceBackend(url, "espeak", timeout_s=10)
        same(patient.synthesize(TEXTS[1], voices[0]), get_backend("espeak").synthesize(TEXTS[1], voices[0]))


def test_cli_tts_serve(voices):
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "duplex-factory")
    cmd = [exe, "tts-serve", "--backends", "espeak", "--port", str(port), "--batch-size", "4", "--max-wait-ms", "5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = ServiceBackend(f"http://127.0.0.1:{port}", "espeak", retries=6, backoff_s=0.5)
        assert client.cache_identity() == get_backend("espeak").cache_identity()
        same(client.synthesize(TEXTS[0], voices[0]), get_backend("espeak").synthesize(TEXTS[0], voices[0]))
        assert client.health()["batch_size"] == 4
    finally:
        proc.terminate()
        proc.wait(20)
    bad = subprocess.run([exe, "tts-serve", "--backends", "nope"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 3 and "unknown TTS backend 'nope'" in bad.stdout


def test_clients_share_one_http_loop_thread_also_from_async_code(url, voices):
    """The service client sends through factory.http_client: one loop thread per process for
    every client (no event loop per call), callable from a thread whose own loop runs."""
    import asyncio

    from factory import http_client

    async def from_a_running_loop():
        return ServiceBackend(url, "espeak").synthesize_many([SynthesisRequest(TEXTS[1], voices[0])])

    (got,) = asyncio.run(from_a_running_loop())
    same(got, get_backend("espeak").synthesize(TEXTS[1], voices[0]))
    ServiceBackend(url, "espeak").health()
    loops = [t for t in threading.enumerate() if t.name == "http-client"]
    assert len(loops) == 1 and loops[0].is_alive() and http_client.loop().is_running()
