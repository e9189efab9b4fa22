"""Does moving the content-word notion to per-language function-word lists change anything in
English? Every English turn pair the repository holds, judged by this checkout's
`text_checks.content_words` and by a git revision's:

    PYTHONPATH=$PWD .venv/bin/python benchmarks/content_words.py --base e1fd21b

The pairs: consecutive turns of the shipped `dialogues/en-everyday.jsonl`, the labelled pairs of
`benchmarks/data/content_pairs.jsonl`, and the written scripts under
`benchmarks/results/content_scripts`, `content_dataset` and `content_long` (the embedded writer's
and the dataset rewrite's English turns). For each pair it compares what each English decision
reads: the content-word sets of both turns, `word_overlap` (the writer's parrot measure),
`source.kept_share` (the dataset rewrite's content check: numbers as words first), and per script
`planner.heard_floor` (the barge-in referent rule). The revision's `text_checks.py` is loaded from
`git show` as its own module; its `content_words` is the English-only one (ASCII, one list).
Writes benchmarks/results/content_words_en.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def old_text_checks(rev: str) -> types.ModuleType:
    source = subprocess.run(
        ["git", "show", f"{rev}:factory/script/text_checks.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    module = types.ModuleType(f"text_checks_{rev}")
    exec(compile(source, f"{rev}:factory/script/text_checks.py", "exec"), module.__dict__)
    return module


def english_scripts() -> list[tuple[str, list[str]]]:
    """(where, turn texts) of every English script and dialogue the repository holds."""
    out = []
    for line in (ROOT / "dialogues" / "en-everyday.jsonl").read_text().splitlines():
        d = json.loads(line)
        out.append((f"dialogues/en-everyday.jsonl:{d['id']}", [t["text"] for t in d["turns"]]))
    for folder in ("content_scripts", "content_dataset", "content_long"):
        for path in sorted((RESULTS / folder).glob("*.jsonl")):
            for line in path.read_text().splitlines():
                row = json.loads(line)
                script = row.get("script")
                if not script or row.get("language", "en") != "en":
                    continue
                out.append((f"{path.relative_to(ROOT)}:{row.get('key')}", [t["text"] for t in script["turns"]]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="the git revision to compare with (its text_checks.py)")
    args = ap.parse_args()

    from factory.models import Channel, ScriptTurn
    from factory.script import planner, source
    from factory.script.text_checks import content_words, word_overlap

    old = old_text_checks(args.base)
    scripts = english_scripts()
    pairs = [(a, b) for _, turns in scripts for a, b in zip(turns, turns[1:])]
    labelled = [json.loads(x) for x in (ROOT / "benchmarks/data/content_pairs.jsonl").read_text().splitlines()]
    pairs += [(p["previous"], p["reply"]) for p in labelled]
    texts = sorted({t for pair in pairs for t in pair})

    differ = {
        "content_words": [t for t in texts if content_words(t) != old.content_words(t)],
        "word_overlap": [p for p in pairs if word_overlap(p[1], p[0]) != old.word_overlap(p[1], p[0])],
    }
    new_kept = [source.kept_share(a, b) for a, b in pairs]
    planner_words, source_words = planner.content_words, source.checked_content_words

    def floors() -> list[list[int]]:
        return [planner.heard_floor([ScriptTurn(speaker=Channel.user, text=t) for t in turns]) for _, turns in scripts]

    floors_new = floors()
    try:
        planner.content_words = source.checked_content_words = lambda text, language="en": old.content_words(text)
        old_kept = [source.kept_share(a, b) for a, b in pairs]
        floors_old = floors()
    finally:
        planner.content_words, source.checked_content_words = planner_words, source_words
    differ["kept_share"] = [p for p, a, b in zip(pairs, new_kept, old_kept) if a != b]
    differ["heard_floor"] = [w for (w, _), a, b in zip(scripts, floors_new, floors_old) if a != b]

    counts = {
        "scripts": len(scripts),
        "turn_pairs": len(pairs),
        "distinct_turns": len(texts),
        "barge_in_floors": sum(len(f) for f in floors_new),
    }
    out = {
        "base": args.base,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **counts,
        "differ": {k: len(v) for k, v in differ.items()},
        "examples": {k: [str(x)[:200] for x in v[:5]] for k, v in differ.items()},
        "words_that_differ": sorted(
            {w for t in differ["content_words"] for w in content_words(t) ^ old.content_words(t)}
        ),
        "python": sys.version.split()[0],
    }
    (RESULTS / "content_words_en.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    md = [
        f"# English content words: this checkout against {args.base} ({out['date']})",
        "",
        "`benchmarks/content_words.py --base REV`: every English turn pair the repository holds"
        f" ({counts['turn_pairs']} pairs, {counts['distinct_turns']} distinct turns, {counts['scripts']} scripts"
        " and dialogues), judged by this checkout's per-language `text_checks.content_words` and by the"
        " revision's English-only one.",
        "",
        "| what an English decision reads | compared on | differ |",
        "|---|---:|---:|",
        f"| `content_words` of a turn | {counts['distinct_turns']} turns | {out['differ']['content_words']} |",
        f"| `word_overlap` (the parrot measure) | {counts['turn_pairs']} pairs | {out['differ']['word_overlap']} |",
        f"| `source.kept_share` (the rewrite's content check) | {counts['turn_pairs']} pairs"
        f" | {out['differ']['kept_share']} |",
        f"| `planner.heard_floor` (barge-in referents) | {counts['scripts']} scripts, {counts['barge_in_floors']}"
        f" turn floors | {out['differ']['heard_floor']} |",
    ]
    if out["words_that_differ"]:
        md += [
            "",
            f"The turns whose content words differ hold letters outside ASCII, which the old pattern cut"
            f" (new and old words: {', '.join(out['words_that_differ'])}); none changes a decision above.",
        ]
    (RESULTS / "content_words_en.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
