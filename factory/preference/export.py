"""Export preference pairs as parquet: one row per pair with both versions' audio (16-bit FLAC,
channel 0 = user, 1 = agent) and timelines (schema 2.0 JSON). Takes Samples (`read_samples`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from factory.atomic import atomic_write
from factory.audio.mix import flac_bytes
from factory.models import Sample
from factory.preference.pairs import Pair, preference_pairs
from factory.tts_cache import CacheLike

SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("kind", pa.string()),
        ("turn", pa.int32()),
        ("sample_rate", pa.int32()),
        ("chosen_audio", pa.binary()),
        ("rejected_audio", pa.binary()),
        ("chosen_timeline", pa.string()),
        ("rejected_timeline", pa.string()),
    ]
)


def pair_row(pair: Pair, sr: int) -> dict:
    return {
        "sample_id": pair.sample_id,
        "kind": pair.kind,
        "turn": pair.turn,
        "sample_rate": sr,
        "chosen_audio": flac_bytes(pair.chosen[1], sr),
        "rejected_audio": flac_bytes(pair.rejected[1], sr),
        "chosen_timeline": pair.chosen[0].model_dump_json(),
        "rejected_timeline": pair.rejected[0].model_dump_json(),
    }


def export_pairs(samples: Iterable[Sample], cache_dir: CacheLike | None, out: Path, **options) -> int:
    """Write every sample's pairs to `out` (parquet, atomically); returns the number of pairs."""
    rows = [pair_row(p, s.sample_rate) for s in samples for p in preference_pairs(s, cache_dir, **options)]
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    atomic_write(Path(out), lambda tmp: pq.write_table(table, tmp))
    return len(rows)
