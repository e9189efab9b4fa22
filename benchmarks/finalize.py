"""Finalize at scale: peak memory and time of merging a run's shards (manifest, near-duplicates, card).

    nice -n 10 .venv/bin/python benchmarks/finalize.py [--compare 20000] [--large 100000 400000] [--per 100]

A synthetic run folder of `n` samples in shards of `per`: each shard's manifest part (random
per-dialogue measures, 2 % rejected), its MinHash signature file (random values, 10 % of the
samples a perturbed copy of another one, so near-duplicates exist across shards) and a small data
file. Each measurement runs in a fresh process (peak RSS from `resource.getrusage`):
- old: what finalize did before it streamed, every signature loaded into one datasketch LSH
  (`load_signatures` + `find_duplicates`) and every manifest part read and concatenated
  (`old_finalize` below, the same steps);
- new: `factory.run.shards.finalize_run` (banded LSH over bucketed per-band parquet, the manifest
  merged a row group at a time, the card from queries over the merged file).
At the compared size both write their outputs to separate folders and the benchmark checks that
manifest.parquet has the same rows (the same columns, values and order, so the same
near-duplicates: the streamed merge writes fixed row groups with pyarrow, so its bytes differ from
polars' one-frame write) and that README.md is byte-identical; the new path then finalizes the same
folder again and must write the same manifest bytes. The large sizes run the new path alone;
flat memory means their peak RSS stays within 1.1x of each other. Writes
benchmarks/results/finalize.{json,md}.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from factory.config import RunConfig
from factory.run.shards import MANIFEST_SCHEMA, ShardResult, plan_shards, publish_card, run_store
from factory.script.dedup import save_signatures_values

RESULTS = Path(__file__).with_name("results")


def config(root: Path, n: int, per: int) -> RunConfig:
    return RunConfig.model_validate(
        {"run": {"output_dir": str(root), "run_id": "bench", "n_samples": n, "samples_per_shard": per}}
    )


def build(root: Path, n: int, per: int, seed: int = 0) -> None:
    """The synthetic run folder (see the module docstring)."""
    cfg = config(root, n, per)
    run = cfg.run_dir
    for folder in ("data", "manifests", "signatures"):
        (run / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 2**32, (min(n, 50_000), 128), dtype=np.uint64).astype(np.uint32)
    for spec in plan_shards(cfg):
        k = len(spec.sample_indices)
        ids = [f"train-{i:07d}" for i in spec.sample_indices]
        values = rng.integers(0, 2**32, (k, 128), dtype=np.uint64).astype(np.uint32)
        copies = rng.random(k) < 0.10
        for row in np.flatnonzero(copies):  # a perturbed copy of a pool signature: near-duplicates across shards
            values[row] = pool[rng.integers(len(pool))]
            changed = rng.choice(128, int(rng.integers(0, 50)), replace=False)
            values[row, changed] = rng.integers(0, 2**32, len(changed), dtype=np.uint64)
        pool[rng.integers(len(pool), size=k)] = values  # later samples copy earlier ones too
        rejected = rng.random(k) < 0.02
        ok = ~rejected
        rows = {c: [None] * k for c in MANIFEST_SCHEMA}
        rows |= {
            "id": ids,
            "shard": [spec.name] * k,
            "status": ["rejected" if r else "ok" for r in rejected],
            "reason": ["tts: unintelligible" if r else None for r in rejected],
            "split": ["train"] * k,
            "mode": ["assistant"] * k,
            "user_voice": [f"voice-{v}" for v in rng.integers(0, 20, k)],
            "agent_voice": [f"voice-{v}" for v in rng.integers(20, 40, k)],
            "llm": ["bench-llm"] * k,
            "audio_sha256": [f"{rng.integers(1 << 62):064x}" for _ in range(k)],
            "duration": rng.uniform(20, 90, k).round(3).tolist(),
            "overlap_share": rng.uniform(0, 0.2, k).tolist(),
            "wer_max": rng.uniform(0, 0.3, k).tolist(),
        }
        for col in ("n_turns", "n_words", "n_barge_ins", "n_backchannels", "n_fillers", "n_laughs"):
            rows[col] = rng.integers(0, 60, k).tolist()
        rows["n_failed_interruptions"] = rng.integers(0, 3, k).tolist()
        for col in MANIFEST_SCHEMA:  # a rejected sample has no measures
            if col.startswith("n_") or col in ("duration", "overlap_share", "wer_max", "audio_sha256", "llm"):
                rows[col] = [None if r else v for v, r in zip(rows[col], rejected)]
        pl.DataFrame(rows, schema=MANIFEST_SCHEMA).write_parquet(run / "manifests" / f"{spec.name}.parquet")
        save_signatures_values(run / "signatures" / f"{spec.name}.npz", [i for i, o in zip(ids, ok) if o], values[ok])
        (run / "data" / f"{spec.name}.parquet").write_bytes(b"x" * 100)


def old_finalize(cfg: RunConfig, shards: list[ShardResult]) -> None:
    """finalize_run's steps before it streamed (manifest, duplicates, config, card), kept here to compare."""
    from factory.run.records import shard_files
    from factory.script.dedup import find_duplicates, load_signatures

    store = run_store(cfg)
    parts = []
    for s in shards:
        with store.open(shard_files(s.name)["manifest"]) as f:
            parts.append(pl.read_parquet(f))
    manifest = pl.concat(parts).sort("id")
    signatures = load_signatures(io.BytesIO(store.read_bytes(shard_files(s.name)["signatures"])) for s in shards)
    duplicates = find_duplicates(dict(sorted(signatures.items())))
    manifest = manifest.with_columns(
        pl.col("id").replace_strict(duplicates, default=None, return_dtype=pl.Utf8).alias("duplicate_of")
    )
    buffer = io.BytesIO()
    manifest.write_parquet(buffer)
    store.write_bytes("manifest.parquet", buffer.getvalue())
    store.write_bytes("config.yaml", cfg.to_yaml().encode())
    publish_card(store, cfg, manifest, [s.name for s in shards])


