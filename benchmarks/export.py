"""Export speed: dialogue-minutes exported per second, per format, with audio tokenization
included and excluded, against the run's own storage (HF parquet rows, `factory.run.rows`) as
the baseline measured in the same process.

Dialogues: tests/export_fixtures.make_sample (the real timeline planner over word-shaped noise
bursts, ~19 s, 16 kHz stereo, with a barge-in, backchannels and a failed interruption). The
export's cost does not depend on what the words sound like: the units tokenizer computes a
log-mel and a nearest centroid per frame whatever the audio.

"excluded" = the export's wall time minus the time spent inside the audio tokenizer's
encode_batch (the report's `seconds_tokenize`, timed around exactly that call). The units
codebook fit (once per frame rate, k=256, on all dialogues) is reported on its own line.

    python benchmarks/export.py [--dialogues 24]   # writes benchmarks/results/export.{json,md}
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

FORMATS = ["bayling", "dgslm", "lslm", "units-1s"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dialogues", type=int, default=24)
    parser.add_argument("--k", type=int, default=256)
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from factory.export.options import ExportOptions
    from factory.export.registry import get_format
    from factory.models import Channel
    from factory.run.rows import write_shard
    from factory.tokenize import fit_units, get_text_tokenizer
    from tests.export_fixtures import make_sample

    samples = [make_sample(seed) for seed in range(args.dialogues)]
    minutes = sum(s.duration for s in samples) / 60
    text_tok = get_text_tokenizer(None)
    rows, fits = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
        t0 = time.perf_counter()
        write_shard(samples, Path(tmp) / "baseline.parquet", samples[0].sample_rate)
        baseline_s = time.perf_counter() - t0
        rows.append({"format": "hf parquet (baseline)", "seconds": baseline_s, "seconds_tokenize": 0.0})
        for name in FORMATS:
            module = get_format(name)
            rate = module.frame_rate
            if rate not in fits:
                t0 = time.perf_counter()
                audios = [s.stems[:, ch.index] for s in samples for ch in Channel]
                fits[rate] = (fit_units(audios, samples[0].sample_rate, rate, args.k, 0), time.perf_counter() - t0)
                fits[rate][0].encode(audios[0], samples[0].sample_rate)  # warm-up (librosa caches), not timed
            opts = ExportOptions(audio_tokenizer_obj=fits[rate][0], text_tokenizer_obj=text_tok)
            t0 = time.perf_counter()
            report = module.export(samples, Path(tmp) / name, opts)
            seconds = time.perf_counter() - t0
            assert report.samples_out == len(samples)
            rows.append({"format": name, "seconds": seconds, "seconds_tokenize": report.seconds_tokenize})
    for r in rows:
        r["dialogue_min_per_s_included"] = minutes / r["seconds"]
        excluded = r["seconds"] - r["seconds_tokenize"]
        r["dialogue_min_per_s_excluded"] = minutes / excluded if excluded > 0 else None
    result = {
        "dialogues": len(samples),
        "dialogue_minutes": minutes,
        "units_k": args.k,
        "units_fit_seconds": {str(rate): fit[1] for rate, fit in fits.items()},
        "rows": rows,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "export.json").write_text(json.dumps(result, indent=2) + "\n")

    table = Table(title=f"export speed: {len(samples)} dialogues, {minutes:.1f} dialogue-minutes")
    for header in ("format", "wall s", "tokenize s", "dlg-min/s incl. tokens", "dlg-min/s excl. tokens"):
        table.add_column(header, justify="right" if header != "format" else "left")
    md = ["| format | wall s | tokenize s | dialogue-min/s incl. | dialogue-min/s excl. |", "|---|---|---|---|---|"]
    for r in rows:
        excl = f"{r['dialogue_min_per_s_excluded']:.1f}" if r["dialogue_min_per_s_excluded"] else "-"
        cells = [
            r["format"],
            f"{r['seconds']:.2f}",
            f"{r['seconds_tokenize']:.2f}",
            f"{r['dialogue_min_per_s_included']:.1f}",
            excl,
        ]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    fit_note = ", ".join(f"{rate:g} Hz {fit[1]:.1f} s" for rate, fit in fits.items())
    md.append(f"\nunits codebook fit (k={args.k}, all dialogues): {fit_note}")
    (out / "export.md").write_text("\n".join(md) + "\n")
    console = Console(width=max(Console().width, 110))
    console.print(table)
    console.print(f"units codebook fit (k={args.k}): {fit_note}")


if __name__ == "__main__":
    main()
