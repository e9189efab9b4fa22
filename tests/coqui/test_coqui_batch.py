"""Coqui batching against randomly initialised models of the real classes (VITS, XTTS), on CPU:
a padded VITS batch gives each item its one-at-a-time render, padding does not leak into a
shorter item, XTTS computes a reference clip's conditioning latents once; and the TTS service
around a random VITS batches across clients. Run in the Coqui environment (conftest.py).

Tolerance: durations (hence lengths and word times) are compared exactly. Audio is compared
within 1e-4 absolute (peak ~0.5): the flow and the decoder run as one [B, C, T] batch instead of
B runs of [1, C, T_b], and CPU conv/matmul kernels may block and sum a batch in another order,
so the last bits of float32 can differ; a leak of padding (the control below) is orders of
magnitude larger.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from factory.models import Voice
from factory.render.base import SynthesisRequest, TTSError
from factory.render.coqui import CoquiBackend, vits
from factory.render.service import ServiceThread, TTSService
from factory.render.service_backend import ServiceBackend
from tests.coqui.test_coqui_backend import _builder, check_contract

ATOL = 1e-4
SHORT = "Hi."
LONG = "Well, I really think we should meet tomorrow at ten, then walk over together."
MID = "Sure, that works for me."


@pytest.fixture(scope="module")
def vits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _builder().build_vits(tmp_path_factory.mktemp("vits") / "vits-ms", n_speakers=4, small=True)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """torch's default intra-op threads (one per core) spin-wait on a loaded shared machine:
    measured 9.2 s vs 0.7 s for the same 4 renders at load ~5 on 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def backend() -> CoquiBackend:
    return CoquiBackend(device="cpu", batch_size=8)


def v(model: Path, speaker: str, **kw) -> Voice:
    return Voice(id=f"coqui-{speaker}", backend="coqui", model=str(model), speaker=speaker, **kw)


def requests(vits_dir: Path) -> list[SynthesisRequest]:
    return [
        SynthesisRequest(LONG, v(vits_dir, "p225")),
        SynthesisRequest(SHORT, v(vits_dir, "p226"), 1.3),
        SynthesisRequest(MID, v(vits_dir, "p227", params={"noise_scale": 0.4})),
        SynthesisRequest("?!", v(vits_dir, "p225")),  # nothing speakable: its own error
        SynthesisRequest(SHORT, v(vits_dir, "p228"), 0.8),
    ]


def test_batch_equals_one_at_a_time(backend: CoquiBackend, vits_dir: Path) -> None:
    reqs = requests(vits_dir)
    before = backend.batch_stats.batches
    t = time.perf_counter()
    batched = backend.synthesize_many(reqs)
    took = time.perf_counter() - t
    assert backend.batch_stats.batches == before + 1  # the four good items in ONE padded batch
    singles = [backend.synthesize_many([r], batch_size=1)[0] for r in reqs]
    print(f"\n[coqui] batch of {len(reqs)} in {took:.2f} s")
    worst = 0.0
    for r, b, s in zip(reqs, batched, singles, strict=True):
        if r.text == "?!":
            assert isinstance(b, TTSError) and isinstance(s, TTSError) and str(b) == str(s)
            continue
        check_contract(b, r.text, 22050)
        assert b.words == s.words  # durations are per item: exact
        assert len(b.audio) == len(s.audio)
        worst = max(worst, float(np.abs(b.audio - s.audio).max()))
    print(f"[coqui] largest batched vs one-at-a-time sample difference: {worst:.2e}")
    assert worst <= ATOL
    # the same item in another batch (other neighbours, other padding) gives the same render
    other = backend.synthesize_many([reqs[1], SynthesisRequest(LONG + " " + LONG, v(vits_dir, "p227"))])
    assert np.allclose(other[0].audio, batched[1].audio, atol=ATOL, rtol=0) and other[0].words == batched[1].words


def test_padding_does_not_leak_into_a_shorter_item(backend: CoquiBackend, vits_dir: Path, monkeypatch) -> None:
    short, long = SynthesisRequest(SHORT, v(vits_dir, "p226")), SynthesisRequest(LONG, v(vits_dir, "p225"))
    alone = backend.synthesize_many([short], batch_size=1)[0]
    together = backend.synthesize_many([short, long])[0]
    assert len(together.audio) == len(alone.audio) and together.words == alone.words
    tail = slice(-2048, None)  # the decoder's receptive field reaches the end from the padding
    assert np.abs(together.audio[tail] - alone.audio[tail]).max() <= ATOL
    # control: Coqui's plain padded decoding (no per-conv masks) does leak, and this test sees it
    masked = vits._masked_convs
    monkeypatch.setattr(
        vits, "_masked_convs", lambda decoder, lengths, frames, active: masked(decoder, lengths, frames, False)
    )
    leaky = backend.synthesize_many([short, long])[0]
    assert np.abs(leaky.audio[tail] - alone.audio[tail]).max() > 100 * ATOL


