"""Floor-transfer timing measured from the audio, against Switchboard: the timing model's draw,
the planner with word-shaped noise bursts, and the real pipeline with real TTS.

    .venv/bin/python benchmarks/timing_fit.py [--dialogues 60] [--llm synthetic|embedded|config]
        [--user-voice espeak-gb-m3] [--agent-voice piper-joe] [--set timing.gap_median=0.3 ...]
    # another language: its published mean offset (timing_languages.yaml), scripts from its dataset
    .venv/bin/python benchmarks/timing_fit.py --language ja --llm config \
        --set 'dialogue.sources=[{kind: dataset, path: ja-everyday}]' [--fit 24 --fit-on tts]

Three rows per timing setting (the previous defaults, "before", and the current ones, "after"):
- `model`: the TimingModel's own pooled quantiles (analytic, no audio);
- `bursts`: the session's planner-path simulation (tests/corpus.py): real scripts and timeline,
  word-shaped noise bursts (30-120 ms gaps between words, always bridged) standing in for TTS;
- `tts`: the real stages of a run (`factory.stages`: plan, script, render through the TTS cache,
  assemble: timeline, mix, loudness) on `--dialogues` dialogues with the given voices (default
  the tiny fixture's two fast CPU voices), without the QA pass. Scripts come from the synthetic
  writer of tests/corpus.py (`--llm synthetic`, seconds) or the embedded SmolLM2 (minutes).
Every `bursts`/`tts` number is the audit's own measure (`factory.audit.measures.measure_stereo`,
energy VAD, Heldner & Edlund frame states, 180 ms bridge) of the clean stereo stems, pooled over
the dialogues. Writes the language's record into benchmarks/results/timing_fit.json (one per
language) and timing_fit.md (a section per language).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from factory.audit.measures import measure_stereo  # noqa: E402
from factory.config import RunConfig, load_config  # noqa: E402
from factory.conversation.measures import ConversationMeasures  # noqa: E402
from factory.timeline.timing import SWITCHBOARD, timing_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
QS = (0.10, 0.25, 0.50, 0.75, 0.90)
SHAPE = ("p10", "p25", "p75", "p90")  # spreads around the median (the shape a language's fit keeps)

# The TimingSection defaults before the fit to the audio: the Switchboard fit of the planned draw.
BEFORE = {
    "overlap_probability": 0.336,
    "gap_median": 0.2562,
    "gap_sigma": 0.8762,
    "overlap_median": 0.2174,
    "overlap_sigma": 0.8041,
}


def pooled(measures: list[ConversationMeasures]) -> dict[str, float]:
    fto = np.concatenate([np.asarray(m.fto, float) for m in measures])
    pauses = np.concatenate([np.asarray(m.pauses, float) for m in measures])
    gaps = fto[fto > 0]
    overlaps = np.concatenate([np.asarray(m.between_overlaps, float) for m in measures])
    out = {f"p{round(q * 100)}": float(np.quantile(fto, q)) for q in QS}
    out |= {
        "mean": float(np.mean(fto)),
        "within_500ms": float(np.mean(np.abs(fto) <= 0.5)),
        "in_overlap": float(np.mean(fto < 0)),
        "gaps_over_1s": float(np.mean(gaps > 1.0)),
        "pause_median": float(np.median(pauses)) if len(pauses) else float("nan"),
        "gap_median": float(np.median(gaps)),
        "gap_p90": float(np.quantile(gaps, 0.9)),
        "overlap_median": float(np.median(overlaps)),
        "overlap_p90": float(np.quantile(overlaps, 0.9)),
        "n_transitions": float(len(fto)),
    }
    return out | {f"{q}-p50": out[q] - out["p50"] for q in SHAPE}


def model_row(cfg: RunConfig, language: str = "en") -> dict[str, float]:
    model = timing_model(cfg.timing, language)
    qs = model.quantiles(QS)
    out = {f"p{round(q * 100)}": qs[q] for q in QS}
    cdf = model.cdf(np.array([-0.5, 0.5]))
    return out | {"within_500ms": float(cdf[1] - cdf[0]), "in_overlap": model.overlap_probability}


def bursts_row(cfg: RunConfig, n: int) -> dict[str, float]:
    from tests.corpus import planned_dialogue
    from tests.test_timeline import SR

    return pooled([measure_stereo(planned_dialogue(cfg, k)[3], SR, vad="energy") for k in range(n)])


Prepared = list[tuple[Any, Any, dict]]  # (plan, script, rendered sources) per dialogue


def prepare(cfg: RunConfig, indices: range, llm: str) -> Prepared:
    """Plans, scripts and renders (through the TTS cache) of dialogues `indices`: everything
    before the timeline, which is all the timing draw changes."""
    from factory.runtime import Runtime
    from factory.script.compose import write_script
    from factory.stages import (
        VOICE_PROMPT,
        cache_key,
        finish_render,
        plan_sample,
        render_batch,
        render_requests,
        script_for,
    )
    from factory.stages import sample_id as make_id
    from tests.corpus import SyntheticLLM

    rt = Runtime(cfg)
    writer = SyntheticLLM() if llm == "synthetic" else rt.llm if llm == "embedded" else None
    out = []
    for i in indices:
        sid = make_id(cfg, i)
        plan = plan_sample(rt, sid, sid)
        # `config`: the run's own script sources (e.g. a dataset in another language)
        script = script_for(rt, plan) if writer is None else write_script(writer, plan.scenario, cfg, plan.key)
        requests = {k: r for k, r in render_requests(plan, script, cfg.run.seed).items() if k != VOICE_PROMPT}
        sources = {}
        for (k, r), u in zip(requests.items(), render_batch(rt, list(requests.values())), strict=True):
            if isinstance(u, Exception):
                raise u
            sources[k] = finish_render(cfg, r, u, None, cache_key(rt, r))
        sources[VOICE_PROMPT] = sources[("turn", 0)]  # assemble wants one; it is never placed
        out.append((plan, script, sources))
    return out


def tts_row(cfg: RunConfig, prepared: Prepared) -> dict[str, float]:
    """The real assembly (timeline, mix recipe, loudness) of every prepared dialogue, measured."""
    from factory.stages import SampleRejected, assemble

    measures, rejected = [], 0
    for plan, script, sources in prepared:
        try:
            sample = assemble(cfg, plan, script, sources)
        except SampleRejected:
            rejected += 1
            continue
        measures.append(measure_stereo(sample.stems, sample.sample_rate, vad="energy"))
    return pooled(measures) | {"rejected": float(rejected)}


@dataclass
class Pieces:
    """One dialogue up to its timeline: what `build_timeline` takes besides the timing."""

    key: str
    script: Any
    rendered: list
    reactions: dict
    voices: dict
    mode: Any
    language: str


def tts_pieces(prepared: Prepared) -> list[Pieces]:
    return [
        Pieces(
            plan.key,
            script,
            [sources[("turn", i)].utt for i in range(len(script.turns))],
            {k: r.utt for (kind, k), r in sources.items() if kind == "reaction"},
            {ch: v.id for ch, v in plan.voices.items()},
            plan.scenario.mode,
            plan.scenario.language,
        )
        for plan, script, sources in prepared
    ]


def burst_pieces(cfg: RunConfig, n: int) -> list[Pieces]:
    """The planner-path corpus of tests/corpus.py (its keys, scripts and noise bursts with the
    silences voices leave after punctuation), before its timelines."""
    from factory.script.compose import write_script
    from factory.script.scenario import draw_scenario
    from factory.seeding import rng_for
    from tests.corpus import SyntheticLLM
    from tests.test_timeline import VOICES, burst_renders

    out = []
    for k in range(n):
        key = f"cal-{k}"
        scenario = draw_scenario(
            key, rng_for(cfg.run.seed, key, "scenario"), cfg.dialogue.mode_weights, cfg.dialogue.n_turns
        )
        script = write_script(SyntheticLLM(), scenario, cfg, key)
        rendered, reactions = burst_renders(script, np.random.default_rng(k), punctuation_pauses=True)
        out.append(Pieces(key, script, rendered, reactions, VOICES, scenario.mode, scenario.language))
    return out


def quick_measures(cfg: RunConfig, pieces: list[Pieces]) -> list[ConversationMeasures]:
    """What the real assembly measures without the mix's loudness gains (one scalar per channel,
    which the peak-relative energy VAD does not see): the timeline's placements summed per channel."""
    from factory.seeding import rng_for
    from factory.timeline.place import build_timeline

    out = []
    for d in pieces:
        timeline, placements = build_timeline(
            d.key,
            d.script,
            d.rendered,
            d.reactions,
            d.voices,
            rng_for(cfg.run.seed, d.key, "timeline"),
            cfg.timing,
            cfg.audio.fade_ms / 1000,
            d.mode,
            d.language,
        )
        stereo = np.zeros((round(timeline.duration * timeline.sample_rate), 2), np.float32)
        for p in placements:
            stereo[p.start : p.start + len(p.audio), p.channel.index] += p.audio
        out.append(measure_stereo(stereo, timeline.sample_rate, vad="energy"))
    return out


