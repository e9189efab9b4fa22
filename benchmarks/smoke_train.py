"""Smoke-train wall time and measures (torch environment).

Either a real run made here (`--generate N`: `duplex-factory generate` of N dialogues, the text from
the stand-in LLM `tests/latency_server.py` started in this process, or with `--dataset SET` from
that dialogue set (e.g. `en-everyday`: people's turns, questions included, rewritten into spoken
style by rules), `--voices cpu` the bank's Kokoro/Piper/espeak voices drawn per dialogue or
`--voices espeak` the two stand-in espeak voices or `--voices USER/AGENT` a pair of the bank's, then
`duplex-factory export --format dgslm`, both
from `.venv` on this tree; `--work DIR` keeps them, and a later call with the same arguments and
`--work` uses them again), an export you give (`--export DIR [--run RUN] [--source TEXT]`), or, by default,
`--dialogues N` of tests/export_fixtures' `make_cued_sample` (the real timeline planner over noise
bursts with a turn-final cue, random scripts; every 4th dialogue held out) exported as dgslm at
50 Hz with 256 units (fitted on the first 32 dialogues). Records the wall time of the smoke-train
alone (generate and export are timed on their own line), the threads, and the model /
agent-shifted / user-shifted control / majority measures, shift/hold also per last speaker, and for
a real run what its shift/hold events follow (`event_cues`: the last word's punctuation or a
filler, the silence's length, per last speaker and outcome; `cue_only`: that cue alone as a
shift/hold predictor, chosen on the train split's events and scored on the held-out ones), and the
1-min load average at the start and end of each smoke-train. `--cues-only` recomputes only a real
run's `event_cues`, `cue_only`, `pitch_cue` (the last word's f0 fall on the clean audio alone as a
shift/hold predictor) and `silence_floor` (the last speaker's clean channel in the
events' silent frames: level and share of exact zeros) into its section (no training). `--within-cue`
only trains the model (`--train-seeds` seeds) and scores shift/hold inside each last-word cue.
`--seed-subsets REPORT...` only judges every k-seed subset of the training seeds in smoke-train
reports of one export (section "seed_subsets": how often the verdict depends on which seeds were drawn; no training).
`--time-threads STEPS` only times one model's training on the export (STEPS steps, seed 0) with 1
and with 2 torch threads, alternately, 3 times each (section "threads": why one thread is the
default on a shared machine).
`--break-check` also smoke-trains two copies of the (dgslm) export, one whose agent units and one
whose user units are delayed by 2 s, as a channel-offset exporter bug would write them: each
verdict must be the failing one.

    .envs/coqui/bin/python benchmarks/smoke_train.py [--dialogues 200] [--steps 400] [--threads 1] [--train-seeds 3]
    .envs/coqui/bin/python benchmarks/smoke_train.py --generate 200 --voices espeak --seed 24 --break-check
    .envs/coqui/bin/python benchmarks/smoke_train.py --generate 200 --dataset en-everyday --voices espeak --work W
    .envs/coqui/bin/python benchmarks/smoke_train.py --generate 200 --dataset en-everyday \
        --voices espeak-gb-m3/piper-joe --work W --break-check
        # writes benchmarks/results/smoke_train.{json,md}: a section for a real run (--generate or
        # --export; --dataset SET's run its own) and one for the cued fixtures
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from factory.models import TimelineWord

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate_and_export(
    n: int, voices: str, seed: int, work: Path, dataset: str | None = None
) -> tuple[Path, str, dict[str, float]]:
    """`duplex-factory generate` of `n` dialogues and their dgslm export under `work`: the text from
    the stand-in LLM, or with `dataset` from that dialogue set (`dialogue.sources`, rewritten into
    spoken style by rules, no LLM); (export folder, its source line, seconds of each step). A run
    and export this made in `work` before (with the same arguments) are used again, with the
    seconds recorded then."""
    from tests.latency_server import STAND_IN_BEHAVIOUR, STAND_IN_SYNTHESIS, LatencyServer

    cli = [str(ROOT / ".venv" / "bin" / "duplex-factory")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    pair = voices.split("/") if "/" in voices else None  # USER/AGENT voice ids
    run_id = f"smoke-{dataset or 'stand-in'}-{voices.replace('/', '_')}-{n}-{seed}"
    run = work / "runs" / run_id
    text = f"text from the dialogue set `{dataset}` (rewritten by rules)" if dataset else "text from the stand-in LLM"
    source = (
        f"a {n}-dialogue run (`generate --seed {seed}`, {text}, "
        + (
            "espeak-gb-m3 / espeak-us-f3"
            if voices == "espeak"
            else " / ".join(pair)
            if pair
            else "the CPU bank's voices drawn per dialogue"
        )
        + ", default behaviour rates, no Whisper QA), dgslm 50 Hz, 256 units fitted on the run"
    )
    made = work / f"{run_id}.seconds.json"  # written once the export is done
    if made.exists():
        return run / "exports" / "dgslm", source, json.loads(made.read_text())
    sets = [
        f"run.output_dir={work / 'runs'}",
        f"tts.cache_dir={work / 'tts-cache'}",
        f"augment.cache_dir={work / 'augment-cache'}",
        "tts.qa_wer_threshold=null",  # no Whisper QA
        # the stand-in voices, or the bank's drawn per dialogue
        *(s for s in STAND_IN_SYNTHESIS if s.startswith("tts.") and voices == "espeak"),
        *([f"tts.user_voice={pair[0]}", f"tts.agent_voice={pair[1]}"] if pair else []),
    ]
    if dataset:  # the planner marks a source dialogue at the default rates and minimums
        sets.append(f"dialogue.sources=[{{kind: dataset, path: {dataset}, rewrite: rules}}]")
    else:  # a stand-in answer carries no marks: no behaviour minimums
        sets += ["llm.backend=http", "llm.concurrency=8", *STAND_IN_BEHAVIOUR]
    seconds = {}
    with contextlib.ExitStack() as stack:
        if not dataset:
            server = stack.enter_context(LatencyServer(latency_s=0.05))
            sets.append(f"llm.base_url={server.base_url}")
        args = ["generate", "-n", str(n), "--seed", str(seed), "--run-id", run_id]
        for s in sets:
            args += ["--set", s]
        started = time.perf_counter()
        subprocess.run(cli + args, env=env, check=True)
        seconds["generate"] = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run(cli + ["export", str(run), "--format", "dgslm"], env=env, check=True)
    seconds["export"] = time.perf_counter() - started
    made.write_text(json.dumps(seconds))
    return run / "exports" / "dgslm", source, seconds


BREAKS = {"agent": "unitB", "user": "unitA"}  # the channel a break-check delays: its dgslm column


def delayed_copy(export_dir: Path, out: Path, seconds: float = 2.0, column: str = "unitB") -> Path:
    """A break-check's export: a copy of a dgslm export whose units in `column` (`unitB` the agent,
    `unitA` the user) are delayed by `seconds` (the first frames repeat its first unit), as an
    exporter with a channel-offset bug would write them; everything else (sidecar, codebook, the
    other channel) as exported."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from factory.export.output import read_sidecar

    if read_sidecar(export_dir).format != "dgslm":
        raise SystemExit("--break-check delays a dgslm export's units")
    shutil.copytree(export_dir, out, ignore=shutil.ignore_patterns("data", "smoke-train"))
    (out / "data").mkdir()
    k = round(seconds * (read_sidecar(export_dir).frame_rate or 0))
    for path in sorted((export_dir / "data").glob("*.parquet")):
        table = pq.read_table(path)
        units = [u[:1] * k + u[: max(len(u) - k, 0)] if u else u for u in table.column(column).to_pylist()]
        delayed = pa.array(units, table.schema.field(column).type)
        table = table.set_column(table.schema.get_field_index(column), column, delayed)
        pq.write_table(table, out / "data" / path.name)
    return out


