"""Events the agent must not answer in a real run: planned against placed, per kind, with why the
rest were dropped, and the configured rate beside the realised one.

    .venv/bin/python benchmarks/events.py [--dialogues 12] [--seed 7] [--rate 1] [--label after]
        [--code DIR] [--run DIR] [--dataset SET] [--audit]

Generates a run (the embedded LLM, the default voices, `events.*_per_dialogue=--rate` for each
kind) with the factory at `--code` (default: this checkout; another source tree, e.g. an export of
an older commit, measures that code), or reads an existing run folder (`--run`), and counts from its
samples, with this checkout's reader: per kind the events planned (`Script.events_planned`; a run
of older code has none, so its counts are drawn again as it drew them: the first draws of the
sample's "events" generator, `planner.event_counts`), marked by the planner, and placed (in the
timeline, so in the audio); dropped: `no_room` (no agent turn had room) and `user_busy` (the
timeline found the user's channel busy). Also the agent's turn lengths (words) and rejected samples.
`--dataset SET` takes the text from a dialogue set, rewritten by rules (no LLM, espeak voices), so a
run with `--rate 0` has the same dialogues without events; `--audit` adds the audit's pooled
turn-taking, as it measures it (turn speech) and with the events counted as turns.

Prints a table and writes benchmarks/results/events.json and events.md (results of every label
kept, so `before` and `after` stand side by side).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from factory.audio.edit import VAD_FRAME_S, frame_activity  # noqa: E402
from factory.config import load_config  # noqa: E402
from factory.languages import words  # noqa: E402
from factory.models import IGNORED_KINDS, Channel  # noqa: E402
from factory.run.read import read_config, read_sample_metas, read_samples  # noqa: E402
from factory.script.planner import event_counts  # noqa: E402
from factory.seeding import rng_for  # noqa: E402
from factory.timeline.measures import event_outcomes  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FRAME_S = 0.08  # one 12.5 Hz (Mimi) frame


def event_sets(rate: float) -> list[str]:
    return [f"events.{k}_per_dialogue={rate}" for k in IGNORED_KINDS]


# --dataset: text from a dialogue set rewritten by rules (no LLM), two espeak voices, no Whisper QA, so
# events on and off (the events' own generator) give the same dialogues apart from the events
DATASET_SETS = ["tts.user_voice=espeak-gb-m3", "tts.agent_voice=espeak-us-f3", "tts.qa_wer_threshold=null"]


def generate(
    code: Path, out: Path, label: str, n: int, seed: int, rate: float, per_shard: int, dataset: str | None = None
) -> tuple[Path, float]:
    sets = [f"run.samples_per_shard={per_shard}", *event_sets(rate)]
    if dataset:
        sets += [f"dialogue.sources=[{{kind: dataset, path: {dataset}, rewrite: rules}}]", *DATASET_SETS]
    cmd = [str(ROOT / ".venv/bin/duplex-factory"), "generate", "-n", str(n), "--seed", str(seed)]
    cmd += ["--run-id", label, "--out", str(out), *[a for s in sets for a in ("--set", s)]]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=code, env={**os.environ, "PYTHONPATH": str(code)})
    return out / label, time.perf_counter() - start


def measure(run: Path, rate: float) -> dict:
    # a run cut short has no config.yaml yet (finalize writes it): its events section from the rate
    cfg = read_config(run) or load_config(overrides=event_sets(rate))
    per_kind = {k: {"planned": 0, "marked": 0, "placed": 0, "no_room": 0, "user_busy": 0} for k in IGNORED_KINDS}
    agent_words: list[int] = []
    n = 0
    for meta in read_sample_metas(run):
        n += 1
        script, tl = meta.script, meta.timeline
        if script.events_planned is None:  # older code: its counts drawn again as it drew them
            planned = event_counts(rng_for(meta.run_seed, meta.sample_key, "events"), cfg.events)
            script = script.model_copy(update={"events_planned": planned})
        placed, dropped = event_outcomes(script, tl)
        for k in IGNORED_KINDS:
            per_kind[k]["planned"] += script.events_planned.get(k, 0) if script.events_planned else 0
            per_kind[k]["marked"] += sum(m.type == k for m in script.marks)
            per_kind[k]["placed"] += placed.get(k, 0)
            for reason in ("no_room", "user_busy"):
                per_kind[k][reason] += dropped.get((k, reason), 0)
        language = meta.scenario.language
        agent_words += [len(words(t.text, language)) for t in script.turns if t.speaker is Channel.agent]
    # each placed event found in the user's audio where the timeline has it, to one 80 ms frame and to
    # one 10 ms frame (tests/test_events); side talk said in a pause of the user's own turn counted apart
    # one under the user's own speech is looked for in its sound alone: the user's channel less the same
    # mix without its layer (its render from the TTS cache, as tests/test_events checks it)
    found = found_10ms = user_held = under_user = 0
    for sample in read_samples(run):
        user = frame_activity(sample.stems[:, Channel.user.index], sample.sample_rate)
        tl = sample.timeline
        for e in tl.ignored_events():
            user_held += e.type == "side_talk" and tl.turn(e.during_turn).channel is Channel.user
            under = e.type != "side_talk" and tl.turn(e.during_turn).channel is Channel.user
            under_user += under
            near = slice(round((e.start - FRAME_S) / VAD_FRAME_S), round((e.end + FRAME_S) / VAD_FRAME_S))
            heard = (np.flatnonzero((alone(sample, e, cfg) if under else user)[near]) + near.start) * VAD_FRAME_S
            off = max(abs(heard[0] - e.start), abs(heard[-1] + VAD_FRAME_S - e.end)) if len(heard) else np.inf
            found += int(off <= FRAME_S)
            found_10ms += int(off <= VAD_FRAME_S + 1e-9)
    parts = sorted((run / "manifests").glob("*.parquet"))  # the finished shards' (finalize merges them)
    rejected = sum(int((pl.read_parquet(p)["status"] == "rejected").sum()) for p in parts)
    total = {f: sum(v[f] for v in per_kind.values()) for f in ("planned", "marked", "placed", "no_room", "user_busy")}
    return {
        "dialogues": n,
        "rejected": rejected,
        "configured_per_dialogue": {
            "side_talk": cfg.events.side_talk_per_dialogue,
            "background_speech": cfg.events.background_speech_per_dialogue,
            "non_speech": cfg.events.non_speech_per_dialogue,
        },
        "per_kind": per_kind,
        "total": total,
        "placed_in_audio_within_80ms": found,
        "placed_in_audio_within_10ms": found_10ms,
        "side_talk_in_user_turns": user_held,
        "sounds_under_user_speech": under_user,
        "placed_share": round(total["placed"] / total["planned"], 3) if total["planned"] else None,
        "agent_turn_words": {
            "median": statistics.median(agent_words) if agent_words else None,
            "min": min(agent_words, default=None),
            "max": max(agent_words, default=None),
        },
    }


AUDIT_KEYS = ("overlap_share", "fto_p50_s", "transitions_in_overlap", "gap_median_s", "backchannels_per_minute")


def audit_measures(run: Path) -> dict:
    """The audit's pooled turn-taking of the run (`factory.audit.run.audit_run`, energy VAD, no ASR):
    as it measures now, on turn speech (the events left out), and `counted`: the same H&E measures on
    all the detector heard, the events taken for turns (what the audit measured before); the plan's
    overlap share (its words) and the events' share of what the detector heard."""
    from factory.audit.run import audit_run
    from factory.conversation.measures import measure

    counted = []
    result = audit_run(
        run,
        vads=("energy",),
        asr_turns=0,
        on_sample=lambda a: counted.append(measure(*a.activity["energy"], frame_s=a.frame_s)),
    )
    pooled = result.pooled["energy"]
    fto = [x for m in counted for x in m.fto]
    minutes = sum(m.duration for m in counted) / 60
    was = {
        "overlap_share": sum(m.both_s for m in counted) / sum(m.speech_s for m in counted),
        "fto_p50_s": float(np.quantile(fto, 0.5)) if fto else None,
        "transitions_in_overlap": float(np.mean(np.asarray(fto) < 0)) if fto else None,
        "gap_median_s": float(np.median([g for m in counted for g in m.gaps])),
        "backchannels_per_minute": sum(len(m.backchannels) for m in counted) / minutes,
        "n_transitions": len(fto),
    }
    now = {k: round(pooled[k], 4) for k in AUDIT_KEYS} | {"n_transitions": int(pooled["n_transitions"])}
    return {
        "turn_speech": now,
        "counted": {k: round(v, 4) if isinstance(v, float) else v for k, v in was.items()},
        "plan_overlap_share": round(
            sum(r["plan_both_s"] for r in result.rows) / sum(r["plan_speech_s"] for r in result.rows), 4
        ),
        "event_share": round(pooled.get("event_share", 0.0), 4),
    }


