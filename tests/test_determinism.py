"""Same config and seed, same bytes: a fresh process with an empty TTS cache reproduces the `tiny_run`
fixture's shards byte for byte, and so do two shard workers with one sample per shard (rows and
manifest equal; only the grouping into files differs).

Each run is a subprocess running the CLI `generate`, so nothing cached in-process (models, voice
bank, LLM answers, TTS renders) carries over from the fixture's run. Its TTS cache starts empty and
must end with one entry per render it made, so equal bytes come from rendering again, not from
reading the fixture's renders back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import TINY, read_rows

ROOT = Path(__file__).resolve().parents[1]

# Runs the CLI in this fresh process, then reads the render counters of the process's cached TTS
# backends (shared per process by factory.runtime, so the run's own) into a JSON file.
DRIVER = """
import json, sys
from factory.cli import app
from factory.config import load_config
from factory.runtime import runtime_for

out, run_id, stats_path, *overrides = sys.argv[1:]
args = ["generate", "--out", out, "--run-id", run_id]
for item in overrides:
    args += ["--set", item]
try:
    app(args)
    code = 0
except SystemExit as exc:
    code = exc.code or 0
cfg = load_config(overrides=overrides)
rt = runtime_for(cfg)
backends = sorted({v.backend for v in rt.pick_voices("stats").values()})
stats = {name: rt.tts(name).cache_stats.as_dict() for name in backends}
open(stats_path, "w").write(json.dumps(stats))
sys.exit(code)
"""


def fresh_run(tmp: Path, run_id: str, *overrides: str, prefect_api: str | None = None) -> tuple[Path, Path, dict]:
    """A CLI run in a new Python process with an empty TTS cache: (run dir, cache dir, render counts).
    Without `prefect_api` it starts its own Prefect server, as a user's run does."""
    cache, stats = tmp / f"cache-{run_id}", tmp / f"stats-{run_id}.json"
    cache.mkdir()
    items = [*TINY, *overrides, f"tts.cache_dir={cache}"]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp), run_id, str(stats), *items],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp / run_id, cache, json.loads(stats.read_text())


def check_rendered_afresh(run_dir: Path, cache: Path, stats: dict, one_writer: bool) -> None:
    """Every render this run used was made by this run: the cache began empty, each miss was
    rendered and stored, and each piece of every recipe names an entry the run stored."""
    entries = {p.stem for p in cache.rglob("*.json")}
    assert entries
    if one_writer:  # with two workers, counters split: two threads can each build a CachedBackend at first use
        misses = sum(s["misses"] for s in stats.values())
        assert len(entries) == misses == sum(s["writes"] for s in stats.values()), (len(entries), stats)
        assert sum(s["corrupt"] for s in stats.values()) == 0, stats
    used = {p["source"]["cache_key"] for p in _pieces(run_dir)}
    assert used and used <= entries


def _pieces(run_dir: Path) -> list[dict]:
    return [p for row in read_rows(run_dir) for p in json.loads(row["recipe"])["pieces"]]


def _files(run_dir: Path, folder: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run_dir / folder).iterdir())}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path, prefect_api: str) -> dict:
    tmp = tmp_path_factory.mktemp("determinism")
    return {  # the per-run Prefect server of a user's run stays under test in "same"
        "same": fresh_run(tmp, "same"),
        "regrouped": fresh_run(tmp, "regrouped", "run.workers=2", "run.samples_per_shard=1", prefect_api=prefect_api),
    }


def test_fresh_process_and_cold_cache_give_identical_shards(runs, tiny_run):
    run_dir, cache, stats = runs["same"]
    check_rendered_afresh(run_dir, cache, stats, one_writer=True)
    rows = read_rows(tiny_run)
    assert len(rows) >= 2, "the fixture run produced too few samples to compare"
    for folder in ("data", "manifests", "shards"):
        assert _files(run_dir, folder) == _files(tiny_run, folder), folder
    assert (run_dir / "manifest.parquet").read_bytes() == (tiny_run / "manifest.parquet").read_bytes()


def test_two_workers_and_one_sample_per_shard_give_identical_rows(runs, tiny_run):
    run_dir, cache, stats = runs["regrouped"]
    check_rendered_afresh(run_dir, cache, stats, one_writer=False)
    assert len(list((run_dir / "data").glob("*.parquet"))) == 4 != len(list((tiny_run / "data").glob("*.parquet")))
    ours = sorted(read_rows(run_dir), key=lambda r: r["id"])
    theirs = sorted(read_rows(tiny_run), key=lambda r: r["id"])
    assert [r["id"] for r in ours] == [r["id"] for r in theirs] and ours
    for a, b in zip(ours, theirs, strict=True):  # every column: audio bytes, timeline, recipe, script, ...
        assert a == b, a["id"]
    manifest = pl.read_parquet(run_dir / "manifest.parquet").drop("shard")
    assert manifest.equals(pl.read_parquet(tiny_run / "manifest.parquet").drop("shard"))
