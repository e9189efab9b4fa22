"""Near-duplicate detection of scripts: exact and near copies found, different texts not."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from factory.script.dedup import (
    NearDuplicateIndex,
    find_duplicates,
    load_signatures,
    normalise_words,
    save_signatures,
    signature,
)

BASE = (
    "Hi, I'm planning a weekend hiking trip and I'm not sure which trail to pick. "
    "Well, it depends on how far you want to walk and whether you want views or shade. "
    "Maybe ten miles, and views would be great, but my knee gets sore on steep descents. "
    "Then the ridge loop is a good choice, it climbs slowly and comes down on an old railway line."
)
OTHERS = [
    "My wifi keeps dropping every evening around eight and I have no idea why it happens.",
    "Could you help me pick a used car under five thousand with low running costs please?",
    "We should bake the bread at a higher temperature for the first ten minutes, then lower it.",
    "The museum has a kids trail on Saturdays, and entry is free before ten in the morning.",
]


def _edit(text: str, rng: np.random.Generator, n_edits: int) -> str:
    words = text.split()
    for _ in range(n_edits):
        i = int(rng.integers(len(words)))
        words[i] = ["really", "quite", "so", "the"][int(rng.integers(4))]
    return " ".join(words)


def test_normalisation():
    assert normalise_words("Um, I- I THINK Café's great!") == ["um", "i", "i", "think", "cafe's", "great"]


def test_exact_duplicate_found():
    index = NearDuplicateIndex()
    assert index.add("a", BASE) is None
    assert index.add("b", BASE) == "a"
    assert index.add("c", BASE.upper().replace(",", "")) == "a"  # case and punctuation normalised


def test_near_duplicates_found():
    rng = np.random.default_rng(0)
    index = NearDuplicateIndex()
    index.add("orig", BASE)
    found = [index.add(f"near-{k}", _edit(BASE, rng, 2)) for k in range(20)]
    assert all(f == "orig" for f in found), found


def test_different_texts_not_flagged():
    index = NearDuplicateIndex()
    assert [index.add(str(i), t) for i, t in enumerate([BASE, *OTHERS])] == [None] * 5
    # heavily rewritten: shares some words, not the 3-grams
    rng = np.random.default_rng(1)
    assert index.add("rewrite", _edit(BASE, rng, 40)) is None


def test_threshold_configurable():
    rng = np.random.default_rng(2)
    edited = _edit(BASE, rng, 8)
    strict, loose = NearDuplicateIndex(threshold=0.95), NearDuplicateIndex(threshold=0.3)
    strict.add("a", BASE)
    loose.add("a", BASE)
    assert strict.add("b", edited) is None
    assert loose.add("b", edited) == "a"
    with pytest.raises(ValueError):
        NearDuplicateIndex(threshold=0)


def test_signature_deterministic_across_processes():
    here = signature(BASE).hashvalues
    code = (
        "from factory.script.dedup import signature; import sys; "
        f"sys.stdout.write(','.join(map(str, signature({BASE!r}).hashvalues)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    ).stdout
    assert [int(x) for x in out.split(",")] == here.tolist()


def test_shards_merge_after_the_fact(tmp_path):
    rng = np.random.default_rng(3)
    shard_a, shard_b = NearDuplicateIndex(), NearDuplicateIndex()
    assert shard_a.add("s0-0", BASE) is None
    assert shard_a.add("s0-1", OTHERS[0]) is None
    assert shard_b.add("s1-0", _edit(BASE, rng, 2)) is None  # a duplicate only across shards
    assert shard_b.add("s1-1", OTHERS[1]) is None
    assert shard_b.add("s1-2", OTHERS[1]) == "s1-1"
    shard_a.save(tmp_path / "a.npz")
    shard_b.save(tmp_path / "b.npz")
    merged = load_signatures([tmp_path / "a.npz", tmp_path / "b.npz"])
    assert list(merged) == ["s0-0", "s0-1", "s1-0", "s1-1", "s1-2"]
    assert merged["s0-0"] == shard_a.signatures["s0-0"]
    assert find_duplicates(merged) == {"s1-0": "s0-0", "s1-2": "s1-1"}
    with pytest.raises(ValueError):
        load_signatures([tmp_path / "a.npz", tmp_path / "a.npz"])


def test_empty_and_short_texts():
    index = NearDuplicateIndex()
    assert index.add("e", "") is None
    assert index.add("s", "hi there") is None
    assert index.add("s2", "Hi, there!") == "s"
    save_signatures_ok = find_duplicates({})
    assert save_signatures_ok == {}
    with pytest.raises(ValueError):
        index.add("s", "again")


def test_save_empty(tmp_path):
    save_signatures(tmp_path / "x.npz", {})
    assert load_signatures([tmp_path / "x.npz"]) == {}


def test_banded_search_equals_the_in_memory_index(tmp_path):
    """The streamed search (per-band parquet, candidates verified) marks exactly the samples that
    datasketch's LSH in one process marks, with the same kept sample, over many small shards
    whose ids are not in run order; chains (copies of copies) and near-threshold copies included."""
    from factory.script.dedup import SEED, _from_values, find_duplicates_banded

    rng = np.random.default_rng(5)
    n, per = 1000, 20
    values = rng.integers(0, 2**32, (n, 128), dtype=np.uint64).astype(np.uint32)
    for i in np.flatnonzero(rng.random(n) < 0.3):
        values[i] = values[int(rng.integers(n))]
        changed = rng.choice(128, int(rng.integers(0, 50)), replace=False)  # similarity from 1.0 down to ~0.6
        values[i, changed] = rng.integers(0, 2**32, len(changed), dtype=np.uint64)
    ids = [f"s-{k:05d}" for k in rng.permutation(n)]
    shards = [(ids[i : i + per], values[i : i + per], SEED) for i in range(0, n, per)]
    expected = find_duplicates(dict(sorted({i: _from_values(v, SEED) for i, v in zip(ids, values)}.items())))
    assert len(expected) > 100
    assert find_duplicates_banded(lambda: iter(shards), tmp_path, flush_rows=97) == expected
    repeated = [*shards, shards[0]]
    (tmp_path / "again").mkdir()
    with pytest.raises(ValueError, match="more than one signature file"):
        find_duplicates_banded(lambda: iter(repeated), tmp_path / "again")
    assert find_duplicates_banded(lambda: iter([]), tmp_path) == {}


def test_banded_search_in_buckets_equals_one_bucket(tmp_path):
    """A run cut into buckets (`expected_rows` over `bucket_rows`) finds the same pairs as one bucket."""
    from factory.script.dedup import SEED, find_duplicates_banded

    rng = np.random.default_rng(8)
    n, per = 1500, 50
    values = rng.integers(0, 2**32, (n, 128), dtype=np.uint64).astype(np.uint32)
    for i in np.flatnonzero(rng.random(n) < 0.3):
        values[i] = values[int(rng.integers(n))]
        changed = rng.choice(128, int(rng.integers(0, 50)), replace=False)
        values[i, changed] = rng.integers(0, 2**32, len(changed), dtype=np.uint64)
    ids = [f"s-{k:05d}" for k in rng.permutation(n)]
    shards = [(ids[i : i + per], values[i : i + per], SEED) for i in range(0, n, per)]
    one = find_duplicates_banded(lambda: iter(shards), tmp_path, flush_rows=200)
    (tmp_path / "b").mkdir()
    assert find_duplicates_banded(lambda: iter(shards), tmp_path / "b", expected_rows=n, bucket_rows=170) == one
    assert len(one) > 200
    (tmp_path / "c").mkdir()
    with pytest.raises(ValueError, match="more than one signature file"):
        find_duplicates_banded(lambda: iter([*shards, shards[3]]), tmp_path / "c", expected_rows=n, bucket_rows=170)


def test_banded_search_holds_a_flush_and_the_candidates_not_every_signature(tmp_path):
    """Measured by tracemalloc (numpy's arrays and Python's objects; polars and pyarrow allocate
    outside it): shards are made afresh on each read, as files are, so whatever the search keeps
    of them shows up. Its peak stays well under the run's signatures, which it would hold if it
    kept every shard (or views into them) or buffered the run before flushing."""
    import tracemalloc

    from factory.script.dedup import SEED, find_duplicates_banded

    n, per = 20_000, 100

    def shards():
        for s in range(n // per):
            rng = np.random.default_rng(s)
            values = rng.integers(0, 2**32, (per, 128), dtype=np.uint64).astype(np.uint32)
            if s:  # a near copy of a sample of the shard before: candidates in every shard
                values[0] = np.random.default_rng(s - 1).integers(0, 2**32, (per, 128), dtype=np.uint64)[1]
                values[0, -10:] = 0  # similarity 118/128
            yield [f"s-{s * per + k:06d}" for k in range(per)], values, SEED

    run_bytes = n * 128 * 4  # 10.2 MB
    (tmp_path / "warm").mkdir()  # the modules a first search imports are not the search's memory
    find_duplicates_banded(lambda: (s for _, s in zip(range(30), shards())), tmp_path / "warm", flush_rows=1000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        found = find_duplicates_banded(shards, tmp_path, flush_rows=1000, expected_rows=n, bucket_rows=5000)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert len(found) == n // per - 1
    assert peak < run_bytes / 4, f"peak {peak / 1e6:.1f} MB of {run_bytes / 1e6:.1f} MB of signatures"
