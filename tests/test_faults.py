"""Fault injection on the production path: the HTTP LLM backend behind a proxy that drops
connections, rate-limits, errors, stalls and garbles bodies (tests/faults.py), and a TTS backend
that fails a tenth of its renders. Truth comes from outside the code under test: the faults the
proxy counts, the files the run writes, the audio decoded back."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

import factory.runtime as runtime
from factory.llm import LLMError
from factory.llm.http import OpenAIHTTPBackend
from factory.models import MixRecipe, Timeline
from factory.run.records import RunSummary
from factory.schemas import SCHEMA_DIR
from tests.conftest import TINY, decode, read_rows
from tests.faults import FAULT_CAUSES, FAULTS, FaultProxy, FlakyTTS, fault_proxy
from tests.latency_server import STAND_IN_BEHAVIOUR, LatencyServer
from tests.servers import FakeServer

MESSAGES = [{"role": "user", "content": "Say hi."}]
Fake = Callable[..., FakeServer]


# -- each fault, one at a time, against a scripted upstream --------------------------------


@pytest.mark.parametrize("kind", FAULTS)
def test_each_fault_is_retried_and_counted_by_cause(fake_server: Fake, kind: str) -> None:
    upstream = fake_server([])
    with (
        fault_proxy(upstream.base_url, force=[kind], slow_s=1.0) as proxy,
        OpenAIHTTPBackend(proxy.base_url, timeout_s=0.5, max_retries=2, backoff_s=0.01) as llm,
    ):
        assert llm.complete(MESSAGES, max_tokens=8, temperature=0.5, seed=1) == "ok"
    assert proxy.injected == {kind: 1}
    assert dict(llm.stats.retries) == {FAULT_CAUSES[kind]: 1} and not llm.stats.failures
    assert (llm.stats.requests, llm.stats.attempts) == (2, 3)  # GET /models, then the POST twice


def test_persistent_fault_is_a_counted_failure(fake_server: Fake) -> None:
    upstream = fake_server([])
    with (
        fault_proxy(upstream.base_url, force=["malformed"] * 3) as proxy,
        OpenAIHTTPBackend(proxy.base_url, max_retries=2, backoff_s=0.01) as llm,
        pytest.raises(LLMError, match="after 3 attempts: non-JSON body"),
    ):
        llm.complete(MESSAGES, max_tokens=8, temperature=0.5, seed=1)
    assert dict(llm.stats.failures) == {"bad_body": 1} and dict(llm.stats.retries) == {"bad_body": 2}


def _draws(proxy: FaultProxy, bodies: list[bytes]) -> list[str | None]:
    return [proxy.draw(b) for b in bodies]


def test_fault_draws_are_seeded_repeatable_and_near_the_rate() -> None:
    bodies = [json.dumps({"n": i}).encode() for i in range(1000)]
    with fault_proxy("http://unused/v1", seed=3) as a, fault_proxy("http://unused/v1", seed=3) as b:
        first = _draws(a, bodies)
        # Keyed by the request, not the arrival order: concurrency cannot change a run's faults.
        assert _draws(b, bodies[::-1]) == first[::-1]
        again = _draws(a, bodies)  # a retried request draws anew
    with fault_proxy("http://unused/v1", seed=4) as other:
        assert _draws(other, bodies) != first
    assert again != first
    share = sum(f is not None for f in first) / len(first)
    assert 0.07 <= share <= 0.13, share
    assert set(first) - {None} == set(FAULTS)


# -- a whole run through the CLI: LLM faults + flaky TTS -------------------------------------

SEED = 5
# The upstream is the stand-in LLM (tests/latency_server.py): a real HTTP server that answers at
# once with plain sentences drawn from the request's seed. What is under test is the HTTP
# backend, its retries and the run around it, not the model's words, and a real model on CPU
# spent most of this module's time (its CI setup took ~260 s with llama.cpp behind the proxy).
# "slow" stalls past the timeout; a loaded 2-core box never makes the stand-in take this long.
TIMEOUT_S = 5.0


@dataclass
class FaultRun:
    run_dir: Path
    output: str
    summary: dict
    proxy: FaultProxy
    tts: list[FlakyTTS]


@pytest.fixture(scope="module")
def fault_run(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultRun]:
    from factory.cli import app
    from flows import generate as flow_module

    out = tmp_path_factory.mktemp("fault-runs")
    wrapped: list[FlakyTTS] = []
    summaries: list[dict] = []
    real_get_backend, real_run_generate = runtime.get_backend, flow_module.run_generate

    def flaky_backend(name: str, options: object = None) -> FlakyTTS:
        wrapped.append(FlakyTTS(real_get_backend(name, options), rate=0.25, seed=SEED))
        return wrapped[-1]

    def recording_run_generate(*args: object, **kwargs: object) -> RunSummary:
        summary = real_run_generate(*args, **kwargs)
        summaries.append(summary.model_dump(mode="json"))
        return summary

    overrides = [
        *TINY,
        *STAND_IN_BEHAVIOUR,  # a stand-in answer carries no marks
        f"run.seed={SEED}",
        "llm.backend=http",
        f"llm.timeout_s={TIMEOUT_S}",
        "tts.processes=1",  # renders in this process, where the flaky backend is patched in
        f"tts.cache_dir={out / 'tts-cache'}",  # fresh: every render reaches the flaky backend
    ]
    with (
        LatencyServer(latency_s=0.0) as upstream,
        fault_proxy(upstream.base_url, seed=SEED, rate=0.25, slow_s=TIMEOUT_S + 2) as proxy,
    ):
        args = ["generate", "--out", str(out), "--run-id", "faulty", "--set", f"llm.base_url={proxy.base_url}"]
        for item in overrides:
            args += ["--set", item]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(runtime, "get_backend", flaky_backend)
            mp.setattr(flow_module, "run_generate", recording_run_generate)
            runtime.forget_shared()
            try:
                result = CliRunner().invoke(app, args)
            finally:
                runtime.forget_shared()  # later tests get the real backends
        assert result.exit_code == 0, result.output + repr(result.exception)
        yield FaultRun(out / "faulty", result.output, summaries[0], proxy, wrapped)


def test_faults_were_injected_and_every_one_retried_and_counted(fault_run: FaultRun) -> None:
    proxy, stats = fault_run.proxy, fault_run.summary["llm_http"]
    assert sum(proxy.injected.values()) >= 2, proxy.injected  # the run was really under fire
    # Every spoiled attempt is a retry of its cause (or, after max_retries, a failure of it).
    spoiled = Counter(stats["retries"]) + Counter(stats["failures"])
    assert spoiled >= proxy.expected_retries(), (spoiled, proxy.injected)
    # Beyond those, only genuine timeouts (a loaded 2-core box can stall any request); the
    # upstream never drops, rate-limits, errors or garbles on its own.
    assert set(spoiled - proxy.expected_retries()) <= {"timeout"}, (spoiled, proxy.injected)
    assert stats["attempts"] == stats["requests"] + sum(stats["retries"].values())
    # ... and the CLI's final line says so.
    done = " ".join(fault_run.output.split())
    match = re.search(r"LLM (\d+) requests, (\d+) retries", done)
    assert match, done
    assert (int(match[1]), int(match[2])) == (stats["requests"], sum(stats["retries"].values()))


def test_flaky_tts_failures_become_redraws_or_rejections_with_reasons(fault_run: FaultRun) -> None:
    failed = [render for backend in fault_run.tts for render in backend.failed]
    assert failed, ("no TTS failure was injected: the test proved nothing", [(b.name, b.calls) for b in fault_run.tts])
    manifest = pl.read_parquet(fault_run.run_dir / "manifest.parquet")
    assert manifest.height == 4
    for row in manifest.iter_rows(named=True):
        if row["status"] == "rejected":
            assert row["reason"] and row["reason"].strip(), row
        else:
            assert row["status"] == "ok" and row["reason"] is None, row
    # No written sample uses a render that failed: every placed piece names a render that succeeded.
    for row in read_rows(fault_run.run_dir):
        for piece in MixRecipe.model_validate_json(row["recipe"]).pieces:
            assert (piece.source.voice_id, piece.source.text, piece.source.rate) not in set(failed), row["id"]


def test_nothing_invalid_is_written(fault_run: FaultRun) -> None:
    schema = json.loads((SCHEMA_DIR / "timeline.schema.json").read_text())
    manifest = pl.read_parquet(fault_run.run_dir / "manifest.parquet")
    rows = read_rows(fault_run.run_dir)
    assert sorted(r["id"] for r in rows) == sorted(manifest.filter(pl.col("status") == "ok")["id"].to_list())
    for row in rows:
        jsonschema.validate(json.loads(row["timeline"]), schema)
        timeline = Timeline.model_validate_json(row["timeline"])
        prompt, _ = decode(row["voice_prompt"])  # the agent's voice prompt: one channel
        assert prompt.shape[1] == 1 and np.isfinite(prompt).all() and np.abs(prompt).max() > 0.01
        # a sample drawn without noise (augment.noise_probability) has no augmented mix, and says so
        assert (row["audio_augmented"] is None) == (row["augmentation"] is None), row["id"]
        for column in ("audio", "audio_augmented")[: 1 + (row["audio_augmented"] is not None)]:
            stereo, sr = decode(row[column])
            assert stereo.shape[1] == 2 and np.isfinite(stereo).all() and np.abs(stereo).max() > 0.01
            assert abs(len(stereo) / sr - timeline.duration) < 1e-3, (row["id"], column)