CUES = ("?", ".!", ",;:", "filler", "mid-sentence")  # what the last word before a mutual silence ends in


def _cue(word: str, kind: str) -> str:
    """Which of `CUES` a timeline word ends in: its last mark, or a filler; a restart's cut-off
    token or a reaction counts as mid-sentence."""
    if kind != "word":
        return "filler" if kind == "filler" else "mid-sentence"
    last = word.rstrip("\"')")[-1:]
    return next((cue for cue in CUES[:3] if last and last in cue), "mid-sentence")


def _shift_hold_events(run: str) -> Iterator[tuple[str, str, str, str, float, int, TimelineWord]]:
    """The run's shift/hold events (all dialogues; `factory.vap.measures.events` on each timeline's
    12.5 Hz voice activity): (dialogue id, `after SPEAKER`, `shift` or `hold`, the last word's cue
    (one of `CUES`), the mutual silence's length in s, the event's first frame, the last word)."""
    from factory.run.read import read_sample_metas
    from factory.timeline.frames import frame_view
    from factory.vap.measures import MODEL_RATE, events
    from factory.vap.report import SPEAKERS

    for meta in read_sample_metas(run, verify=False):
        fv = frame_view(meta.timeline, MODEL_RATE)
        for e in events(fv.activity):
            if e.measure != "shift_hold":
                continue
            s = e.frames[0]
            silence = int(np.argmax(fv.activity[:, s:].any(0))) / MODEL_RATE
            w = meta.timeline.words[int(fv.word[e.speaker, s - 1])]
            outcome = "shift" if e.label else "hold"
            yield meta.id, f"after {SPEAKERS[e.speaker]}", outcome, _cue(w.word, w.kind), silence, s, w


def event_cues(run: str) -> dict[str, dict]:
    """What the run's shift/hold events (all dialogues) follow, per last speaker and outcome: how
    many, the share whose last word ends in each of `CUES` (its punctuation, or a filler), and the
    silence's median length (s): the cues a model could use besides timing."""
    found: dict[str, list[tuple[str, float]]] = {}
    for _, speaker, outcome, cue, silence, _, _ in _shift_hold_events(run):
        found.setdefault(f"{speaker}: {outcome}", []).append((cue, silence))
    out = {}
    for key in sorted(found):
        cues = [c for c, _ in found[key]]
        out[key] = {
            "events": len(cues),
            **{c: cues.count(c) / len(cues) for c in CUES},
            "silence_median_s": float(np.median([x for _, x in found[key]])),
        }
    return out


