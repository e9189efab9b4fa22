"""Mix, augmentation and encoding per dialogue-minute on one core, beside lhotse's MixedCut on
the same stems; and the FLAC compression level, by speed and size.

    .venv/bin/python benchmarks/mix.py [--dialogues 20] [--repeats 5] [--renders ~/.cache/duplex-factory/tts]
        [--lhotse-python .envs/coqui/bin/python]

The dialogues are placed by the real planner and timeline. Their speech is real TTS: each
scripted word is spoken by a word clip cut (at its aligned times) from the renders in a TTS cache
folder (`--renders`, default the runs' TTS cache in the per-user cache folder; user and agent draw from different voices
where the cache has two), resampled to 24 kHz. Without a cache the word-shaped noise bursts of
tests/test_timeline.py stand in (noise compresses worse than speech, so the FLAC sizes are then
pessimistic). Ours: `place` (recipe -> stems), `loudness_gains`, `apply_gains`, `flac_bytes`;
then the augmentation chains (the default coloured-noise chain and a full chain: room, noise,
echo, codec). Baselines in the same run: the previous mix path (float64 copies, a full-length
cumulative sum for the block energies, an int16 round trip, FLAC at libsndfile's default level
5) and pyloudnorm's meter. lhotse (needs torch, so it runs in its own interpreter,
`--lhotse-python` or $LHOTSE_PYTHON; default the torch env, which has lhotse): per channel a
MixedCut of the same pieces (as WAV recordings) at the same offsets, `load_audio()`, then the
same FLAC encode. Everything pinned to one core; each timing is the median of `--repeats`
passes over all dialogues. The FLAC table encodes the clean and the augmented (coloured-noise)
stems at levels 0-8 and projects the size of a 400K-dialogue run. Writes
benchmarks/results/mix.json and mix.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from factory.audio.mix import (  # noqa: E402
    FLAC_LEVEL,
    PCM16_SCALE,
    apply_gains,
    flac_bytes,
    loudness_gains,
    place,
)
from factory.augment.base import AugmentContext  # noqa: E402
from factory.augment.chain import Augmenter  # noqa: E402
from factory.config import RunConfig, load_config  # noqa: E402
from factory.locations import user_cache  # noqa: E402
from factory.models import MixPiece, MixRecipe, PieceSource, Utterance, WordTiming  # noqa: E402

RESULTS = Path(__file__).with_name("results")
SR = 24000
PROJECTION = (400_000, 45.0)  # dialogues x seconds: the README's sizing of a full run (5,000 h)

LHOTSE_SIDE = r"""
import json, sys, time, io, statistics
import numpy as np, soundfile as sf
from lhotse import Recording, MonoCut
spec = json.load(open(sys.argv[1]))
passes = []
for _ in range(spec["repeats"]):
    timings = {"mix": 0.0, "flac": 0.0, "mix_cpu": 0.0, "flac_cpu": 0.0}
    for d in spec["dialogues"]:
        t0, c0 = time.perf_counter(), time.process_time()
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
        t1, c1 = time.perf_counter(), time.process_time()
        buf = io.BytesIO()
        pcm = np.clip(np.round(stereo * 32768), -32768, 32767).astype(np.int16)
        sf.write(buf, pcm, spec["sr"], format="FLAC", subtype="PCM_16", compression_level=spec["flac_level"] / 8)
        t2, c2 = time.perf_counter(), time.process_time()
        timings["mix"] += t1 - t0
        timings["flac"] += t2 - t1
        timings["mix_cpu"] += c1 - c0
        timings["flac_cpu"] += c2 - c1
    passes.append(timings)