# ----------------------------------------------------------------------------- XTTS
def test_xtts_latents_once_per_reference(tmp_path_factory: pytest.TempPathFactory, backend: CoquiBackend) -> None:
    import soundfile as sf

    # What is counted is the conditioning, not the audio: 16 audio tokens a render instead of the
    # builder's 64 cut the decoder's time (12.6 of this test's ~24 CPU-s with 64) by about 3/4.
    xtts = _builder().build_xtts(tmp_path_factory.mktemp("xtts") / "xtts", max_audio_tokens=16)
    refs = []
    for k, f0 in enumerate((140, 210)):
        sr = 22050
        t = np.arange(int(3.0 * sr)) / sr
        path = tmp_path_factory.mktemp("ref") / f"speaker{k}.wav"
        sf.write(path, (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), sr)
        refs.append(Voice(id=f"clone-{k}", backend="coqui", model=str(xtts), reference=str(path)))
    loaded = backend.models.load(refs[0])
    calls: list[str] = []
    real = loaded.model.get_conditioning_latents

    def counting(*args, **kw):
        calls.append(kw.get("audio_path", args[0] if args else None)[0])
        return real(*args, **kw)

    loaded.model.get_conditioning_latents = counting
    try:
        out = backend.synthesize_many(
            [SynthesisRequest("Hello.", refs[0]), SynthesisRequest("Okay.", refs[1]), SynthesisRequest("Yes.", refs[0])]
        )
        out += backend.synthesize_many([SynthesisRequest("Right.", refs[1])])
    finally:
        loaded.model.get_conditioning_latents = real
    assert len(out) == 4  # rendered, or a TTSError about word alignment where faster-whisper is missing
    assert sorted(calls) == sorted(r.reference for r in refs)  # once per reference clip, not per render


# ----------------------------------------------------------------------------- service
def test_service_around_random_vits_batches_clients(vits_dir: Path) -> None:
    direct = CoquiBackend(device="cpu", batch_size=8)
    reqs = [r for r in requests(vits_dir) if r.text != "?!"]
    with ServiceThread(TTSService({"coqui": direct}, batch_size=8, max_wait_ms=300)) as url:
        assert ServiceBackend(url, "coqui").cache_identity() == direct.cache_identity()
        results: dict[int, list] = {}

        def client(k: int) -> None:
            results[k] = ServiceBackend(url, "coqui").synthesize_many(reqs[k::2])

        threads = [threading.Thread(target=client, args=(k,)) for k in (0, 1)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(300)
        health = ServiceBackend(url, "coqui").health()["stats"]["coqui"]
    assert health["items"] == len(reqs) and health["max_batch"] > 1
    assert direct.batch_stats.items == len(reqs) and direct.batch_stats.batches < len(reqs)
    for k in (0, 1):
        for r, got in zip(reqs[k::2], results[k], strict=True):
            alone = direct.synthesize_many([r], batch_size=1)[0]
            assert got.words == alone.words and len(got.audio) == len(alone.audio)
            assert np.abs(got.audio - alone.audio).max() <= ATOL


def test_a_batch_too_big_for_the_device_is_split_not_lost(vits_dir: Path) -> None:
    """A decoder that fails on more than 2 items (what CUDA out-of-memory looks like) costs
    splits, not renders; an item that fails alone gets its own TTSError."""
    backend = CoquiBackend(device="cpu", batch_size=8)
    reqs = [r for r in requests(vits_dir) if r.text != "?!"]
    singles = [backend.synthesize_many([r], batch_size=1)[0] for r in reqs]
    model = backend.models.load(reqs[0].voice).model
    real = model.waveform_decoder.forward

    def small_only(z, g=None):
        if z.shape[0] > 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(z, g=g)

    model.waveform_decoder.forward = small_only
    try:
        got = backend.synthesize_many(reqs)
        assert backend.split_batches >= 1
        for a, b in zip(got, singles, strict=True):
            assert a.words == b.words and np.abs(a.audio - b.audio).max() <= ATOL
        model.waveform_decoder.forward = lambda z, g=None: (_ for _ in ()).throw(RuntimeError("broken decoder"))
        failed = backend.synthesize_many(reqs[:2])
        assert all(isinstance(f, TTSError) and "broken decoder" in str(f) for f in failed)
    finally:
        model.waveform_decoder.forward = real
