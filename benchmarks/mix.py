"""Mix, augmentation and encoding per dialogue-minute on one core, beside lhotse's MixedCut on
the same stems.

    .venv/bin/python benchmarks/mix.py [--dialogues 20] [--lhotse-python .envs/coqui/bin/python]

The dialogues are placed by the real planner and timeline with word-shaped stand-in renders
(tests/test_turn_taking.py), at 24 kHz. Ours: `place` (recipe -> stems), `loudness_gains`,
`apply_gains`, `flac_bytes`; then the augmentation chains (the default coloured-noise chain and
a full chain: room, noise, echo, codec). lhotse (needs torch, so it runs in its own interpreter,
`--lhotse-python` or $LHOTSE_PYTHON; default the torch env, which has lhotse): per channel a
MixedCut of the same pieces (as WAV recordings) at the same offsets, `load_audio()`, then the
same FLAC encode. Both pinned to one core. Writes benchmarks/results/mix.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from factory.audio.mix import apply_gains, flac_bytes, loudness_gains, place  # noqa: E402
from factory.augment.base import AugmentContext  # noqa: E402
from factory.augment.chain import Augmenter  # noqa: E402
from factory.config import RunConfig, load_config  # noqa: E402
from factory.models import MixPiece, MixRecipe, PieceSource  # noqa: E402

RESULTS = Path(__file__).with_name("results")
SR = 24000

LHOTSE_SIDE = r"""
import json, sys, time, io
import numpy as np, soundfile as sf
from lhotse import Recording, MonoCut
spec = json.load(open(sys.argv[1]))
timings = {"mix": 0.0, "flac": 0.0}
for d in spec["dialogues"]:
    t0 = time.perf_counter()
    channels = []
    for ch in (0, 1):
        pieces = [p for p in d["pieces"] if p["channel"] == ch]
        track = None
        for p in pieces:
            rec = Recording.from_file(p["path"], recording_id=p["path"])
            cut = MonoCut(id=p["path"], start=0, duration=rec.duration, channel=0, recording=rec)
            if track is None:  # the first piece anchors the track; the others mix in at their offsets
                track, track_offset = cut, p["offset"] / spec["sr"]
            else:
                track = track.mix(cut, offset_other_by=p["offset"] / spec["sr"] - track_offset, allow_padding=True)
        audio = track.load_audio()[0]
        full = np.zeros(d["n_samples"], np.float32)
        start = round(track_offset * spec["sr"])
        full[start : start + len(audio)] = audio[: d["n_samples"] - start]
        channels.append(full)
    stereo = np.stack(channels, 1)
    t1 = time.perf_counter()
    buf = io.BytesIO()
    pcm = np.clip(np.round(stereo * 32768), -32768, 32767).astype(np.int16)
    sf.write(buf, pcm, spec["sr"], format="FLAC", subtype="PCM_16")
    t2 = time.perf_counter()
    timings["mix"] += t1 - t0
    timings["flac"] += t2 - t1