# English: Switchboard's FTO quantiles, share within +/-500 ms, share in overlap, gap and
# between-overlap quantiles (../shared/reference/conversation.md): (target, scale) per measure.
ENGLISH_TARGETS = {
    "p10": (-0.35, 0.02),
    "p25": (-0.11, 0.02),
    "p50": (0.13, 0.02),
    "p75": (0.35, 0.02),
    "p90": (0.65, 0.03),
    "within_500ms": (0.79, 0.01),
    "in_overlap": (0.34, 0.02),
    "gaps_over_1s": (0.06, 0.015),
    "gap_median": (0.26, 0.03),
    "gap_p90": (0.81, 0.08),
    "overlap_median": (0.22, 0.03),
    "overlap_p90": (0.62, 0.08),
}


def fit_targets(language: str) -> dict[str, tuple[float, float]]:
    """What the audio of `language` should measure as: English, Switchboard's figures; another
    language, its published mean offset (timing_languages.yaml: Stivers et al. 2009 report means)
    with Switchboard's spread around the median (Stivers et al. found the same unimodal shape in
    every language, the languages differing in where it sits)."""
    if language == "en":
        return ENGLISH_TARGETS
    from factory.timeline.timing import language_timing

    entry = language_timing().languages[language]
    median = ENGLISH_TARGETS["p50"][0]
    # the published mean first (5 ms); the shape, an assumption, is held more loosely (40 ms)
    return {"mean": (entry.mean_offset_s, 0.005)} | {f"{q}-p50": (ENGLISH_TARGETS[q][0] - median, 0.04) for q in SHAPE}