def cue_only(run: str, held_out: set[str]) -> dict[str, dict]:
    """How far the last word's cue alone (one of `CUES`, from the script's text: punctuation or a
    filler, no audio, no timing) tells shift from hold, per last speaker, scored as the smoke-train
    scores its model: the cues that predict a shift chosen on the train split's events (a cue counts
    as "shift" when more of the shifts than of the holds end in it: the choice that maximises
    balanced accuracy), the balanced accuracy on the held-out dialogues' events (`held_out`: their
    ids, the smoke-train's split). What a model that hears only whether a sentence ends (and how)
    can reach; a model above it hears something more (prosody, timing across the channels)."""
    by: dict[str, dict[bool, dict[str, list[str]]]] = {}
    for sample, speaker, outcome, cue, _, _, _ in _shift_hold_events(run):
        side = by.setdefault(speaker, {True: {"shift": [], "hold": []}, False: {"shift": [], "hold": []}})
        side[sample in held_out][outcome].append(cue)
    out = {}
    for speaker in sorted(by):
        train, held = by[speaker][False], by[speaker][True]

        def share(cues: list[str], c: str) -> float:
            return cues.count(c) / len(cues) if cues else 0.0

        chosen = [c for c in CUES if share(train["shift"], c) > share(train["hold"], c)]
        tpr = sum(share(held["shift"], c) for c in chosen)
        tnr = 1 - sum(share(held["hold"], c) for c in chosen)
        out[speaker] = {
            "shift_cues": chosen,
            "train_events": len(train["shift"]) + len(train["hold"]),
            "events": len(held["shift"]) + len(held["hold"]),
            "positives": len(held["shift"]),
            "balanced_accuracy": (tpr + tnr) / 2,
        }
    return out


def pitch_cue(run: str, held_out: set[str]) -> dict[str, dict]:
    """Does the audio carry the last word's contour? For each shift/hold event, the f0 fall of its
    last word on the last speaker's clean channel (semitones from the word's first third to its
    last, librosa's pyin: no tokens, no model) as a shift/hold predictor, per last speaker, over all
    events and over those whose word ends in `.!`: threshold and direction chosen on the train
    split's events (`best_threshold` on the fall and on its negation), balanced accuracy on the
    held-out ones (`held_out`: the smoke-train's split). Well above the model inside `.!`
    (`--within-cue`): the contour is in the audio, and the tokens or the model lose it."""
    import librosa

    from factory.run.read import read_samples
    from factory.vap.measures import balanced_accuracy, best_threshold

    words: dict[str, list[tuple[str, str, str, TimelineWord]]] = {}
    for sample, speaker, outcome, cue, _, _, word in _shift_hold_events(run):
        words.setdefault(sample, []).append((speaker, outcome, cue, word))
    found: dict[tuple[str, str], dict[bool, tuple[list[float], list[bool]]]] = {}
    for sample in read_samples(run, verify=False):
        sr = sample.sample_rate
        for speaker, outcome, cue, w in words.get(sample.id, []):
            x = sample.stems[round(w.start * sr) : round(w.end * sr), 0 if speaker == "after user" else 1]
            if len(x) < 2048:
                continue
            f0 = librosa.pyin(x.astype(np.float64), fmin=60, fmax=400, sr=sr, frame_length=2048)[0]
            f0 = f0[~np.isnan(f0)]
            if len(f0) < 3:
                continue
            third = len(f0) // 3
            fall = float(12 * np.log2(np.median(f0[:third]) / np.median(f0[-third:])))
            for group in ("all", ".!") if cue == ".!" else ("all",):
                side = found.setdefault((speaker, group), {False: ([], []), True: ([], [])})
                side[sample.id in held_out][0].append(fall)
                side[sample.id in held_out][1].append(outcome == "shift")

    out = {}
    for (speaker, group), side in sorted(found.items()):
        (xt, yt), (xh, yh) = ((np.array(x), np.array(y, dtype=bool)) for x, y in (side[False], side[True]))
        if not (yt.any() and (~yt).any() and yh.any() and (~yh).any()):
            continue
        # "shift when the word falls more" (sign 1) or "falls less" (-1), whichever scores better on train
        sign, threshold = max(
            ((s, best_threshold(s * xt, yt)) for s in (1, -1)),
            key=lambda c: balanced_accuracy(yt, c[0] * xt > c[1]) or 0.0,
        )
        out[f"{speaker}, `{group}`" if group != "all" else speaker] = {
            "train_events": len(xt),
            "events": len(xh),
            "positives": int(yh.sum()),
            "median_fall_hold_st": float(np.median(np.concatenate([xt[~yt], xh[~yh]]))),
            "median_fall_shift_st": float(np.median(np.concatenate([xt[yt], xh[yh]]))),
            "threshold_st": sign * threshold,
            "shift_when": "falls more" if sign == 1 else "falls less",
            "balanced_accuracy": balanced_accuracy(yh, sign * xh > threshold),
        }
    return out


