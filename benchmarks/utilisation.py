"""Utilisation benchmark: how full the shard engine keeps a (simulated) LLM GPU and TTS GPU over a
run of >= 500 dialogues, before and after the overlapped engine.

    .venv/bin/python benchmarks/utilisation.py                   # 500 dialogues, this tree and --before
    .venv/bin/python benchmarks/utilisation.py --n 60 --quick    # a smoke check (utilisation-quick.*)
    .venv/bin/python benchmarks/utilisation.py --before none     # this tree only

Writes benchmarks/results/utilisation.json and utilisation.md.

Stand-ins (`tests/latency_server.py`; they record their own utilisation, outside the code under
test): the LLM is `LatencyServer`, an OpenAI-compatible server whose latency grows with the
requests in flight (`--latency` + `--per-request` x in flight, like a decoder's step); the TTS is
`TTSStandIn`, the factory's own TTS service (`tts.service_url`) hosting a backend whose batch call
costs `--tts-batch-s` for up to `--tts-batch` renders and renders real espeak audio. Whisper QA is
off and turns are short (2-4), so the run fits ~10 minutes on 2 shared cores: the CPU stages
(assemble: timeline, mix, augmentation, FLAC, audit gate) must not be what limits the run, or the
GPUs' fill would measure the CPU instead.

Each engine runs `flows.generate.run_generate` (inside `flows.server.run_server`, as
`duplex-factory generate` does) in a fresh process, with a fresh run folder, TTS cache and Prefect
home, against fresh stand-ins. `--before REV` (default: the commit before the overlapped engine)
runs the same config with the engine of that commit (`git archive` of REV into a temporary
folder; the stand-ins and this script stay this tree's), so before and after are measured in the
same invocation on the same machine; both runs must write byte-identical shards.

Definitions
-----------
- **steady part**: from the LLM stand-in's first request to the TTS stand-in's last batch, less
  10 % at each end (the ramp-up and the drain at the end of the run); the same window for both
  stand-ins, so a GPU that idles while the other stage works counts as idle.
- **LLM mean in flight (steady)**: the server's time-weighted mean of requests in flight over the
  steady part; target >= 90 % of `llm.concurrency`.
- **LLM busy share**: the share of the steady part with at least one request in flight.
- **TTS mean batch (steady)**: renders per batch call among the batches that started in the TTS
  steady part; target >= 80 % of its batch size. **TTS busy share**: the share of the
  steady part spent in batch calls.
- **stage busy s**: the run summary's `utilisation.stage_seconds`, summed over shards (after: the
  time at least one job of the stage ran in the shard; before: the stage's wall time in its
  waves); shards run `run.workers` at a time, so a stage's seconds can exceed the wall time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.latency_server import STAND_IN_DIALOGUES, LatencyServer, TTSStandIn, step_mean  # noqa: E402  (after the sys.path insert)

RESULTS = ROOT / "benchmarks" / "results"
BEFORE = "1dfc2af"  # main before the overlapped engine (its wave engine)
console = Console()

# Runs in a fresh process with `root` (this tree, or the archived one) first on sys.path.
CHILD = """
import json, sys, time
root, out, *sets = sys.argv[1:]
sys.path.insert(0, root)
from factory.config import load_config
from flows.generate import run_generate
from flows.server import run_server

cfg = load_config(None, sets)
with run_server():
    start = time.monotonic()
    summary = run_generate(cfg).model_dump(mode="json")
    end = time.monotonic()
