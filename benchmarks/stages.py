"""Time each stage of a small run on this machine and record the table.

    .venv/bin/python benchmarks/stages.py [--samples 4] [--seed 5]

Prints a table and writes benchmarks/results/stages.json and stages.md. Baselines measured in
the same run: llama.cpp with 1 vs 2 threads; TTS real-time factor per backend on the same
sentences; the mix stage against a bare FLAC encode of the same audio.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from factory.audio.mix import flac_bytes
from factory.config import load_config
from factory.engine import StageTimes, build_shard
from factory.llm.embedded import LlamaCppBackend
from factory.models import Channel, Mode, ScriptTurn
from factory.render.registry import get_backend
from factory.render.voices import VoiceBank
from factory.run.rows import write_shard
from factory.runtime import runtime_for
from factory.script.scenario import draw_scenario
from factory.script.writer import TurnRejected, write_turn
from factory.seeding import rng_for

RESULTS = Path(__file__).with_name("results")
SENTENCES = [
    "Well, I think we could try the other route, if the weather holds.",
    "Sure, first open the settings page and check which network you are on.",
    "mm-hmm",
    "That sounds great, but what about the cost of the train tickets?",
]


def bench_llm(n_turns: int) -> list[dict]:
    rows = []
    scenario = draw_scenario("bench", rng_for(0, "bench", "scenario"), {Mode.assistant: 1.0}, (6, 6))
    for threads in (1, 2):
        llm = LlamaCppBackend(n_threads=threads)
        tokens, seconds = 0, 0.0
        history: list[ScriptTurn] = []
        for i in range(n_turns):
            speaker = Channel.user if i % 2 == 0 else Channel.agent
            start = time.perf_counter()
            try:
                text = write_turn(llm, scenario, history, speaker, seed=i, min_words=5, max_words=40)
            except TurnRejected:
                continue
            seconds += time.perf_counter() - start
            tokens += len(llm._llama.tokenize(text.encode(), add_bos=False))
            history.append(ScriptTurn(speaker=speaker, text=text))
        rows.append(
            {
                "stage": "llm",
                "variant": f"llama.cpp SmolLM2-135M n_threads={threads}",
                "metric": "tokens/s (clean output tokens / wall s, prompt included)",
                "value": tokens / seconds if seconds else float("nan"),
                "seconds_per_turn": seconds / max(len(history), 1),
            }
        )
    return rows


def bench_tts(repeats: int) -> list[dict]:
    bank = VoiceBank.load(Path("voices"))
    rows, seen = [], set()
    for voice in bank:
        if voice.backend in seen or voice.backend == "coqui":
            continue
        seen.add(voice.backend)
        backend = get_backend(voice.backend)
        backend.synthesize(SENTENCES[0], voice)  # warm-up: model load
        synth, audio = 0.0, 0.0
        for _ in range(repeats):
            for sentence in SENTENCES:
                start = time.perf_counter()
                utt = backend.synthesize(sentence, voice)
                synth += time.perf_counter() - start
                audio += utt.duration
        rows.append(
            {
                "stage": "tts",
                "variant": f"{voice.backend} ({voice.id})",
                "metric": "real-time factor",
                "value": synth / audio,
            }
        )
    return rows


def bench_pipeline(samples: int, seed: int) -> list[dict]:
    # No TTS cache (it would turn repeated runs into cache hits); intelligibility QA on, as by default.
    # One dialogue at a time (waves of one, in this process): the cost of each stage alone.
    overrides = [f"run.seed={seed}", f"run.n_samples={samples}", "tts.cache_dir=null"]
    cfg = load_config(None, [*overrides, "run.wave_size=1", "run.processes=1"])
    times = StageTimes()
    results, stats = build_shard(runtime_for(cfg), range(samples), "bench")
    times.seconds.update(stats.seconds)
    durations = [r.manifest.duration for r in results if r.sample is not None]
    rows_out = [r.sample for r in results if r.sample is not None]
    with tempfile.TemporaryDirectory() as tmp, times("write shard"):
        write_shard(rows_out, Path(tmp) / "bench.parquet", cfg.audio.sample_rate)
    minutes = sum(durations) / 60
    # Baseline: encoding the same amount of stereo audio to FLAC, nothing else.
    noise = (np.random.default_rng(0).standard_normal((int(60 * cfg.audio.sample_rate), 2)) * 0.05).astype(np.float32)
    start = time.perf_counter()
    flac_bytes(noise, cfg.audio.sample_rate)
    flac_minute = time.perf_counter() - start
    rows = [
        {
            "stage": "run",
            "variant": f"{len(durations)}/{samples} dialogues ok",
            "metric": "audio minutes",
            "value": minutes,
        }
    ]
    for stage, seconds in times.seconds.items():
        rows.append(
            {
                "stage": stage,
                "variant": "per dialogue-minute",
                "metric": "wall s / audio min",
                "value": seconds / minutes if minutes else float("nan"),
            }
        )
    rows.append(
        {
            "stage": "encode baseline",
            "variant": "bare FLAC encode of 1 min stereo",
            "metric": "wall s / audio min",
            "value": flac_minute,
        }
    )
    total = sum(times.seconds.values())
    rows.append({"stage": "total", "variant": "all stages", "metric": "wall s / audio min", "value": total / minutes})
    rows.append(
        {
            "stage": "total",
            "variant": "mean dialogue length",
            "metric": "s",
            "value": statistics.mean(durations) if durations else float("nan"),
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--llm-turns", type=int, default=8)
    parser.add_argument("--tts-repeats", type=int, default=3)
    args = parser.parse_args()

    rows = bench_llm(args.llm_turns) + bench_tts(args.tts_repeats) + bench_pipeline(args.samples, args.seed)
    table = Table(title="duplex-factory stage timings (this machine)")
    for col in ("stage", "variant", "metric", "value"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["stage"], r["variant"], r["metric"], f"{r['value']:.3f}")
    Console().print(table)

    RESULTS.mkdir(exist_ok=True)
    meta = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "cpus": __import__("os").cpu_count(),
        "args": vars(args),
    }
    (RESULTS / "stages.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    md = ["| stage | variant | metric | value |", "|---|---|---|---|"]
    md += [f"| {r['stage']} | {r['variant']} | {r['metric']} | {r['value']:.3f} |" for r in rows]
    (RESULTS / "stages.md").write_text(
        f"Measured {meta['when']} on {meta['machine']}, {meta['cpus']} CPUs.\n\n" + "\n".join(md) + "\n"
    )


if __name__ == "__main__":
    main()