FIELDS = ("overlap_probability", "gap_median", "gap_sigma", "overlap_median", "overlap_sigma")


def fit(cfg: RunConfig, pieces: list[Pieces], iterations: int, language: str = "en") -> dict[str, float]:
    """Gauss-Newton on the five transition fields (logit / log scale) so the audio's pooled
    measures hit `fit_targets(language)`: a finite-difference Jacobian (steps of 0.15) per
    iteration, the same dialogues and timeline seeds at every evaluation, so the objective is
    deterministic. Starts from the language's current defaults."""
    targets = fit_targets(language)

    def params(v: np.ndarray) -> dict[str, float]:
        p = 1 / (1 + np.exp(-v[0]))
        values = [p, *np.minimum(np.exp(v[1:]), 2.99)]  # TimingModel's bounds: medians, sigmas <= 3
        return {k: round(float(x), 4) for k, x in zip(FIELDS, values)}

    def residuals(v: np.ndarray) -> np.ndarray:
        t = cfg.timing.model_copy(update=params(v))
        row = pooled(quick_measures(cfg.model_copy(update={"timing": t}), pieces))
        r = [(row[k] - x) / s for k, (x, s) in targets.items()]
        print(params(v), {k: round(row[k], 3) for k in targets}, flush=True)
        return np.asarray(r)

    t = timing_model(cfg.timing, language)
    v = np.array(
        [
            np.log(t.overlap_probability / (1 - t.overlap_probability)),
            *np.log([t.gap_median, t.gap_sigma, t.overlap_median, t.overlap_sigma]),
        ]
    )
    r = residuals(v)
    for _ in range(iterations):
        jac = np.column_stack([(residuals(v + 0.15 * e) - r) / 0.15 for e in np.eye(len(v))])
        step = np.linalg.lstsq(jac, -r, rcond=None)[0]
        for damping in (1.0, 0.5, 0.25):  # keep the step that lowers the error
            trial = v + damping * np.clip(step, -0.6, 0.6)
            r_trial = residuals(trial)
            if (r_trial**2).sum() < (r**2).sum():
                v, r = trial, r_trial
                break
        else:
            break
        print("error", round(float((r**2).sum()), 2), flush=True)
    return params(v)


