from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from filelock import FileLock

# The servers are session fixtures registered here, once: imported into several test modules,
# each module would get its own copy of the fixture and start its own server.
from tests.servers import fake_server, llama_server, moto_server, vllm_server  # noqa: F401

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# The ephemeral Prefect server gets 20 s to start by default; on a loaded 2-core machine it can
# need more (seen: timeouts while other suites ran).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# Each test process gets its own Prefect home (settings, the per-run servers' SQLite database):
# `make test` runs three pytest-xdist workers, and two per-run servers migrating one ~/.prefect
# database at once lock each other out. Set before anything imports Prefect.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=f"prefect-home-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")

# numba's on-disk cache (librosa's jitted functions, `cache=True`) lives in the venv's __pycache__,
# shared by every test worker; two CI runs on a fresh venv lost workers to a segfault inside
# librosa's cached `_parabolic_interpolation` gufunc while others compiled it. Each test process
# keeps its own cache, begun as a copy of the one scripts/setup.sh compiled (scripts/warm_numba.py):
# compiling librosa's functions cost each test process, and each CLI process it started, ~28 CPU-s.
_NUMBA_CACHE = tempfile.mkdtemp(prefix=f"numba-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")
_COMPILED = Path(__file__).resolve().parents[1] / ".venv" / "numba-cache"
if _COMPILED.is_dir():  # absent in an environment set up otherwise: each process compiles, as before
    shutil.copytree(_COMPILED, _NUMBA_CACHE, dirs_exist_ok=True)
os.environ["NUMBA_CACHE_DIR"] = _NUMBA_CACHE

# Library logs that the CLI sends to its log file (factory/cli/logs.py) stay with the test session.
os.environ["DUPLEX_LOG_FILE"] = str(Path(os.environ["PREFECT_HOME"]) / "duplex-factory.log")

# `make test` runs the suite on three pytest-xdist workers. Every module is one unit of work (its
# module fixtures, e.g. test_determinism's two fresh runs, are built once), and modules that share
# an expensive session fixture form one unit, so it is built on one worker only: a vLLM server
# (~60 s to start), the audited tiny run, the planner corpus.
SHARED_FIXTURE_GROUPS = {
    "test_llm_http": "vllm",
    "test_http_structured_e2e": "vllm",
    "test_audit": "audit",
    "test_audit_report": "audit",
    "test_audit_notebook": "audit",
    "test_calibration": "corpus",
    "test_turn_taking": "corpus",
}


# The longest units first (seconds on a 2-core CI machine, one worker), so neither worker is left
# with a long one at the end; the rest follow in file order (`--no-loadscope-reorder`).
LONGEST_FIRST = [
    "test_throughput",  # ~300 s: a 32-dialogue shard, three wave sizes with Whisper QA, overlap
    "vllm",  # ~250 s: the server's start, one structured run, the HTTP checks
    "test_determinism",  # ~250 s with the tiny run it waits for: two fresh-process runs
    "test_crash",  # three kills and resumes, a failing shard, an S3 upload (stand-in LLM)
    "audit",  # ~150 s: the tiny run audited once, its report in Chromium, the notebook
    "test_cluster",  # real Dask and Ray clusters on S3: a thread, a Dask and a Ray run
    "test_end_to_end",  # ~180 s: reruns, voices per channel
    "test_voices",  # ~120 s: every voice of the bank rendered once
    "test_scripting_structured",  # ~100 s: one grammar-constrained script on the CPU model
    "test_prefect_server",  # deployment and worker
]


def unit_of_work(nodeid: str) -> str:
    """The scheduling unit of a test: its module's group, else its module file."""
    module = nodeid.split("::", 1)[0]
    return SHARED_FIXTURE_GROUPS.get(Path(module).stem, module)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(unit_of_work(item.nodeid)).stem, len(rank)))  # stable


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """The vLLM server stops when its unit of work is done in this process: its modules' tests run
    together, on one worker (a test outside the unit that asked for it would find it stopped)."""
    if unit_of_work(item.nodeid) == "vllm" and (nextitem is None or unit_of_work(nextitem.nodeid) != "vllm"):
        from tests.servers import stop_vllm_servers

        stop_vllm_servers()


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's scope scheduler with our units (`--dist loadgroup` cannot group across modules under
    pytest 9: its xdist_group marks rename node ids, which pytest 9 no longer lets it do)."""
    from xdist.scheduler import LoadScopeScheduling  # lazy: only on an xdist controller

    class ModuleUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of_work(nodeid)

    return ModuleUnits(config, log)


def shared_across_workers(tmp_path_factory: pytest.TempPathFactory, name: str) -> tuple[Path, FileLock]:
    """A folder all xdist workers of this session see, and a lock for building it once: the first
    worker to take the lock builds, the others wait and reuse (pytest-xdist's documented pattern)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # per-worker basetemps live in one session folder
    return base / name, FileLock(str(base / f"{name}.lock"))


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
    # Every stage in the test's own process: spawning worker pools (each imports the factory and
    # loads its models) cost a four-dialogue run ~17 of its ~73 CPU seconds, on a 2-core machine
    # that already runs two test workers. The pools are tested where they are the subject:
    # test_determinism's fresh run (same bytes as this in-process fixture), test_throughput,
    # test_tts_batch and test_crash's kills (no worker outlives a killed run).
    "run.processes=1",
    "tts.processes=1",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Path:
    """One real run through the CLI and the Prefect flow, shared by the end-to-end tests (built
    once per session, by whichever xdist worker asks first; read it, never write into it). Started
    in an empty folder outside the repository (`cwd` beside the run), as from a user's own
    project folder: tests/test_anywhere.py checks that nothing was written there."""
    from typer.testing import CliRunner

    from factory.cli import app

    out, lock = shared_across_workers(tmp_path_factory, "tiny-run")
    done = out / "generated"  # written after a run that exited 0: a failed attempt is redone
    with lock:
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)
            args = ["generate", "--out", str(out), "--run-id", "tiny"]
            for item in TINY:
                args += ["--set", item]
            (out / "cwd").mkdir(parents=True)
            here = Path.cwd()
            os.chdir(out / "cwd")
            try:
                result = CliRunner().invoke(app, args)
            finally:
                os.chdir(here)
            assert result.exit_code == 0, result.output + repr(result.exception)
            done.touch()
    return out / "tiny"