def seed_subsets(paths: list[Path]) -> dict:
    """How much a recorded verdict depends on which training seeds were drawn: the judged splits'
    per-seed balanced accuracies from smoke-train reports of one export (`smoke_train.json`, a
    benchmark section holding one as `report`, or `FILE#SECTION`: that section of this benchmark's
    results), merged by seed (a seed in two reports must have
    the same values: training is deterministic), then for each number of seeds k every k-seed
    subset judged by the rule (`factory.vap.report.judge`): how many say learnable, and per split
    the difference minus its margin (`margin`) and how many subsets sit within one seed-standard-
    error of the difference, sqrt((SD_model^2 + SD_control^2) / k), of the margin (marginal)."""
    import itertools
    import math
    import statistics

    from factory.vap.report import Measure, judge, margin, split_control

    per_seed: dict[int, dict[str, tuple]] = {}
    counts: dict[str, tuple[int, int]] = {}
    export = None
    for path in paths:
        name, _, section = str(path).partition("#")  # FILE#SECTION: a section of this benchmark's results
        rep = json.loads(Path(name).read_text())
        rep = rep[section] if section else rep
        rep = rep.get("report", rep)  # a benchmark section's report has no `export`: its events must agree
        export = export or rep.get("export")
        if rep.get("export", export) != export:
            raise SystemExit(f"--seed-subsets merges reports of one export: {path} is of {rep['export']}")
        for sp, m in rep["shift_hold_by_last_speaker"].items():
            if counts.setdefault(sp, (m["events"], m["positives"])) != (m["events"], m["positives"]):
                raise SystemExit(f"{path}: other held-out events after the {sp} than the reports before it")
            for k, seed in enumerate(rep["seeds"]):
                values = (m["model_seeds"][k], m["control_seeds"][k], m["user_control_seeds"][k])
                known = per_seed.setdefault(seed, {}).setdefault(sp, values)
                if known != values:
                    raise SystemExit(f"seed {seed} after the {sp}: {known} in one report, {values} in {path}")
    seeds = sorted(per_seed)
    by_k = []
    for k in range(2, len(seeds) + 1):
        learnable, splits = 0, {sp: {"slack": [], "marginal": 0} for sp in counts}
        subsets = list(itertools.combinations(seeds, k))
        for subset in subsets:
            measures = {}
            for sp, (events, positives) in counts.items():
                model, control, user_control = ([per_seed[s][sp][i] for s in subset] for i in range(3))
                measures[sp] = Measure.of(events, positives, model, control, user_control, 0.5)
            learnable += judge(measures)[0]
            for sp, m in measures.items():
                control, control_sd = split_control(sp, m)
                assert m.model is not None and control is not None
                slack = m.model - control - margin(m.events, m.positives, m.model_sd or 0.0, control_sd or 0.0, k)
                splits[sp]["slack"].append(slack)
                splits[sp]["marginal"] += abs(slack) < math.sqrt(((m.model_sd or 0) ** 2 + (control_sd or 0) ** 2) / k)
        by_k.append(
            {
                "seeds": k,
                "subsets": len(subsets),
                "learnable": learnable,
                "splits": {
                    sp: {
                        "passed": sum(x >= 0 for x in v["slack"]),
                        "marginal": v["marginal"],
                        "slack_min": min(v["slack"]),
                        "slack_median": statistics.median(v["slack"]),
                        "slack_max": max(v["slack"]),
                    }
                    for sp, v in splits.items()
                },
            }
        )
    return {"export": export, "reports": [str(p) for p in paths], "seeds": seeds, "by_seeds": by_k}