# The ja defaults before the fit to the audio: English's fit moved by Stivers et al.'s mean offsets
# (timing_defaults before timing_languages.yaml had a `fitted` entry).
JA_BEFORE = {
    "overlap_probability": 0.3939,
    "gap_median": 0.2553,
    "gap_sigma": 1.0123,
    "overlap_median": 0.4476,
    "overlap_sigma": 1.9505,
}
BEFORE_BY_LANGUAGE = {"en": BEFORE, "ja": JA_BEFORE}
COLUMNS = ["mean", "p10", "p25", "p50", "p75", "p90", "within_500ms", "in_overlap", "gaps_over_1s"]
COLUMNS += ["gap_median", "gap_p90", "overlap_median", "overlap_p90", "pause_median"]
SHARES = ("within_500ms", "in_overlap", "gaps_over_1s")


def reference_row(language: str) -> tuple[str, dict[str, float]]:
    if language == "en":
        ref = {f"p{round(q * 100)}": x for q, x in SWITCHBOARD.fto_quantiles.items()}
        ref |= {"within_500ms": 0.79, "in_overlap": 0.34, "gaps_over_1s": 0.06, "gap_median": 0.26}
        return "switchboard", ref | {"gap_p90": 0.81, "overlap_median": 0.22, "overlap_p90": 0.62}
    return "stivers 2009", {
        k.removesuffix("-p50") if k != "mean" else k: x for k, (x, _) in fit_targets(language).items()
    }


