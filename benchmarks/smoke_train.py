"""Smoke-train wall time and measures (torch environment).

Either an export you give (`--export DIR [--run RUN]`, e.g. of a real 200-dialogue run), or, by
default, `--dialogues N` of tests/export_fixtures' `make_cued_sample` (the real timeline planner
over noise bursts with a turn-final cue, random scripts; every 4th dialogue held out) exported as
dgslm at 50 Hz with 256 units (fitted on the first 32 dialogues). Records the wall time of the
smoke-train alone (the export is timed on its own line), the threads, and the model /
shifted-control / majority measures.

    .envs/coqui/bin/python benchmarks/smoke_train.py [--dialogues 200] [--steps 400] [--threads 2]
        # writes benchmarks/results/smoke_train.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--export", type=Path, default=None)
    parser.add_argument("--run", default=None)
    parser.add_argument("--dialogues", type=int, default=200)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from factory.vap.smoke import smoke_train

    timelines, export_s, source = None, None, str(args.export)
    with tempfile.TemporaryDirectory(prefix="smoke-bench-") as tmp:
        export_dir = args.export
        if export_dir is None:
            from factory.export import dgslm
            from factory.export.options import ExportOptions
            from factory.export.output import UNITS_CODEBOOK
            from tests.export_fixtures import make_cued_sample

            samples = [make_cued_sample(i, "dev" if i % 4 == 0 else "train") for i in range(args.dialogues)]
            timelines = {s.id: s.meta.timeline for s in samples}
            export_dir = Path(tmp) / "dgslm"
            started = time.perf_counter()
            # the units codebook fitted on the first 32 dialogues, as `export` fits it on a run's first 64
            fit_dir = Path(tmp) / "fit"
            dgslm.Dgslm().export(samples[:32], fit_dir, ExportOptions())
            codebook = {"codebook": str(fit_dir / UNITS_CODEBOOK)}
            dgslm.Dgslm().export(samples, export_dir, ExportOptions(audio_tokenizer_options=codebook))
            export_s = time.perf_counter() - started
            minutes = sum(s.timeline.duration for s in samples) / 60
            source = (
                f"{args.dialogues} make_cued_sample dialogues ({minutes:.1f} dialogue-minutes), "
                "dgslm 50 Hz, 256 units fitted on 32"
            )
            del samples
        started = time.perf_counter()
        report = smoke_train(
            export_dir, args.run, Path(tmp) / "out", steps=args.steps, threads=args.threads, timelines=timelines
        )
        wall = time.perf_counter() - started
    result = {
        "source": source,
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "threads": args.threads,
        "steps": args.steps,
        "export_seconds": export_s,
        "smoke_train_seconds": wall,
        "report": report.model_dump(mode="json", exclude={"plot", "export"}),
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "smoke_train.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# smoke-train",
        "",
        f"{source}; {report.train_dialogues} train / {report.held_out_dialogues} held-out dialogues; "
        f"{args.steps} steps x 2 models, {args.threads} torch threads, {os.cpu_count()} CPUs "
        f"(1-min load average at the end {os.getloadavg()[0]:.1f}).",
        "",
        f"smoke-train wall time: {wall:.0f} s" + (f" (export before it: {export_s:.0f} s)" if export_s else ""),
        "",
        "| measure (balanced accuracy) | events (positive) | model | shifted control | majority |",
        "|---|---|---|---|---|",
    ]
    for name, m in report.measures.items():
        accs = [("-" if x is None else f"{x:.3f}") for x in (m.model, m.control, m.majority)]
        lines.append(f"| {name} | {m.events} ({m.positives}) | " + " | ".join(accs) + " |")
    lines += ["", f"Verdict: {report.verdict}", "", f"Rule: {report.rule}", ""]
    (out / "smoke_train.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
