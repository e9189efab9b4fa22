"""The manifest agrees with the data it describes: recomputed from the shards' own bytes and
timeline JSON (not through the code that wrote them), and the shard self-check catches drift."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from factory.models import ManifestRow, SampleStatus
from factory.run.shards import ShardInconsistent, check_shard
from tests.conftest import read_rows

COUNTS = ("n_turns", "n_words", "n_barge_ins", "n_backchannels", "n_fillers")


def _counts_from_timeline(timeline: dict) -> dict[str, int]:
    """The manifest's n_* columns, counted off the raw timeline JSON."""
    events = Counter(e["type"] if e["type"] != "hesitation" else f"hesitation:{e['kind']}" for e in timeline["events"])
    return {
        "n_turns": sum(t["kind"] == "turn" for t in timeline["turns"]),
        "n_words": sum(bool(w["spoken"]) for w in timeline["words"]),
        "n_barge_ins": events["barge_in"],
        "n_backchannels": events["backchannel"],
        "n_fillers": events["hesitation:filler"],
    }


def test_manifest_rows_match_the_shard_rows(tiny_run: Path) -> None:
    manifest = {r["id"]: r for r in pl.read_parquet(tiny_run / "manifest.parquet").iter_rows(named=True)}
    data = {r["id"]: r for r in read_rows(tiny_run)}
    assert set(data) == {i for i, r in manifest.items() if r["status"] == "ok"}
    for sid, row in data.items():
        entry = manifest[sid]
        assert entry["audio_sha256"] == hashlib.sha256(row["audio"]["bytes"]).hexdigest(), sid
        assert {k: entry[k] for k in COUNTS} == _counts_from_timeline(json.loads(row["timeline"]))
        assert entry["duration"] == pytest.approx(row["duration"], abs=1e-3)
        assert (entry["user_voice"], entry["agent_voice"]) == (row["user_voice"], row["agent_voice"])


def test_counts_are_not_all_zero(tiny_run: Path) -> None:
    """The comparison above means something only if the counts vary and are non-trivial."""
    rows = pl.read_parquet(tiny_run / "manifest.parquet")
    assert rows["n_words"].min() > 10 and rows["n_barge_ins"].sum() >= 1 and rows["n_backchannels"].sum() >= 1


def test_shard_records_match_manifest_parts_and_data(tiny_run: Path) -> None:
    records = sorted((tiny_run / "shards").glob("*.json"))
    assert len(records) == 2
    ids: list[str] = []
    for path in records:
        record = json.loads(path.read_text())
        part = pl.read_parquet(tiny_run / "manifests" / f"{record['shard']}.parquet")
        data = pl.read_parquet(tiny_run / "data" / f"{record['shard']}.parquet", columns=["id"])
        status = Counter(part["status"].to_list())
        assert (record["n_ok"], record["n_rejected"]) == (status["ok"], status["rejected"]) == (len(data), 0)
        assert (
            record["sha256"]
            == hashlib.sha256((tiny_run / "data" / f"{record['shard']}.parquet").read_bytes()).hexdigest()
        )
        ids += part["id"].to_list()
    manifest_ids = pl.read_parquet(tiny_run / "manifest.parquet")["id"].to_list()
    assert Counter(manifest_ids) == Counter(ids) and len(set(manifest_ids)) == len(manifest_ids) == 4


def _part_rows(run: Path, shard: str) -> list[ManifestRow]:
    part = pl.read_parquet(run / "manifests" / f"{shard}.parquet")
    return [
        ManifestRow.model_validate({k: v for k, v in r.items() if v is not None}) for r in part.iter_rows(named=True)
    ]


def test_shard_self_check_passes_on_written_shards_and_catches_drift(tiny_run: Path) -> None:
    shard = "train-00000-of-00002"
    data, rows = tiny_run / "data" / f"{shard}.parquet", _part_rows(tiny_run, shard)
    check_shard(data, rows)
    with pytest.raises(ShardInconsistent, match="audio sha256 differs"):
        check_shard(data, [rows[0].model_copy(update={"audio_sha256": "0" * 64}), *rows[1:]])
    with pytest.raises(ShardInconsistent, match="manifest ok ids"):
        check_shard(data, rows[:1])
    with pytest.raises(ShardInconsistent, match="manifest ids repeat"):
        check_shard(data, [*rows, rows[0].model_copy(update={"status": SampleStatus.rejected})])
