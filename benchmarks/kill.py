"""Crash-proof resume at 20 kill points: `duplex-factory generate` (fast settings, one sample per
shard) is SIGKILLed from outside at points drawn with a fixed seed from shard writing, manifest
writing and finalize (`factory.crash`), in rounds of 5 chained kills on one folder followed by
a plain re-run; each round's folder must equal an uninterrupted run's byte for byte, and no
process of a killed run (its own Prefect server included) may be left. Every killed run starts
its own Prefect server, as a user's `duplex-factory generate` does.

    .venv/bin/python benchmarks/kill.py [--points 20] [--samples 6] [--seed 2026]

Prints a table (point, seconds to reach it, processes left, files differing after the round's
re-run) and writes benchmarks/results/kill.json and .md. The baseline is the uninterrupted run
in the same session; the re-run's wall time against the baseline's is the cost of resuming.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.scale import cli_args, fast, kill_tree, run_until_flag, tree, wait_gone  # noqa: E402

# Shard-phase points at their 1st or 2nd pass (a 2nd pass lands in the second shard a run writes).
POINTS = {
    "shard writing": ["sample:1", "sample:2", "atomic_write:1", "atomic_write:5", "shard.data:1", "shard.data:2"],
    "manifest writing": [
        "atomic_write:2",
        "shard.manifest:1",
        "shard.manifest:2",
        "shard.signatures:1",
        "shard.record:1",
    ],
    "finalize": ["finalize.manifest:1", "finalize.config:1"],
}


def rounds(seed: int, n_points: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    out = []
    while sum(map(len, out)) < n_points:
        size = min(5, n_points - sum(map(len, out)))
        picks = [str(rng.choice(p)) for p in POINTS.values()][:size]
        rest = [p for points in POINTS.values() for p in points if p not in picks]
        picks += [str(p) for p in rng.choice(rest, size - len(picks), replace=False)]
        out.append(sorted(picks, key=lambda p: p.startswith("finalize")))
    return out


def run(cmd: list[str], base_env: dict, cwd: Path, token: str) -> float:
    """An uninterrupted run; its wall time."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env={**base_env, "DUPLEX_TEST_TOKEN": token}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"run in {cwd} failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="kill-bench-"))
    home = tmp / "prefect-home"
    home.mkdir()
    items = fast(tmp / "cache", f"run.n_samples={args.samples}", "run.run_id=k")
    cmd = cli_args(items, "--out", "out")
    base_env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL" and not k.startswith("DUPLEX_CRASH")}
    base_env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}

    (tmp / "baseline").mkdir()
    baseline_s = run(cmd, base_env, tmp / "baseline", uuid.uuid4().hex)
    baseline = tree(tmp / "baseline" / "out" / "k")
    rows, round_rows, tokens = [], [], []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below runs
    try:
        result = kill_rounds(args, cmd, base_env, tmp, baseline, baseline_s, rows, round_rows, tokens, console)
    finally:
        for token in tokens:  # a held run of an interrupted benchmark
            kill_tree(token)
    if not (result["identical"] and result["processes_left"] == 0):
        raise SystemExit(1)


def kill_rounds(args, cmd, base_env, tmp, baseline, baseline_s, rows, round_rows, tokens, console) -> dict:
    result = {}
    for r, points in enumerate(rounds(args.seed, args.points)):
        work = tmp / f"round{r}"
        work.mkdir()
        token = uuid.uuid4().hex
        tokens.append(token)
        for i, point in enumerate(points):
            flag = work / f"flag-{i}"
            env = {**base_env, "DUPLEX_TEST_TOKEN": token, "DUPLEX_CRASH_AT": point, "DUPLEX_CRASH_FLAG": str(flag)}
            start = time.perf_counter()
            proc, reached = run_until_flag(cmd, env, work, flag)
            reach_s = time.perf_counter() - start
            if reached:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            left = wait_gone(token)
            kill_tree(token)
            rows.append(
                {"round": r, "point": point, "reached": reached, "seconds": round(reach_s, 1), "left": len(left)}
            )
        rerun_s = run(cmd, base_env, work, token)
        ours = tree(work / "out" / "k")
        differing = sorted(set(ours) ^ set(baseline) | {n for n in baseline if n in ours and ours[n] != baseline[n]})
        round_rows.append({"round": r, "rerun_s": round(rerun_s, 1), "differing_files": differing})
        result = report(console, args, baseline_s, rows, round_rows, final=len(rows) >= args.points)
    return result


def report(console: Console, args, baseline_s: float, rows: list[dict], round_rows: list[dict], final: bool) -> dict:
    """Print and record the points so far (after every round, so a long run leaves its numbers)."""
    table = Table(title=f"kill test: {len(rows)} points, baseline run {baseline_s:.1f} s")
    for col in ("round", "point", "reached", "s to point", "processes left"):
        table.add_column(col)
    for row in rows:
        table.add_row(str(row["round"]), row["point"], str(row["reached"]), f"{row['seconds']:.1f}", str(row["left"]))
    console.print(table)
    for rr in round_rows:
        console.print(
            f"round {rr['round']}: re-run {rr['rerun_s']:.1f} s, "
            f"files differing from the baseline: {rr['differing_files'] or 'none'}"
        )
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "samples": args.samples,
        "baseline_s": round(baseline_s, 1),
        "points": rows,
        "rounds": round_rows,
        "all_reached": all(r["reached"] for r in rows),
        "processes_left": sum(r["left"] for r in rows),
        "identical": all(not rr["differing_files"] for rr in round_rows),
        "complete": final,  # False: the run was stopped before all requested points
        "requested_points": args.points,
    }
    out = ROOT / "benchmarks" / "results"
    (out / "kill.json").write_text(json.dumps(result, indent=2))
    md = [
        f"# kill test ({result['date']}, {result['machine']})",
        "",
        "| round | point | reached | s to point | left |",
        "|---|---|---|---|---|",
    ]
    md += [f"| {r['round']} | `{r['point']}` | {r['reached']} | {r['seconds']} | {r['left']} |" for r in rows]
    md += [
        "",
        f"baseline {baseline_s:.1f} s; identical after every round: {result['identical']}; "
        f"processes left: {result['processes_left']}",
    ]
    md += [f"- round {rr['round']}: re-run {rr['rerun_s']} s" for rr in round_rows]
    (out / "kill.md").write_text("\n".join(md) + "\n")
    return result


if __name__ == "__main__":
    main()
