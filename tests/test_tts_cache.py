"""CachedBackend around a real backend (espeak: the fastest)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from factory.render.base import TTSBackend
from factory.render.cache import CachedBackend
from factory.render.registry import get_backend
from factory.render.voices import VoiceBank
from factory.tts_cache import entry_keys, entry_paths, read_entry


class Counting:
    """Counts renders of the real backend it wraps."""

    def __init__(self, backend):
        self.backend, self.name, self.calls = backend, backend.name, 0
        self._lock = threading.Lock()

    def cache_identity(self):
        return self.backend.cache_identity()

    def synthesize(self, text, voice, *, rate=1.0):
        with self._lock:
            self.calls += 1
        return self.backend.synthesize(text, voice, rate=rate)


@pytest.fixture
def cached(tmp_path):
    inner = Counting(get_backend("espeak"))
    return inner, CachedBackend(inner, tmp_path / "tts")


@pytest.fixture(scope="module")
def voices():
    bank = VoiceBank.load()
    return bank.get("espeak-us-f3"), bank.get("espeak-us-m7")


def same(a, b):
    assert a.audio.dtype == b.audio.dtype == np.float32
    assert a.audio.tobytes() == b.audio.tobytes()
    assert a.words == b.words and a.text == b.text and a.sample_rate == b.sample_rate and a.voice_id == b.voice_id


def test_the_cache_is_a_backend_with_the_inner_identity(cached):
    inner, cache = cached
    assert isinstance(cache, TTSBackend)
    assert cache.cache_identity() == get_backend("espeak").cache_identity()


def test_hit_is_bit_identical(cached, voices):
    inner, cache = cached
    first = cache.synthesize("Hello there, how are you?", voices[0])
    second = cache.synthesize("Hello there, how are you?", voices[0])
    same(first, second)
    assert inner.calls == 1 and cache.cache_stats.as_dict() == {"hits": 1, "misses": 1, "corrupt": 0, "writes": 1}
    # a fresh cache object on the same folder (another process) hits too
    other = CachedBackend(inner, cache.cache_dir)
    same(other.synthesize("Hello there, how are you?", voices[0]), first)
    assert inner.calls == 1


def test_voice_text_rate_miss(cached, voices):
    inner, cache = cached
    cache.synthesize("Hello there.", voices[0])
    cache.synthesize("Hello there.", voices[1])
    cache.synthesize("Hello there!", voices[0])
    cache.synthesize("Hello there.", voices[0], rate=1.1)
    changed = voices[0].model_copy(update={"params": {"pitch": 60}})
    assert cache.key("Hello there.", changed, 1.0) != cache.key("Hello there.", voices[0], 1.0)
    assert inner.calls == 4 and cache.cache_stats.hits == 0


@pytest.mark.parametrize("damage", ["truncate_npy", "garbage_json", "delete_npy", "flip_audio"])
def test_corrupt_entry_recomputed(cached, voices, damage):
    inner, cache = cached
    first = cache.synthesize("Corrupt me, please.", voices[0])
    npy, meta = entry_paths(cache.cache_dir, cache.key("Corrupt me, please.", voices[0], 1.0))
    if damage == "truncate_npy":
        npy.write_bytes(npy.read_bytes()[:100])
    elif damage == "garbage_json":
        meta.write_text("{not json")
    elif damage == "delete_npy":
        npy.unlink()
    else:
        audio = np.load(npy)
        audio[10] += 0.5
        np.save(npy, audio)
    again = cache.synthesize("Corrupt me, please.", voices[0])
    same(first, again)
    assert inner.calls == 2 and cache.cache_stats.corrupt == 1
    same(cache.synthesize("Corrupt me, please.", voices[0]), first)  # repaired
    assert inner.calls == 2


def test_concurrent_writers(cached, voices):
    _inner, cache = cached
    texts = [f"Sentence number {i % 4}." for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda t: cache.synthesize(t, voices[0]), texts))
    for t, u in zip(texts, outs):
        same(u, cache.synthesize(t, voices[0]))
    leftovers = list(cache.cache_dir.rglob("*.tmp"))
    assert not leftovers
    assert len(list(cache.cache_dir.rglob("*.npy"))) == 4


def test_identity_follows_the_code_options_and_packages(tmp_path, monkeypatch):
    """A change of the backend's code or of the shared post-processing changes every key."""
    import importlib.util

    from factory.render import base
    from factory.render.espeak_backend import EspeakBackend

    backend = get_backend("espeak")
    ident = backend.cache_identity()
    assert f"code={base.code_identity('factory.render.espeak_backend', *base.POSTPROCESS_MODULES)}" in ident
    assert "espeak-ng=" in ident
    # simulate an edit of the post-processing module: a copy with one changed line
    origin = importlib.util.find_spec("factory.render.text").origin
    edited = tmp_path / "text.py"
    edited.write_text(open(origin).read() + "\n# changed\n")
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        spec = real_find_spec(name, *args)
        if name == "factory.render.text":
            spec = importlib.util.spec_from_file_location(name, edited)
        return spec

    base.code_identity.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert EspeakBackend().cache_identity() != ident
    monkeypatch.undo()
    base.code_identity.cache_clear()
    assert EspeakBackend().cache_identity() == ident
    voice = VoiceBank.load().get("espeak-us-f3")
    assert CachedBackend(backend, tmp_path).key("hi", voice, 1.0) != CachedBackend(
        EspeakBackend(library="libespeak-ng.so.1"), tmp_path, identity="other"
    ).key("hi", voice, 1.0)


