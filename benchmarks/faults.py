"""What faults cost a run: the same small generate run (HTTP LLM, turns mode) through the fault
proxy of tests/faults.py, once clean (rate 0) and once spoiled (10 % of chat requests dropped,
rate-limited, 500, stalled past the timeout, garbled or truncated), against one llama-cpp-python
server on SmolLM2-135M. Records requests, retries by cause, backoff slept, failures, samples ok /
rejected, and wall time lost.

    .venv/bin/python benchmarks/faults.py [--samples 4] [--rate 0.1] [--timeout 20]

Writes benchmarks/results/faults.json and .md. An untimed one-dialogue run warms up first. Both
runs use a fresh TTS cache, so neither gets the other's renders; llama.cpp's server reuses KV
prefixes, so the two runs' texts can differ a little and part of the difference in wall time is
noise, not faults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# The ephemeral Prefect server's 20 s start-up limit is too short on a loaded 2-core box.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from factory.config import load_config  # noqa: E402  (after the sys.path insert)
from flows.generate import run_generate  # noqa: E402
from tests.conftest import TINY  # noqa: E402
from tests.faults import fault_proxy  # noqa: E402
from tests.servers import LLAMA_READY_S, free_port, llama_command, start_server, stop_server  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def one_run(upstream: str, tmp: Path, name: str, rate: float, args: argparse.Namespace) -> dict:
    with fault_proxy(upstream, seed=args.seed, rate=rate, slow_s=args.timeout + 2) as proxy:
        cfg = load_config(
            None,
            [
                *TINY,
                f"run.seed={args.seed}",
                f"run.n_samples={args.samples}",
                f"run.samples_per_shard={args.samples}",
                f"run.output_dir={tmp / 'runs'}",
                f"run.run_id={name}",
                "llm.backend=http",
                f"llm.base_url={proxy.base_url}",
                f"llm.timeout_s={args.timeout}",
                "llm.concurrency=1",
                f"tts.cache_dir={tmp / f'tts-{name}'}",
            ],
        )
        start = time.perf_counter()
        summary = run_generate(cfg)
        wall = time.perf_counter() - start
    stats = summary.llm_http
    assert stats is not None  # the HTTP backend counts its requests
    return {
        "run": name,
        "fault_rate": rate,
        "samples": args.samples,
        "ok": summary.ok,
        "rejected": summary.rejected,
        "requests": stats.requests,
        "injected": dict(sorted(proxy.injected.items())),
        "retries": stats.retries,
        "failures": stats.failures,
        "backoff_s": stats.backoff_s,
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.10)
    parser.add_argument("--timeout", type=float, default=20.0, help="llm.timeout_s; a stalled request costs this")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        server = start_server("llama.cpp server", llama_command(port), port, tmp / "server.log", LLAMA_READY_S)
        try:
            # Untimed first: Prefect's server, Whisper, the voices and the LLM's first prompt load once.
            one_run(server.base_url, tmp, "warm-up", 0.0, argparse.Namespace(**{**vars(args), "samples": 1}))
            rows = [
                one_run(server.base_url, tmp, name, rate, args)
                for name, rate in (("clean", 0.0), ("faulty", args.rate))
            ]
        finally:
            stop_server(server)
    clean, faulty = rows
    lost = {
        "wall_s_lost": round(faulty["wall_s"] - clean["wall_s"], 1),
        "wall_share_lost": round(faulty["wall_s"] / clean["wall_s"] - 1, 3),
    }

    table = Table(
        title=f"fault injection, {args.samples} dialogues, llama.cpp SmolLM2-135M, timeout {args.timeout:g} s"
    )
    for column in ("run", "ok/rejected", "requests", "injected", "retries by cause", "failures", "backoff s", "wall s"):
        table.add_column(column)
    md = [
        "# Fault injection: retries by cause and time lost",
        "",
        f"`benchmarks/faults.py --samples {args.samples} --rate {args.rate} --timeout {args.timeout:g}`, "
        f"{platform.machine()}, {os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d}. "
        "HTTP LLM (turns mode) through tests/faults.py's proxy to llama-cpp-python's server; fresh TTS cache per run.",
        "",
        "| run | ok / rejected | requests | injected | retries by cause | failures | backoff s | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r["run"],
            f"{r['ok']} / {r['rejected']}",
            str(r["requests"]),
            ", ".join(f"{k} {n}" for k, n in r["injected"].items()) or "-",
            ", ".join(f"{k} {n}" for k, n in r["retries"].items()) or "-",
            ", ".join(f"{k} {n}" for k, n in r["failures"].items()) or "-",
            f"{r['backoff_s']:g}",
            f"{r['wall_s']:g}",
        ]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    md += ["", f"Wall time lost to faults: {lost['wall_s_lost']:g} s ({lost['wall_share_lost']:+.0%})."]
    Console().print(table)
    print(md[-1])

    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "args": vars(args),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "faults.json").write_text(json.dumps({"meta": meta, "results": rows, **lost}, indent=2) + "\n")
    (RESULTS / "faults.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
