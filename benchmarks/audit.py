"""Cost of auditing, per minute of dialogue audio, component by component, against the baseline of
decoding the sample from its shard (what any reader pays).

    .venv/bin/python benchmarks/audit.py RUN_DIR [--samples 10]

Components: decoding the sample's FLAC (baseline), energy / WebRTC / Silero VAD on both channels, the
H&E measures from the activity, the timeline checks (plan agreement, fillers, barge-ins),
loudness, one ASR round-trip turn, the generation-time gate of one sample (energy VAD, no ASR).
Prints a table and writes benchmarks/results/audit.json and audit.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from factory.audio.mix import flac_bytes, read_audio  # noqa: E402
from factory.audio.vad import detect_speech, frame_samples  # noqa: E402
from factory.audit.measures import (  # noqa: E402
    agreement,
    asr_round_trip,
    audit_sample,
    check_barge_ins,
    fillers_found,
    loudness,
    plan_activity,
)
from factory.audit.run import iter_samples  # noqa: E402
from factory.conversation.measures import measure  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def both_channels(stems: np.ndarray, sr: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    return detect_speech(stems[:, 0].copy(), sr, method), detect_speech(stems[:, 1].copy(), sr, method)


def timeline_checks(timeline, act: tuple[np.ndarray, np.ndarray], frame_s: float) -> None:
    plan = plan_activity(timeline, len(act[0]), frame_s)
    agreement(np.concatenate(plan), np.concatenate(act), 3)
    fillers_found(timeline, *act, frame_s)
    check_barge_ins(timeline, *act, frame_s)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--samples", type=int, default=10)
    args = ap.parse_args()
    totals: dict[str, float] = {}
    minutes = 0.0
    n = 0
    from factory.asr import load_model

    load_model()  # the model load is once per process, not per sample
    for _, sample in iter_samples(args.run_dir):
        sr, stems = sample.sample_rate, sample.stems
        encoded = flac_bytes(stems, sr)  # the shard's audio cell
        _, dt = timed(read_audio, encoded)
        totals["decode FLAC (baseline)"] = totals.get("decode FLAC (baseline)", 0.0) + dt
        minutes += len(stems) / sr / 60
        frame_s = frame_samples(sr) / sr
        acts = {}
        for method in ("energy", "webrtc", "silero"):
            acts[method], dt = timed(both_channels, stems, sr, method)
            totals[f"VAD {method}"] = totals.get(f"VAD {method}", 0.0) + dt
        _, dt = timed(measure, *acts["energy"], frame_s=frame_s)
        totals["H&E measures"] = totals.get("H&E measures", 0.0) + dt
        _, dt = timed(timeline_checks, sample.timeline, acts["energy"], frame_s)
        totals["timeline checks"] = totals.get("timeline checks", 0.0) + dt
        _, dt = timed(loudness, stems, sr)
        totals["loudness"] = totals.get("loudness", 0.0) + dt
        _, dt = timed(asr_round_trip, sample, 1)
        totals["ASR, 1 turn"] = totals.get("ASR, 1 turn", 0.0) + dt
        _, dt = timed(audit_sample, sample, ("energy",), 0)
        totals["generation gate (energy, no ASR)"] = totals.get("generation gate (energy, no ASR)", 0.0) + dt
        n += 1
        if n >= args.samples:
            break
    per_min = {k: round(v / minutes, 3) for k, v in totals.items()}
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
        "run": str(args.run_dir),
        "samples": n,
        "audio_minutes": round(minutes, 3),
        "seconds_per_audio_minute": per_min,
    }
    lines = [
        f"# audit cost ({report['when']}, {n} samples, {minutes:.2f} audio min, {report['machine']})",
        "",
        "| component | s per audio minute | x decode |",
        "|---|---|---|",
    ]
    base = per_min["decode FLAC (baseline)"] or 1e-9
    lines += [f"| {k} | {v} | {v / base:.1f} |" for k, v in per_min.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "audit.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "audit.md").write_text(text)


if __name__ == "__main__":
    main()