print(json.dumps({k: statistics.median(p[k] for p in passes) for k in passes[0]}))
"""


class WordBank:
    """Word clips of real TTS renders (a TTS cache folder: `<key>.npy` float32 audio beside its
    `<key>.json` with the rate and aligned word times), at `SR`, per voice."""

    def __init__(self, folder: Path) -> None:
        from factory.audio.edit import resample

        self.clips: dict[str, list[np.ndarray]] = {}
        for meta_path in sorted(folder.glob("*/*.json")):
            meta = json.loads(meta_path.read_text())
            audio_path = meta_path.with_suffix(".npy")
            if not audio_path.exists() or not meta.get("words"):
                continue
            audio = resample(np.load(audio_path), meta["sample_rate"], SR)
            for w in meta["words"]:
                clip = audio[round(w["start"] * SR) : round(w["end"] * SR)]
                if len(clip) >= 0.05 * SR:
                    self.clips.setdefault(meta["voice_id"], []).append(clip)
        self.voices = sorted(self.clips)
        if not self.voices:
            raise SystemExit(f"no renders with word times under {folder}")

    def utterance(self, text: str, rng: np.random.Generator, voice: str) -> Utterance:
        """`text` spoken word by word with real word clips of `voice`, 30-120 ms apart."""
        clips = self.clips[voice]
        pieces, words, t = [], [], 0.0
        for i, w in enumerate(text.split()):
            if i:
                gap = int(rng.uniform(0.03, 0.12) * SR)
                pieces.append(np.zeros(gap, np.float32))
                t += gap / SR
            clip = clips[int(rng.integers(len(clips)))]
            pieces.append(clip)
            words.append(WordTiming(word=w, start=t, end=t + len(clip) / SR))
            t += len(clip) / SR
        return Utterance(text=text, voice_id=voice, sample_rate=SR, audio=np.concatenate(pieces), words=words)


def _recipe(cfg: RunConfig, k: int, bank: WordBank | None) -> tuple[MixRecipe, list[np.ndarray]]:
    from factory.models import Channel, ListenerMark
    from factory.script.compose import write_script
    from factory.script.scenario import draw_scenario
    from factory.seeding import rng_for
    from factory.timeline.place import build_timeline
    from tests.corpus import SyntheticLLM
    from tests.test_timeline import burst_utterance

    key = f"bench-{k}"
    scenario = draw_scenario(key, rng_for(1, key, "scenario"), cfg.dialogue.mode_weights, cfg.dialogue.n_turns)
    script = write_script(SyntheticLLM(), scenario, cfg, key)
    rng = np.random.default_rng(k)
    voices = {Channel.user: "u", Channel.agent: "a"}
    if bank is None:
        speak: Callable[[str, Channel], Utterance] = lambda text, ch: burst_utterance(text, rng, voices[ch])  # noqa: E731
    else:
        by_channel = {Channel.user: bank.voices[0], Channel.agent: bank.voices[-1]}
        speak = lambda text, ch: bank.utterance(text, rng, by_channel[ch])  # noqa: E731
    rendered = [speak(t.text, t.speaker) for t in script.turns]
    reactions = {
        i: speak(m.token, script.turns[m.turn].speaker.other)
        for i, m in enumerate(script.marks)
        if isinstance(m, ListenerMark)
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


def _previous_gains(stems: np.ndarray, sr: int, target: float, peak_dbfs: float) -> tuple[float, float]:
    """The mix path before this benchmark's round of work: float64 copies of each channel, a
    separate finiteness pass, block energies from a full-length cumulative sum."""
    from scipy.signal import sosfilt

    from factory.audio.mix import _k_weighting

    gains = []
    for ch in range(2):
        x = stems[:, ch].astype(np.float64)
        assert np.all(np.isfinite(x))
        y = sosfilt(_k_weighting(sr), np.asarray(x, np.float32)).astype(np.float64)
        n_blocks = int(np.round((len(y) / sr - 0.4) / 0.1)) + 1
        j = np.arange(n_blocks)
        lower, upper = (0.4 * (j * 0.25) * sr).astype(np.int64), (0.4 * (j * 0.25 + 1) * sr).astype(np.int64)
        csum = np.concatenate([[0.0], np.cumsum(y * y)])
        z = (csum[np.minimum(upper, len(y))] - csum[np.minimum(lower, len(y))]) / (0.4 * sr)
        with np.errstate(divide="ignore"):
            blocks = -0.691 + 10.0 * np.log10(z)
            gated = z[blocks >= -70.0]
            relative = -0.691 + 10.0 * np.log10(gated.mean()) - 10.0
            kept = z[(blocks > relative) & (blocks > -70.0)]
            loudness = -0.691 + 10.0 * np.log10(kept.mean())
        gain = 10 ** ((target - loudness) / 20)
        peak = float(np.max(np.abs(x)))
        gains.append(min(gain, 10 ** (peak_dbfs / 20) / peak))
    return gains[0], gains[1]


def _previous_apply(stems: np.ndarray, gains: tuple[float, float]) -> np.ndarray:
    y = stems.astype(np.float64) * (np.asarray(gains, np.float64) * PCM16_SCALE)[None, :]
    np.rint(y, out=y)
    np.clip(y, -PCM16_SCALE, PCM16_SCALE - 1, out=y)
    out = y.astype(np.int16).astype(np.float32)
    out *= np.float32(1 / PCM16_SCALE)
    return out


def _flac(stereo: np.ndarray, level: int | None) -> bytes:
    """FLAC at a given level (None: libsndfile's default, 5), quantised as `flac_bytes` does."""
    from factory.audio.mix import to_pcm16

    buf = io.BytesIO()
    sf.write(
        buf,
        to_pcm16(stereo),
        SR,
        format="FLAC",
        subtype="PCM_16",
        compression_level=None if level is None else level / 8,
    )
    return buf.getvalue()


class Timing(NamedTuple):
    """Seconds of wall clock and of CPU (on a shared machine the CPU time is the one core's work;
    the wall time also holds the waits for it)."""

    wall: float
    cpu: float

    def __truediv__(self, k: float) -> Timing:
        return Timing(self.wall / k, self.cpu / k)


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the codec step's ffmpeg)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _median_time(fn: Callable[[], object], repeats: int) -> Timing:
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), _cpu()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
    return Timing(statistics.median(walls), statistics.median(cpus))


