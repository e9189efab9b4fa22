from pathlib import Path

import datasets

from factory.export.hf import write_shard


def test_all_rejected_shard_is_an_empty_valid_shard(tmp_path: Path) -> None:
    path = tmp_path / "data" / "train-00000-of-00001.parquet"
    digest = write_shard([], path, 24000)
    assert len(digest) == 64 and not list(path.parent.glob(".*tmp"))
    ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    assert len(ds) == 0 and isinstance(ds.features["audio"], datasets.Audio)
