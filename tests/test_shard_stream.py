"""A shard streams to its parquet file: the engine hands results over in the shard's order, the
reorder buffer stays inside the window, and the writer writes a row group at a time, atomically.

Truth from outside the code under test: the rows are read back with pyarrow, the order and the
window are observed from the sink and from admissions, not from the pipeline's own counters."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory import engine
from factory.engine import _Pipeline, build_shard
from factory.run.rows import ShardWriter, read_shard_rows, write_shard
from factory.runtime import runtime_for
from factory.stages import sample_id
from tests.export_fixtures import SR, make_sample
from tests.latency_server import LatencyServer
from tests.test_throughput import http_config


def test_the_writer_writes_row_groups_with_the_rows_of_one_whole_write(tmp_path: Path) -> None:
    samples = [make_sample(i) for i in range(5)]
    whole = tmp_path / "whole.parquet"
    write_shard(samples, whole, SR)
    grouped = tmp_path / "grouped.parquet"
    with ShardWriter(grouped, SR, rows_per_group=2) as writer:
        for sample in samples:
            writer.add(sample)
    assert pq.ParquetFile(whole).metadata.num_row_groups == 1
    assert pq.ParquetFile(grouped).metadata.num_row_groups == writer.n_groups == 3
    assert list(read_shard_rows(grouped)) == list(read_shard_rows(whole))
    assert pq.ParquetFile(grouped).schema_arrow.metadata == pq.ParquetFile(whole).schema_arrow.metadata


# Reads a file with read_shard_rows in a fresh process and prints pyarrow's pool peak (bytes): the
# pool's max_memory is per process, so no other test's reads count.
_READ_PEAK = """
import sys
import pyarrow as pa
from factory.run.rows import read_shard_rows
n = sum(1 for _ in read_shard_rows(sys.argv[1], columns=["id", "audio"]))
print(n, pa.default_memory_pool().max_memory())
"""


def test_reading_a_shard_holds_a_row_group_not_the_file(tmp_path: Path) -> None:
    """A shard's read-back (`check_shard`, the run reader) must stay flat in the shard's size: a
    32 MB file of 40 row groups is read with pyarrow's pool peaking under a quarter of the file
    (one iter_batches over the whole file pre-buffered it: the pool peaked at about the file)."""
    path, rng = tmp_path / "s.parquet", np.random.default_rng(0)
    schema = pa.schema({"id": pa.string(), "audio": pa.struct({"bytes": pa.binary(), "path": pa.string()})})
    with pq.ParquetWriter(path, schema) as writer:
        for group in range(40):
            rows = [{"id": f"s{group}-{i}", "audio": {"bytes": rng.bytes(100_000), "path": None}} for i in range(8)]
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", _READ_PEAK, str(path)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    n, peak = map(int, out.stdout.split())
    assert n == 320
    assert peak < path.stat().st_size / 4, (
        f"pool peaked at {peak / 2**20:.1f} MB for a {path.stat().st_size / 2**20:.1f} MB file"
    )


def test_a_writer_that_fails_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "s.parquet"
    with pytest.raises(RuntimeError, match="engine died"), ShardWriter(path, SR, rows_per_group=1) as writer:
        writer.add(make_sample(0))  # one row group already on disk, under the temporary name
        raise RuntimeError("engine died")
    assert list(path.parent.iterdir()) == []


def test_results_leave_in_order_and_the_window_bounds_what_a_shard_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 dialogues in a window of 3, the first one's script slowed down: the next ones finish
    before it, wait in the reorder buffer, and leave in the shard's order; at no admission are
    more than 3 dialogues admitted and not yet handed to the sink."""
    window, n = 3, 8
    admitted: set[str] = set()
    out: list[str] = []
    held: list[int] = []
    admit, script = _Pipeline._admit, engine._script_job

    def counted(self, d) -> None:
        admitted.add(d.sid)
        held.append(len(admitted) - len(out))
        admit(self, d)

    def slow_first(rt, plan):
        if plan.sid.endswith("0000000"):
            time.sleep(1.0)
        return script(rt, plan)

    monkeypatch.setattr(_Pipeline, "_admit", counted)
    monkeypatch.setattr(engine, "_script_job", slow_first)
    with LatencyServer(0.05) as server:
        cfg = http_config(
            server,
            tmp_path,
            "dialogue.n_turns=[2, 2]",
            "llm.concurrency=2",
            "tts.qa_wer_threshold=null",
            "run.processes=1",
            f"run.wave_size={window}",
            "run.max_sample_attempts=1",
        )
        settled: list[str] = []
        results, stats = build_shard(
            runtime_for(cfg),
            range(n),
            "s0",
            on_sample=lambda r: settled.append(r.manifest.id),
            sink=lambda r: out.append(r.manifest.id),
        )
    assert results == []  # all went to the sink
    assert out == [sample_id(cfg, i) for i in range(n)]
    assert sorted(settled) == out and settled != out  # some finished early and waited
    assert max(held) <= window, held
    assert stats.audio_s > 0
