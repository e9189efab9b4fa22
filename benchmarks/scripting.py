"""Cost of the script stage on this machine: writing, validating and deduplicating scripts.

    .venv/bin/python benchmarks/scripting.py [--dialogues 4] [--parse 2000] [--dedup 5000]

- write_script with the embedded SmolLM2 (llama.cpp, config from `factory.config.load_config`)
  on a few seeded scenarios: scripts/s, s/script, turns/s, rejected scripts; twice in the same
  run, every prompt evaluated from scratch and with block-aligned prefix reuse
  (`factory.llm.llama_prefix`), which must write the same scripts;
- parse_script (the capable-LLM path's validation and repair) per script in µs, on the written
  scripts in the LLM-facing format (`script_to_response`) and on malformed variants, with
  calibrate_marks per script beside it;
- NearDuplicateIndex.add per script in µs (MinHash 128 perms over word 3-grams + LSH query and
  insert) at a few index sizes, and signature alone.

Prints a table and writes benchmarks/results/scripting.json and scripting.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from factory.config import load_config
from factory.llm import get_llm
from factory.models import Script, ScriptTurn
from factory.script.calibrate import calibrate_marks
from factory.script.compose import write_script
from factory.script.dedup import NearDuplicateIndex, signature
from factory.script.lexicon import behaviour_for
from factory.script.outcomes import ScriptRejected
from factory.script.parse import parse_script
from factory.script.response import script_to_response
from factory.script.scenario import draw_scenario
from factory.script.text_checks import TurnRejected
from factory.seeding import rng_for

RESULTS = Path(__file__).with_name("results")


def bench_write(cfg, n: int, reuse: bool) -> tuple[dict, list[tuple[Script, object]]]:
    llm = get_llm("embedded", model_path=cfg.llm.model_path, n_threads=cfg.llm.n_threads)
    llama = llm._llama  # type: ignore[attr-defined]
    llama.forget_states()
    if not reuse:
        complete = llm.complete

        def from_scratch(*args, **kwargs):
            llama.forget_states()
            return complete(*args, **kwargs)

        llm.complete = from_scratch  # type: ignore[method-assign]
    reused, prompt = llama.reused_tokens, llama.prompt_tokens
    written, rejected, times, turns, words = [], 0, [], 0, 0
    for k in range(n):
        key = f"bench-{k}"
        scenario = draw_scenario(
            key, rng_for(cfg.run.seed, key, "scenario"), cfg.dialogue.mode_weights, cfg.dialogue.n_turns
        )
        start = time.perf_counter()
        try:
            script = write_script(llm, scenario, cfg, key)
        except TurnRejected:
            rejected += 1
            times.append(time.perf_counter() - start)
            continue
        times.append(time.perf_counter() - start)
        written.append((script, scenario))
        turns += len(script.turns)
        words += sum(len(t.text.split()) for t in script.turns)
    total = sum(times)
    return {
        "stage": "write_script",
        "variant": f"{llm.name}, n_threads={cfg.llm.n_threads}, "
        + ("prefix reuse" if reuse else "every prompt from scratch"),
        "prompt_tokens": llama.prompt_tokens - prompt,
        "reused_tokens": llama.reused_tokens - reused,
        "dialogues": n,
        "rejected": rejected,
        "scripts_per_s": round(len(written) / total, 4) if total else None,
        "s_per_script_median": round(statistics.median(times), 2),
        "turns_per_s": round(turns / total, 3),
        "words_per_s": round(words / total, 2),
        "wall_s": round(total, 1),
    }, written


def _time_us(fn, inputs: list, repeat: int) -> float:
    """Median over `repeat` passes of the mean µs per call over all inputs."""
    passes = []
    for _ in range(repeat):
        start = time.perf_counter()
        for x in inputs:
            fn(x)
        passes.append((time.perf_counter() - start) / len(inputs) * 1e6)
    return statistics.median(passes)


def bench_parse(cfg, written: list, n: int) -> list[dict]:
    rows = []
    pairs = [(json.dumps(script_to_response(s)), s, sc) for s, sc in written]
    rng = np.random.default_rng(0)
    inputs = [pairs[int(rng.integers(len(pairs)))] for _ in range(n)]

    def parse(item):
        raw, _, scenario = item
        try:
            parse_script(raw, scenario.model_copy(update={"n_turns": 64}), min_words=1, max_words=400)
        except ScriptRejected:
            pass

    rows.append(
        {
            "stage": "parse_script",
            "variant": "well-formed (SmolLM2 scripts in the LLM format)",
            "scripts": n,
            "us_per_script": round(_time_us(parse, inputs, 3), 1),
            "mean_chars": round(statistics.mean(len(r) for r, _, _ in inputs)),
        }
    )

    def messy(item):
        raw, s, sc = item
        return ("Here is the dialogue:\n```json\n" + raw.replace('"', "'")[:-2] + ",]}\n```", s, sc)

    messy_inputs = [messy(x) for x in inputs]
    rows.append(
        {
            "stage": "parse_script",
            "variant": "messy (fences + single quotes + trailing comma)",
            "scripts": n,
            "us_per_script": round(_time_us(parse, messy_inputs, 3), 1),
        }
    )
    bad = [(raw[: len(raw) // 3] + "garbage", s, sc) for raw, s, sc in inputs]
    rows.append(
        {
            "stage": "parse_script",
            "variant": "unreadable (truncated + garbage, rejected)",
            "scripts": n,
            "us_per_script": round(_time_us(parse, bad, 3), 1),
        }
    )

    bare = [
        Script(
            scenario_id=s.scenario_id, llm=s.llm, turns=[ScriptTurn(speaker=t.speaker, text=t.text) for t in s.turns]
        )
        for _, s, _ in inputs
    ]
    k = iter(range(10**9))
    rows.append(
        {
            "stage": "calibrate_marks",
            "variant": "no proposed marks (adds all)",
            "scripts": n,
            "us_per_script": round(
                _time_us(
                    lambda s: calibrate_marks(
                        s, rng_for(1, str(next(k)), "c"), behaviour_for(cfg.behaviour, "en"), cfg.timing.pause_median
                    ),
                    bare,
                    3,
                ),
                1,
            ),
        }
    )
    return rows


def bench_dedup(texts: list[str], sizes: list[int]) -> list[dict]:
    rows = [
        {
            "stage": "dedup",
            "variant": "signature only (128 perms, word 3-grams)",
            "scripts": len(texts),
            "us_per_script": round(_time_us(signature, texts, 3), 1),
        }
    ]
    for size in sizes:
        index = NearDuplicateIndex()
        start = time.perf_counter()
        dups = sum(index.add(str(i), t) is not None for i, t in enumerate(texts[:size]))
        us = (time.perf_counter() - start) / size * 1e6
        rows.append(
            {
                "stage": "dedup",
                "variant": f"NearDuplicateIndex.add, index of {size}",
                "scripts": size,
                "us_per_script": round(us, 1),
                "duplicates_found": dups,
            }
        )
    return rows


def synthetic_texts(base: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """`n` dialogue texts: word-shuffled recombinations of real written turns, with ~5% near copies."""
    words = " ".join(base).split()
    out = []
    for _ in range(n):
        if out and rng.random() < 0.05:
            w = out[int(rng.integers(len(out)))].split()
            w[int(rng.integers(len(w)))] = "really"
            out.append(" ".join(w))
        else:
            out.append(" ".join(rng.choice(words, size=int(rng.integers(80, 220)))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dialogues", type=int, default=4)
    ap.add_argument("--parse", type=int, default=2000)
    ap.add_argument("--dedup", type=int, default=5000)
    args = ap.parse_args()
    cfg = load_config()
    scratch_row, scratch = bench_write(cfg, args.dialogues, reuse=False)
    print(json.dumps(scratch_row))
    write_row, written = bench_write(cfg, args.dialogues, reuse=True)
    print(json.dumps(write_row))
    if [s for s, _ in written] != [s for s, _ in scratch]:
        raise SystemExit("prefix reuse changed a script: the embedded LLM is not deterministic")
    if not written:
        raise SystemExit("no script written")
    write_row["speedup_vs_scratch"] = round(scratch_row["wall_s"] / write_row["wall_s"], 2)
    rows = [scratch_row, write_row, *bench_parse(cfg, written, args.parse)]
    texts = synthetic_texts([t.text for s, _ in written for t in s.turns], args.dedup, np.random.default_rng(0))
    rows += bench_dedup(texts, sorted({min(500, args.dedup), args.dedup}))

    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    when = datetime.now(UTC).isoformat(timespec="seconds")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scripting.json").write_text(
        json.dumps({"when": when, "machine": machine, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        f"# Script stage ({when})",
        "",
        machine + f"; config defaults (seed {cfg.run.seed}, "
        f"{cfg.dialogue.n_turns[0]}-{cfg.dialogue.n_turns[1]} turns); 1-min load average at the end "
        f"{os.getloadavg()[0]:.1f}.",
        "",
        "| stage | variant | n | result |",
        "|---|---|---:|---|",
    ]
    for r in rows:
        if r["stage"] == "write_script":
            result = (
                f"{r['scripts_per_s']} scripts/s ({r['s_per_script_median']} s/script median, "
                f"{r['turns_per_s']} turns/s, {r['words_per_s']} words/s, {r['rejected']} rejected; "
                f"{r['reused_tokens']} of {r['prompt_tokens']} prompt tokens reused"
                + (f"; {r['speedup_vs_scratch']}x from scratch's wall" if "speedup_vs_scratch" in r else "")
                + ")"
            )
            n = r["dialogues"]
        else:
            result = f"{r['us_per_script']} µs/script" + (
                f", {r['duplicates_found']} duplicates" if "duplicates_found" in r else ""
            )
            n = r["scripts"]
        lines.append(f"| {r['stage']} | {r['variant']} | {n} | {result} |")
    table = "\n".join(lines) + "\n"
    (RESULTS / "scripting.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