open(out, "w").write(json.dumps({"start": start, "end": end, "summary": summary}))
"""


def overrides(args: argparse.Namespace, work: Path, llm_url: str, tts_url: str) -> list[str]:
    """The run config of one measurement (also written into the results)."""
    return [
        f"run.seed={args.seed}",
        f"run.n_samples={args.n}",
        f"run.samples_per_shard={args.per_shard}",
        f"run.workers={args.workers}",
        f"run.processes={args.processes}",
        "run.run_id=utilisation",
        f"run.output_dir={work / 'out'}",
        "run.shard_retries=0",
        f"dialogue.n_turns=[{args.turns[0]}, {args.turns[1]}]",
        *STAND_IN_DIALOGUES,
        f"tts.service_url={tts_url}",
        f"tts.cache_dir={work / 'tts-cache'}",
        f"augment.cache_dir={work / 'augment-cache'}",
        "llm.backend=http",
        f"llm.base_url={llm_url}",
        f"llm.concurrency={args.concurrency}",
    ]


def measure(args: argparse.Namespace, label: str, root: Path, work: Path) -> dict[str, Any]:
    """One run of the flow in a fresh process with the engine under `root`, against fresh stand-ins."""
    work.mkdir(parents=True)
    with (
        LatencyServer(args.latency, per_request_s=args.per_request) as llm,
        TTSStandIn(args.tts_batch, args.tts_batch_s, args.tts_wait_ms) as tts,
    ):
        sets = overrides(args, work, llm.base_url, tts.url)
        out = work / "result.json"
        env = {**os.environ, "PREFECT_HOME": str(work / "prefect-home"), "PREFECT_LOGGING_LEVEL": "WARNING"}
        env.pop("PREFECT_API_URL", None)
        env["PYTHONPATH"] = str(root)
        console.print(f"[bold]{label}[/]: {args.n} dialogues, engine from {root}")
        started = time.perf_counter()
        with open(work / "child.log", "wb") as log:
            code = subprocess.call(
                [sys.executable, "-c", CHILD, str(root), str(out), *sets],
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if code != 0 or not out.exists():
            raise RuntimeError(
                f"{label} failed (exit {code}):\n{(work / 'child.log').read_text(errors='replace')[-4000:]}"
            )
        child = json.loads(out.read_text())
        summary = child["summary"]
        # the stand-ins' own records
        with llm._lock:  # noqa: SLF001 - its owner reads its record
            events = list(llm.events)
        batches = tts.batches()
        # the steady part: from the first LLM request to the last TTS batch, less 10 % at each end
        g0, g1 = events[0][0], max(events[-1][0], max(e for _, e, _ in batches))
        lo, hi = g0 + 0.1 * (g1 - g0), g1 - 0.1 * (g1 - g0)
        busy_events = [(t, 1 if n > 0 else 0) for t, n in events]
        run_dir = Path(summary["run_dir"])
        return {
            "engine": label,
            "root": str(root),
            "flow_wall_s": round(child["end"] - child["start"], 2),
            "process_wall_s": round(time.perf_counter() - started, 2),
            "ok": summary["ok"],
            "rejected": summary["rejected"],
            "gpu_span_s": round(g1 - g0, 2),
            "steady_s": round(hi - lo, 2),
            "audio_minutes": summary["utilisation"]["audio_minutes"],
            "stage_busy_s": summary["utilisation"]["stage_seconds"],
            "llm": {
                "requests": llm.n_requests,
                "max_in_flight": llm.max_in_flight,
                "mean_in_flight_span": round(llm.mean_in_flight(), 3),
                "mean_in_flight_steady": round(step_mean(events, lo, hi), 3),
                "busy_share_steady": round(step_mean(busy_events, lo, hi), 3),
            },
            "tts": {
                "batches": len(batches),
                "renders": sum(n for _, _, n in batches),
                "mean_batch_all": round(tts.mean_batch(), 3),
                "mean_batch_steady": round(tts.mean_batch(lo, hi), 3),
                "busy_share_steady": round(tts.busy_share(lo, hi), 3),
            },
            "data_sha256": {
                p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((run_dir / "data").glob("*.parquet"))
            },
            "config": sets,
        }


def archive(rev: str, into: Path) -> Path:
    """The tree of commit `rev`, unpacked into `into` (its engine, for the before run)."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    into.mkdir(parents=True)
    tar = into / "tree.tar"
    tar.write_bytes(data)
    with tarfile.open(tar) as t:
        t.extractall(into / "tree", filter="tar")
    return into / "tree"


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> tuple[Table, str]:
    metrics = [
        ("flow wall s", lambda r: r["flow_wall_s"]),
        ("ok / rejected", lambda r: f"{r['ok']} / {r['rejected']}"),
        ("dialogues / s", lambda r: round((r["ok"] + r["rejected"]) / r["flow_wall_s"], 3)),
        (f"LLM mean in flight, steady (of {args.concurrency})", lambda r: r["llm"]["mean_in_flight_steady"]),
        (
            "LLM mean in flight, steady / concurrency",
            lambda r: f"{r['llm']['mean_in_flight_steady'] / args.concurrency:.0%}",
        ),
        ("LLM mean in flight, whole span", lambda r: r["llm"]["mean_in_flight_span"]),
        ("LLM busy share, steady", lambda r: r["llm"]["busy_share_steady"]),
        ("LLM requests / max in flight", lambda r: f"{r['llm']['requests']} / {r['llm']['max_in_flight']}"),
        (f"TTS mean batch, steady (of {args.tts_batch})", lambda r: r["tts"]["mean_batch_steady"]),
        ("TTS mean batch, steady / batch size", lambda r: f"{r['tts']['mean_batch_steady'] / args.tts_batch:.0%}"),
        ("TTS mean batch, all", lambda r: r["tts"]["mean_batch_all"]),
        ("TTS busy share, steady", lambda r: r["tts"]["busy_share_steady"]),
        ("TTS batches / renders", lambda r: f"{r['tts']['batches']} / {r['tts']['renders']}"),
        *(
            (f"stage busy s: {stage} (sum over shards)", lambda r, s=stage: r["stage_busy_s"].get(s))
            for stage in ("script", "tts", "qa", "assemble")
        ),
    ]
    t = Table(title="utilisation")
    t.add_column("metric")
    for r in rows:
        t.add_column(r["engine"], justify="right")
    lines = ["| metric | " + " | ".join(r["engine"] for r in rows) + " |", "|---|" + "---:|" * len(rows)]
    for name, get in metrics:
        cells = [str(get(r)) for r in rows]
        t.add_row(name, *cells)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return t, "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=500, help="dialogues")
    p.add_argument("--per-shard", type=int, default=100)
    p.add_argument("--workers", type=int, default=3, help="shards in flight (run.workers)")
    p.add_argument("--processes", type=int, default=2, help="run.processes: worker processes for the CPU stages")
    p.add_argument("--turns", type=int, nargs=2, default=(2, 4))
    p.add_argument("--concurrency", type=int, default=8, help="llm.concurrency")
    p.add_argument("--latency", type=float, default=0.5, help="LLM latency at one request in flight, s")
    p.add_argument("--per-request", type=float, default=0.05, help="LLM latency added per request in flight, s")
    p.add_argument("--tts-batch", type=int, default=16, help="the TTS stand-in's batch size")
    p.add_argument("--tts-batch-s", type=float, default=0.8, help="the cost of one TTS batch call, s")
    p.add_argument("--tts-wait-ms", type=float, default=20.0, help="the TTS service's max_wait_ms")
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--before", default=BEFORE, help="commit whose engine is the 'before' run; 'none' to skip")
    p.add_argument("--quick", action="store_true", help="write utilisation-quick.* instead")
    p.add_argument("--render", metavar="JSON", help="only rewrite the markdown of a results JSON")
    args = p.parse_args()

    if args.render:  # the markdown again from a results file (no run)
        write(json.loads(Path(args.render).read_text()), args.render.removesuffix(".json"))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="utilisation-") as tmp:
        work = Path(tmp)
        if args.before != "none":
            rows.append(
                measure(args, f"before ({args.before})", archive(args.before, work / "before-src"), work / "before")
            )
        rows.append(measure(args, "after (this tree)", ROOT, work / "after"))
    head = rows[-1]
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "load_avg_1_5_15": list(os.getloadavg()),
        "args": dict(vars(args)),
        "rows": rows,
        "same_bytes": len(rows) < 2 or rows[0]["data_sha256"] == rows[1]["data_sha256"],
        "targets_met_after": {
            "llm_in_flight_ge_90pct": head["llm"]["mean_in_flight_steady"] >= 0.9 * args.concurrency,
            "tts_batch_ge_80pct": head["tts"]["mean_batch_steady"] >= 0.8 * args.tts_batch,
        },
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("utilisation-quick" if args.quick else "utilisation")
    path.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    write(result, str(path))