@dataclass
class AuditedRun:
    run: Path  # a copy of the tiny run, audited (audit.parquet and the card's audit section in it)
    result: Any  # what factory.audit.run.audit_run returned (RunAudit)
    pickled: Path  # that result, for another process (the notebook's kernel)
    output: str  # the measuring CLI call's output
    reports: dict[str, Path]  # HTML report folder by audio format
    frame: pl.DataFrame  # audit.parquet


AUDIT_ASR_TURNS = 1


@pytest.fixture(scope="session")
def audited_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> AuditedRun:
    """The tiny run measured once by `duplex-factory audit`, for the audit, report and notebook
    tests: `audit --html --audio-format ogg` measures a copy of it; then `audit --html` (flac)
    runs the same command again with audit_run replaying that result for the same arguments."""
    # Imported when a test asks: the CLI pulls in most of the factory.
    from typer.testing import CliRunner

    import factory.audit.cli as audit_cli
    from factory.cli import app

    run = tmp_path_factory.mktemp("audited") / "run"
    shutil.copytree(tiny_run, run)
    real, calls = audit_cli.audit_run, []

    def measure(run_dir, *, on_sample=None, **kwargs):
        calls.append(((Path(run_dir), kwargs), real(run_dir, on_sample=on_sample, **kwargs)))
        return calls[-1][1]

    def replay(run_dir, *, on_sample=None, **kwargs):
        assert (Path(run_dir), kwargs) == calls[0][0], ((run_dir, kwargs), calls[0][0])
        return calls[0][1]

    reports = {fmt: run.parent / f"html-{fmt}" for fmt in ("ogg", "flac")}
    args = ["audit", str(run), "--asr-turns", str(AUDIT_ASR_TURNS), "--players", "2", "--html"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(audit_cli, "audit_run", measure)
        measured = CliRunner().invoke(app, [*args, str(reports["ogg"]), "--audio-format", "ogg"])
        assert measured.exit_code == 0, measured.output + repr(measured.exception)
        mp.setattr(audit_cli, "audit_run", replay)
        replayed = CliRunner().invoke(app, [*args, str(reports["flac"])])
        assert replayed.exit_code == 0, replayed.output + repr(replayed.exception)
    (called, result), *more = calls
    assert not more and called == (run, {"vads": None, "asr_turns": AUDIT_ASR_TURNS, "storage_options": None}), calls
    pickled = run.parent / "audit.pickle"
    pickled.write_bytes(pickle.dumps(result))
    frame = pl.read_parquet(run / "audit.parquet")
    return AuditedRun(run, result, pickled, measured.output, reports, frame)


@pytest.fixture(scope="session")
def planned_corpus() -> list:
    """The planner-path dialogues of tests/corpus.py, built once for the turn-taking and
    calibration tests."""
    from tests.corpus import build_corpus  # imports the factory's planner: only when a test asks

    return build_corpus()


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
    """A real `prefect server start` on 127.0.0.1 (random free port, its own PREFECT_HOME), one
    for the whole test session, shared by every xdist worker that asks (one per worker cost ~40
    CPU-s each: start and idle services): yields (API URL, environment pointing at it). The worker
    that started it waits at its session's end until the others are done with it."""
    from tests.scale import shared_prefect_server

    yield from shared_prefect_server(*shared_across_workers(tmp_path_factory, "prefect-server"))


@pytest.fixture(scope="session")
def prefect_api(prefect_server) -> Iterator[str]:
    """Points in-process runs at the session's Prefect server, and subprocess runs started with
    this process's environment: `flows.server.run_server` then uses it instead of starting a
    server per run (~10 s each on 2 cores). Set for the rest of the session once a test asks;
    tests/test_determinism.py and the first kill in tests/test_crash.py unset it to keep a
    user's per-run server under test."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url, _ = prefect_server
    os.environ["PREFECT_API_URL"] = url  # what run_server and subprocesses read
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):  # Prefect read its settings at import
            yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
