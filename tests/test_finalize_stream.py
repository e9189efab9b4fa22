"""Finalize streams: the manifest merge reads the parts a batch at a time and writes fixed row
groups, and the card is the same whether it reads a frame or a scan of manifest.parquet.

Truth from outside the code under test: the expected manifest is the eager concatenation and sort
of every part (what finalize did before it streamed); what the merge read is observed at polars'
reader, and the layout from the file's parquet metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from factory.config import RunConfig
from factory.export.card import dataset_card, overview_png
from factory.run.shards import MANIFEST_SCHEMA, merge_manifest


def _rows(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    ok = rng.random(n) > 0.1
    rows = {c: [None] * n for c in MANIFEST_SCHEMA} | {
        "id": [f"train-{i:07d}" for i in range(n)],
        "status": ["ok" if o else "rejected" for o in ok],
        "reason": [None if o else "tts: unintelligible" for o in ok],
        "user_voice": [f"voice-{v}" for v in rng.integers(0, 5, n)],
        "agent_voice": [f"voice-{v}" for v in rng.integers(5, 9, n)],
        "llm": ["bench-llm"] * n,
        "duration": rng.uniform(20, 90, n).tolist(),
        "overlap_share": rng.uniform(0, 0.2, n).tolist(),
        "wer_max": rng.uniform(0, 0.3, n).tolist(),
    }
    for col in ("n_turns", "n_words", "n_barge_ins", "n_backchannels", "n_fillers", "n_laughs"):
        rows[col] = rng.integers(0, 40, n).tolist()
    rows["n_failed_interruptions"] = rng.integers(0, 3, n).tolist()
    rows["n_side_talk"] = rng.integers(0, 3, n).tolist()  # every planned event placed
    rows["n_background_speech"] = rows["n_non_speech"] = [0] * n
    rows["n_events_planned"] = rows["n_side_talk"]
    return pl.DataFrame(rows, schema=MANIFEST_SCHEMA)


def _parts(rows: pl.DataFrame, folder: Path, sizes: list[int], seed: int) -> list[Path]:
    """`rows` cut into parts of `sizes` (in id order, then some neighbours swapped so that their id
    ranges overlap), each part's rows shuffled, the list of parts shuffled."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    order = np.arange(len(rows))
    for k in rng.choice(len(rows) - 1, len(rows) // 20, replace=False):  # overlapping ranges
        order[k], order[k + 1] = order[k + 1], order[k]
    paths, start = [], 0
    for i, size in enumerate(sizes):
        part = rows[order[start : start + size].tolist()].sample(fraction=1.0, shuffle=True, seed=i)
        path = folder / f"part-{i:04d}.parquet"
        part.write_parquet(path)
        paths.append(path)
        start += size
    assert start == len(rows)
    return [paths[i] for i in rng.permutation(len(paths))]


def test_the_merge_reads_a_batch_at_a_time_and_writes_the_eager_rows_in_fixed_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _rows(2_000)
    sizes = [37] * 54 + [2]  # 2,000 rows; parts smaller than a row group, one tiny
    parts = _parts(rows, tmp_path / "a", sizes, seed=1)
    duplicates = {f"train-{i:07d}": f"train-{i - 3:07d}" for i in range(10, 2_000, 97)}
    expected = (
        pl.concat([pl.read_parquet(p) for p in parts])
        .sort("id")
        .with_columns(pl.col("id").replace_strict(duplicates, default=None, return_dtype=pl.Utf8).alias("duplicate_of"))
    )
    reads: list[int] = []
    read = pl.read_parquet

    def counted(*args, **kwargs):
        frame = read(*args, **kwargs)
        reads.append(len(frame))
        return frame

    monkeypatch.setattr(pl, "read_parquet", counted)
    merge_manifest(parts, duplicates, tmp_path / "manifest.parquet", row_group_rows=300)
    monkeypatch.undo()
    # never every part at once: each read is about a row group (whole parts; overlapping ones together)
    assert sum(reads) == len(rows) and len(reads) >= 6, reads
    assert max(reads) <= 300 + 2 * max(sizes), reads
    merged = pl.read_parquet(tmp_path / "manifest.parquet")
    assert merged.equals(expected)
    assert merged["duplicate_of"].drop_nulls().len() == len(duplicates)
    meta = pq.ParquetFile(tmp_path / "manifest.parquet").metadata
    groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert groups == [300] * 6 + [200]
    # the bytes are the rows' alone: the same rows sharded otherwise give the same file
    other = _parts(rows, tmp_path / "b", [500, 1, 499, 1000], seed=2)
    merge_manifest(other, duplicates, tmp_path / "again.parquet", row_group_rows=300)
    assert (tmp_path / "again.parquet").read_bytes() == (tmp_path / "manifest.parquet").read_bytes()


def test_the_merge_of_no_parts_is_an_empty_manifest(tmp_path: Path) -> None:
    merge_manifest([], {}, tmp_path / "manifest.parquet")
    empty = pl.read_parquet(tmp_path / "manifest.parquet")
    assert empty.is_empty() and empty.schema == pl.Schema(MANIFEST_SCHEMA)
    with pytest.raises(ValueError, match="row_group_rows"):
        merge_manifest([], {}, tmp_path / "x.parquet", row_group_rows=0)


def test_the_card_from_a_scan_of_the_manifest_is_the_card_from_the_frame(tmp_path: Path) -> None:
    manifest = _rows(3_000, seed=4).with_columns(
        duplicate_of=pl.when(pl.int_range(pl.len()) % 50 == 7).then(pl.lit("train-0000001")).otherwise(None)
    )
    path = tmp_path / "manifest.parquet"
    manifest.write_parquet(path, row_group_size=700)  # several row groups: the queries read them in turn
    scan = pl.scan_parquet(path)
    cfg = RunConfig()
    card = dataset_card(cfg, manifest, plot="card/overview.png")
    assert dataset_card(cfg, scan, plot="card/overview.png") == card
    assert "near-duplicate scripts: 60" in card
    ok_rows = manifest.filter(pl.col("status") == "ok")
    side = ok_rows["n_side_talk"].sum() / len(ok_rows)  # every row's events, counted here
    assert f"| side_talk | 0 | {side:.2f} | {side:.2f} | none |" in card, card
    ok = pl.col("status") == "ok"
    assert overview_png(scan.filter(ok)) == overview_png(manifest.filter(ok))
