"""Near-duplicate scripts across a run: MinHash over word 3-grams, banded LSH.

An LLM asked for 400K dialogues repeats itself (same scenario bank, same habits). Exact hashes
miss a script that differs by a word; MinHash estimates the Jaccard similarity of two scripts'
word n-gram sets, and LSH finds the pairs above `threshold` without comparing all pairs.

Deterministic: a fixed permutation seed and datasketch's default (SHA-1 based) input hash, so the
same text gives the same signature in every process and every shard. Signatures are small
(`num_perm` uint32 values) and can be saved per shard (`save_signatures`) and merged after the
fact to dedup a multi-shard run across shards: `find_duplicates_banded` streams the shards' files
through bucketed per-band parquet files (never every signature, nor every band key, in one
process), and gives the same answer
as `find_duplicates` over `load_signatures` (everything in memory, the reference it is tested on).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from datasketch import MinHash, MinHashLSH

from factory.atomic import atomic_write

__all__ = [
    "BUCKET_ROWS",
    "NGRAM",
    "NUM_PERM",
    "SEED",
    "THRESHOLD",
    "NearDuplicateIndex",
    "find_duplicates",
    "find_duplicates_banded",
    "load_signatures",
    "read_signature_file",
    "normalise_words",
    "save_signatures",
    "save_signatures_values",
    "script_text",
    "signature",
]

NUM_PERM = 128
NGRAM = 3
SEED = 1
THRESHOLD = 0.7
SCHEME = "affine32"
LSH_WEIGHTS = (0.1, 0.9)  # (false positive, false negative) weights of the LSH band choice
_PAIR_CHUNK = 1024  # candidate pairs compared at a time (2 x 0.5 MB of signatures)
BUCKET_ROWS = 100_000  # about the band keys `find_duplicates_banded` joins at a time
_TEMPLATES: dict[tuple[int, int], MinHash] = {}


def normalise_words(text: str) -> list[str]:
    """Lowercased words without punctuation or accents: "Um, I- I THINK" -> um i i think."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return re.findall(r"[^\W_]+(?:'[^\W_]+)*", text)


def script_text(script) -> str:
    """The words of a script that dedup compares (its turns' texts, in order)."""
    return " ".join(t.text for t in script.turns)


def _shingles(text: str, n: int) -> list[bytes]:
    words = normalise_words(text)
    if len(words) < n:
        return [" ".join(words).encode()] if words else []
    return [" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)]


def _template(num_perm: int, seed: int) -> MinHash:
    key = (num_perm, seed)
    if key not in _TEMPLATES:  # permutations are drawn once per process, not per signature
        _TEMPLATES[key] = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME)
    return _TEMPLATES[key]


def signature(text: str, *, num_perm: int = NUM_PERM, ngram: int = NGRAM, seed: int = SEED) -> MinHash:
    """The MinHash of a text's normalised word `ngram`-grams."""
    template = _template(num_perm, seed)
    m = MinHash(num_perm=num_perm, seed=seed, permutations=template.permutations, scheme=SCHEME)
    m.update_batch(_shingles(text, ngram))
    return m


def _from_values(values: np.ndarray, seed: int) -> MinHash:
    # The template's permutations: without them datasketch draws them anew per signature
    # (~10x slower, and ~1 KB more per signature held by finalize's duplicate pass).
    template = _template(len(values), seed)
    return MinHash(
        num_perm=len(values), seed=seed, hashvalues=values, permutations=template.permutations, scheme=SCHEME
    )


class NearDuplicateIndex:
    """Add scripts one by one; `add` answers which earlier sample (if any) this one nearly
    duplicates (estimated Jaccard of word 3-gram sets >= `threshold`). A duplicate is not
    indexed itself, so every duplicate points at a kept sample."""

    def __init__(
        self, *, threshold: float = THRESHOLD, num_perm: int = NUM_PERM, ngram: int = NGRAM, seed: int = SEED
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold, self.num_perm, self.ngram, self.seed = threshold, num_perm, ngram, seed
        # Candidates are confirmed by the estimated Jaccard, so false positives only cost a
        # comparison: weight the band choice against false negatives.
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
        self._kept: dict[str, MinHash] = {}
        self._order: dict[str, int] = {}
        self.signatures: dict[str, MinHash] = {}  # every added sample, duplicates included

    def __len__(self) -> int:
        return len(self.signatures)

    def add(self, sample_id: str, text: str) -> str | None:
        return self.add_signature(sample_id, signature(text, num_perm=self.num_perm, ngram=self.ngram, seed=self.seed))

    def add_signature(self, sample_id: str, sig: MinHash) -> str | None:
        if sample_id in self.signatures:
            raise ValueError(f"sample {sample_id!r} already added")
        self.signatures[sample_id] = sig
        best: tuple[float, int, str] | None = None
        for candidate in self._lsh.query(sig):  # LSH candidates, confirmed by the estimated Jaccard
            other = cast(str, candidate)  # the LSH holds only the sample ids inserted below
            similarity = sig.jaccard(self._kept[other])
            if similarity >= self.threshold:
                key = (-similarity, self._order[other], other)
                best = key if best is None or key < best else best
        if best is not None:
            return best[2]
        self._lsh.insert(sample_id, sig)
        self._kept[sample_id] = sig
        self._order[sample_id] = len(self._order)
        return None

    def save(self, path: str | Path) -> None:
        save_signatures(path, self.signatures)


def save_signatures(path: str | Path, signatures: Mapping[str, MinHash]) -> None:
    """One shard's signatures as an .npz: `ids` (str) and `values` (n x num_perm uint32), in order."""
    ids = list(signatures)
    values = np.stack([signatures[i].hashvalues for i in ids]) if ids else np.zeros((0, NUM_PERM), np.uint32)
    seeds = {signatures[i].seed for i in ids} or {SEED}
    if len(seeds) != 1:
        raise ValueError(f"signatures mix permutation seeds {sorted(seeds)}")
    save_signatures_values(path, ids, values, seeds.pop())


def save_signatures_values(path: str | Path, ids: list[str], values: np.ndarray, seed: int = SEED) -> None:
    """`save_signatures` from the arrays themselves (ids, n x num_perm values)."""
    seed_array = np.array(seed)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: savez would append ".npz" to a path
            np.savez_compressed(f, ids=np.array(ids, dtype=str), values=values, seed=seed_array)

    atomic_write(Path(path), write)


def read_signature_file(file: str | Path | IO[bytes]) -> tuple[list[str], np.ndarray, int]:
    """One shard's signature file as (ids, values n x num_perm, permutation seed)."""
    with np.load(file) as data:
        return data["ids"].tolist(), data["values"], int(data["seed"])


def load_signatures(files: Iterable[str | Path | IO[bytes]]) -> dict[str, MinHash]:
    """Merges per-shard signature files (in the order given; paths or binary file objects, e.g. a
    run store's bytes) into one mapping."""
    out: dict[str, MinHash] = {}
    for file in files:
        with np.load(file) as data:
            seed = int(data["seed"])
            for sample_id, values in zip(data["ids"].tolist(), data["values"], strict=True):
                if sample_id in out:
                    raise ValueError(f"sample {sample_id!r} appears in more than one signature file")
                out[sample_id] = _from_values(values, seed)
    return out


def find_duplicates(signatures: Mapping[str, MinHash], *, threshold: float = THRESHOLD) -> dict[str, str]:
    """{duplicate id: the kept id it duplicates} over all signatures, in their iteration order
    (pass them in run order, e.g. sorted by sample id, for a result independent of sharding)."""
    if not signatures:
        return {}
    first = next(iter(signatures.values()))
    index = NearDuplicateIndex(threshold=threshold, num_perm=len(first.hashvalues), seed=first.seed)
    out: dict[str, str] = {}
    for sample_id, sig in signatures.items():
        dup = index.add_signature(sample_id, sig)
        if dup is not None:
            out[sample_id] = dup
    return out


SignatureShards = Callable[[], Iterable[tuple[list[str], np.ndarray, int]]]


def _compact(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with its strings copied out: polars' string views of a join or a gather point into
    the buffers they came from, so candidates kept across buckets would keep every bucket's ids."""
    return cast(pl.DataFrame, pl.from_arrow(frame.to_arrow(compat_level=pl.CompatLevel.oldest())))


def find_duplicates_banded(
    shards: SignatureShards,
    scratch: Path,
    *,
    threshold: float = THRESHOLD,
    flush_rows: int = 50_000,
    expected_rows: int = 0,
    bucket_rows: int = BUCKET_ROWS,
) -> dict[str, str]:
    """`find_duplicates` over every shard's signatures in run order (sorted ids), streamed.
    `shards()` yields (ids, values, seed) one shard at a time and is called twice.
    1. Each signature's band keys (the bytes of its values in each of the LSH's bands, the key
       datasketch's MinHashLSH indexes) go to one parquet file per band in `scratch`, and its id to
       an id file; `flush_rows` signatures at a time, each flush split into buckets (a band key's
       bucket is its first value modulo the bucket count, an id's its hash), a row group per bucket:
       memory holds one flush, not the run. The bucket count is `expected_rows` / `bucket_rows`
       (at least 1), so a bucket holds about `bucket_rows` rows however large the run.
    2. Per bucket of the id file, ids that repeat are an error; per band and bucket (its row groups
       only), polars finds the keys shared by more than one sample: candidate pairs.
    3. Only the candidates' signatures are read back (second pass) and the pairs kept whose
       estimated Jaccard is >= threshold, computed as `MinHash.jaccard` does.
    4. In sorted id order, a sample duplicates its most similar earlier kept neighbour (ties: the
       earliest), and is then not kept itself: `NearDuplicateIndex`'s rule, so the same answer."""
    if flush_rows < 1 or bucket_rows < 1:
        raise ValueError(f"flush_rows and bucket_rows must be >= 1, got {flush_rows} and {bucket_rows}")
    buckets = max(1, -(-expected_rows // bucket_rows))
    writers: list[pq.ParquetWriter] = []  # the id file, then one per band
    groups: list[list[list[int]]] = []  # per file, per bucket: the row groups that hold it
    ranges: list[tuple[int, int]] = []
    seeds: set[int] = set()
    num_perm = 0
    buffered: list[tuple[list[str], np.ndarray]] = []
    n_buffered = 0

    def write(file: int, table: pa.Table, bucket: np.ndarray) -> None:
        order = np.argsort(bucket, kind="stable")
        counts = np.bincount(bucket, minlength=buckets)
        table = table.take(pa.array(order))
        start = 0
        for k, count in enumerate(counts.tolist()):
            if count:
                writers[file].write_table(table.slice(start, count), row_group_size=count)
                groups[file][k].append(sum(len(g) for g in groups[file]))
            start += count

    def flush() -> None:
        nonlocal n_buffered
        if not n_buffered:
            return
        ids = pa.array([i for chunk, _ in buffered for i in chunk], pa.string())
        values = np.concatenate([v for _, v in buffered])
        id_hash = cast(pl.Series, pl.from_arrow(ids)).hash(seed=0).to_numpy()  # any fixed hash: only buckets
        write(0, pa.table({"id": ids}), (id_hash % np.uint64(buckets)).astype(np.int64))
        for b, (start, end) in enumerate(ranges, start=1):
            band = np.ascontiguousarray(values[:, start:end])
            width = band.shape[1] * band.itemsize
            keys = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(band), [None, pa.py_buffer(band)])
            write(b, pa.table({"id": ids, "key": keys}), (band[:, 0] % np.uint32(buckets)).astype(np.int64))
        buffered.clear()
        n_buffered = 0

    try:
        for ids, values, seed in shards():
            seeds.add(seed)
            if not ranges and len(ids):
                num_perm = values.shape[1]
                ranges = list(MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS).hashranges)
                key = pa.binary((ranges[0][1] - ranges[0][0]) * 4)
                # No dictionary: ids and band keys are (nearly) all distinct, and pyarrow's dictionary
                # encoder, falling back to plain past its 1 MB page, left memory behind per row group
                # (measured: 297 -> 513 MB over the pass at 400K, 407 MB without it).
                writers = [
                    pq.ParquetWriter(scratch / "ids.parquet", pa.schema({"id": pa.string()}), use_dictionary=False)
                ]
                writers += [
                    pq.ParquetWriter(
                        scratch / f"band-{b:03d}.parquet",
                        pa.schema({"id": pa.string(), "key": key}),
                        use_dictionary=False,
                    )
                    for b in range(len(ranges))
                ]
                groups = [[[] for _ in range(buckets)] for _ in writers]
            if len(ids):
                buffered.append((ids, values.astype(np.uint32, copy=False)))
                n_buffered += len(ids)
            if n_buffered >= flush_rows:
                flush()
        flush()
    finally:
        for writer in writers:
            writer.close()
    if len(seeds) > 1:
        raise ValueError(f"signatures mix permutation seeds {sorted(seeds)}")
    if not writers:
        return {}
    files = [pq.ParquetFile(scratch / "ids.parquet")]
    files += [pq.ParquetFile(scratch / f"band-{b:03d}.parquet") for b in range(len(ranges))]

    def bucket_rows_of(file: int, k: int) -> pl.DataFrame:  # one bucket of one file: its row groups only
        return cast(pl.DataFrame, pl.from_arrow(files[file].read_row_groups(groups[file][k])))

    for k in range(buckets):
        ids_k = bucket_rows_of(0, k)
        repeated = ids_k.filter(pl.col("id").is_duplicated())["id"].unique().sort()
        if len(repeated):
            raise ValueError(f"samples {repeated.to_list()[:5]} appear in more than one signature file")
    candidates = pl.DataFrame(schema={"earlier": pl.Utf8, "later": pl.Utf8})
    for file in range(1, len(files)):
        for k in range(buckets):  # one bucket of one band's keys in memory at a time
            shared = bucket_rows_of(file, k).filter(pl.len().over("key") > 1)
            pairs = (
                shared.join(shared, on="key", suffix="_later")
                .filter(pl.col("id") < pl.col("id_later"))
                .select(earlier="id", later="id_later")
            )
            candidates = pl.concat([candidates, _compact(pairs)]).unique()
    candidates = candidates.sort("later", "earlier")
    if candidates.is_empty():
        return {}
    earlier, later = candidates["earlier"].to_list(), candidates["later"].to_list()
    slot = {i: k for k, i in enumerate(sorted(set(earlier) | set(later)))}
    table = np.zeros((len(slot), num_perm), np.uint32)  # only the candidates' signatures, copied out
    for ids, values, _ in shards():  # second pass: a shard at a time; nothing of it is kept but its candidates' rows
        rows = [(k, slot[i]) for k, i in enumerate(ids) if i in slot]
        if rows:
            table[[t for _, t in rows]] = values[[k for k, _ in rows]]
    first = np.array([slot[i] for i in earlier], np.int64)
    second = np.array([slot[i] for i in later], np.int64)
    # MinHash.jaccard: float(count of equal values) / float(num_perm), the same doubles; pairs a chunk at a time
    similarity = np.concatenate(
        [
            np.count_nonzero(table[first[k : k + _PAIR_CHUNK]] == table[second[k : k + _PAIR_CHUNK]], axis=1)
            for k in range(0, len(first), _PAIR_CHUNK)
        ]
    ).astype(np.float64) / np.float64(num_perm)
    out: dict[str, str] = {}
    best: dict[str, tuple[float, str]] = {}  # later id: (-similarity, earlier id) of its best kept neighbour
    for e, later_id, sim in zip(earlier, later, similarity.tolist(), strict=True):
        if sim >= threshold and e not in out:  # only kept samples are indexed; sorted by later: e is decided
            key = (-sim, e)  # most similar, then earliest (the insertion order of kept samples)
            if later_id not in best or key < best[later_id]:
                best[later_id] = key
                out[later_id] = e
    return out
