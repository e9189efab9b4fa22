import shutil
from pathlib import Path

import datasets
import pyarrow.parquet as pq

from factory.run.rows import ROW_FEATURES, write_shard


def test_all_rejected_shard_is_empty_and_loads_beside_the_others(tiny_run: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_run / "data", data)
    empty = data / "train-00002-of-00003.parquet"
    digest = write_shard([], empty, 24000)
    assert len(digest) == 64 and not list(data.glob(".*tmp"))
    table = pq.read_table(empty)
    assert table.num_rows == 0 and table.schema.names == list(ROW_FEATURES)
    ds = datasets.load_dataset("parquet", data_files=str(data / "*.parquet"), split="train")
    assert len(ds) == 4 and isinstance(ds.features["audio"], datasets.Audio)
