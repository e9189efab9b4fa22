"""Near-duplicate scripts across a run: MinHash over word 3-grams, banded LSH.

An LLM asked for 400K dialogues repeats itself (same scenario bank, same habits). Exact hashes
miss a script that differs by a word; MinHash estimates the Jaccard similarity of two scripts'
word n-gram sets, and LSH finds the pairs above `threshold` without comparing all pairs.

Deterministic: a fixed permutation seed and datasketch's default (SHA-1 based) input hash, so the
same text gives the same signature in every process and every shard. Signatures are small
(`num_perm` uint32 values) and can be saved per shard (`save_signatures`) and merged after the
fact (`load_signatures` + `find_duplicates`) to dedup a multi-shard run across shards.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, cast

import numpy as np
from datasketch import MinHash, MinHashLSH

from factory.atomic import atomic_write

__all__ = [
    "NGRAM",
    "NUM_PERM",
    "SEED",
    "THRESHOLD",
    "NearDuplicateIndex",
    "find_duplicates",
    "load_signatures",
    "normalise_words",
    "save_signatures",
    "script_text",
    "signature",
]

NUM_PERM = 128
NGRAM = 3
SEED = 1
THRESHOLD = 0.7
SCHEME = "affine32"
LSH_WEIGHTS = (0.1, 0.9)  # (false positive, false negative) weights of the LSH band choice
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
    seed = np.array(seeds.pop())

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: savez would append ".npz" to a path
            np.savez_compressed(f, ids=np.array(ids, dtype=str), values=values, seed=seed)

    atomic_write(Path(path), write)


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
