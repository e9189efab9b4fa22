"""Scale benchmark: full runs of 200 and 2,000 dialogues on fast stand-ins, their orchestration
overhead, peak memory and LLM utilisation, and a projection to 400K dialogues.

    .venv/bin/python benchmarks/scale.py                  # 200 and 2,000 dialogues (~1 h on 2 cores)
    .venv/bin/python benchmarks/scale.py --quick          # 20 and 60: a smoke check
    .venv/bin/python benchmarks/scale.py --sizes 500 --latency 0.1 --concurrency 16
    TMPDIR=/dev/shm .venv/bin/python benchmarks/scale.py --sizes 200 2000 --samples-per-shard 20 \
        --turns 2 2 --latency 0.02 --no-direct --name flow_memory   # 10 vs 100 shards

Writes benchmarks/results/scale.json and scale.md (--quick: scale-quick.*; --name NAME: NAME.*).
`--set KEY=VALUE` (repeatable) adds a config override to every run.

Stand-ins (fast but real): the LLM is `tests.latency_server.LatencyServer`, an OpenAI-compatible
server on 127.0.0.1 that answers after `--latency` seconds and counts requests in flight (its
counters are the server side, outside the code under test); the TTS is two espeak-ng voices
without Whisper QA; dialogues are short (2-4 turns). Every measurement runs in a fresh Python
process with a fresh temporary run folder, TTS cache and Prefect home, so no warm cache flatters
a number; what stays warm is the OS page cache (Python imports, espeak data, the packages).

The product is driven only through its public entry points: `factory.config.load_config`, the
flow (`flows.generate.run_generate` inside `flows.server.run_server`, as `duplex-factory
generate` does), the run folder's `manifest.parquet` and `data/*.parquet`, and for the baseline
`factory.engine.build_shard` on one dialogue at a time (a wave of one: no flow, no shard file).

Definitions
-----------
- **flow wall**: wall time of `run_generate` in its own process, Prefect server start included
  (plan, shard tasks, audit gate, shard writes and checks, manifest, dedup, card).
- **direct wall**: wall time of `factory.engine.build_shard` on one dialogue at a time (a wave
  of one) in a loop, in another fresh process for the same dialogue indices and config: the
  same stages, the same LLM server, the same (cold) TTS cache, without the flow, the shards and
  the run folder.
- **orchestration overhead per dialogue** = (flow wall - direct wall) / n, for each size, and the
  same for CPU seconds (user + system of the whole process tree, Prefect server included: less
  sensitive than wall time to the other jobs on a shared machine). Its **marginal** part is the
  slope between the two sizes, ((overhead_2 - overhead_1) / (n_2 - n_1)), which removes the fixed
  cost (Prefect server start, imports, card) that a run pays once. Goal: <= 5 ms per dialogue.
  With a batched shard that overlaps dialogues, the flow may beat the sequential baseline; the
  overhead then comes out negative, which means "hidden by concurrency", not "free".
- **peak RSS**: the flow process's own `ru_maxrss` (exact), and the process tree's peak
  (flow process + Prefect server + any workers, summed, sampled every 0.2 s with psutil).
  Goal: peak at 2,000 within 1.1x of the peak at 200. Also each process's own peak by role
  (flow, worker: the engine's and TTS pools' spawned processes, prefect server, other; sampled),
  and the flow process's RSS at each tenth of the run (does it grow with the shards done?), with
  its C heap there (glibc `mallinfo2`: in use, and free but kept inside the malloc arenas), which
  tells a leak (in use grows) from memory kept for reuse (free grows; `factory.heap`).
- **LLM utilisation**, from the server: max and time-weighted mean requests in flight (between
  the first request and the last answer), requests per dialogue.
- **projection** to 400K dialogues: see `projection()`; every input and its source is written
  into the results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.latency_server import STAND_IN_DIALOGUES, LatencyServer  # noqa: E402  (after the sys.path insert)

RESULTS = ROOT / "benchmarks" / "results"
console = Console()


def overrides(args: argparse.Namespace, n: int, work: Path, base_url: str) -> list[str]:
    """The run config of one measurement (also written into the results)."""
    return [
        f"run.seed={args.seed}",
        f"run.n_samples={n}",
        f"run.samples_per_shard={args.samples_per_shard}",
        f"run.workers={args.workers}",
        f"run.run_id=scale-{n}",
        f"run.output_dir={work / 'out'}",
        "run.shard_retries=0",
        "run.retry_delay_s=0",
        f"dialogue.n_turns=[{args.turns[0]}, {args.turns[1]}]",
        *STAND_IN_DIALOGUES,
        f"tts.cache_dir={work / 'tts-cache'}",
        f"augment.cache_dir={work / 'augment-cache'}",
        "llm.backend=http",
        f"llm.base_url={base_url}",
        f"llm.concurrency={args.concurrency}",
        "llm.max_retries=2",
        *args.set,
    ]


# --------------------------------------------------------------------------- child processes
def _child(mode: str, n: int, sets: list[str], out: Path, progress: Path) -> None:
    """One measurement in this (fresh) process; writes its numbers to `out` as JSON."""
    t_import = time.perf_counter()
    from factory.config import load_config
    from factory.heap import heap_usage

    cfg = load_config(None, sets)
    done = [0]
    last = [0.0]
    marks: dict[str, float] = {}
    heap: list[tuple[int, float, float]] = []  # (dialogues done, C heap in use MiB, free in arenas MiB)

    def tick(_result: Any = None) -> None:
        done[0] += 1
        now = time.monotonic()
        t = time.perf_counter()
        marks.setdefault("first_sample", t)
        marks["last_sample"] = t
        shard = getattr(getattr(_result, "manifest", None), "shard", None)
        if shard:  # per-shard first/last sample: the gaps between shards are the shard machinery
            marks.setdefault(f"shard:{shard}:first", t)
            marks[f"shard:{shard}:last"] = t
        if done[0] >= (len(heap) + 1) * n / 10 and (usage := heap_usage()) is not None:  # each tenth
            heap.append((done[0], round(usage[0] / 2**20, 1), round(usage[1] / 2**20, 1)))
        if now - last[0] > 0.5 or done[0] == n:  # cheap: a few writes a second
            last[0] = now
            progress.write_text(str(done[0]))

    summary: dict[str, Any] = {}
    if mode == "flow":
        from flows.generate import run_generate
        from flows.server import run_server

        imported = time.perf_counter()
        with run_server():
            marks["server_up"] = time.perf_counter()
            summary = run_generate(cfg, on_sample=tick).model_dump(mode="json")
            marks["flow_done"] = time.perf_counter()
    else:
        from factory.engine import build_shard
        from factory.runtime import runtime_for

        imported = time.perf_counter()
        n_ok = 0
        one = cfg.model_copy(update={"run": cfg.run.model_copy(update={"wave_size": 1, "processes": 1})})
        rt = runtime_for(one)
        for i in range(n):  # one dialogue at a time, no shard file, no flow
            (result,), _ = build_shard(rt, [i], "direct")
            n_ok += result.sample is not None
            del result
            tick()
        summary = {"ok": n_ok, "rejected": n - n_ok}
    wall = time.perf_counter() - imported
    self_ru = resource.getrusage(resource.RUSAGE_SELF)
    out.write_text(
        json.dumps(
            {
                "wall_s": wall,
                "import_s": imported - t_import,
                "maxrss_self_mib": self_ru.ru_maxrss / 1024,
                "heap_curve_mib": heap,
                # where a flow's fixed cost goes: seconds from the start to each mark
                "marks_s": {k: round(t - imported, 3) for k, t in marks.items()},
                "summary": summary,
            },
            default=str,
        )
    )


def measure(args: argparse.Namespace, mode: str, n: int, progress: Progress) -> dict[str, Any]:
    """Run one measurement in a fresh subprocess against a fresh latency server; sample the
    process tree's RSS while it runs."""
    label = f"{mode} n={n}"
    task = progress.add_task(label, total=n, status="starting")
    with tempfile.TemporaryDirectory(prefix=f"scale-{mode}-{n}-") as tmp, LatencyServer(args.latency) as server:
        work = Path(tmp)
        sets = overrides(args, n, work, server.base_url)
        out, tick = work / "result.json", work / "progress.txt"
        env = {**os.environ, "PREFECT_HOME": str(work / "prefect-home"), "PREFECT_LOGGING_LEVEL": "WARNING"}
        env.pop("PREFECT_API_URL", None)  # a server of the run's own, like `duplex-factory generate`
        cmd = [sys.executable, __file__, "_child", mode, str(n), str(out), str(tick), "--", *sets]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        log = open(work / "child.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        peak_tree = peak_tree_n = 0
        peaks: dict[int, tuple[str, int]] = {}  # pid: (role, peak RSS) of every process of the tree
        curve: list[tuple[int, float]] = []  # (dialogues done, flow process RSS MiB) at each tenth of n
        # the flow process's sampled RSS peak while dialogues are made and after the last one (its last
        # shard's machinery and finalize): which part of the run a peak belongs to
        flow_peak = {"running": 0, "after": 0}
        count = 0
        while proc.poll() is None:
            try:
                members = [root, *root.children(recursive=True)]
                rss = 0
                for p in members:
                    try:
                        one = p.memory_info().rss
                        role = peaks[p.pid][0] if p.pid in peaks else _role(p, root)
                    except psutil.NoSuchProcess:
                        continue
                    rss += one
                    if p.pid == root.pid:
                        phase = "after" if count >= n else "running"
                        flow_peak[phase] = max(flow_peak[phase], one)
                    peaks[p.pid] = (role, max(one, peaks.get(p.pid, (role, 0))[1]))
                if rss > peak_tree:
                    peak_tree, peak_tree_n = rss, len(members)
            except psutil.NoSuchProcess:
                pass
            try:
                count = int(tick.read_text() or 0)
            except (FileNotFoundError, ValueError):
                count = 0
            if count >= (len(curve) + 1) * n / 10 and root.pid in peaks:
                try:
                    curve.append((count, round(root.memory_info().rss / 2**20, 1)))
                except psutil.NoSuchProcess:
                    pass
            progress.update(
                task,
                completed=count,
                status=f"LLM {server.n_requests} req, {server.in_flight} in flight, tree {peak_tree / 2**20:.0f} MiB",
            )
            time.sleep(0.2)
        total_wall = time.perf_counter() - start
        log.close()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0 or not out.exists():
            tail = (work / "child.log").read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{label} failed (exit {proc.returncode}):\n{tail}")
        child = json.loads(out.read_text())
        progress.update(task, completed=n, status="done")
        row: dict[str, Any] = {
            "mode": mode,
            "n": n,
            "wall_s": child["wall_s"],
            "process_wall_s": total_wall,
            "import_s": child["import_s"],
            "marks_s": child["marks_s"],
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "peak_rss_self_mib": child["maxrss_self_mib"],
            "peak_rss_tree_mib": peak_tree / 2**20,
            "flow_rss_peak_running_mib": flow_peak["running"] / 2**20,
            "flow_rss_peak_after_mib": flow_peak["after"] / 2**20,
            # the highest peak among the tree's processes of each role (flow, worker, prefect server, other)
            "peak_rss_by_role_mib": _by_role(peaks),
            "processes_by_role": dict(Counter(role for role, _ in peaks.values())),
            "flow_rss_curve_mib": curve,
            "flow_heap_curve_mib": child.get("heap_curve_mib") or [],
            "tree_processes_at_peak": peak_tree_n,
            "load_avg_1min": [load_before, os.getloadavg()[0]],
            "ok": child["summary"].get("ok"),
            "rejected": child["summary"].get("rejected"),
            "llm_requests": server.n_requests,
            "llm_max_in_flight": server.max_in_flight,
            "llm_mean_in_flight": server.mean_in_flight(),
        }
        if mode == "flow":
            summary = child["summary"]
            for key in ("utilisation", "stages", "llm_http", "failed", "shards"):
                if summary.get(key) is not None:
                    row[key] = summary[key]
            row.update(run_folder(Path(summary["run_dir"])))
        return row


def _role(p: psutil.Process, root: psutil.Process) -> str:
    """What a process of the measured tree is: the flow's own, an engine or TTS worker process
    (spawned by multiprocessing), the run's Prefect server, or other."""
    if p.pid == root.pid:
        return "flow"
    cmd = " ".join(p.cmdline())
    if "multiprocessing" in cmd:
        return "worker"
    if "prefect" in cmd or "uvicorn" in cmd:
        return "prefect server"
    return "other"


def _by_role(peaks: dict[int, tuple[str, int]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for role, peak in peaks.values():
        out[role] = round(max(out.get(role, 0.0), peak / 2**20), 1)
    return out


def run_folder(run_dir: Path) -> dict[str, Any]:
    """Audio minutes, bytes written and a load check, read from the run folder as a consumer would."""
    import polars as pl

    from factory.run.read import read_samples

    manifest = pl.read_parquet(run_dir / "manifest.parquet")
    ok = manifest.filter(pl.col("status") == "ok")
    data = sorted((run_dir / "data").glob("*.parquet"))
    first = next(iter(read_samples(run_dir)), None)  # the run folder loads through the public reader
    total_bytes = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
    return {
        "manifest_rows": manifest.height,
        "audio_minutes": float(ok["duration"].sum()) / 60,
        "mean_duration_s": float(ok["duration"].mean() or 0),
        "words_per_minute": float(ok["n_words"].sum()) / max(float(ok["duration"].sum()) / 60, 1e-9),
        "n_data_files": len(data),
        "data_bytes": sum(p.stat().st_size for p in data),
        "run_folder_bytes": total_bytes,
        "first_sample_loads": first is not None,
    }


# --------------------------------------------------------------------------- analysis
def overheads(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["mode"], r["n"]): r for r in rows}
    out = []
    for (mode, n), flow in sorted(by.items()):
        direct = by.get(("direct", n))
        if mode != "flow" or direct is None:
            continue
        out.append(
            {
                "n": n,
                "flow_ms_per_dialogue": 1000 * flow["wall_s"] / n,
                "direct_ms_per_dialogue": 1000 * direct["wall_s"] / n,
                "overhead_wall_ms_per_dialogue": 1000 * (flow["wall_s"] - direct["wall_s"]) / n,
                "overhead_cpu_ms_per_dialogue": 1000 * (flow["cpu_s"] - direct["cpu_s"]) / n,
                "overhead_wall_s": flow["wall_s"] - direct["wall_s"],
                "overhead_cpu_s": flow["cpu_s"] - direct["cpu_s"],
            }
        )
    if len(out) >= 2:
        a, b = out[0], out[-1]
        dn = b["n"] - a["n"]
        for kind in ("wall", "cpu"):
            slope = (b[f"overhead_{kind}_s"] - a[f"overhead_{kind}_s"]) / dn
            b[f"marginal_overhead_{kind}_ms_per_dialogue"] = 1000 * slope
    return out


def shard_gaps(row: dict[str, Any]) -> dict[str, Any] | None:
    """The shard machinery read off a flow's per-shard sample times (shards run one after another
    with run.workers 1): gap between shard k's last sample and shard k+1's first, minus one
    sample's time (the median sample interval inside shards) = finishing shard k (audit gate,
    parquet write, read-back check, publish) + starting the next task."""
    marks = row.get("marks_s") or {}
    shards = sorted({k.split(":")[1] for k in marks if k.startswith("shard:")})
    spans = [(marks[f"shard:{s}:first"], marks[f"shard:{s}:last"]) for s in shards]
    if len(spans) < 2:
        return None
    per_shard = row["n"] / len(spans)
    intervals = sorted((last - first) / max(per_shard - 1, 1) for first, last in spans)
    sample_s = intervals[len(intervals) // 2]
    gaps = sorted(b[0] - a[1] - sample_s for a, b in zip(spans, spans[1:]))
    gap = gaps[len(gaps) // 2]
    return {
        "median_sample_s": sample_s,
        "median_shard_machinery_s": gap,
        "shard_machinery_ms_per_dialogue": 1000 * gap / per_shard,
        "startup_s": marks["first_sample"] - sample_s,
        "tail_s": row["wall_s"] - marks["last_sample"],
    }


def finalize_measured() -> dict[str, Any]:
    """What the run's finalize costs, as `benchmarks/finalize.py` measured the streamed finalize
    (`factory.run.shards.finalize_run`: manifest merged a row group at a time, banded near-duplicate
    search a bucket at a time, card from queries) on synthetic runs: its largest run, and the peak
    ratio between its two largest (flat means the peak does not grow with the run)."""
    fin = _load("finalize.json")
    largest = max((r for r in fin["rows"] if r["path"] == "new"), key=lambda r: r["samples"])
    return {
        "samples": largest["samples"],
        "seconds": largest["seconds"],
        "peak_rss_mb": largest["peak_rss_mb"],
        "peak_ratio": fin.get("peak_rss_ratio"),
        "when": fin["when"],
    }


def _load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name).read_text())


def _row(rows: list[dict], **match: str) -> dict:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    raise KeyError(match)


def projection(args: argparse.Namespace, flows: list[dict[str, Any]], fin: dict[str, Any]) -> dict[str, Any]:
    """400K dialogues from measured per-stage costs; every input carries its source."""
    stages, mix = _load("stages.json"), _load("mix.json")
    big = max(flows, key=lambda r: r["n"])
    n = args.project
    mean_s = _row(stages["rows"], stage="total", variant="mean dialogue length")["value"]
    audio_min = n * mean_s / 60
    inputs: dict[str, tuple[float, str]] = {
        "mean dialogue length s": (mean_s, "benchmarks/results/stages.json (embedded defaults, 6-8 turns)"),
        "spoken words per audio minute": (
            big["words_per_minute"],
            f"measured here (manifest n_words / duration, n={big['n']})",
        ),
        "LLM tokens per word": (args.tokens_per_word, "assumption (English BPE, ~1.3)"),
        "LLM output tokens per s per sequence (GPU)": (
            args.gpu_llm_tps,
            "ASSUMPTION: no GPU measurement in this repo (an 8B model on one H100-class GPU, vLLM decode)",
        ),
        "LLM batch that saturates the GPU": (args.gpu_llm_batch, "ASSUMPTION (vLLM continuous batching)"),
        "LLM batch reached (mean in flight, this run)": (
            big["llm_mean_in_flight"],
            f"measured here, latency server, n={big['n']}",
        ),
        "TTS GPU real-time factor, one stream": (
            args.gpu_tts_rtf,
            "ASSUMPTION: no GPU measurement in this repo (Coqui VITS-class model)",
        ),
        "TTS batch that saturates the GPU": (args.gpu_tts_batch, "ASSUMPTION (padded VITS batches)"),
        "TTS batch reached": (
            float(((big.get("utilisation") or {}).get("tts") or {}).get("renders_per_call", 1.0) or 1.0),
            "run summary utilisation.tts.renders_per_call (renders per synthesize_many call), else 1",
        ),
        "mix + encode CPU s per audio minute": (
            _cpu_per_min(_row(mix["rows"], who="ours", step="mix+encoding")),
            "benchmarks/results/mix.json (ours, mix+encoding, 1 CPU)",
        ),
        "augment CPU s per audio minute": (
            _cpu_per_min(_row(mix["rows"], who="ours", step="augment: default (coloured noise)")),
            "benchmarks/results/mix.json (default chain)",
        ),
        "shard write CPU s per audio minute": (
            _row(stages["rows"], stage="write shard")["value"],
            "benchmarks/results/stages.json (write shard)",
        ),
        "bytes per audio minute (data/*.parquet)": (
            big["data_bytes"] / big["audio_minutes"],
            f"measured here (data/*.parquet bytes / audio minutes, n={big['n']})",
        ),
        "samples per shard": (args.samples_per_shard, "this run's run.samples_per_shard"),
        "finalize seconds per 1,000 dialogues": (
            fin["seconds"] / fin["samples"] * 1000,
            f"benchmarks/results/finalize.json ({fin['when']}): streamed finalize of {fin['samples']:,} "
            "synthetic samples, one process",
        ),
        "finalize peak RSS, MB": (
            fin["peak_rss_mb"],
            f"benchmarks/results/finalize.json: at {fin['samples']:,} samples; peak ratio between its two "
            f"largest runs {(fin['peak_ratio'] or {}).get('ratio', 'n/a')} (flat in the run's size)",
        ),
        "sample rate Hz": (24000, "factory.config AudioSection.sample_rate default"),
        "augmented share": (0.5, "factory.config AugmentSection.noise_probability default"),
    }
    v = {k: val for k, (val, _) in inputs.items()}
    tokens = audio_min * v["spoken words per audio minute"] * v["LLM tokens per word"]
    llm_rate_full = v["LLM output tokens per s per sequence (GPU)"] * v["LLM batch that saturates the GPU"]
    llm_rate_reached = v["LLM output tokens per s per sequence (GPU)"] * max(
        1.0, min(v["LLM batch reached (mean in flight, this run)"], v["LLM batch that saturates the GPU"])
    )
    tts_audio_s = audio_min * 60 * 1.0  # each channel speaks in turn: rendered speech ~ dialogue length
    tts_full = tts_audio_s * v["TTS GPU real-time factor, one stream"] / v["TTS batch that saturates the GPU"]
    tts_reached = (
        tts_audio_s
        * v["TTS GPU real-time factor, one stream"]
        / max(1.0, min(v["TTS batch reached"], v["TTS batch that saturates the GPU"]))
    )
    cpu_mix = audio_min * (
        v["mix + encode CPU s per audio minute"]
        + v["augment CPU s per audio minute"]
        + v["shard write CPU s per audio minute"]
    )
    wave = max(16, 4 * 2 * args.concurrency)  # factory.config RunSection.wave_size, null, scripts over HTTP
    out_rows = [
        ("dialogues", n, "target"),
        ("audio hours", audio_min / 60, "dialogues x mean dialogue length"),
        ("LLM output tokens", tokens, "audio minutes x words/min x tokens/word (prompt prefill not counted)"),
        ("LLM GPU-hours at the batch reached", tokens / llm_rate_reached / 3600, "tokens / (tok/s/seq x batch)"),
        ("LLM GPU-hours at a full batch", tokens / llm_rate_full / 3600, "tokens / (tok/s/seq x saturating batch)"),
        ("TTS GPU-hours at the batch reached", tts_reached / 3600, "speech s x RTF / batch reached"),
        ("TTS GPU-hours at a full batch", tts_full / 3600, "speech s x RTF / saturating batch"),
        ("mix + augment + encode CPU-hours", cpu_mix / 3600, "audio minutes x (mix+encode + augment + shard write)"),
        (
            "TB written (data)",
            audio_min * v["bytes per audio minute (data/*.parquet)"] / 1e12,
            "audio minutes x bytes per audio minute",
        ),
        ("tasks (shards)", math.ceil(n / v["samples per shard"]), "dialogues / samples per shard"),
        (
            "finalize: peak memory of its process, GB",
            v["finalize peak RSS, MB"] / 1000,
            "measured (streamed: flat in the run's size, so not scaled by dialogues)",
        ),
        (
            "finalize: time, hours (one process)",
            n * v["finalize seconds per 1,000 dialogues"] / 1000 / 3600,
            "dialogues x measured seconds per 1,000",
        ),
        (
            "audio a shard worker holds in memory, GB",
            wave * mean_s * v["sample rate Hz"] * 2 * 4 * (1 + v["augmented share"]) / 1e9,
            f"dialogues in the engine at once (run.wave_size's default over HTTP: 4 x 2 x llm.concurrency = {wave}) "
            "x length x rate x 2 ch x float32 x (clean + augmented share); a shard streams finished dialogues "
            "to its file, so not the shard's size (benchmarks/results/memory.md)",
        ),
    ]
    return {
        "inputs": [{"name": k, "value": val, "source": src} for k, (val, src) in inputs.items()],
        "rows": [{"quantity": q, "value": val, "how": how} for q, val, how in out_rows],
        "notes": [
            "Whisper QA is off in these runs; on real TTS it is a third GPU stage, not projected here.",
            "LLM GPU time counts decode only; with prefix caching the per-turn history prefill is small.",
            "Rendered speech is taken as the dialogue length (overlaps and pauses roughly cancel).",
        ],
    }


# --------------------------------------------------------------------------- report
def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:,.3f}" if abs(x) < 100 else f"{x:,.1f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


MEASURED = [
    ("wall s", "wall_s"),
    ("CPU s (tree)", "cpu_s"),
    ("ms / dialogue", None),
    ("ok / rejected", None),
    ("peak RSS self MiB", "peak_rss_self_mib"),
    ("peak RSS tree MiB", "peak_rss_tree_mib"),
    ("flow RSS peak, sampled: while dialogues are made", "flow_rss_peak_running_mib"),
    ("flow RSS peak, sampled: after the last one (finalize)", "flow_rss_peak_after_mib"),
    ("LLM requests / dialogue", None),
    ("LLM max in flight", "llm_max_in_flight"),
    ("LLM mean in flight", "llm_mean_in_flight"),
    ("audio minutes", "audio_minutes"),
    ("data MB", None),
    ("load avg (start, end)", None),
    ("server up / 1st dialogue / tail s", None),
]


def _cell(r: dict[str, Any], label: str, key: str | None) -> str:
    if key:
        return _fmt(r.get(key, "-")) if r.get(key) is not None else "-"
    if label == "ms / dialogue":
        return _fmt(1000 * r["wall_s"] / r["n"])
    if label == "ok / rejected":
        return f"{r['ok']} / {r['rejected']}"
    if label == "LLM requests / dialogue":
        return _fmt(r["llm_requests"] / r["n"])
    if label == "data MB":
        return _fmt(r["data_bytes"] / 1e6) if "data_bytes" in r else "-"
    if label == "server up / 1st dialogue / tail s":
        m = r.get("marks_s") or {}
        if "server_up" not in m:
            return "-"
        tail = r["wall_s"] - m.get("last_sample", r["wall_s"])
        return f"{m['server_up']:.1f} / {m.get('first_sample', 0):.1f} / {tail:.1f}"
    if label == "load avg (start, end)":
        return ", ".join(f"{x:.1f}" for x in r["load_avg_1min"])
    return "-"


def tables(result: dict[str, Any]) -> tuple[list[Table], str]:
    rows, over, proj = result["rows"], result["overhead"], result["projection"]
    heads = [f"{r['mode']} n={r['n']}" for r in rows]
    t1 = Table(title="Measured runs")
    t1.add_column("metric")
    for h in heads:
        t1.add_column(h, justify="right")
    md = [
        f"# Scale benchmark ({result['meta']['when']})",
        "",
        f"{result['meta']['machine']}, {result['meta']['cpus']} CPUs (shared with other jobs). "
        f"Settings: {result['meta']['settings']}.",
        "",
        "Stand-ins: LLM = `tests/latency_server.py` (fixed latency, counts requests in flight); TTS = espeak "
        "(espeak-gb-m3 / espeak-us-f3), Whisper QA off. Each row is a fresh process with a fresh run folder, "
        "TTS cache and Prefect home; only the OS page cache (imports, espeak data) is warm. "
        "`flow` = `flows.generate.run_generate` with its own Prefect server; `direct` = "
        "`factory.engine.build_shard` one dialogue at a time (same dialogues, no flow/shards/run folder).",
        "",
        "| metric | " + " | ".join(heads) + " |",
        "|---|" + "---:|" * len(heads),
    ]
    for label, key in MEASURED:
        cells = [_cell(r, label, key) for r in rows]
        t1.add_row(label, *cells)
        md.append(f"| {label} | " + " | ".join(cells) + " |")
    t2 = Table(title="Orchestration overhead (flow - direct)")
    cols = [
        ("n", "n"),
        ("flow ms/dlg", "flow_ms_per_dialogue"),
        ("direct ms/dlg", "direct_ms_per_dialogue"),
        ("overhead wall ms/dlg", "overhead_wall_ms_per_dialogue"),
        ("overhead CPU ms/dlg", "overhead_cpu_ms_per_dialogue"),
        ("marginal wall ms/dlg", "marginal_overhead_wall_ms_per_dialogue"),
        ("marginal CPU ms/dlg", "marginal_overhead_cpu_ms_per_dialogue"),
    ]
    for c, _ in cols:
        t2.add_column(c, justify="right")
    md += [
        "",
        "## Orchestration overhead",
        "",
        "overhead = (flow - direct) / n, wall and CPU (whole process tree); marginal = slope between the sizes "
        "(fixed costs such as the Prefect server start removed). Goal: <= 5 ms per dialogue.",
        "",
        "| " + " | ".join(c for c, _ in cols) + " |",
        "|" + "---:|" * len(cols),
    ]
    for o in over:
        cells = [_fmt(o[k]) if k in o else "-" for _, k in cols]
        t2.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    flows = sorted((r for r in rows if r["mode"] == "flow"), key=lambda r: r["n"])
    gap_rows = [(r["n"], shard_gaps(r)) for r in flows]
    if any(g for _, g in gap_rows):
        md += [
            "",
            "Where the flow's extra time goes (from per-shard sample times, shards one after another): startup = "
            "process start to the first dialogue minus one dialogue (Prefect server, flow and task start, "
            "preflight); shard machinery = gap between one shard's last dialogue and the next one's first, minus "
            "one dialogue (audit gate, parquet write, read-back check, publish, next task); tail = last dialogue "
            "to the end (last shard's machinery, finalize: manifest, dedup, card, artifacts).",
            "",
            "| n | median s / dialogue in a shard | startup s | shard machinery s / shard | "
            "shard machinery ms / dialogue | tail s |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for n, g in gap_rows:
            if g:
                md.append(
                    f"| {n} | {g['median_sample_s']:.3f} | {g['startup_s']:.1f} | {g['median_shard_machinery_s']:.2f} "
                    f"| {g['shard_machinery_ms_per_dialogue']:.1f} | {g['tail_s']:.1f} |"
                )
    if len(flows) >= 2:
        a, b = flows[0], flows[-1]
        md += [
            "",
            f"Peak RSS n={b['n']} / n={a['n']}: flow process {b['peak_rss_self_mib'] / a['peak_rss_self_mib']:.3f}x, "
            f"process tree {b['peak_rss_tree_mib'] / a['peak_rss_tree_mib']:.3f}x (goal <= 1.1x).",
        ]
        roles = sorted(set(a.get("peak_rss_by_role_mib", {})) & set(b.get("peak_rss_by_role_mib", {})))
        if roles:
            md += ["", "Peak RSS per process (MiB; for a role with several processes, the highest one's peak):", ""]
            md += ["| role | processes | " + " | ".join(f"n={r['n']}" for r in flows) + " | ratio |", "|---|---|"]
            md[-1] += "---:|" * (len(flows) + 1)
            for role in roles:
                peaks = [r["peak_rss_by_role_mib"][role] for r in flows]
                counts = "/".join(str(r["processes_by_role"].get(role, 0)) for r in flows)
                cells = " | ".join(f"{v:,.1f}" for v in peaks)
                md.append(f"| {role} | {counts} | {cells} | {peaks[-1] / peaks[0]:.3f}x |")
        for r in flows:
            if r.get("flow_rss_curve_mib"):
                md.append("")
                md.append(
                    f"Flow process RSS (MiB) at each tenth of n={r['n']}: "
                    + ", ".join(f"{v:,.0f}" for _, v in r["flow_rss_curve_mib"])
                )
            if r.get("flow_heap_curve_mib"):
                md.append("")
                md.append(
                    f"Flow process C heap (MiB, in use / free in the arenas) at each tenth of n={r['n']}: "
                    + ", ".join(f"{used:,.0f} / {free:,.0f}" for _, used, free in r["flow_heap_curve_mib"])
                )
    t3 = Table(title=f"Projection: {proj['rows'][0]['value']:,} dialogues")
    for c in ("quantity", "value", "how"):
        t3.add_column(c)
    md += ["", f"## Projection to {proj['rows'][0]['value']:,} dialogues", "", "| quantity | value | how |"]
    md.append("|---|---:|---|")
    for r in proj["rows"]:
        t3.add_row(r["quantity"], _fmt(r["value"]), r["how"])
        md.append(f"| {r['quantity']} | {_fmt(r['value'])} | {r['how']} |")
    md += ["", "Inputs:", "", "| input | value | source |", "|---|---:|---|"]
    md += [f"| {i['name']} | {_fmt(i['value'])} | {i['source']} |" for i in proj["inputs"]]
    md += ["", *[f"- {note}" for note in proj["notes"]]]
    return [t1, t2, t3], "\n".join(md) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        mode, n, out, tick = sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
        _child(mode, n, sys.argv[7:], out, tick)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 2000], help="dialogues per run")
    ap.add_argument("--quick", action="store_true", help="20 and 60 dialogues, results to scale-quick.*")
    ap.add_argument("--latency", type=float, default=0.05, help="latency server answer delay, s")
    ap.add_argument("--concurrency", type=int, default=8, help="llm.concurrency")
    ap.add_argument("--workers", type=int, default=1, help="run.workers (shards at once)")
    ap.add_argument("--samples-per-shard", type=int, default=100)
    ap.add_argument("--turns", type=int, nargs=2, default=[2, 4], help="dialogue.n_turns range")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--no-direct", action="store_true", help="skip the direct baseline (no overhead figures)")
    ap.add_argument("--project", type=int, default=400_000, help="dialogues to project to")
    ap.add_argument("--tokens-per-word", type=float, default=1.3)
    ap.add_argument("--gpu-llm-tps", type=float, default=60.0, help="assumed GPU decode tok/s per sequence")
    ap.add_argument("--gpu-llm-batch", type=float, default=64.0, help="assumed batch that saturates the GPU")
    ap.add_argument("--gpu-tts-rtf", type=float, default=0.02, help="assumed GPU TTS RTF, one stream")
    ap.add_argument("--gpu-tts-batch", type=float, default=32.0, help="assumed TTS batch that saturates the GPU")
    ap.add_argument("--set", action="append", default=[], help="an extra config override (repeatable)")
    ap.add_argument("--name", help="results file stem (default scale, or scale-quick)")
    ap.add_argument(
        "--report-only", action="store_true", help="no runs: recompute overhead, projection and .md from the .json"
    )
    args = ap.parse_args()
    if args.quick:
        args.sizes = [20, 60]
        args.samples_per_shard = min(args.samples_per_shard, 20)
    name = args.name or ("scale-quick" if args.quick else "scale")
    settings = (
        f"sizes {args.sizes}, {args.turns[0]}-{args.turns[1]} turns, LLM latency {args.latency} s, "
        f"llm.concurrency {args.concurrency}, run.workers {args.workers}, "
        f"samples_per_shard {args.samples_per_shard}, seed {args.seed}"
    )
    if args.report_only:  # e.g. other projection assumptions, without running again
        result = json.loads((RESULTS / f"{name}.json").read_text())
        report(args, result, name)
        return
    console.print(f"[bold]scale benchmark[/bold]: {settings}")
    rows = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    ) as progress:
        for n in args.sizes:
            rows.append(measure(args, "flow", n, progress))
            if args.no_direct:
                continue
            try:
                rows.append(measure(args, "direct", n, progress))
            except RuntimeError as exc:  # e.g. the engine API renamed: the flow numbers still stand
                console.print(f"[yellow]direct baseline n={n} failed, no overhead figure for it:[/yellow] {exc}")
    result = {
        "meta": {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "settings": settings,
            "config_overrides": overrides(args, args.sizes[-1], Path("<tmp>"), "<latency server>"),
            "definitions": __doc__.split("Definitions\n-----------\n", 1)[1].strip(),
        },
        "rows": rows,
    }
    # The measured rows first: a failure while deriving the report must not lose an hour of runs
    # (re-derive with --report-only).
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    report(args, result, name)


def _cpu_per_min(row: dict[str, Any]) -> float:
    """A mix.json row's CPU seconds per audio minute (older files: `seconds_per_audio_minute`)."""
    return float(row.get("cpu_seconds_per_audio_minute", row.get("seconds_per_audio_minute")))


def report(args: argparse.Namespace, result: dict[str, Any], name: str) -> None:
    """Derive overhead and projection from the measured rows; print the tables, write .json and .md."""
    rows = result["rows"]
    result["overhead"] = overheads(rows)
    result.pop("finalize_dedup", None)  # older files: the in-memory dedup this replaced
    result["finalize"] = finalize_measured()
    for r in rows:
        if r["mode"] == "flow" and (g := shard_gaps(r)):
            r["shard_gaps"] = g
    result["projection"] = projection(args, [r for r in rows if r["mode"] == "flow"], result["finalize"])
    printed, md = tables(result)
    for t in printed:
        console.print(t)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(md)
    console.print(f"wrote {RESULTS / name}.json and .md")


if __name__ == "__main__":
    main()
