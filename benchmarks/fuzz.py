"""The script-parser fuzz at scale: tests/test_script_fuzz.py's seeded mutation generator (imported,
not copied) for many more cases than CI runs, with outcomes by reason and mutation and the time
per case.

    .venv/bin/python benchmarks/fuzz.py [--cases 10000] [--seed 20240611]

Each case is `run()` from the test: "ok" (accepted and valid) or the documented rejection reason.
Anything else is counted, not raised: "invalid_accepted" (an accepted script failed the test's
validity checks) and "crash: <exception>" (an exception other than ScriptRejected escaped); a
healthy parser has none of either.

Prints a table and writes benchmarks/results/fuzz.json and fuzz.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_script_fuzz import _mutate, run  # noqa: E402
from tests.test_script_parse import valid_response  # noqa: E402

RESULTS = Path(__file__).with_name("results")


def one_case(raw: str) -> str:
    try:
        return run(raw)
    except AssertionError:
        return "invalid_accepted"
    except Exception as exc:  # noqa: BLE001 - a crash is a finding to count, not to stop on
        return f"crash: {type(exc).__name__}"


def fuzz(n: int, seed: int) -> dict:
    """The test's case stream (same draws per case as `test_fuzz_mutations`), `n` cases long."""
    rng = np.random.default_rng(seed)
    outcomes: Counter = Counter()
    by_kind: dict[str, Counter] = {}
    times = []
    for _ in range(n):
        response = valid_response(rng, n_turns=int(rng.integers(2, 5)))
        raw, kind = _mutate(rng, response)
        if rng.random() < 0.1:  # a token-limit cut on top, as in the test
            raw, kind = raw[: len(raw) // 2], kind + "+truncate"
        start = time.perf_counter()
        result = one_case(raw)
        times.append(time.perf_counter() - start)
        outcomes[result] += 1
        by_kind.setdefault(kind.removesuffix("+truncate"), Counter())[result] += 1
    us = np.array(times) * 1e6
    return {
        "cases": n,
        "seed": seed,
        "outcomes": dict(outcomes.most_common()),
        "by_mutation": {k: dict(v.most_common()) for k, v in sorted(by_kind.items())},
        "us_per_case": {
            "mean": round(float(us.mean()), 1),
            "median": round(statistics.median(us.tolist()), 1),
            "p99": round(float(np.percentile(us, 99)), 1),
            "max": round(float(us.max()), 1),
        },
        "total_s": round(float(us.sum() / 1e6), 2),
    }


def table(result: dict, when: str, machine: str) -> str:
    n, us = result["cases"], result["us_per_case"]
    lines = [
        f"# Script-parser fuzz ({when})",
        "",
        f"{machine}; {n} cases, seed {result['seed']} (tests/test_script_fuzz.py generator; CI runs 1,200).",
        f"Time per case: mean {us['mean']} µs, median {us['median']} µs, p99 {us['p99']} µs, max {us['max']} µs "
        f"({result['total_s']} s in parse_script and checks).",
        "",
        "| outcome | cases | share |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {v} | {v / n:.1%} |" for k, v in result["outcomes"].items()]
    lines += ["", "| mutation | cases | ok | rejected (top reasons) | other |", "|---|---:|---:|---|---:|"]
    for kind, counts in result["by_mutation"].items():
        total = sum(counts.values())
        reasons = {k: v for k, v in counts.items() if k != "ok" and k != "invalid_accepted" and ":" not in k}
        other = total - counts.get("ok", 0) - sum(reasons.values())
        top = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        lines.append(f"| {kind} | {total} | {counts.get('ok', 0)} | {top} | {other} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=20240611)
    args = ap.parse_args()
    result = fuzz(args.cases, args.seed)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    when = datetime.now(UTC).isoformat(timespec="seconds")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fuzz.json").write_text(json.dumps({"when": when, "machine": machine, **result}, indent=2) + "\n")
    text = table(result, when, machine)
    (RESULTS / "fuzz.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
