"""Memory of one shard: peak RSS of a shard worker making a shard of 100 vs 1,000 dialogues,
with the code at `--before` (default `main`) and at this tree, in the same run.

    nice -n 10 .venv/bin/python benchmarks/memory.py [--sizes 100 1000] [--before main|none]

Each measurement is a fresh process that builds the run's `Runtime` and calls
`factory.run.shards.generate_shard` on one shard of `n` stand-in dialogues (the LLM is
`tests/latency_server.py`'s server, started here; TTS = espeak, Whisper QA off:
`STAND_IN_DIALOGUES`), with `run.processes=1` so every dialogue is made and held in the measured
process. Peak RSS is the process's high-water mark (`VmHWM`); `base` is its RSS once the runtime
is built (imports, voices, the espeak backend), so `peak - base` is what the shard itself held;
the RSS after each tenth of the shard's dialogues shows where it grows.
The "before" code is `git archive <ref>` put first on `PYTHONPATH` of its processes (`--before
none`: this tree alone, one process at a time); the two sides of a size run at the same time
(their seconds share the CPUs). Both sides make the same dialogues (same config and seed): the
benchmark checks that their data files decode to equal rows (the bytes may differ: the streamed
writer's row groups are `ROW_GROUP_ROWS` dialogues, datasets' whole-file writer sized them by
the data). Writes
benchmarks/results/memory.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def child(sets: list[str]) -> dict:
    """One shard in this process (imports resolve to whichever tree is first on PYTHONPATH)."""
    import factory
    from factory.config import load_config
    from factory.run.shards import generate_shard, plan_shards
    from factory.runtime import runtime_for

    cfg = load_config(None, sets)
    rt = runtime_for(cfg)
    for name in rt.voice_backends():  # the TTS backends are built before the base is taken
        rt.tts(name)
    (spec,) = plan_shards(cfg)
    base = _status_mb("VmRSS")
    start = time.perf_counter()
    curve: list[float] = []  # RSS after each tenth of the shard's dialogues settled: where it grows
    step, settled = max(1, len(spec.sample_indices) // 10), [0]

    def on_sample(_result) -> None:
        settled[0] += 1
        if settled[0] % step == 0:
            curve.append(round(_status_mb("VmRSS"), 1))

    result = generate_shard(rt, spec, on_sample=on_sample)
    return {
        "code": str(Path(factory.__file__).parents[1]),
        "seconds": round(time.perf_counter() - start, 1),
        "n_ok": result.n_ok,
        "n_rejected": result.n_rejected,
        "base_rss_mb": round(base, 1),
        "peak_rss_mb": round(_status_mb("VmHWM"), 1),
        "rss_curve_mb": curve,
        "data": str(cfg.run_dir / "data" / f"{spec.name}.parquet"),
        "sha256": result.sha256,
    }


def rows_digest(path: str) -> str:
    """The sha256 of a data file's decoded rows (every column), a row group at a time."""
    import pyarrow.parquet as pq

    digest = hashlib.sha256()
    for batch in pq.ParquetFile(path).iter_batches(batch_size=16):
        for row in batch.to_pylist():
            digest.update(repr(sorted(row.items())).encode())
    return digest.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--before", default="main", help="git ref of the code to compare with ('none': this tree only)")
    ap.add_argument("--latency", type=float, default=0.02, help="stand-in LLM latency, s")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--child", help="JSON list of config overrides: measure one shard in this process")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    sys.path.insert(0, str(ROOT))
    from tests.latency_server import STAND_IN_DIALOGUES, LatencyServer

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp, LatencyServer(args.latency) as server:
        work = Path(tmp)
        sides: list[tuple[str, Path]] = [("after", ROOT)]
        commit = "-"
        if args.before != "none":
            before = work / "before-code"
            before.mkdir()
            archive = subprocess.run(["git", "archive", args.before], cwd=ROOT, check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
            commit = subprocess.run(
                ["git", "rev-parse", "--short", args.before], cwd=ROOT, check=True, capture_output=True, text=True
            ).stdout.strip()
            sides.insert(0, ("before", before))
        for n in args.sizes:
            children = {}
            load_start = round(os.getloadavg()[0], 1)
            for side, code in sides:
                out = work / f"{side}-{n}"
                sets = [
                    "run.seed=12",
                    f"run.n_samples={n}",
                    f"run.samples_per_shard={n}",
                    "run.processes=1",
                    f"run.run_id=memory-{n}",
                    f"run.output_dir={out / 'runs'}",
                    "dialogue.n_turns=[2, 2]",
                    *STAND_IN_DIALOGUES,
                    f"tts.cache_dir={out / 'tts-cache'}",
                    f"augment.cache_dir={out / 'augment-cache'}",
                    "llm.backend=http",
                    f"llm.base_url={server.base_url}",
                    f"llm.concurrency={args.concurrency}",
                ]
                env = {**os.environ, "PYTHONPATH": str(code)}
                # both sides at once (a peak RSS is per process; the seconds are then shared CPU time)
                children[side] = subprocess.Popen(
                    [sys.executable, __file__, "--child", json.dumps(sets)],
                    env=env,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            digests = {}
            for side, proc in children.items():
                stdout, _ = proc.communicate()
                if proc.returncode:
                    raise SystemExit(f"{side} n={n} failed ({proc.returncode})")
                row = json.loads(stdout.strip().splitlines()[-1])
                row |= {"side": side, "n": n, "held_mb": round(row["peak_rss_mb"] - row["base_rss_mb"], 1)}
                row |= {"load_start": load_start, "load_end": round(os.getloadavg()[0], 1)}
                digests[side] = rows_digest(row.pop("data"))
                row.pop("code")
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
            if "before" in digests:
                rows[-1]["rows_equal_to_before"] = digests["before"] == digests["after"]
                rows[-1]["bytes_equal_to_before"] = rows[-2]["sha256"] == rows[-1]["sha256"]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    when = datetime.now(UTC).isoformat(timespec="seconds")
    summary = {"when": when, "machine": machine, "before": commit, "sizes": args.sizes, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps(summary, indent=2) + "\n")
    peak = {(r["side"], r["n"]): r for r in rows}
    lines = [
        f"# Memory of one shard ({when})",
        "",
        f"{machine} (shared with other jobs). One shard of n stand-in dialogues (2 turns, espeak, stand-in LLM "
        f"at {args.latency} s, llm.concurrency {args.concurrency}, run.processes 1, run.wave_size default) per "
        f"fresh process, both sides of a size at once; before = `{args.before}` ({commit}), after = this tree. "
        "`held` = peak RSS (VmHWM) minus the RSS once the runtime was built; load = the machine's 1-minute "
        "load average when the size started and when its process ended.",
        "",
        "| code | dialogues | ok | seconds | base RSS MB | peak RSS MB | held MB | load | rows equal to before "
        "| bytes equal |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        same = {True: "yes", False: "no"}
        lines.append(
            f"| {r['side']} | {r['n']} | {r['n_ok']} | {r['seconds']} | {r['base_rss_mb']} | {r['peak_rss_mb']} | "
            f"{r['held_mb']} | {r['load_start']}-{r['load_end']} | {same.get(r.get('rows_equal_to_before'), '-')} | "
            f"{same.get(r.get('bytes_equal_to_before'), '-')} |"
        )
    lo, hi = min(args.sizes), max(args.sizes)
    lines += ["", f"Peak RSS ratio, {hi} vs {lo} dialogues:", ""]
    for side, _ in sides:
        ratio = peak[(side, hi)]["peak_rss_mb"] / peak[(side, lo)]["peak_rss_mb"]
        lines.append(f"- {side}: {ratio:.2f}x")
    lines += ["", "RSS (MB) after each tenth of the shard's dialogues settled:", ""]
    lines += [f"- {r['side']} {r['n']}: {', '.join(str(v) for v in r['rss_curve_mb'])}" for r in rows]
    (RESULTS / "memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