def measure(path: str, root: Path, n: int, per: int) -> dict:
    """One finalize in this process: seconds and peak RSS."""
    from factory.run.shards import finalize_run

    cfg = config(root, n, per)
    shards = [ShardResult(s.name, "", len(s.sample_indices), 0) for s in plan_shards(cfg)]
    start = time.perf_counter()
    (old_finalize if path == "old" else finalize_run)(cfg, shards)
    seconds = time.perf_counter() - start
    manifest = pl.read_parquet(cfg.run_dir / "manifest.parquet", columns=["duplicate_of"])
    return {
        "path": path,
        "samples": n,
        "shards": len(shards),
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "duplicates": int(manifest["duplicate_of"].is_not_null().sum()),
    }


def in_fresh_process(path: str, root: Path, n: int, per: int) -> dict:
    code = [sys.executable, __file__, "--measure", path, "--root", str(root), "--n", str(n), "--per", str(per)]
    out = subprocess.run(code, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compare", type=int, default=20_000, help="samples finalized by both paths")
    ap.add_argument(
        "--large", type=int, nargs="+", default=[100_000, 400_000], help="samples finalized by the new path alone"
    )
    ap.add_argument("--per", type=int, default=100, help="samples per shard")
    ap.add_argument("--measure", choices=["old", "new"])
    ap.add_argument("--root", type=Path)
    ap.add_argument("--n", type=int)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.root, args.n, args.per)))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-finalize-") as tmp:
        base = Path(tmp)
        for n, paths in ((args.compare, ("old", "new")), *((large, ("new",)) for large in args.large)):
            start = time.perf_counter()
            build(base / "template", n, args.per)
            print(f"built {n} samples in {time.perf_counter() - start:.0f} s", file=sys.stderr)
            outputs = {}
            for path in paths:
                root = base / path
                shutil.copytree(base / "template", root)
                rows.append(in_fresh_process(path, root, n, args.per))
                print(json.dumps(rows[-1]), file=sys.stderr)
                run = config(root, n, args.per).run_dir
                if n != args.compare:
                    continue
                outputs[path] = {
                    "manifest": pl.read_parquet(run / "manifest.parquet"),
                    "manifest bytes": (run / "manifest.parquet").read_bytes(),
                    "card": (run / "README.md").read_bytes(),
                }
                if path == "new" and "old" in outputs:
                    old, new = outputs["old"], outputs["new"]
                    rows[-1]["rows_equal_to_old"] = old["manifest"].equals(new["manifest"])
                    rows[-1]["card_equal_to_old"] = old["card"] == new["card"]
                    assert rows[-1]["rows_equal_to_old"], "the streamed finalize must write the old manifest rows"
                    assert rows[-1]["card_equal_to_old"], "the streamed finalize must write the old card"
                    again = in_fresh_process(path, root, n, args.per)
                    rows[-1]["same_bytes_again"] = (run / "manifest.parquet").read_bytes() == new["manifest bytes"]
                    assert rows[-1]["same_bytes_again"], "finalizing the same run again must write the same bytes"
                    assert again["duplicates"] == rows[-1]["duplicates"]
            for folder in ("template", *paths):
                shutil.rmtree(base / folder)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    when = datetime.now(UTC).isoformat(timespec="seconds")
    RESULTS.mkdir(exist_ok=True)
    large = [r for r in rows if r["path"] == "new" and r["samples"] in args.large]
    flat = round(large[-1]["peak_rss_mb"] / large[0]["peak_rss_mb"], 3) if len(large) > 1 else None
    load = os.getloadavg()[0]
    summary = {"when": when, "machine": machine, "load_1min_at_end": round(load, 2), "rows": rows}
    if flat is not None:
        summary["peak_rss_ratio"] = {"samples": [large[0]["samples"], large[-1]["samples"]], "ratio": flat}
    (RESULTS / "finalize.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        f"# Finalize at scale ({when})",
        "",
        f"{machine}, 1-minute load {load:.1f} at the end; synthetic shards of {args.per} (manifest part + MinHash "
        "signatures), each finalize in a fresh process; peak RSS is the process's maximum resident set. "
        "Equal to old: the same manifest rows (columns, values, order; not bytes: the streamed merge writes "
        "fixed row groups with pyarrow) and the same card bytes; again: a second finalize of the same folder "
        "writes the same manifest bytes.",
        "",
        "| path | samples | shards | seconds | peak RSS, MB | near-duplicates | rows / card equal to old | "
        "same bytes again |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]

    def yes(value: bool | None) -> str:
        return "-" if value is None else "yes" if value else "NO"

    for r in rows:
        equal = (
            "-" if "rows_equal_to_old" not in r else f"{yes(r['rows_equal_to_old'])} / {yes(r['card_equal_to_old'])}"
        )
        lines.append(
            f"| {r['path']} | {r['samples']} | {r['shards']} | {r['seconds']} | {r['peak_rss_mb']} | "
            f"{r['duplicates']} | {equal} | {yes(r.get('same_bytes_again'))} |"
        )
    if flat is not None:
        lines += ["", f"Peak RSS at {large[-1]['samples']} over {large[0]['samples']} samples: {flat}x."]
    table = "\n".join(lines) + "\n"
    (RESULTS / "finalize.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
