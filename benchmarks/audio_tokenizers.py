"""Audio tokenizer speed (audio-seconds encoded per wall-second), one clip at a time (the
baseline) against `encode_batch`, and the moshi / nemo-duplex exports' speed (dialogue-minutes
per second) against the run's own parquet storage, all measured in the same process.

Runs in the torch environment (Mimi, EnCodec and lhotse live there):

    .envs/coqui/bin/python benchmarks/audio_tokenizers.py [--clips 8] [--seconds 10] [--dialogues 4]

Writes benchmarks/results/audio_tokenizers.{json,md}. Codecs are the real classes with random weights
(no weights ship in any package): the compute is the real model's, the codes are meaningless.
Clips: tests/export_fixtures dialogues (word-shaped noise bursts), cut to `--seconds`, at 24 kHz.
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


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _best(fn):
    """The fastest of up to 5 runs while a run takes under 2 s (a shared machine's noise swamps
    one short run); one run otherwise."""
    out, best = _timed(fn)
    for _ in range(4):
        if best >= 2.0:
            break
        out, seconds = _timed(fn)
        best = min(best, seconds)
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--dialogues", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table

    from factory.export import moshi, nemo
    from factory.export.options import ExportOptions
    from factory.run.rows import write_shard
    from factory.tokenize import fit_units
    from factory.tokenize.codecs import EncodecTokenizer, MimiTokenizer
    from factory.tokenize.text import HFTextTokenizer
    from tests.export_fixtures import SCRIPT, make_sample

    torch.set_num_threads(os.cpu_count() or 1)
    samples = [make_sample(seed) for seed in range(max(args.dialogues, args.clips // 2))]
    sr = 24000
    clips = [moshi.moshi_audio(s)[: int(args.seconds * sr), c] for s in samples for c in (0, 1)][: args.clips]
    audio_s = sum(len(c) for c in clips) / sr

    tokenizers = {
        "units (k=256, 12.5 Hz)": lambda: fit_units(clips, sr, 12.5, 256, 0),
        "mimi (moshi)": lambda: MimiTokenizer(random_init_seed=0, batch_size=args.batch),
        "mimi (transformers)": lambda: MimiTokenizer(backend="transformers", random_init_seed=0, batch_size=args.batch),
        "encodec 6 kbps": lambda: EncodecTokenizer(random_init_seed=0, batch_size=args.batch),
    }
    tok_rows = []
    for name, build in tokenizers.items():
        tok, build_s = _timed(build)
        tok.encode(clips[0][:sr], sr)  # warm-up (librosa caches, torch kernels), not timed
        one, one_s = _best(lambda tok=tok: [tok.encode(c, sr) for c in clips])
        batch, batch_s = _best(lambda tok=tok: tok.encode_batch(clips, sr))
        assert all(np.array_equal(a, b) for a, b in zip(one, batch)), f"{name}: batched codes differ"
        tok_rows.append(
            {
                "tokenizer": name,
                "build_s": build_s,
                "one_by_one_audio_s_per_s": audio_s / one_s,
                "batched_audio_s_per_s": audio_s / batch_s,
                "speedup": one_s / batch_s,
            }
        )
        print(tok_rows[-1], flush=True)

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    hf = Tokenizer(models.WordLevel(unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.train_from_iterator([t.text for t in SCRIPT.turns] * 3, trainers.WordLevelTrainer(special_tokens=["<unk>"]))
    dialogues = samples[: args.dialogues]
    minutes = sum(s.duration for s in dialogues) / 60
    exp_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        hf.save(f"{tmp}/tokenizer.json")
        text_tok = HFTextTokenizer(tmp)
        _, base_s = _timed(lambda: write_shard(dialogues, Path(tmp) / "base.parquet", dialogues[0].sample_rate))
        exp_rows.append({"export": "hf parquet (baseline)", "seconds": base_s, "seconds_tokenize": 0.0})
        mimi = MimiTokenizer(random_init_seed=0, batch_size=args.batch)
        runs = {
            "moshi (folders only)": (moshi, ExportOptions(text_tokenizer_obj=text_tok)),
            "moshi + Mimi [17, T]": (
                moshi,
                ExportOptions(text_tokenizer_obj=text_tok, audio_tokenizer_obj=mimi, format_options={"tokens": True}),
            ),
            "nemo-duplex (jsonl.gz + Shar)": (nemo, ExportOptions(text_tokenizer_obj=text_tok)),
        }
        for name, (module, opts) in runs.items():
            report, seconds = _timed(lambda m=module, o=opts, n=name: m.export(dialogues, Path(tmp) / n, o))
            exp_rows.append({"export": name, "seconds": seconds, "seconds_tokenize": report.seconds_tokenize})
    for r in exp_rows:
        r["dialogue_min_per_s_included"] = minutes / r["seconds"]
        rest = r["seconds"] - r["seconds_tokenize"]
        r["dialogue_min_per_s_excluded"] = minutes / rest if rest > 0 else None

    result = {
        "clips": len(clips),
        "clip_seconds": args.seconds,
        "audio_seconds": audio_s,
        "dialogues": len(dialogues),
        "dialogue_minutes": minutes,
        "batch": args.batch,
        "tokenizers": tok_rows,
        "exports": exp_rows,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "audio_tokenizers.json").write_text(json.dumps(result, indent=2) + "\n")

    console = Console(width=max(Console().width, 110))
    t1 = Table(title=f"audio tokenizers: {len(clips)} clips, {audio_s:.0f} s of 24 kHz audio (CPU)")
    md = [
        f"Audio tokenizers, {len(clips)} clips of {args.seconds:g} s ({audio_s:.0f} s audio), batch {args.batch}, CPU:",
        "",
        "| tokenizer | build s | one-by-one audio-s/s | batched audio-s/s | speed-up |",
        "|---|---|---|---|---|",
    ]
    for h in ("tokenizer", "build s", "one-by-one audio-s/s", "batched audio-s/s", "speed-up"):
        t1.add_column(h, justify="left" if h == "tokenizer" else "right")
    for r in tok_rows:
        cells = [
            r["tokenizer"],
            f"{r['build_s']:.1f}",
            f"{r['one_by_one_audio_s_per_s']:.1f}",
            f"{r['batched_audio_s_per_s']:.1f}",
            f"{r['speedup']:.2f}x",
        ]
        t1.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    t2 = Table(title=f"exports: {len(dialogues)} dialogues, {minutes:.1f} dialogue-minutes")
    md += [
        "",
        f"Exports, {len(dialogues)} dialogues ({minutes:.1f} dialogue-minutes):",
        "",
        "| export | wall s | tokenize s | dialogue-min/s incl. | dialogue-min/s excl. |",
        "|---|---|---|---|---|",
    ]
    for h in ("export", "wall s", "tokenize s", "dlg-min/s incl.", "dlg-min/s excl."):
        t2.add_column(h, justify="left" if h == "export" else "right")
    for r in exp_rows:
        excl = r["dialogue_min_per_s_excluded"]
        cells = [
            r["export"],
            f"{r['seconds']:.2f}",
            f"{r['seconds_tokenize']:.2f}",
            f"{r['dialogue_min_per_s_included']:.2f}",
            f"{excl:.2f}" if excl else "-",
        ]
        t2.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    (out / "audio_tokenizers.md").write_text("\n".join(md) + "\n")
    console.print(t1)
    console.print(t2)


if __name__ == "__main__":
    main()
