"""Batched rendering: CachedBackend.synthesize_many and the process pool, against the real
espeak backend; the truth is the same backend called one render at a time, in-process."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from factory.render.base import SynthesisRequest, TTSError, synthesize_many
from factory.render.cache import CachedBackend
from factory.render.pool import PooledBackend
from factory.render.registry import backend_for, get_backend
from factory.render.voices import VoiceBank

TEXTS = [
    "Hello there, how are you?",
    "Mm-hmm.",
    "I think we should meet at ten tomorrow.",
    "Sure, that works for me.",
]


@pytest.fixture(scope="module")
def voices():
    bank = VoiceBank.load()
    return bank.get("espeak-us-f3"), bank.get("espeak-us-m7")


def same(a, b):
    assert a.audio.dtype == b.audio.dtype == np.float32
    assert a.audio.tobytes() == b.audio.tobytes()
    assert a.words == b.words and a.text == b.text and a.sample_rate == b.sample_rate and a.voice_id == b.voice_id


class Recording:
    """The real espeak backend, recording the batches it is handed."""

    def __init__(self):
        self.backend, self.name, self.batches = get_backend("espeak"), "espeak", []

    def cache_identity(self):
        return self.backend.cache_identity()

    def synthesize(self, text, voice, *, rate=1.0):
        self.batches.append(1)
        return self.backend.synthesize(text, voice, rate=rate)

    def synthesize_many(self, requests):
        self.batches.append(len(requests))
        return synthesize_many(self.backend, requests)


# --------------------------------------------------------------------------- cache
def test_cached_batch_equals_one_at_a_time(tmp_path, voices):
    f3, m7 = voices
    reqs = [
        SynthesisRequest(TEXTS[0], f3),
        SynthesisRequest(TEXTS[1], m7),
        SynthesisRequest(TEXTS[2], f3, 1.2),
        SynthesisRequest(TEXTS[1], m7),  # a repeat inside the batch: rendered once
        SynthesisRequest("   ", f3),  # bad text: its slot holds the error, the batch goes on
        SynthesisRequest(TEXTS[3], m7),
    ]
    one = CachedBackend(Recording(), tmp_path / "one")
    one.synthesize(TEXTS[0], f3)  # pre-filled: a hit in both caches
    many_inner = Recording()
    many = CachedBackend(many_inner, tmp_path / "many")
    many.synthesize(TEXTS[0], f3)
    many_inner.batches.clear()

    expected = []
    for r in reqs:
        try:
            expected.append(one.synthesize(r.text, r.voice, rate=r.rate))
        except TTSError as exc:
            expected.append(exc)
    got = many.synthesize_many(reqs)

    assert many_inner.batches == [4]  # every distinct miss in ONE inner call
    assert len(got) == len(reqs)
    for e, g in zip(expected, got, strict=True):
        if isinstance(e, TTSError):
            assert isinstance(g, TTSError) and str(g) == str(e) and "empty" in str(g)
        else:
            same(e, g)
    assert got[1] is not got[3] and got[1].audio is not got[3].audio  # separate copies
    assert (
        many.cache_stats.as_dict()
        == one.cache_stats.as_dict()
        == {
            "hits": 2,
            "misses": 5,
            "corrupt": 0,
            "writes": 4,
        }
    )
    # stored: a second batch is all hits and never reaches the backend
    again = many.synthesize_many([r for r in reqs if r.text.strip()])
    assert many_inner.batches == [4]
    for g, a in zip([g for g in got if not isinstance(g, TTSError)], again, strict=True):
        same(g, a)


def test_cached_batch_rejects_a_short_answer(tmp_path, voices):
    class Short(Recording):
        def synthesize_many(self, requests):
            return super().synthesize_many(requests)[:-1]

    cache = CachedBackend(Short(), tmp_path)
    with pytest.raises(TTSError, match="returned 1 results for 2 requests"):
        cache.synthesize_many([SynthesisRequest(TEXTS[0], voices[0]), SynthesisRequest(TEXTS[2], voices[0])])


# --------------------------------------------------------------------------- process pool
@pytest.fixture(scope="module")
def pool():
    p = PooledBackend("espeak", build=get_backend, processes=2, timeout_s=30)
    yield p
    p.close()


def test_pool_same_bytes_as_in_process(pool, voices, tmp_path):
    direct = get_backend("espeak")
    assert pool.cache_identity() == direct.cache_identity()
    reqs = [SynthesisRequest(t, v, rate) for t in TEXTS for v in voices for rate in (1.0, 1.3)]
    reqs.insert(3, SynthesisRequest("?!", voices[0]))
    got = pool.synthesize_many(reqs)
    assert len(got) == len(reqs)
    for r, g in zip(reqs, got, strict=True):
        if r.text == "?!":
            assert isinstance(g, TTSError) and "nothing speakable" in str(g)
        else:
            same(g, direct.synthesize(r.text, r.voice, rate=r.rate))
    assert pool.batch_stats.items >= len(reqs)
    # through the cache: keys equal the in-process backend's, so one cache serves both
    cached_pool = CachedBackend(pool, tmp_path)
    assert cached_pool.batch_stats is pool.batch_stats and CachedBackend(direct, tmp_path).batch_stats is None
    assert cached_pool.key("hi", voices[0], 1.0) == CachedBackend(direct, tmp_path).key("hi", voices[0], 1.0)
    with pytest.raises(TTSError, match="nothing speakable"):
        pool.synthesize("?!", voices[0])


def _worker_pids(pool: PooledBackend) -> list[int]:
    return [p.pid for p in pool._pool._processes.values()]


def test_pool_dead_worker_is_an_error_not_a_hang(voices):
    pool = PooledBackend("espeak", build=get_backend, processes=2, timeout_s=30)
    try:
        pool.synthesize_many([SynthesisRequest(t, voices[0]) for t in TEXTS])  # workers up
        pids = _worker_pids(pool)
        for pid in pids:  # frozen: nothing they hold can finish before the kill
            os.kill(pid, signal.SIGSTOP)
        result: list = []
        one = [SynthesisRequest(TEXTS[2], voices[1])]
        t = threading.Thread(target=lambda: result.extend(pool.synthesize_many(one)))
        t0 = time.monotonic()
        t.start()
        time.sleep(0.5)
        os.kill(pids[0], signal.SIGKILL)
        t.join(20)
        assert not t.is_alive() and time.monotonic() - t0 < 20
        assert isinstance(result[0], TTSError) and "worker process died" in str(result[0])
        for pid in pids[1:]:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        # the next batch gets a fresh pool
        same(pool.synthesize(TEXTS[0], voices[0]), get_backend("espeak").synthesize(TEXTS[0], voices[0]))
    finally:
        pool.close()


def test_pool_hung_worker_times_out(voices):
    # A worker's start (spawn, imports, building espeak) takes seconds on a loaded machine: the
    # short timeout is for the hung batch only, not for starting a pool.
    pool = PooledBackend("espeak", build=get_backend, processes=1, timeout_s=60)
    try:
        pool.synthesize(TEXTS[1], voices[0])
        (pid,) = _worker_pids(pool)
        os.kill(pid, signal.SIGSTOP)
        pool.timeout_s = 1.5
        t0 = time.monotonic()
        got = pool.synthesize_many([SynthesisRequest(TEXTS[0], voices[0]), SynthesisRequest(TEXTS[1], voices[0])])
        assert time.monotonic() - t0 < 10
        assert all(isinstance(g, TTSError) for g in got)
        assert "no answer within 2 s" in str(got[0]) or "no answer within 1 s" in str(got[0])
        pool.timeout_s = 60  # the restarted pool starts a fresh worker
        same(pool.synthesize(TEXTS[1], voices[0]), get_backend("espeak").synthesize(TEXTS[1], voices[0]))
    finally:
        pool.close()


def test_pool_relays_a_backend_that_cannot_be_built(voices):
    pool = PooledBackend("espeak", {"library": "libnothing-here.so.9"}, build=get_backend, processes=1, timeout_s=30)
    try:
        with pytest.raises(TTSError, match="libnothing-here"):
            pool.cache_identity()
        (g,) = pool.synthesize_many([SynthesisRequest(TEXTS[0], voices[0])])
        assert isinstance(g, TTSError) and "apt-get install" in str(g)
    finally:
        pool.close()


def test_backend_for_picks_pool_or_in_process():
    assert backend_for("espeak") is get_backend("espeak")
    assert backend_for("espeak", processes=3) is backend_for("espeak", processes=3)
    assert isinstance(backend_for("espeak", processes=3), PooledBackend)


def test_config_knobs_are_validated():
    from factory.config import ConfigError, load_config

    cfg = load_config(None, ["tts.processes=2", "tts.service_url=http://127.0.0.1:8020"])
    assert cfg.tts.processes == 2 and cfg.tts.service_url == "http://127.0.0.1:8020"
    # null: as many as run.processes resolves to (the CPUs over run.workers)
    assert load_config(None, []).tts.processes is None and load_config(None, []).tts.service_url is None
    with pytest.raises(ConfigError, match="processes"):
        load_config(None, ["tts.processes=0"])
    with pytest.raises(ConfigError, match="service_url"):
        load_config(None, ["tts.service_url=gpu-box:8020"])