NOTES = """Notes:

- Both runs use `run.workers` 3, so the before engine's shards already overlap each other (the
  scale benchmark's 1.1 of 8 in flight was one shard at a time, `run.workers` 1).
- Where the after run loses LLM fill: the client's own time between a dialogue's turns on a
  loaded 2-core machine (the load average is in the JSON), and the end of the run, when the last
  shard has fewer dialogues left to write than the server has slots.
- The TTS stand-in is not the bottleneck here (its busy share is below 1), so its batches are full
  because the engine sends whole batches while more is being written, not because renders pile up.
"""


def write(result: dict[str, Any], path: str) -> None:
    """Print the table and write `path`.md."""
    args = argparse.Namespace(**result["args"])
    rows = result["rows"]
    t, md_table = table(rows, args)
    console.print(t)
    console.print(f"shards byte-identical before/after: {result['same_bytes']}")
    settings = (
        f"{args.n} dialogues of {args.turns[0]}-{args.turns[1]} turns, shards of {args.per_shard}, run.workers "
        f"{args.workers}, run.processes {args.processes}, seed {args.seed}. LLM stand-in: latency {args.latency} s "
        f"+ {args.per_request} s per request in flight, llm.concurrency {args.concurrency}. TTS stand-in: the TTS "
        f"service (max_wait_ms {args.tts_wait_ms:g}) over a backend whose batch of up to {args.tts_batch} costs "
        f"{args.tts_batch_s} s (espeak audio). Whisper QA off (tts.qa_wer_threshold=null)."
    )
    md = [
        f"# Utilisation benchmark ({result['date']})",
        "",
        f"{result['machine']} (shared with other jobs). {settings}",
        "",
        "`benchmarks/utilisation.py` (definitions in its docstring). Steady part: first LLM request to last "
        "TTS batch, less 10 % at each end. Targets (issue 21): LLM mean in flight >= 90 % of llm.concurrency, "
        "TTS mean batch >= 80 % of its size.",
        "",
        md_table,
        "",
        f"Shards byte-identical before/after: **{result['same_bytes']}**. Targets met after: "
        + ", ".join(f"{k} **{v}**" for k, v in result["targets_met_after"].items())
        + ".",
        "",
        NOTES,
    ]
    Path(f"{path}.md").write_text("\n".join(md))
    console.print(f"wrote {path}.md")


if __name__ == "__main__":
    main()