def _subsets_section(r: dict) -> list[str]:
    lines = [
        f"## Which seeds were drawn: every k-seed subset of seeds {', '.join(map(str, r['seeds']))} "
        f"(per-seed values of {', '.join(r['reports'])}; a seed in two reports has the same values), "
        "judged by the rule",
        "",
        f"Export: {r['export']}. Slack: the difference minus its margin (>= 0 passes). Marginal: within one "
        "seed-standard-error of the difference, sqrt((SD_model^2 + SD_control^2) / k), of the margin.",
        "",
        "| seeds k | subsets | learnable | split | passed | marginal | slack min / median / max |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in r["by_seeds"]:
        for sp, v in x["splits"].items():
            lines.append(
                f"| {x['seeds']} | {x['subsets']} | {x['learnable']} | after the {sp} | {v['passed']} "
                f"| {v['marginal']} | {v['slack_min']:+.3f} / {v['slack_median']:+.3f} / {v['slack_max']:+.3f} |"
            )
    return [*lines, ""]


def silence_floor(run: str) -> dict[str, dict]:
    """What the last speaker's own clean channel (the run's stems) holds in a shift/hold event's
    frames (the timeline's mutual silence, its first 0.24 s), per last speaker, last-word cue
    (`.!` or any) and outcome: the median level (dBFS) and the median share of samples that are
    exactly zero. A turn-internal pause that is not digital silence while a turn-final gap is tells
    a hold from a shift without any turn-taking: a rendering artifact a model can learn."""
    from factory.run.read import read_samples
    from factory.vap.measures import MODEL_RATE

    by: dict[str, list[tuple[str, int, str, str]]] = {}
    for sample, speaker, outcome, cue, _, frame, _ in _shift_hold_events(run):
        by.setdefault(sample, []).append((speaker, frame, outcome, cue))
    found: dict[str, tuple[list[float], list[float]]] = {}
    for sample in read_samples(run, verify=False):
        rate = sample.sample_rate
        for speaker, frame, outcome, cue in by.get(sample.id, []):
            a, z = round(frame / MODEL_RATE * rate), round((frame + 3) / MODEL_RATE * rate)
            x = np.asarray(sample.stems[a:z, 0 if speaker == "after user" else 1], np.float64)
            for group in ("any", cue) if cue == ".!" else ("any",):
                level, zeros = found.setdefault(f"{speaker}, `{group}`: {outcome}", ([], []))
                level.append(10 * np.log10(np.mean(x**2) + 1e-12))
                zeros.append(float(np.mean(x == 0)))
    return {
        key: {"events": len(level), "level_dbfs": float(np.median(level)), "zero_share": float(np.median(zeros))}
        for key, (level, zeros) in sorted(found.items())
    }


WITHIN = {"all": CUES, "`?`": ("?",), "`.!`": (".!",), "neither": (",;:", "filler", "mid-sentence")}


def within_cue(export_dir: Path, run: str | None, steps: int, seeds: int, threads: int) -> dict:
    """Does the model tell shift from hold among events whose last word ends alike? The model and
    the agent-shifted control (`control`), trained as the smoke-train trains them with seeds
    0..`seeds`-1, scored on the held-out shift/hold events per last speaker and per group of the
    last word's cue (`WITHIN`; `all` is the smoke-train's own split and must repeat its numbers),
    each group with its own threshold chosen on the train split's events of that group. Balanced
    accuracy near 0.5 inside a group: the tokens carry nothing there beyond the cue."""
    from factory.export.output import read_sidecar
    from factory.models import Channel
    from factory.vap.data import held_out_split, load_streams, shift_channel
    from factory.vap.measures import balanced_accuracy, best_threshold, events, score
    from factory.vap.model import TrainConfig, project, train
    from factory.vap.report import CONTROL_SHIFT_S, SPEAKERS, mean_sd

    run = run or str(read_sidecar(export_dir).source_run)
    cue_at = {(d, sp, frame): cue for d, sp, _, cue, _, frame, _ in _shift_hold_events(run)}
    streams = load_streams(export_dir, run)
    splits = held_out_split(streams.dialogues)
    found = [
        [(d, [e for e in events(d.activity) if e.measure == "shift_hold"]) for d in dialogues] for dialogues in splits
    ]

    def grouped(part: int, projections: list[np.ndarray]) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
        out: dict[tuple[str, str], tuple[list[float], list[bool]]] = {}
        for (d, evs), p in zip(found[part], projections, strict=True):
            for e in evs:
                sp = SPEAKERS[e.speaker]
                cue = cue_at[(d.id, f"after {sp}", e.frames[0])]
                for group, cues in WITHIN.items():
                    if cue in cues:
                        x = out.setdefault((sp, group), ([], []))
                        x[0].append(score(e, p))
                        x[1].append(e.label)
        return {k: (np.asarray(v[0]), np.asarray(v[1], bool)) for k, v in out.items()}

    variants = {"model": streams, "control": shift_channel(streams, Channel.agent, CONTROL_SHIFT_S)}
    accs: dict[tuple[str, str, str], list[float | None]] = {}
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    started = time.perf_counter()
    for seed in range(seeds):
        cfg = TrainConfig(steps=steps, seed=seed, threads=threads)
        for name, variant in variants.items():
            parts = held_out_split(variant.dialogues)  # the same dialogues in the same order as `splits`
            model = train(variant, parts[0], cfg)
            tr, te = grouped(0, project(model, parts[0], cfg)), grouped(1, project(model, parts[1], cfg))
            for key, (scores, labels) in te.items():
                threshold = best_threshold(*tr[key]) if key in tr else 0.0
                accs.setdefault((name, *key), []).append(balanced_accuracy(labels, scores > threshold))
                counts[key] = (len(labels), int(labels.sum()))
    rows = []
    for sp, group in sorted(counts, key=lambda k: (k[0], list(WITHIN).index(k[1]))):
        row = {"after": sp, "cue": group, "events": counts[(sp, group)][0], "positives": counts[(sp, group)][1]}
        for name in variants:
            values = accs[(name, sp, group)]
            mean, sd = mean_sd(values)
            row |= {name: mean, f"{name}_sd": sd, f"{name}_seeds": values}
        rows.append(row)
    return {
        "export": str(export_dir),
        "steps": steps,
        "seeds": list(range(seeds)),
        "threads": threads,
        "seconds": time.perf_counter() - started,
        "load_average_1m": os.getloadavg()[0],
        "rows": rows,
    }


def _within_section(r: dict) -> list[str]:
    lines = [
        "## Shift/hold inside a last-word cue: the model and the agent-shifted control, "
        f"{r['steps']} steps x {len(r['seeds'])} seeds "
        f"({r['threads']} thread), on {r['export']}",
        "",
        f"{r['seconds']:.0f} s wall (1-min load average at the end {r['load_average_1m']:.1f}). Each group its own "
        "threshold, chosen on the train split's events of that group; `all` repeats the smoke-train's judged split.",
        "",
        "| last speaker | last word ends in | held-out events (shifts) | model, mean ± SD | per seed "
        "| agent-shifted control, mean ± SD | per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['after']} | {x['cue']} | {x['events']} ({x['positives']}) | {_acc(x['model'], x['model_sd'])} "
            f"| {_seeds(x['model_seeds'])} | {_acc(x.get('control'), x.get('control_sd'))} "
            f"| {_seeds(x.get('control_seeds'))} |"
        )
    return [*lines, ""]


def _cues(export_dir: Path, run: str | None) -> tuple[dict, dict, dict]:
    """A real run's `event_cues`, `cue_only` and `pitch_cue` (on the smoke-train's held-out split of
    `export_dir`)."""
    from factory.export.output import read_sidecar
    from factory.vap.data import held_out_split, load_streams

    run = run or str(read_sidecar(export_dir).source_run)
    _, held = held_out_split(load_streams(export_dir, run).dialogues)
    held_ids = {d.id for d in held}
    return event_cues(run), cue_only(run, held_ids), pitch_cue(run, held_ids)


def _run_suffix(args: argparse.Namespace) -> str:
    """A generated run's section suffix: ":SET" for --dataset SET's text, and ":USER+AGENT" for a
    voice pair --voices names (the espeak pair and the bank's draws keep the plain name)."""
    if not args.generate:
        return ""
    pair = f":{args.voices.replace('/', '+')}" if "/" in args.voices else ""
    return (f":{args.dataset}" if args.dataset else "") + pair


@contextlib.contextmanager
def _real_export(args: argparse.Namespace, mode: str) -> Iterator[Path]:
    """The export of a real run a diagnostic mode reads: --export DIR, or --generate N made now
    (under --work, or a temporary folder for the mode's duration)."""
    if not (args.generate or args.export):
        raise SystemExit(f"{mode} reads a real run: give --generate N (with --work) or --export DIR")
    with tempfile.TemporaryDirectory(prefix="smoke-bench-") as tmp:
        export_dir = args.export
        if args.generate:
            export_dir, *_ = generate_and_export(
                args.generate, args.voices, args.seed, args.work or Path(tmp), args.dataset
            )
        yield Path(export_dir)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--export", type=Path, default=None)
    parser.add_argument("--run", default=None)
    parser.add_argument("--dialogues", type=int, default=200)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    from factory.vap.report import TRAIN_SEEDS

    parser.add_argument(
        "--train-seeds", type=int, default=TRAIN_SEEDS, help="train the model and each control with seeds 0..N-1"
    )
    parser.add_argument("--source", default=None, help="what --export is, for the results' heading")
    parser.add_argument("--generate", type=int, default=None, help="make a run of N dialogues and export it")
    parser.add_argument(
        "--voices",
        default="cpu",
        help="--generate's voices: cpu (the bank's, drawn per dialogue), espeak (espeak-gb-m3 / espeak-us-f3) "
        "or USER/AGENT voice ids (section run:SET:USER+AGENT)",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        help="--generate's text from this dialogue set (e.g. en-everyday), not the stand-in LLM",
    )
    parser.add_argument("--seed", type=int, default=24, help="run seed of --generate")
    parser.add_argument(
        "--work", type=Path, default=None, help="keep --generate's run and export here (and use them again)"
    )
    parser.add_argument(
        "--break-check",
        action="store_true",
        help="also smoke-train two copies, the agent's and the user's units delayed by 2 s",
    )
    parser.add_argument(
        "--time-threads",
        type=int,
        default=None,
        metavar="STEPS",
        help="only time one model's training of STEPS steps with 1 and 2 threads, alternately, 3 times each",
    )
    parser.add_argument(
        "--cues-only",
        action="store_true",
        help="only recompute a real run's event cues and cue-only balanced accuracy into its section (no training)",
    )
    parser.add_argument(
        "--seed-subsets",
        type=Path,
        nargs="+",
        default=None,
        metavar="REPORT",
        help="only judge every k-seed subset of the seeds in these smoke-train reports of one export "
        "(smoke_train.json, a saved section, or RESULTS.json#SECTION; no training)",
    )
    parser.add_argument(
        "--within-cue",
        action="store_true",
        help="only train the model (--train-seeds seeds) on a real run's export and score shift/hold inside each "
        "last-word cue (section within_cue:SET or within_cue)",
    )
    args = parser.parse_args()
    if args.voices not in ("cpu", "espeak") and len(args.voices.split("/")) != 2:
        parser.error(f"--voices takes cpu, espeak or USER/AGENT voice ids, not {args.voices!r}")
    if args.within_cue:
        with _real_export(args, "--within-cue") as export_dir:
            result = within_cue(export_dir, args.run, args.steps, args.train_seeds, args.threads)
        section = "within_cue" + _run_suffix(args)
        _write(section + ("" if args.steps == 400 else f":{args.steps}-steps"), result)
        return
    if args.seed_subsets:
        _write("seed_subsets", seed_subsets(args.seed_subsets))
        return
    if args.cues_only:
        from factory.export.output import read_sidecar

        with _real_export(args, "--cues-only") as export_dir:
            section = "run" + _run_suffix(args)
            path = ROOT / "benchmarks" / "results" / "smoke_train.json"
            result = (json.loads(path.read_text()) if path.exists() else {}).get(section)
            if result is None:
                raise SystemExit(f"no section {section!r} in {path}: run the smoke-train first")
            result["event_cues"], result["cue_only"], result["pitch_cue"] = _cues(export_dir, args.run)
            result["silence_floor"] = silence_floor(args.run or str(read_sidecar(export_dir).source_run))
        _write(section, result)
        return
    if args.time_threads:
        if args.export is None:
            raise SystemExit("--time-threads times the training on an export: give --export DIR")
        _write("threads", time_threads(args.export, args.run, args.time_threads))
        return

    from factory.vap.smoke import smoke_train

    timelines, export_s, source, generate_s = None, None, args.source or str(args.export), None
    with tempfile.TemporaryDirectory(prefix="smoke-bench-") as tmp:
        export_dir = args.export
        if args.generate:
            work = args.work or Path(tmp)
            export_dir, source, seconds = generate_and_export(args.generate, args.voices, args.seed, work, args.dataset)
            generate_s, export_s = seconds["generate"], seconds["export"]
        elif export_dir is None:
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
        started, load_start = time.perf_counter(), os.getloadavg()[0]
        report = smoke_train(
            export_dir,
            args.run,
            Path(tmp) / "out",
            steps=args.steps,
            train_seeds=args.train_seeds,
            threads=args.threads,
            timelines=timelines,
        )
        wall, load_end = time.perf_counter() - started, os.getloadavg()[0]
        cues, cue_alone, pitch = _cues(Path(export_dir), args.run) if timelines is None else (None, None, None)
        broken = {}
        for channel, column in BREAKS.items() if args.break_check else ():
            copy = delayed_copy(Path(export_dir), Path(tmp) / f"dgslm-{channel}-delayed-2s", column=column)
            broken_load = os.getloadavg()[0]
            broken[channel] = smoke_train(
                copy,
                args.run,
                Path(tmp) / f"out-{channel}-delayed",
                steps=args.steps,
                train_seeds=args.train_seeds,
                threads=args.threads,
                timelines=timelines,
                plot_dialogues=0,
            ).model_dump(mode="json", exclude={"plot", "export"})
            # the 1-min load average at the start and the end of this copy's smoke-train
            broken[channel]["load_average_1m"] = [broken_load, os.getloadavg()[0]]
    result = {
        "source": source,
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "threads": args.threads,
        "steps": args.steps,
        "generate_seconds": generate_s,
        "export_seconds": export_s,
        "smoke_train_seconds": wall,
        "smoke_train_load_average_1m": [load_start, load_end],  # at its start and its end
        "report": report.model_dump(mode="json", exclude={"plot", "export"}),
        # the delayed copies' reports by the channel delayed ({"agent": ..., "user": ...})
        "break_check": broken or None,
        "event_cues": cues,
        "cue_only": cue_alone,
        "pitch_cue": pitch,
    }
    # sections: a real run ("run": the stand-in LLM's text or an export given; "run:SET": --dataset
    # SET's text) and the cued fixtures ("fixtures")
    section = "fixtures" if timelines is not None else "run" + _run_suffix(args)
    _write(section, result)


def _write(section: str, result: dict) -> None:
    """Put `result` into benchmarks/results/smoke_train.json as `section` and rewrite the .md."""
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "smoke_train.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if "source" in results:  # the one-section layout before the run section
        results = {"fixtures": results}
    results[section] = result
    path.write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# smoke-train", ""]
    for name in sorted(results, key=lambda k: (k == "threads", k == "fixtures", k)):  # the real runs first
        rendered = _RENDER.get(name.partition(":")[0], _section)(results[name])
        # the heading, then which section it is (two runs of one source differ only by their section)
        lines += [*rendered[:1], "", f"Section `{name}` of smoke_train.json.", *rendered[1:]]
    (out / "smoke_train.md").write_text("\n".join(lines))
    print("\n".join(_RENDER.get(section.partition(":")[0], _section)(result)))


def time_threads(export_dir: Path, run: str | None, steps: int) -> dict:
    """One model's training (`steps` steps, seed 0) and its projection of the train split, with 1
    and with 2 torch threads, alternately, 3 times each: wall and CPU seconds, the load at the start."""
    from factory.vap.data import held_out_split, load_streams
    from factory.vap.model import TrainConfig, project, train

    streams = load_streams(export_dir, run)
    train_set, _ = held_out_split(streams.dialogues)
    runs = []
    for _ in range(3):
        for threads in (1, 2):
            cfg = TrainConfig(steps=steps, threads=threads)
            load, wall, cpu = os.getloadavg()[0], time.perf_counter(), time.process_time()
            model = train(streams, train_set, cfg)
            trained_wall, trained_cpu = time.perf_counter(), time.process_time()
            project(model, train_set, cfg)
            runs.append(
                {
                    "threads": threads,
                    "load_average_1m": load,
                    "train_s": trained_wall - wall,
                    "train_cpu_s": trained_cpu - cpu,
                    "project_s": time.perf_counter() - trained_wall,
                    "project_cpu_s": time.process_time() - trained_cpu,
                }
            )
    return {
        "source": str(export_dir),
        "steps": steps,
        "dialogues": len(train_set),
        "cpus": os.cpu_count(),
        "runs": runs,
    }


def _threads_section(r: dict) -> list[str]:
    lines = [
        f"## Torch threads: one model's {r['steps']} training steps (16 crops of 20 s) on {r['dialogues']} train "
        f"dialogues of {r['source']}, then its projection of them; {r['cpus']} CPUs, shared",
        "",
        "| threads | 1-min load at the start | train, s wall | train, CPU s | project, s wall | project, CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for x in r["runs"]:
        lines.append(
            f"| {x['threads']} | {x['load_average_1m']:.1f} | {x['train_s']:.1f} | {x['train_cpu_s']:.1f} "
            f"| {x['project_s']:.1f} | {x['project_cpu_s']:.1f} |"
        )
    return [*lines, ""]


def _acc(x: float | None, sd: float | None = None) -> str:
    return "-" if x is None else f"{x:.3f}" if sd is None else f"{x:.3f} ± {sd:.3f}"


def _seeds(values: list | None) -> str:
    return " / ".join(_acc(v) for v in values or [])


def _section(r: dict) -> list[str]:
    rep = r["report"]
    models = 3 if "shift_hold_by_last_speaker" in rep else 2  # the user-shifted control came later
    seeds = rep.get("seeds") or [rep.get("seed", 0)]  # one seed per model before --train-seeds
    times = [f"smoke-train wall time: {r['smoke_train_seconds']:.0f} s"]
    if rep.get("phase_seconds"):
        times[0] += " (" + ", ".join(f"{k} {v:.0f} s" for k, v in rep["phase_seconds"].items()) + ")"
    if r.get("smoke_train_load_average_1m"):
        times[0] += " at a 1-min load average of {:.1f} at its start, {:.1f} at its end".format(
            *r["smoke_train_load_average_1m"]
        )
    if r.get("generate_seconds"):
        times.append(f"generate before it: {r['generate_seconds']:.0f} s")
    if r.get("export_seconds"):
        times.append(f"export: {r['export_seconds']:.0f} s")
    lines = [
        f"## {r['source']}",
        "",
        f"{rep['train_dialogues']} train / {rep['held_out_dialogues']} held-out dialogues; "
        f"{r['steps']} steps x {models} models x {len(seeds)} training seeds ({', '.join(map(str, seeds))}), "
        f"{r['threads']} torch threads, {r['cpus']} CPUs (1-min load average at the end {r['load_average_1m']:.1f}).",
        "",
        "; ".join(times),
        "",
        "Balanced accuracy on the held-out split, mean ± standard deviation over the training seeds:"
        if len(seeds) > 1
        else "Balanced accuracy on the held-out split (one training seed):",
        "",
        "| measure (balanced accuracy) | events (positive) | model | agent-shifted control | user-shifted control "
        "| majority |",
        "|---|---|---|---|---|---|",
    ]
    rows = [*rep["measures"].items()]
    judged = [(f"shift_hold after {sp} (judged)", m) for sp, m in rep.get("shift_hold_by_last_speaker", {}).items()]
    for name, m in rows + judged:
        accs = [_acc(m.get(x), m.get(f"{x}_sd")) for x in ("model", "control", "user_control")]
        lines.append(
            f"| {name} | {m['events']} ({m['positives']}) | " + " | ".join(accs) + f" | {_acc(m['majority'])} |"
        )
    if judged and "model_seeds" in judged[0][1]:
        lines += [
            "",
            f"The judged splits per training seed ({' / '.join(map(str, seeds))}):",
            "",
            "| split | model | agent-shifted control | user-shifted control |",
            "|---|---|---|---|",
        ]
        for name, m in judged:
            lines.append(
                f"| {name} | "
                + " | ".join(_seeds(m.get(f"{x}_seeds")) for x in ("model", "control", "user_control"))
                + " |"
            )
    lines += ["", f"Verdict: {rep['verdict']}", ""]
    breaks = r.get("break_check") or {}
    if "verdict" in breaks:  # the layout before the user-delayed break: the agent-delayed report alone
        breaks = {"agent": breaks}
    for channel, b in breaks.items():
        per = "; ".join(
            f"after the {who}: model {_acc(m['model'], m.get('model_sd'))}, {who}-shifted control "
            + (
                _acc(m["control"], m.get("control_sd"))
                if who == "agent"
                else _acc(m.get("user_control"), m.get("user_control_sd"))
            )
            for who, m in b.get("shift_hold_by_last_speaker", {}).items()
        ) or "shift/hold model {}, agent-shifted control {}".format(
            _acc(b["measures"]["shift_hold"]["model"]), _acc(b["measures"]["shift_hold"]["control"])
        )
        wall = f" Wall time {b['seconds']:.0f} s" if b.get("seconds") else ""
        if wall and b.get("load_average_1m"):
            wall += " (1-min load average {:.1f} at its start, {:.1f} at its end)".format(*b["load_average_1m"])
        lines += [
            f"Break-check: the same export with the {channel}'s units delayed by 2 s (a copy of its parquet, "
            f"as a channel-offset exporter bug writes it): {per}. Verdict: {b['verdict']}"
            + (f".{wall}." if wall else ""),
            "",
        ]
    lines += [f"Rule: {rep['rule']}", ""]
    if r.get("event_cues"):
        lines += [
            "What the run's shift/hold events (all dialogues) follow: the share whose last word ends in each mark "
            "(or is a filler), and the silence's median length:",
            "",
            "| events | n | " + " | ".join(f"`{c}`" if len(c) < 4 else c for c in CUES) + " | silence median, s |",
            "|---|---|" + "---|" * len(CUES) + "---|",
        ]
        for key, c in r["event_cues"].items():
            shares = " | ".join(f"{c[x]:.2f}" for x in CUES)
            lines.append(f"| {key} | {c['events']} | {shares} | {c['silence_median_s']:.2f} |")
        lines.append("")
    if r.get("silence_floor"):
        lines += [
            "The last speaker's own clean channel in the event's frames (the timeline's silence, its first 0.24 s): "
            "median level and median share of samples exactly zero:",
            "",
            "| events | n | level, dBFS | exactly zero |",
            "|---|---|---|---|",
        ]
        for key, c in r["silence_floor"].items():
            lines.append(f"| {key} | {c['events']} | {c['level_dbfs']:.1f} | {c['zero_share']:.2f} |")
        lines.append("")
    if r.get("cue_only"):
        lines += [
            "The last word's cue alone (text: punctuation or a filler; no audio, no timing) as a shift/hold "
            'predictor, scored like the model: the cues counted as "shift" chosen on the train split\'s events, '
            "balanced accuracy on the held-out ones:",
            "",
            "| events | held-out events (shifts) | cues counted as shift | balanced accuracy |",
            "|---|---|---|---|",
        ]
        for speaker, c in r["cue_only"].items():
            chosen = ", ".join(f"`{x}`" if len(x) < 4 else x for x in c["shift_cues"]) or "none"
            lines.append(f"| {speaker} | {c['events']} ({c['positives']}) | {chosen} | {c['balanced_accuracy']:.3f} |")
        lines.append("")
    if r.get("pitch_cue"):
        lines += [
            "The last word's f0 fall alone (audio: pyin on the last speaker's clean channel, first third to last "
            "third of the word; no tokens, no model) as a shift/hold predictor: threshold and direction chosen on "
            "the train split's events, balanced accuracy on the held-out ones:",
            "",
            "| events | held-out events (shifts) | median fall, holds / shifts (st) | shift when | balanced accuracy |",
            "|---|---|---|---|---|",
        ]
        for key, c in r["pitch_cue"].items():
            lines.append(
                f"| {key} | {c['events']} ({c['positives']}) | {c['median_fall_hold_st']:.2f} / "
                f"{c['median_fall_shift_st']:.2f} | {c['shift_when']} ({c['threshold_st']:.2f} st) | "
                f"{c['balanced_accuracy']:.3f} |"
            )
        lines.append("")
    return lines


# the sections that are not a smoke-train's report, by the name before a ":"
_RENDER = {"threads": _threads_section, "seed_subsets": _subsets_section, "within_cue": _within_section}

if __name__ == "__main__":
    main()
