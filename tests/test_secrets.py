"""Secrets stay secret: an API key (named by `llm.api_key_env`) and HF_TOKEN set in the environment
appear nowhere a run writes or says: logs, CLI output, config.yaml, the dataset card, manifests,
shards, exception messages. The server really demands the key (tests/faults.py's proxy in front
of the stand-in LLM server, tests/latency_server.py: the key's path is under test, not the
model's words), and a refusing server that echoes the key back, as OpenAI's 401 does, must not
carry it into our errors."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import httpx
import polars as pl
import pytest
from typer.testing import CliRunner

from factory.llm import LLMError, get_llm
from factory.llm.http import OpenAIHTTPBackend
from tests.conftest import TINY
from tests.faults import fault_proxy
from tests.latency_server import STAND_IN_BEHAVIOUR, LatencyServer

TOKEN = "sk-FAKE-duplex-0123456789"
KEY_ENV = "DUPLEX_TEST_API_KEY"


def _leaks(text: str | bytes) -> bool:
    data = text.encode() if isinstance(text, str) else text
    # The distinctive middle too, in case something masks the prefix or re-encodes the rest.
    return TOKEN.encode() in data or b"duplex-0123456789" in data


@pytest.mark.usefixtures("prefect_api")
def test_run_never_writes_or_logs_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from factory.cli import app

    monkeypatch.setenv(KEY_ENV, TOKEN)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    with LatencyServer(latency_s=0.0) as upstream, fault_proxy(upstream.base_url, rate=0.0, api_key=TOKEN) as proxy:
        assert httpx.get(proxy.base_url + "/models").status_code == 401  # the key is really demanded
        args = ["generate", "--out", str(tmp_path / "runs"), "--run-id", "secret"]
        for item in [
            *TINY,
            *STAND_IN_BEHAVIOUR,
            "run.n_samples=1",
            "run.samples_per_shard=1",
            "dialogue.n_turns=[2, 3]",
            "llm.backend=http",
            f"llm.base_url={proxy.base_url}",
            f"llm.api_key_env={KEY_ENV}",
            "llm.concurrency=1",
            f"tts.cache_dir={tmp_path / 'tts-cache'}",
        ]:
            args += ["--set", item]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert proxy.forwarded >= 2  # /models and at least one completion went through with the key
    run_dir = tmp_path / "runs" / "secret"
    assert pl.read_parquet(run_dir / "manifest.parquet").height == 1
    assert KEY_ENV in (run_dir / "config.yaml").read_text()  # the config names the variable, not its value
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"config.yaml", "README.md", "manifest.parquet"} <= {p.name for p in files}
    assert [p for p in files if _leaks(p.read_bytes())] == []
    assert not _leaks(result.output)
    assert caplog.records and not _leaks(caplog.text)


def test_a_refusal_that_echoes_the_key_does_not_carry_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, TOKEN)
    with (
        LatencyServer(latency_s=0.0) as upstream,
        fault_proxy(upstream.base_url, rate=0.0, api_key="sk-the-right-one") as proxy,
    ):
        # At start-up (GET /models) and mid-run (a completion, model given so no discovery).
        with pytest.raises(LLMError) as at_start:
            get_llm("http", base_url=proxy.base_url, api_key_env=KEY_ENV, max_retries=0)
        with OpenAIHTTPBackend(proxy.base_url, model="smollm2", api_key=TOKEN) as llm:
            with pytest.raises(LLMError) as mid_run:
                llm.complete([{"role": "user", "content": "hi"}], max_tokens=4, temperature=0.5, seed=1)
    for err in (at_start, mid_run):
        assert "HTTP 401" in str(err.value) and "Incorrect API key" in str(err.value)  # the server's words survive
        text = "".join(traceback.format_exception(err.value))
        assert not _leaks(text), text
