from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# The ephemeral Prefect server gets 20 s to start by default; on a loaded 2-core machine it can
# need more (seen: timeouts while other suites ran).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

# Small dialogues so an end-to-end run with the real embedded models takes well under a minute.
TINY = [
    "run.seed=11",
    "run.n_samples=4",
    "run.samples_per_shard=2",
    "dialogue.n_turns=[4, 5]",
    "dialogue.assistant_agent_words=[12, 22]",
    "dialogue.assistant_user_words=[3, 10]",
    "dialogue.peer_words=[6, 16]",
    # The two fastest CPU voices that pass intelligibility QA; tests/test_tts.py covers every
    # backend and tests/test_voices.py the bank's draws.
    "tts.user_voice=espeak-gb-m3",
    "tts.agent_voice=piper-joe",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real run through the CLI and the Prefect flow, shared by the end-to-end tests."""
    from typer.testing import CliRunner

    from factory.cli import app

    out = tmp_path_factory.mktemp("runs")
    args = ["generate", "--out", str(out), "--run-id", "tiny"]
    for item in TINY:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out / "tiny"


def read_rows(run_dir: Path) -> list[dict]:
    rows = []
    for path in sorted((run_dir / "data").glob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def decode(audio: dict) -> tuple[np.ndarray, int]:
    data, sr = sf.read(io.BytesIO(audio["bytes"]), dtype="float32", always_2d=True)
    return data, sr


def timelines(run_dir: Path) -> list[dict]:
    return [json.loads(r["timeline"]) for r in read_rows(run_dir)]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `prefect server start` on 127.0.0.1 (random free port, its own PREFECT_HOME), shared
    by the deployment-at-scale tests: yields (API URL, environment pointing at it)."""
    from tests.scale import start_prefect_server

    yield from start_prefect_server(tmp_path_factory.mktemp("prefect-home"))
