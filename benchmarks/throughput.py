"""End-to-end throughput of the main job on the embedded CPU defaults, as a new user runs it:
`duplex-factory generate` in a fresh process with an empty TTS cache, one-at-a-time (the path
before stage batching: `run.wave_size=1 run.processes=1`) and stage-batched (the defaults),
side by side in the same run, alternating so machine load hits both alike.

    .venv/bin/python benchmarks/throughput.py [--samples 8] [--repeats 1] [--set KEY=VALUE ...]

Reported per path: wall seconds of the whole command (Prefect server, pool start-up, model loads,
shards, manifest, card), audio minutes made (from the manifest), dialogue-minutes per
wall-minute, and where the time went (the run summary's utilisation, `--summary-json`: stage
seconds per audio minute, LLM in flight, TTS batches). Warm: Python's file cache and the
assembled Whisper weights (~/.cache/duplex-factory); cold: the TTS cache and every model load
(fresh processes). Writes benchmarks/results/throughput.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PATHS = {
    "one at a time": ["run.wave_size=1", "run.processes=1"],
    "stage-batched": [],  # the defaults: one wave per shard, run.processes = CPUs
}


def one_run(name: str, overrides: list[str], samples: int, tmp: Path) -> dict:
    out = tmp / name.replace(" ", "-")
    summary_path = out / "summary.json"
    args = [str(Path(sys.executable).parent / "duplex-factory"), "generate", "--out", str(out), "--run-id", "bench"]
    args += ["--summary-json", str(summary_path)]
    for item in [f"run.n_samples={samples}", f"tts.cache_dir={out / 'tts-cache'}", *overrides]:
        args += ["--set", item]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    run = out / "bench"
    manifest = pl.read_parquet(run / "manifest.parquet")
    ok = manifest.filter(pl.col("status") == "ok")
    audio_min = float(ok["duration"].sum()) / 60
    use = json.loads(summary_path.read_text())["utilisation"]
    stages: dict[str, float] = use["stage_seconds"]
    return {
        "path": name,
        "overrides": overrides,
        "wall_s": round(wall, 2),
        "ok": ok.height,
        "rejected": manifest.height - ok.height,
        "audio_minutes": round(audio_min, 3),
        "dialogue_min_per_wall_min": round(audio_min / (wall / 60), 3),
        "stage_s_per_audio_min": {k: round(v / audio_min, 2) for k, v in stages.items()} if audio_min else {},
        "stage_s_sum": round(sum(stages.values()), 2),
        "loadavg_before": round(load, 2),
        "llm": use["llm"],
        "tts": use["tts"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra config overrides for both")
    args = parser.parse_args()
    console = Console()
    rows = []
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        for rep in range(args.repeats):
            order = list(PATHS.items()) if rep % 2 == 0 else list(reversed(PATHS.items()))
            for name, overrides in order:
                console.print(f"[bold]{name}[/bold] (repeat {rep + 1}/{args.repeats}) ...")
                row = one_run(name, [*overrides, *args.extra], args.samples, Path(tmp) / f"r{rep}")
                console.print(f"  {row['wall_s']} s wall, {row['dialogue_min_per_wall_min']} dialogue-min/wall-min")
                rows.append(row)

    table = Table(title="End-to-end throughput, embedded CPU defaults")
    for col in ("path", "wall s", "ok/rej", "audio min", "dialogue-min / wall-min", "stage s per audio min"):
        table.add_column(col)
    for r in rows:
        stages = ", ".join(f"{k} {v}" for k, v in r["stage_s_per_audio_min"].items())
        table.add_row(
            r["path"],
            str(r["wall_s"]),
            f"{r['ok']}/{r['rejected']}",
            str(r["audio_minutes"]),
            str(r["dialogue_min_per_wall_min"]),
            stages,
        )
    console.print(table)

    by_path = {p: [r for r in rows if r["path"] == p] for p in PATHS}
    speed = {p: sum(r["dialogue_min_per_wall_min"] for r in rs) / len(rs) for p, rs in by_path.items()}
    ratio = speed["stage-batched"] / speed["one at a time"]
    console.print(f"stage-batched / one at a time: {ratio:.2f}x")
    result = {
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "samples": args.samples,
        "extra_overrides": args.extra,
        "runs": rows,
        "mean_dialogue_min_per_wall_min": {p: round(v, 3) for p, v in speed.items()},
        "speed_ratio": round(ratio, 3),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Measured {result['measured']} on {result['machine']}; {args.samples} dialogues per run, "
        f"fresh process and empty TTS cache each.",
        "",
        "| path | wall s | ok/rejected | audio min | dialogue-min / wall-min | stage s per audio min | load before |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        stages = ", ".join(f"{k} {v}" for k, v in r["stage_s_per_audio_min"].items())
        lines.append(
            f"| {r['path']} | {r['wall_s']} | {r['ok']}/{r['rejected']} | {r['audio_minutes']} | "
            f"{r['dialogue_min_per_wall_min']} | {stages} | {r['loadavg_before']} |"
        )
    lines += ["", f"Stage-batched / one at a time: **{ratio:.2f}x**."]
    (RESULTS / "throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
