"""Same config and seed, same bytes: a fresh process with an empty TTS cache and worker pools
reproduces the `tiny_run` fixture's shards (made in-process, pipelined) byte for byte one dialogue
at a time (`run.wave_size=1`); two shard workers with one sample per shard give the rows and
manifest of the fixture's first shard (only the grouping into files differs).

Each run is a subprocess running the CLI `generate`, so nothing cached in-process (models, voice
bank, LLM answers, TTS renders) carries over from the fixture's run. Its TTS cache starts empty and
must end with one entry per render it made, so equal bytes come from rendering again, not from
reading the fixture's renders back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from tests.conftest import TINY, read_rows

ROOT = Path(__file__).resolve().parents[1]
REGROUPED = 2  # dialogues of the regrouped run: the fixture's first shard

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


def fresh_run(tmp: Path, run_id: str, *overrides: str, prefect_api: str | None = None) -> FreshRun:
    """A CLI run in a new Python process with an empty TTS cache, its output going to a file (no
    terminal, as under cron or CI). Without `prefect_api` it starts its own Prefect server, as a
    user's run does."""
    cache, stats, log = tmp / f"cache-{run_id}", tmp / f"stats-{run_id}.json", tmp / f"log-{run_id}.txt"
    cache.mkdir()
    items = [*TINY, *overrides, f"tts.cache_dir={cache}"]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    seen: list[str] = []  # the progress lines in the output file while the process still ran
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(tmp), run_id, str(stats), *items],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 1200
        while proc.poll() is None and time.monotonic() < deadline:
            lines = [line for line in log.read_text().splitlines() if line.startswith(PROGRESS)]
            if proc.poll() is None:
                seen = lines
            time.sleep(0.5)
        if proc.poll() is None:
            proc.kill()
    assert proc.wait() == 0, log.read_text()[-6000:]
    return FreshRun(tmp / run_id, cache, json.loads(stats.read_text()), seen, log.read_text())


@dataclass
class FreshRun:
    run_dir: Path
    cache: Path
    stats: dict  # render counters of its TTS backends
    progress_seen: list[str]  # progress lines read from its output before it exited
    output: str


PROGRESS = "generate: "  # how factory.progress starts a plain progress line of `generate`


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
        # The worker pools a user's run gets on a 2-core machine (TINY runs in-process), one
        # dialogue at a time (TINY's fixture run is pipelined: the whole shard in flight). A
        # pipelined shard with worker pools is compared with one at a time in
        # tests/test_throughput.py (stand-in LLM), so one fresh real-LLM run covers both here.
        "same": fresh_run(tmp, "same", "run.processes=2", "tts.processes=2", "run.wave_size=1"),
        # The fixture's first shard (2 dialogues, one after the other in one shard) as two shards of
        # one dialogue, made at once by two shard workers: what regrouping can change (a dialogue's
        # shard, its neighbours, the interleaving of two shards' LLM calls) shows on 2 dialogues;
        # the 4 of the whole run cost this real-LLM run twice the dialogues for the same question.
        "regrouped": fresh_run(
            tmp,
            "regrouped",
            f"run.n_samples={REGROUPED}",
            "run.workers=2",
            "run.samples_per_shard=1",
            "run.progress_every_s=1",  # no terminal: a line a second (the bytes must not change)
            prefect_api=prefect_api,
        ),
    }


def test_fresh_process_cold_cache_and_one_at_a_time_give_the_pipelined_runs_bytes(runs, tiny_run):
    """The fixture's shards were made in-process by the pipeline (the whole shard in it, stages
    overlapping); a fresh process with an empty TTS cache and worker pools, one dialogue at a
    time, writes the same files byte for byte."""
    run_dir, cache, stats = runs["same"].run_dir, runs["same"].cache, runs["same"].stats
    check_rendered_afresh(run_dir, cache, stats, one_writer=True)
    rows = read_rows(tiny_run)
    assert len(rows) >= 2, "the fixture run produced too few samples to compare"
    for folder in ("data", "manifests", "shards"):
        assert _files(run_dir, folder) == _files(tiny_run, folder), folder
    assert (run_dir / "manifest.parquet").read_bytes() == (tiny_run / "manifest.parquet").read_bytes()


def test_two_workers_and_one_sample_per_shard_give_identical_rows(runs, tiny_run):
    run_dir, cache, stats = runs["regrouped"].run_dir, runs["regrouped"].cache, runs["regrouped"].stats
    check_rendered_afresh(run_dir, cache, stats, one_writer=False)
    # one row in each of its shards; the fixture's first shard holds both
    (first, *_) = sorted((tiny_run / "data").glob("*.parquet"))
    assert [pq.read_metadata(p).num_rows for p in sorted((run_dir / "data").glob("*.parquet"))] == [1] * REGROUPED
    theirs = sorted(read_rows(tiny_run), key=lambda r: r["id"])[:REGROUPED]
    assert [r["id"] for r in pq.read_table(first).to_pylist()] == [r["id"] for r in theirs]
    ours = sorted(read_rows(run_dir), key=lambda r: r["id"])
    assert [r["id"] for r in ours] == [r["id"] for r in theirs] and ours
    for a, b in zip(ours, theirs, strict=True):  # every column: audio bytes, timeline, recipe, script, ...
        assert a == b, a["id"]
    manifest = pl.read_parquet(run_dir / "manifest.parquet").drop("shard")
    assert manifest.equals(pl.read_parquet(tiny_run / "manifest.parquet").drop("shard").head(REGROUPED))


def test_a_run_without_a_terminal_writes_progress_lines_while_it_runs(runs):
    """Output to a file, not a tty: plain lines (no bar) at most every run.progress_every_s, read
    from the file while the process ran, counting dialogues up to the total with accepted,
    rejected, audio minutes, rate and ETA."""
    run = runs["regrouped"]
    assert len(run.progress_seen) >= 2, run.output[-3000:]  # written as it went, not only at the end
    lines = [line for line in run.output.splitlines() if line.startswith(PROGRESS)]
    pattern = re.compile(
        rf"generate: (\d+)/{REGROUPED} dialogues \((\d+) ok, (\d+) rejected, ([\d.]+) audio min\), "
        r"[\d.]+ dialogues/min, "
        r"elapsed (\d+)m(\d+)s, ETA (\?|\d+m\d+s)"
    )
    parsed = [pattern.fullmatch(line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed, strict=True) if not m]
    done = [int(m.group(1)) for m in parsed if m]
    elapsed = [int(m.group(5)) * 60 + int(m.group(6)) for m in parsed if m]
    assert done == sorted(done) and done[-1] == REGROUPED and done[0] < REGROUPED, done
    assert elapsed == sorted(elapsed) and elapsed[-1] - elapsed[0] >= 2, elapsed
    # at most one line a second (the last one is written at the end, whenever that is)
    assert len(lines) <= elapsed[-1] + 2, (len(lines), elapsed[-1])
    assert "\x1b[" not in run.output  # no terminal control codes (a live bar) in a file