def test_backend_options_are_validated_by_the_backend():
    from factory.render.base import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="tts.backend_options.espeak: libary"):
        get_backend("espeak", {"libary": "x"})
    assert get_backend("espeak", {"library": "libespeak-ng.so.1"}).library == "libespeak-ng.so.1"


def test_identity_of_a_package_backend_hashes_every_module_in_it(tmp_path, monkeypatch):
    """The coqui backend is a package: an edit of any module in it (not only __init__) changes
    its code identity, so its cached renders are not reused by changed code."""
    from factory.render import base

    pkg = tmp_path / "fakebackend"
    (pkg / "inner").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from fakebackend.vits import render\n")
    (pkg / "vits.py").write_text("def render():\n    return 1\n")
    (pkg / "inner" / "__init__.py").write_text("")
    (pkg / "inner" / "decode.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def ident() -> str:
        base.code_identity.cache_clear()
        return base.code_identity("fakebackend")

    before = ident()
    (pkg / "vits.py").write_text("def render():\n    return 2\n")
    after_module = ident()
    (pkg / "inner" / "decode.py").write_text("X = 2\n")
    after_nested = ident()
    assert len({before, after_module, after_nested}) == 3
    base.code_identity.cache_clear()


def test_readers_find_what_the_cache_wrote(cached, voices):
    """run/rebuild and augment/babble read entries through factory.tts_cache without the render
    stage: they must find exactly the files the cache wrote, at the layout on disk."""
    _, cache = cached
    texts = ["Hello there, how are you?", "Fine, thanks."]
    utts = [cache.synthesize(t, voices[0]) for t in texts]
    keys = [cache.key(t, voices[0], 1.0) for t in texts]
    # the layout as it is on disk: two files per entry under the key's first two characters
    on_disk = sorted(p.relative_to(cache.cache_dir).as_posix() for p in cache.cache_dir.rglob("*") if p.is_file())
    assert on_disk == sorted(f"{k[:2]}/{k}.{ext}" for k in keys for ext in ("json", "npy"))
    assert list(entry_keys(cache.cache_dir)) == sorted(keys)
    for key, utt in zip(keys, utts, strict=True):
        audio, rate = read_entry(cache.cache_dir, key)
        assert audio.tobytes() == utt.audio.tobytes() and rate == utt.sample_rate
    with pytest.raises(FileNotFoundError):
        read_entry(cache.cache_dir, "0" * 64)