def _median(timings: list[Timing]) -> Timing:
    return Timing(statistics.median(t.wall for t in timings), statistics.median(t.cpu for t in timings))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dialogues", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5, help="timed passes over all dialogues; the median is reported")
    ap.add_argument("--renders", type=Path, default=user_cache("tts"), help="a TTS cache folder of real renders")
    ap.add_argument("--lhotse-python", default=os.environ.get("LHOTSE_PYTHON", ".envs/coqui/bin/python"))
    args = ap.parse_args()
    console = Console()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core (children inherit)
    load_before = os.getloadavg()
    import tests.test_timeline as tt

    tt.SR = SR
    bank = WordBank(args.renders) if args.renders.is_dir() else None
    if bank is None:
        console.print(f"[yellow]no TTS cache at {args.renders}: noise bursts stand in for speech[/yellow]")
    cfg = RunConfig()
    data = [_recipe(cfg, k, bank) for k in range(args.dialogues)]
    minutes = sum(r.n_samples for r, _ in data) / SR / 60
    rep = args.repeats

    stems = [place(r, s) for r, s in data]
    gains = [loudness_gains(x, SR, -23.0, -1.0) for x in stems]
    mixes = [apply_gains(x, g) for x, g in zip(stems, gains)]
    t = {
        "place": _median_time(lambda: [place(r, s) for r, s in data], rep),
        "gains": _median_time(lambda: [loudness_gains(x, SR, -23.0, -1.0) for x in stems], rep),
        "apply": _median_time(lambda: [apply_gains(x, g) for x, g in zip(stems, gains)], rep),
        "flac": _median_time(lambda: [flac_bytes(x, SR) for x in mixes], rep),
    }

    def ours_all() -> None:
        for recipe, sources in data:
            placed = place(recipe, sources)
            flac_bytes(apply_gains(placed, loudness_gains(placed, SR, -23.0, -1.0)), SR)

    def previous_all() -> None:
        for recipe, sources in data:
            placed = place(recipe, sources)
            _flac(_previous_apply(placed, _previous_gains(placed, SR, -23.0, -1.0)), None)

    def pyloudnorm_all() -> None:
        import pyloudnorm

        meter = pyloudnorm.Meter(SR)
        for recipe, sources in data:
            placed = place(recipe, sources)
            g = [10 ** ((-23.0 - meter.integrated_loudness(placed[:, c].astype(np.float64))) / 20) for c in range(2)]
            y = placed.astype(np.float64) * np.asarray(g)[None, :]
            pcm = np.clip(np.round(y * 32768.0), -32768, 32767).astype(np.int16)
            _flac((pcm / 32768.0).astype(np.float32), None)

    # ours and the previous path interleaved, so a change of machine load hits both alike
    ours_passes, previous_passes = [], []
    for _ in range(rep):
        ours_passes.append(_median_time(ours_all, 1))
        previous_passes.append(_median_time(previous_all, 1))
    rows = [("ours", k, v / minutes) for k, v in t.items()]
    rows.append(("ours", "mix+encoding", _median(ours_passes) / minutes))
    rows.append(
        (
            "previous path (f64 copies, full cumsum, FLAC level 5)",
            "mix+encoding",
            _median(previous_passes) / minutes,
        )
    )
    rows.append(
        (
            "ours without loudness normalisation (lhotse's work)",
            "mix+encoding",
            _median_time(lambda: [flac_bytes(apply_gains(place(r, s), (1.0, 1.0)), SR) for r, s in data], rep)
            / minutes,
        )
    )
    rows.append(("pyloudnorm meter, two-step quantiser", "mix+encoding", _median_time(pyloudnorm_all, rep) / minutes))

    augmented = []
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
            if not augmented:
                augmented = [aug(clean, SR, np.random.default_rng(k), -1.0)[0] for k, clean in enumerate(mixes)]
            passes = 1 if "full" in name else rep  # the full chain is slow; its spread is small beside it
            secs = _median_time(
                lambda aug=aug: [aug(clean, SR, np.random.default_rng(k), -1.0) for k, clean in enumerate(mixes)],
                passes,
            )
            rows.append(("ours", f"augment: {name}", secs / minutes))

        lhotse = None
        if Path(args.lhotse_python).exists():
            from factory.audio.mix import piece_audio

            spec = {"sr": SR, "repeats": rep, "flac_level": FLAC_LEVEL, "dialogues": []}
            for d, (recipe, sources) in enumerate(data):
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
                lhotse_mix = Timing(lhotse["mix"], lhotse["mix_cpu"]) / minutes
                lhotse_total = Timing(lhotse["mix"] + lhotse["flac"], lhotse["mix_cpu"] + lhotse["flac_cpu"]) / minutes
                rows.append(("lhotse MixedCut", "mix (load_audio)", lhotse_mix))
                rows.append(("lhotse MixedCut", "mix+encoding", lhotse_total))
            else:
                console.print(f"[yellow]lhotse side failed:[/yellow] {res.stderr[-800:]}")
        else:
            console.print(f"[yellow]no lhotse interpreter at {args.lhotse_python}: lhotse column skipped[/yellow]")

    # FLAC level by speed and size, on the clean and the augmented stems (a shard stores both);
    # the levels take turns within each pass, so a change of machine load hits them alike
    seconds = minutes * 60
    sets = {"clean": mixes, "augmented": augmented}
    passes = {(name, level): [] for name in sets for level in range(9)}
    for _ in range(rep):
        for level in range(9):
            for name, audio in sets.items():
                passes[name, level].append(_median_time(lambda a=audio, lv=level: [_flac(x, lv) for x in a], 1))
    levels = []
    for level in range(9):
        row: dict[str, float] = {"level": level}
        for name, audio in sets.items():
            row[f"{name}_s_per_audio_minute"] = _median(passes[name, level]).cpu / minutes
            row[f"{name}_bytes_per_audio_second"] = sum(len(_flac(x, level)) for x in audio) / seconds
        n, dur = PROJECTION
        clean, aug = row["clean_bytes_per_audio_second"], row["augmented_bytes_per_audio_second"]
        row["tb_400k_clean"] = clean * n * dur / 1e12
        row["tb_400k_default"] = (clean + cfg.augment.noise_probability * aug) * n * dur / 1e12
        row["tb_400k_clean_plus_augmented"] = (clean + aug) * n * dur / 1e12
        levels.append(row)
    default_is_5 = all(_flac(x, None) == _flac(x, 5) for x in mixes[:3])
    load_after = os.getloadavg()

    ours, previous = _median(ours_passes) / minutes, _median(previous_passes) / minutes
    title = (
        f"mix per dialogue-minute, one core ({args.dialogues} dialogues, {minutes:.1f} min at {SR} Hz, "
        f"{'real TTS word clips' if bank else 'noise bursts'}; median of {rep}; "
        f"load average {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} cores)"
    )
    heads = ("who", "step", "CPU s per audio minute", "x real time (CPU)", "wall s per audio minute", "x (wall)")
    cells = [(w, st, f"{v.cpu:.4f}", f"{60 / v.cpu:.0f}", f"{v.wall:.4f}", f"{60 / v.wall:.0f}") for w, st, v in rows]
    table = Table(title=title)
    for c in heads:
        table.add_column(c)
    for c in cells:
        table.add_row(*c)
    console.print(table)
    lheads = (
        "level",
        "clean CPU s/min",
        "clean kB/s",
        "augmented CPU s/min",
        "augmented kB/s",
        "TB clean",
        f"TB default (clean + {cfg.augment.noise_probability:g} augmented)",
        "TB clean + augmented",
    )
    lcells = [
        (
            str(r["level"]) + (" (ours)" if r["level"] == FLAC_LEVEL else ""),
            f"{r['clean_s_per_audio_minute']:.4f}",
            f"{r['clean_bytes_per_audio_second'] / 1e3:.1f}",
            f"{r['augmented_s_per_audio_minute']:.4f}",
            f"{r['augmented_bytes_per_audio_second'] / 1e3:.1f}",
            f"{r['tb_400k_clean']:.3f}",
            f"{r['tb_400k_default']:.3f}",
            f"{r['tb_400k_clean_plus_augmented']:.3f}",
        )
        for r in levels
    ]
    ltitle = f"FLAC level, size projected to {PROJECTION[0]:,} dialogues x {PROJECTION[1]:.0f} s"
    ltable = Table(title=ltitle)
    for c in lheads:
        ltable.add_column(c)
    for c in lcells:
        ltable.add_row(*c)
    console.print(ltable)
    speedup = Timing(previous.wall / ours.wall, previous.cpu / ours.cpu)
    ratio = Timing(lhotse_total.wall / ours.wall, lhotse_total.cpu / ours.cpu) if lhotse else None
    notes = [f"ours vs the previous path, mix + encoding: {speedup.cpu:.2f}x faster (CPU), {speedup.wall:.2f}x (wall)"]
    if ratio:
        notes.append(
            f"lhotse MixedCut / ours, mix + encoding: {ratio.cpu:.2f} (CPU), {ratio.wall:.2f} (wall); "
            "lhotse does no loudness normalisation"
        )
    for line in notes:
        console.print(line)
    meta = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "cores": os.cpu_count(),
        "cpus_used": 1,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "dialogues": args.dialogues,
        "repeats": rep,
        "speech": f"real TTS word clips from {args.renders} ({', '.join(bank.voices)})" if bank else "noise bursts",
        "audio_minutes": minutes,
        "sample_rate": SR,
        "flac_level": FLAC_LEVEL,
        "libsndfile_default_is_level_5": default_is_5,
        "projection": {"dialogues": PROJECTION[0], "seconds_each": PROJECTION[1]},
    }
    RESULTS.mkdir(exist_ok=True)
    result = {
        "meta": meta,
        "rows": [
            {
                "who": w,
                "step": st,
                "cpu_seconds_per_audio_minute": v.cpu,
                "x_real_time_cpu": 60 / v.cpu,
                "wall_seconds_per_audio_minute": v.wall,
                "x_real_time_wall": 60 / v.wall,
            }
            for w, st, v in rows
        ],
        "ours_over_previous_speedup": speedup._asdict(),
        "lhotse_over_ours_mix_plus_encoding": ratio._asdict() if ratio else None,
        "flac_levels": levels,
    }
    (RESULTS / "mix.json").write_text(json.dumps(result, indent=2))

    def md_table(head: tuple[str, ...], body: list[tuple[str, ...]]) -> list[str]:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(c) + " |" for c in body]

    md = [f"# {title}", "", "Written by `benchmarks/mix.py`.", "", *md_table(heads, cells), ""]
    md += [f"- {line}" for line in notes]
    md += ["", f"## {ltitle}", "", *md_table(lheads, lcells), ""]
    (RESULTS / "mix.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