print(json.dumps(timings))
"""


def _recipe(cfg: RunConfig, k: int) -> tuple[MixRecipe, list[np.ndarray]]:
    from factory.models import Channel, ListenerMark
    from factory.script.compose import write_script
    from factory.script.scenario import draw_scenario
    from factory.seeding import rng_for
    from factory.timeline.place import build_timeline
    from tests.test_calibration import SyntheticLLM
    from tests.test_timeline import burst_utterance

    key = f"bench-{k}"
    scenario = draw_scenario(key, rng_for(1, key, "scenario"), cfg.dialogue.mode_weights, cfg.dialogue.n_turns)
    script = write_script(SyntheticLLM(), scenario, cfg, key)
    rng = np.random.default_rng(k)
    voices = {Channel.user: "u", Channel.agent: "a"}
    rendered = [burst_utterance(t.text, rng, "u") for t in script.turns]
    reactions = {
        i: burst_utterance(m.token, rng, "a") for i, m in enumerate(script.marks) if isinstance(m, ListenerMark)
    }
    timeline, placements = build_timeline(
        key, script, rendered, reactions, voices, rng_for(1, key, "timeline"), cfg.timing, 0.008, scenario.mode
    )
    by_key = {("turn", i): u for i, u in enumerate(rendered)} | {("reaction", i): u for i, u in reactions.items()}
    pieces, sources = [], []
    for p in placements:
        src = by_key[p.key].audio
        pieces.append(
            MixPiece(
                channel=p.channel,
                source=PieceSource(
                    cache_key=None,
                    backend="bench",
                    voice_id="v",
                    text="",
                    rate=1.0,
                    sample_rate=SR,
                    n_samples=len(src),
                    sha256="",
                ),
                length=len(p.audio),
                cut=p.cut,
                fade=p.fade,
                offset=p.start,
                silences=[{"at": a, "length": n} for a, n in p.silences],
            )
        )
        sources.append(src)
    recipe = MixRecipe(
        sample_rate=SR,
        n_samples=round(timeline.duration * SR),
        pieces=pieces,
        gains=(1.0, 1.0),
        target_lufs=-23.0,
        peak_dbfs=-1.0,
    )
    return recipe, sources


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dialogues", type=int, default=20)
    ap.add_argument("--lhotse-python", default=os.environ.get("LHOTSE_PYTHON", ".envs/coqui/bin/python"))
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core (children inherit)
    import tests.test_timeline as tt

    tt.SR = SR
    cfg = RunConfig()
    data = [_recipe(cfg, k) for k in range(args.dialogues)]
    minutes = sum(r.n_samples for r, _ in data) / SR / 60
    t = {"place": 0.0, "gains": 0.0, "apply": 0.0, "flac": 0.0}
    mixes = []
    for recipe, sources in data:
        t0 = time.perf_counter()
        stems = place(recipe, sources)
        t1 = time.perf_counter()
        gains = loudness_gains(stems, SR, -23.0, -1.0)
        t2 = time.perf_counter()
        clean = apply_gains(stems, gains)
        t3 = time.perf_counter()
        flac_bytes(clean, SR)
        t4 = time.perf_counter()
        for k, v in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            t[k] += v
        mixes.append(clean)
    # Baseline in the same run: the previous path (pyloudnorm's meter, the two-step quantiser).
    import pyloudnorm

    t_old = 0.0
    for recipe, sources in data:
        t0 = time.perf_counter()
        stems = place(recipe, sources)
        meter = pyloudnorm.Meter(SR)
        g = [10 ** ((-23.0 - meter.integrated_loudness(stems[:, c].astype(np.float64))) / 20) for c in range(2)]
        y = stems.astype(np.float64) * np.asarray(g)[None, :]
        pcm = np.clip(np.round(y * 32768.0), -32768, 32767).astype(np.int16)
        flac_bytes((pcm / 32768.0).astype(np.float32), SR)
        t_old += time.perf_counter() - t0
    rows = [("ours", k, v / minutes) for k, v in t.items()]
    rows.append(("ours before (pyloudnorm meter, two-step quantiser)", "mix+encoding", t_old / minutes))
    ours_mix = t["place"] + t["gains"] + t["apply"]
    rows.append(("ours", "mix+encoding", (ours_mix + t["flac"]) / minutes))

    with tempfile.TemporaryDirectory() as tmp:
        ctx = AugmentContext(sample_rate=SR, cache_dir=Path(tmp) / "aug")
        chains = {
            "default (coloured noise)": load_config(None, ["augment.noise_probability=1.0"]).augment,
            "full (room, noise, echo, codec)": load_config(
                None,
                [
                    "augment.chains=[{name: full, probability: 1.0, steps: [{transform: room, apply_to: user},"
                    "{transform: colored_noise, apply_to: each}, {transform: echo, apply_to: mix},"
                    "{transform: codec, apply_to: mix, options: {codecs: [opus]}}]}]"
                ],
            ).augment,
        }
        for name, section in chains.items():
            aug = Augmenter(section, ctx)
            t0 = time.perf_counter()
            for k, clean in enumerate(mixes):
                aug(clean, SR, np.random.default_rng(k), -1.0)
            rows.append(("ours", f"augment: {name}", (time.perf_counter() - t0) / minutes))

        lhotse = None
        if Path(args.lhotse_python).exists():
            spec = {"sr": SR, "dialogues": []}
            for d, (recipe, sources) in enumerate(data):
                from factory.audio.mix import piece_audio

                pieces = []
                for i, (piece, src) in enumerate(zip(recipe.pieces, sources)):
                    path = Path(tmp) / f"d{d}-p{i}.wav"
                    sf.write(path, piece_audio(piece, src), SR, subtype="FLOAT")  # the same edited pieces
                    pieces.append({"path": str(path), "offset": piece.offset, "channel": piece.channel.index})
                spec["dialogues"].append({"n_samples": recipe.n_samples, "pieces": pieces})
            (Path(tmp) / "spec.json").write_text(json.dumps(spec))
            (Path(tmp) / "side.py").write_text(LHOTSE_SIDE)
            res = subprocess.run(
                [args.lhotse_python, str(Path(tmp) / "side.py"), str(Path(tmp) / "spec.json")],
                capture_output=True,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            if res.returncode == 0:
                lhotse = json.loads(res.stdout.strip().splitlines()[-1])
                rows.append(("lhotse MixedCut", "mix (load_audio)", lhotse["mix"] / minutes))
                rows.append(("lhotse MixedCut", "mix+encoding", (lhotse["mix"] + lhotse["flac"]) / minutes))
            else:
                Console().print(f"[yellow]lhotse side failed:[/yellow] {res.stderr[-800:]}")
        else:
            Console().print(f"[yellow]no lhotse interpreter at {args.lhotse_python}: lhotse column skipped[/yellow]")

    ours_total = (ours_mix + t["flac"]) / minutes
    table = Table(title=f"mix per dialogue-minute, one core ({args.dialogues} dialogues, {minutes:.1f} min at {SR} Hz)")
    for c in ("who", "step", "s per audio minute", "x real time"):
        table.add_column(c)
    for who, step, v in rows:
        table.add_row(who, step, f"{v:.4f}", f"{60 / v:.0f}")
    Console().print(table)
    ratio = (lhotse["mix"] + lhotse["flac"]) / minutes / ours_total if lhotse else None
    if ratio:
        Console().print(f"lhotse / ours, mix + encoding: {ratio:.1f}x")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mix.json").write_text(
        json.dumps(
            {
                "meta": {
                    "when": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": platform.platform(),
                    "cpus_used": 1,
                    "dialogues": args.dialogues,
                    "audio_minutes": minutes,
                    "sample_rate": SR,
                },
                "rows": [
                    {"who": w, "step": s, "seconds_per_audio_minute": v, "x_real_time": 60 / v} for w, s, v in rows
                ],
                "lhotse_over_ours_mix_plus_encoding": ratio,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