def audit_table(results: dict[str, dict]) -> str:
    lines = [
        "| run | measured on | overlap share | FTO median (s) | transitions in overlap | gap median (s) | "
        "backchannels / min | transitions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        if "audit" not in r:
            continue
        for what, key in (("turn speech (now)", "turn_speech"), ("events counted (before)", "counted")):
            v = r["audit"][key]
            lines.append(
                f"| {label} | {what} | {v['overlap_share']:.4f} | {v['fto_p50_s']:.3f} | "
                f"{v['transitions_in_overlap']:.3f} | {v['gap_median_s']:.3f} | {v['backchannels_per_minute']:.2f} "
                f"| {v['n_transitions']} |"
            )
    return "\n".join(lines)


def alone(sample, e, cfg) -> np.ndarray:
    """The energy VAD's frames (against the user's channel's loudest) of event `e`'s sound alone."""
    from factory.audio.mix import mix
    from factory.audio.vad import frame_rms
    from factory.run.rebuild import load_source

    recipe, sr, user = sample.meta.recipe, sample.sample_rate, Channel.user.index
    sources = [load_source(cfg.tts.cache_dir, p.source, sr) for p in recipe.pieces]
    k = next(
        i
        for i, p in enumerate(recipe.pieces)
        if p.gain_db is not None and p.offset <= round(e.start * sr) and round(e.end * sr) <= p.offset + p.length
    )
    sources[k] = np.zeros_like(sources[k])
    rms = frame_rms(sample.stems[:, user] - mix(recipe, sources)[:, user], sr)
    return 20 * np.log10(np.maximum(rms, 1e-12) / frame_rms(sample.stems[:, user], sr).max()) > -45.0


def table(results: dict[str, dict]) -> str:
    lines = [
        "| run | kind | configured / dialogue | planned | placed | placed / dialogue | no_room | user_busy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        for k in IGNORED_KINDS:
            v = r["per_kind"][k]
            rate = r["configured_per_dialogue"][k]
            lines.append(
                f"| {label} | {k} | {rate:g} | {v['planned']} | {v['placed']} | {v['placed'] / r['dialogues']:.2f} "
                f"| {v['no_room']} | {v['user_busy']} |"
            )
        t = r["total"]
        if not t["planned"]:  # events off
            continue
        lines.append(
            f"| {label} | **all** | | {t['planned']} | {t['placed']} ({r['placed_share'] or 0:.0%}) | "
            f"{t['placed'] / r['dialogues']:.2f} | {t['no_room']} | {t['user_busy']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dialogues", type=int, default=12)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rate", type=float, default=1.0, help="events per dialogue of each kind")
    ap.add_argument("--label", default="after")
    ap.add_argument("--per-shard", type=int, default=2, help="run.samples_per_shard (a run cut short keeps its shards)")
    ap.add_argument("--code", type=Path, default=ROOT, help="the source tree whose factory generates the run")
    ap.add_argument("--out", type=Path, default=Path("/tmp/events-bench"))
    ap.add_argument("--run", type=Path, help="measure this run folder instead of generating one")
    ap.add_argument("--dataset", help="text from this dialogue set, rewritten by rules (no LLM), espeak voices")
    ap.add_argument("--audit", action="store_true", help="also the audit's turn-taking, as now and events counted")
    args = ap.parse_args()
    wall = None
    run = args.run
    if run is None:
        run, wall = generate(
            args.code, args.out, args.label, args.dialogues, args.seed, args.rate, args.per_shard, args.dataset
        )
    result = measure(run, args.rate) | {"run": str(run), "generate_wall_s": round(wall, 1) if wall else None}
    if args.dataset:
        result["dataset"] = args.dataset
    if args.audit:
        result["audit"] = audit_measures(run)
    path = RESULTS / "events.json"
    doc = json.loads(path.read_text()) if path.exists() else {"results": {}}
    if wall is None and args.label in doc["results"]:  # measured again: the generate time stays the run's
        result["generate_wall_s"] = doc["results"][args.label].get("generate_wall_s")
    doc["results"][args.label] = result
    doc["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    doc["date"] = datetime.now(UTC).strftime("%Y-%m-%d")
    path.write_text(json.dumps(doc, indent=2) + "\n")
    body = table(doc["results"])
    audited = audit_table(doc["results"])
    notes = "\n".join(
        f"- {label}: {r['dialogues']} dialogues ({r['rejected']} samples rejected), "
        f"{r['placed_in_audio_within_80ms']} of {r['total']['placed']} placed events found in the user's audio "
        "within one 80 ms frame of the timeline (energy VAD)"
        + (f", {r['placed_in_audio_within_10ms']} within one 10 ms frame" if "placed_in_audio_within_10ms" in r else "")
        + (
            f", side talk in the user's own turn {r['side_talk_in_user_turns']}"
            f" of {r['per_kind']['side_talk']['placed']}"
            if "side_talk_in_user_turns" in r
            else ""
        )
        + (
            f", background speech and sounds under the user's speech {r['sounds_under_user_speech']} of "
            f"{r['per_kind']['background_speech']['placed'] + r['per_kind']['non_speech']['placed']}"
            if "sounds_under_user_speech" in r
            else ""
        )
        + (f", text from `{r['dataset']}` (rules)" if "dataset" in r else "")
        + (
            f", plan overlap share {r['audit']['plan_overlap_share']:.4f}, events {r['audit']['event_share']:.1%} "
            "of the speech the detector heard"
            if "audit" in r
            else ""
        )
        + ", agent turns "
        f"{r['agent_turn_words']['min']}-{r['agent_turn_words']['max']} words (median "
        f"{r['agent_turn_words']['median']}), generate {r['generate_wall_s']} s wall"
        for label, r in doc["results"].items()
    )
    md = (
        "# Events the agent must not answer: planned against placed\n\n"
        "`benchmarks/events.py`: a real run (embedded SmolLM2, default voices, every events rate set), "
        "counted from its samples. `before`: the code before the events were counted and given room (its "
        "planned counts drawn again as it drew them; its drops were silent then); `after`: the planner gives "
        "each event a free stretch of any agent turn with room (the quota carried to the long turns), the "
        "turn-by-turn writer asks agent turns for room, and the timeline moves an event with no clear place "
        "to the agent's nearest other turn; `user-gaps`: side talk also in a pause of the user's own turn "
        "(`events.side_talk_user_share` 0.5), which the timeline opens for it. Same seed, same scenarios;"
        " the LLM writes other words once "
        "agent turns are asked for more. `no_room`: no agent turn had room (planner); `user_busy`: no clear "
        "place on the user's channel (timeline). Wall times are of a shared 2-core machine under other "
        "helpers' load: not comparable.\n\n" + body + "\n\n" + notes + "\n"
        "\n## The audit's turn-taking with events on and off\n\n"
        "`--audit`: the audit's pooled measures (energy VAD), on turn speech as it measures them now (the "
        "events the agent must not answer left out where the user's own words do not explain the sound: "
        "`factory.audit.measures.turn_speech`), and the same Heldner & Edlund measures on all the detector "
        "heard, the events counted as turns (as the audit measured before). `events-off` and `events-on`: "
        "the same seed and dialogues (`--dataset`: text from a dialogue set rewritten by rules, espeak "
        "voices), events off and on; the events have their own generator, so the turns are the same but for "
        "the pauses side talk opens in the user's turns.\n\n" + audited + "\n"
    )
    (RESULTS / "events.md").write_text(md)
    print(body)
    print(audited)
    print(notes)


if __name__ == "__main__":
    main()