def markdown(results: dict[str, dict[str, Any]]) -> str:
    """timing_fit.md: one section per language, from the records in timing_fit.json."""
    md = ["# FTO measured from the audio vs published figures", ""]
    for language, record in results.items():
        args = record["args"]
        md += [f"## {language}", "", f"`benchmarks/timing_fit.py`, {record['when']}: " + record["what"], ""]
        md += ["| row | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
        for name, row in record["rows"].items():

            def cell(c: str, row: dict[str, Any] = row, name: str = name) -> str:
                x = row.get(c)
                if x is None or x != x:
                    return "-"
                if name.startswith("stivers") and c != "mean" and c != "p50":
                    return f"{x * 1000:+.0f} ms from p50"
                return f"{x:.0%}" if c in SHARES else f"{x * 1000:+.0f} ms"

            md.append(f"| {name} | " + " | ".join(cell(c) for c in COLUMNS) + " |")
        md += ["", record["note"], "", "Seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in record["seconds"].items())]
        md += ["", f"Command: `{record.get('command', 'benchmarks/timing_fit.py')}` (args {json.dumps(args)})", ""]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--language", default="en", help="whose published figures to fit and report (en, ja)")
    ap.add_argument("--dialogues", type=int, default=60)
    ap.add_argument("--first", type=int, default=10_000, help="index of the first reported TTS dialogue")
    ap.add_argument("--bursts", type=int, default=500, help="planner-path dialogues with noise bursts (English)")
    ap.add_argument(
        "--llm",
        choices=("synthetic", "embedded", "config"),
        default="synthetic",
        help="who writes the scripts: config = the config's own script sources (e.g. a dataset in the language)",
    )
    ap.add_argument("--user-voice", default=None, help="default: espeak-gb-m3 for English, else drawn")
    ap.add_argument("--agent-voice", default=None, help="default: piper-joe for English, else drawn")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config overrides for both rows")
    ap.add_argument("--only", choices=("before", "after"), default=None)
    ap.add_argument("--fit", type=int, default=0, help="fit the transition fields on this many other dialogues")
    ap.add_argument("--fit-iterations", type=int, default=3, help="Gauss-Newton iterations")
    ap.add_argument("--fit-on", choices=("bursts", "tts"), default="bursts")
    args = ap.parse_args()
    language = args.language
    if language == "en":
        args.user_voice = args.user_voice or "espeak-gb-m3"
        args.agent_voice = args.agent_voice or "piper-joe"
    else:
        args.bursts = 0  # the burst corpus is English (tests/corpus.py's synthetic writer)

    common = [
        *args.overrides,
        f"dialogue.language={language}",
        "tts.qa_wer_threshold=null",
        "augment.noise_probability=0",
    ]
    common += [f"tts.{k}_voice={v}" for k, v in (("user", args.user_voice), ("agent", args.agent_voice)) if v]
    settings = {
        "before": [*common, *(f"timing.{k}={v}" for k, v in BEFORE_BY_LANGUAGE[language].items())],
        "after": common,
    }
    if args.only:
        settings = {args.only: settings[args.only]}
    ref_name, reference = reference_row(language)
    rows: dict[str, dict[str, Any]] = {ref_name: reference}
    timings: dict[str, float] = {}
    if args.fit:
        cfg = load_config(None, common)
        if args.fit_on == "tts":  # dialogues 0.. : not the reported ones (--first)
            pieces = tts_pieces(prepare(cfg, range(args.fit), args.llm))
        else:
            pieces = burst_pieces(cfg, args.fit)
        print("fitted:", json.dumps(fit(cfg, pieces, args.fit_iterations, language)))
        return
    prepared = None
    for name, overrides in settings.items():
        cfg = load_config(None, overrides)
        if prepared is None:  # the renders do not depend on the timing fields
            prepared = prepare(cfg, range(args.first, args.first + args.dialogues), args.llm)
        rows[f"{name}: model"] = model_row(cfg, language)
        if args.bursts:
            t = time.perf_counter()
            rows[f"{name}: bursts"] = bursts_row(cfg, args.bursts)
            timings[f"{name}: bursts"] = time.perf_counter() - t
        t = time.perf_counter()
        rows[f"{name}: tts"] = tts_row(cfg, prepared)
        timings[f"{name}: tts"] = time.perf_counter() - t

    table = Table(
        title=f"FTO measured from the audio ({language}: {args.dialogues} TTS dialogues, {args.bursts} bursts)"
    )
    table.add_column("row")
    for c in COLUMNS:
        table.add_column(c, justify="right")
    for name, row in rows.items():
        table.add_row(name, *(f"{row[c]:.3f}" if c in row else "-" for c in COLUMNS))
    Console(width=180).print(table)

    voices = f"voices {args.user_voice} / {args.agent_voice}" if args.user_voice else "voices drawn per dialogue"
    what = (
        f"{args.dialogues} dialogues through the real stages ({voices}, scripts: {args.llm}"
        + (f", {' '.join(args.overrides)}" if args.overrides else "")
        + ")"
        + (f", {args.bursts} planner-path dialogues with noise bursts" if args.bursts else "")
        + "; audit measures (energy VAD, 10 ms frames, 180 ms bridge) pooled."
    )
    last = args.first + args.dialogues - 1
    if language == "en":
        note = (
            "`model` rows: the TimingModel's analytic pooled quantiles (no caps, no placer clipping). `tts` rows: "
            f"dialogues {args.first}-{last} (the fit, `--fit 60 --fit-on tts`, used dialogues 0-59). "
            "Before = `fit(SWITCHBOARD)`, the previous defaults; after = the current defaults."
        )
    else:
        note = (
            f"`{ref_name}` row: the published mean offset and Switchboard's spread around the median (the fit's "
            f"targets, `fit_targets`). `tts` rows: dialogues {args.first}-{last}, the same renders and timeline "
            "seeds before and after. Before = English's fit moved by the published mean offsets; after = the "
            "`fitted` entry of timing_languages.yaml (fitted on dialogues 0-23: its `how`)."
        )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "timing_fit.json"
    results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    results[language] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": vars(args),
        "what": what,
        "note": note,
        "command": "benchmarks/timing_fit.py " + " ".join(sys.argv[1:]),
        "rows": rows,
        "seconds": timings,
    }
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (RESULTS / "timing_fit.md").write_text(markdown(results), encoding="utf-8")


if __name__ == "__main__":
    main()
