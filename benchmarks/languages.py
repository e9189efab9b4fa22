"""A language's run measured from its audio, against the figures the repository cites for it.

    .venv/bin/duplex-factory generate -n 24 --out outputs/ja24 \
        --set 'dialogue.sources=[{kind: dataset, path: ja-everyday}]' --set dialogue.language=ja
    PYTHONPATH=. .venv/bin/python benchmarks/languages.py outputs/ja24 [--no-exports]

For each run folder (a finished `generate` run of one language):
- outcomes: dialogues accepted and rejected (with the reasons of the manifest);
- intelligibility: the render stage's QA per voice (Whisper-base in the dialogue's language; WER,
  or CER where words are not space-separated and for Hindi: `languages.qa_metric`), from each
  timeline turn's `qa_wer`, and the dialogues whose every scored turn is within the language's
  default QA gate (a run with the gate lifted, `tts.qa_thresholds`, scores every turn and rejects
  none: this counts what the default gate would have let through at the first render, before its
  slower re-render);
- speaking rate: the language's words (`factory.languages.words`) per second of its turns' audio,
  against the lexicon's `words_per_second` (the planner's count of minutes);
- listener reactions: planned (the timeline's backchannel turns) and measured from the audio (the
  audit's backchannel-like IPUs, `factory.conversation.measures`), per minute of dialogue, against
  the lexicon's rate;
- floor transfers measured from the audio (energy VAD, H&E frame states, 180 ms bridge, pooled):
  mean and quantiles, against timing_languages.yaml's published mean offset; the overlap share of
  the dialogue (both speaking / its duration) and of speech time (both / anyone speaking: the
  audit's `overlap_share`), the latter against the language's audit band (`bands_for`);
- exports (unless `--no-exports`): moshi (main env) and nemo-duplex (through the CLI) with the
  default text tokenizer, with Whisper's (the default for languages other than English before
  Gemma 3's) and with SmolLM2's GGUF vocabulary: the rules that lose text (moshi
  `loader_drops_leftover_tokens`, nemo `text_longer_than_turn`), and ids per character.
- with `--rescore`: every TTS piece of the recipes rendered again and transcribed as the QA did,
  scored by both WER and CER (`asr.wer`, `asr.cer`) per voice, the WER checked against `qa_wer`.
Writes benchmarks/results/languages.json (one record per language, merged) and languages.md.

    PYTHONPATH=. .venv/bin/python benchmarks/languages.py --tokenizers

measures the packaged text tokenizers (SmolLM2's GGUF, Whisper's, Gemma 3's) on every turn text of
every language's dialogue set (`factory/dialogues/*-everyday.jsonl`): ids per word
(`languages.words`) and per character, and whether decoding gives back the text. Writes
benchmarks/results/tokenizers_languages.json and .md.

    PYTHONPATH=. .venv/bin/python benchmarks/languages.py --voices fr kokoro-fr-kumo espeak-fr-f3 ...

renders the first eight turns of the language's dialogue set with each voice of the bank named
(one after another, the same text for every voice) and scores Whisper-base's transcript in the
language (`asr.error_rate`: WER, or CER for Hindi and Japanese). Writes
benchmarks/results/languages_voices.json (merged per language) and .md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from factory.audit.measures import measure_stereo  # noqa: E402
from factory.config import TTSSection  # noqa: E402
from factory.conversation.bands import bands_for  # noqa: E402
from factory.languages import base, qa_metric, words  # noqa: E402
from factory.models import Channel, TurnKind  # noqa: E402
from factory.run.read import read_manifest, read_samples  # noqa: E402
from factory.script.lexicon import load_lexicon  # noqa: E402
from factory.timeline.timing import language_timing  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
QS = (0.10, 0.25, 0.50, 0.75, 0.90)


def measure_run(run: Path) -> dict[str, Any]:
    manifest = read_manifest(run)
    ok = manifest.filter(manifest["status"] == "ok")
    rejected = Counter(r.split(":")[0] for r in manifest.filter(manifest["status"] == "rejected")["reason"].to_list())
    languages = sorted({x or "en" for x in ok["language"].to_list()})
    if len(languages) != 1:
        raise SystemExit(f"{run}: one language a run, found {languages}")
    language = languages[0]
    qa: dict[str, list[float]] = defaultdict(list)
    gate = default_gate(language)
    within_gate = 0  # dialogues whose every scored turn is within the default gate at its first render
    fto: list[float] = []
    n_words = 0
    speech_s = minutes = planned = measured = overlap_s = anyone_s = 0.0
    for sample in read_samples(run):
        tl = sample.timeline
        scores = [t.qa_wer for t in tl.turns if t.qa_wer is not None]
        within_gate += all(x <= gate for x in scores)
        for t in tl.turns:
            if t.qa_wer is not None:
                qa[t.voice_id].append(t.qa_wer)
            if t.kind is TurnKind.turn:
                n_words += len(words(t.spoken_text, language))
                speech_s += t.end - t.start
        m = measure_stereo(sample.stems, sample.sample_rate, vad="energy")
        fto += list(m.fto)
        minutes += m.duration / 60
        planned += sum(t.kind is TurnKind.backchannel for t in tl.turns)
        measured += len(m.backchannels)
        overlap_s += m.both_s
        anyone_s += m.speech_s
    f = np.asarray(fto, float)
    return {
        "language": language,
        "run": str(run),
        "accepted": ok.height,
        "rejected": dict(rejected),
        "metric": qa_metric(language),
        "default_gate": gate,
        "dialogues_within_default_gate": within_gate,
        "qa_per_voice": {
            v: {
                "turns": len(x),
                "mean": float(np.mean(x)),
                "max": float(np.max(x)),
                "over_gate": sum(y > gate for y in x),
            }
            for v, x in sorted(qa.items())
        },
        "words_per_second": n_words / speech_s if speech_s else float("nan"),
        "minutes": minutes,
        "backchannels_per_minute_planned": planned / minutes,
        "backchannels_per_minute_measured": measured / minutes,
        "fto_mean": float(f.mean()),
        **{f"fto_p{round(q * 100)}": float(np.quantile(f, q)) for q in QS},
        "fto_within_500ms": float(np.mean(np.abs(f) <= 0.5)),
        "transitions": len(f),
        "overlap_share": overlap_s / (minutes * 60),  # of the dialogue's duration
        "overlap_share_of_speech": overlap_s / anyone_s if anyone_s else float("nan"),  # the audit's
    }


def rescore(run: Path) -> dict[str, Any]:
    """Both error rates of each voice's QA transcripts: the TTS pieces of each dialogue's mix recipe
    (voice, text, rate) rendered again and heard as the render stage's QA hears them (one Whisper
    pass per channel, `render.qa.check_together`, in the dialogue's language), each transcript
    scored by `asr.wer` and `asr.cer`; the WER is compared with the turns' stored `qa_wer` (a piece
    re-rendered slower after failing was heard alone at the time, so it may differ)."""
    from factory.asr import cer, wer
    from factory.render.qa import check_together
    from factory.render.registry import get_backend
    from factory.render.voices import VoiceBank

    bank = VoiceBank.load()
    per_voice: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"wer": [], "cer": []})
    matched: dict[str, list[bool]] = defaultdict(list)
    for sample in read_samples(run):
        language = sample.meta.scenario.language or "en"
        stored = {(t.voice_id, t.planned_text): t.qa_wer for t in sample.timeline.turns}
        for ch in Channel:
            sources = [p.source for p in sample.meta.recipe.pieces if p.channel is ch and p.source.backend != "sound"]
            utts = []
            for src in sources:
                voice = bank.get(src.voice_id)
                utts.append(get_backend(voice.backend).synthesize(src.text, voice, rate=src.rate))
            for src, qa in zip(sources, check_together(utts, 5.0, language), strict=True):
                if math.isnan(qa.wer):  # exempt (backchannel-length), not scored
                    continue
                per_voice[src.voice_id]["wer"].append(wer(src.text, qa.transcript, language))
                per_voice[src.voice_id]["cer"].append(cer(src.text, qa.transcript, language))
                if (q := stored.get((src.voice_id, src.text))) is not None:
                    matched[src.voice_id].append(abs(round(per_voice[src.voice_id]["wer"][-1], 4) - q) < 1e-4)
    return {
        v: {
            "pieces": len(x["wer"]),
            "mean_wer": float(np.mean(x["wer"])),
            "mean_cer": float(np.mean(x["cer"])),
            "max_cer": float(np.max(x["cer"])),
            "matched_qa_wer": sum(matched[v]),
            "compared_qa_wer": len(matched[v]),
        }
        for v, x in sorted(per_voice.items())
    }


def default_gate(language: str) -> float:
    """The QA threshold a run of `language` gets from the config defaults."""
    threshold = TTSSection().qa_threshold(language)
    assert threshold is not None
    return threshold


def export_rules(run: Path) -> dict[str, Any]:
    """moshi and nemo-duplex exports of `run` with the default text tokenizer and SmolLM2's GGUF."""
    from factory.export.options import ExportOptions
    from factory.export.run import export_run
    from factory.packaged import smollm2_gguf
    from factory.tokenize import default_text_tokenizer, get_text_tokenizer
    from factory.tokenize.text import WHISPER

    gguf = str(smollm2_gguf())
    manifest = read_manifest(run)
    default = default_text_tokenizer(sorted({x or "en" for x in manifest["language"].to_list()}))
    out: dict[str, Any] = {"default_text_tokenizer": default or "gguf (SmolLM2)"}
    texts = [t.spoken_text for s in read_samples(run) for t in s.timeline.turns]
    chars = sum(len(t) for t in texts)
    for name in dict.fromkeys((default, WHISPER, gguf)):
        tok = get_text_tokenizer(name)
        out[f"ids_per_char {tok.name}"] = sum(len(tok.encode(t)) for t in texts) / chars
    with tempfile.TemporaryDirectory() as tmp:
        for label, tokenizer in (("default", None), ("whisper", WHISPER), ("gguf", gguf)):
            report = export_run(run, "moshi", Path(tmp) / f"moshi-{label}", ExportOptions(text_tokenizer=tokenizer))
            out[f"moshi {label}: loader_drops_leftover_tokens"] = report.rules["loader_drops_leftover_tokens"]
            out[f"moshi {label}: samples_out"] = report.samples_out
            args = [str(ROOT / ".venv/bin/duplex-factory"), "export", str(run), "-f", "nemo-duplex"]
            args += ["--out", str(Path(tmp) / f"nemo-{label}")] + (["--text-tokenizer", tokenizer] if tokenizer else [])
            # this checkout's code, not the venv's install (before any path the caller set)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
            done = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
            report_file = Path(tmp) / f"nemo-{label}" / "report.json"
            if done.returncode or not report_file.is_file():
                out[f"nemo {label}"] = f"exit {done.returncode}: {done.stderr[-300:] or done.stdout[-300:]}"
                continue
            rules = json.loads(report_file.read_text(encoding="utf-8"))["rules"]
            out[f"nemo {label}: text_longer_than_turn"] = rules["text_longer_than_turn"]
            out[f"nemo {label}: eos_overwritten"] = rules["eos_overwritten"]
    return out


TOKENIZER_LANGUAGES = ("en", "ja", "es", "fr", "de", "hi")


def tokenizer_rates() -> dict[str, Any]:
    """Ids per word and per character of each packaged text tokenizer on each language's dialogue set."""
    from factory.locations import dialogue_set_dir
    from factory.packaged import smollm2_gguf
    from factory.tokenize import default_text_tokenizer, get_text_tokenizer
    from factory.tokenize.text import GEMMA, WHISPER

    tokenizers = {"smollm2": get_text_tokenizer(str(smollm2_gguf())), "whisper": get_text_tokenizer(WHISPER)}
    tokenizers["gemma"] = get_text_tokenizer(GEMMA)
    out: dict[str, Any] = {}
    for language in TOKENIZER_LANGUAGES:
        lines = (dialogue_set_dir() / f"{language}-everyday.jsonl").read_text(encoding="utf-8").splitlines()
        texts = [t["text"] for line in lines if line.strip() for t in json.loads(line)["turns"]]
        n_words = sum(len(words(t, language)) for t in texts)
        n_chars = sum(len(t) for t in texts)
        row: dict[str, Any] = {"turns": len(texts), "words": n_words, "chars": n_chars}
        row["default"] = default_text_tokenizer([language]) or "smollm2"
        for name, tok in tokenizers.items():
            ids = [tok.encode(t) for t in texts]
            n = sum(len(x) for x in ids)
            row[name] = {
                "ids": n,
                "ids_per_word": n / n_words,
                "ids_per_char": n / n_chars,
                "round_trip": sum(tok.decode(x) == t for x, t in zip(ids, texts, strict=True)),
                "name": tok.name,
            }
        out[language] = row
    return out


def tokenizer_markdown(rates: dict[str, Any], when: str) -> str:
    names = ("smollm2", "whisper", "gemma")
    md = [
        "# Text tokenizers per language",
        "",
        f"`PYTHONPATH=. .venv/bin/python benchmarks/languages.py --tokenizers`, {when}: every turn text of "
        "`factory/dialogues/<language>-everyday.jsonl`, encoded by each packaged vocabulary (SmolLM2-135M's GGUF, "
        "Whisper base's `tokenizer.json`, Gemma 3's GGUF vocabulary). Words: `factory.languages.words` (pyopenjtalk "
        "accent phrases for Japanese). Round trip: turns whose decoded ids give back the text exactly.",
        "",
        "| language | turns | words | chars | ids/word smollm2 | ids/word whisper | ids/word gemma "
        "| ids/char smollm2 | ids/char whisper | ids/char gemma | round trip (s/w/g) | default |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for language, r in rates.items():
        per_word = " | ".join(f"{r[n]['ids_per_word']:.2f}" for n in names)
        per_char = " | ".join(f"{r[n]['ids_per_char']:.3f}" for n in names)
        trip = "/".join(f"{r[n]['round_trip']}" for n in names)
        md.append(
            f"| {language} | {r['turns']} | {r['words']} | {r['chars']} | {per_word} | {per_char} | "
            f"{trip} of {r['turns']} | {r['default']} |"
        )
    return "\n".join(md) + "\n"


VOICE_TURNS = 8


def voice_rates(language: str, voice_ids: list[str]) -> dict[str, Any]:
    """Each voice's error rate on the same first `VOICE_TURNS` turns of the language's dialogue set."""
    from factory.asr import error_rate, transcribe
    from factory.locations import dialogue_set_dir
    from factory.render.registry import get_backend
    from factory.render.voices import VoiceBank

    lines = (dialogue_set_dir() / f"{language}-everyday.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [t["text"] for line in lines if line.strip() for t in json.loads(line)["turns"]][:VOICE_TURNS]
    bank = VoiceBank.load()
    out: dict[str, Any] = {}
    for voice_id in voice_ids:
        voice = bank.get(voice_id)
        backend = get_backend(voice.backend)
        rates = []
        for text in texts:
            utt = backend.synthesize(text, voice)
            rates.append(error_rate(text, transcribe(utt.audio, utt.sample_rate, language=language).text, language))
        out[voice_id] = {"mean": float(np.mean(rates)), "max": float(np.max(rates)), "per_turn": rates}
        print(voice_id, f"{np.mean(rates):.3f}", [round(r, 2) for r in rates], flush=True)
    return {"turns": texts, "metric": qa_metric(language), "voices": out}


def voices_markdown(results: dict[str, Any]) -> str:
    md = [
        "# Voices per language: the same turns, every voice",
        "",
        "`PYTHONPATH=. .venv/bin/python benchmarks/languages.py --voices LANGUAGE VOICE...`: the first "
        f"{VOICE_TURNS} turns of `factory/dialogues/<language>-everyday.jsonl` rendered by each voice and "
        "transcribed by Whisper-base in the language (no re-render, no gate).",
        "",
    ]
    for language, r in results.items():
        md += [f"## {language}", "", r["when"], "", f"| voice | mean {r['metric']} | max | per turn |"]
        md.append("|---|---|---|---|")
        for v, q in r["voices"].items():
            md.append(f"| {v} | {q['mean']:.3f} | {q['max']:.2f} | {' '.join(f'{x:.2f}' for x in q['per_turn'])} |")
        md.append("")
    return "\n".join(md)


def references(language: str) -> dict[str, Any]:
    lex = load_lexicon(language)
    entry = language_timing().languages.get(base(language))
    overlap = bands_for(language)["overlap_share"]
    return {
        "overlap_band": overlap.shown(),
        "overlap_source": overlap.source,
        "backchannels_per_minute": lex.backchannels_per_minute,
        "backchannels_source": lex.backchannels_source,
        "words_per_second": lex.words_per_second,
        "fto_mean": entry.mean_offset_s if entry else None,
        "fto_source": entry.source if entry else "none published here: English's timing (Switchboard)",
    }


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:+.0f} ms"


def markdown(results: dict[str, dict[str, Any]]) -> str:
    path = RESULTS / "languages_voices.json"
    voices = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    md = ["# Languages: runs measured from their audio", ""]
    for language, r in results.items():
        m, ref = r["measures"], r["references"]
        commit = f", {r['commit']}" if r.get("commit") else ""
        md += [f"## {language}", "", f"`benchmarks/languages.py`, {r['when']}{commit}; run: `{r['command']}`.", ""]
        md += [f"Dialogues: {m['accepted']} accepted, rejected: {m['rejected'] or 'none'}.", ""]
        if "default_gate" in m and m["qa_per_voice"]:  # (a run with QA off scored no turn)
            md += [
                f"Within the default QA gate ({m['metric']} <= {m['default_gate']}) at the first render: "
                f"{m['dialogues_within_default_gate']} of {m['accepted']} dialogues (every scored turn).",
                "",
            ]
        md += [
            f"| voice | turns | mean {m['metric']} | max {m['metric']} | over the default gate |",
            "|---|---|---|---|---|",
        ]
        for v, q in m["qa_per_voice"].items():
            md.append(f"| {v} | {q['turns']} | {q['mean']:.3f} | {q['max']:.3f} | {q.get('over_gate', '-')} |")
        if r.get("rescored"):
            md += [
                "",
                "Both error rates of one transcript per piece (`--rescore`: each TTS piece rendered again and "
                "heard as the QA hears it; WER `asr.wer`, CER `asr.cer`, jiwer's):",
                "",
                "| voice | pieces | mean WER | mean CER | max CER | WER = stored qa_wer |",
                "|---|---|---|---|---|---|",
            ]
            for v, q in r["rescored"].items():
                md.append(
                    f"| {v} | {q['pieces']} | {q['mean_wer']:.3f} | {q['mean_cer']:.3f} | {q['max_cer']:.3f} | "
                    f"{q['matched_qa_wer']} of {q['compared_qa_wer']} |"
                )
        if (same := voices.get(language)) is not None:
            md += [
                "",
                f"The voices compared on the same first {VOICE_TURNS} turns of the dataset "
                f"(`--voices {language} ...`, {same['when']}; no gate, no re-render; also languages_voices.md):",
                "",
                f"| voice | mean {same['metric']} | max {same['metric']} | per turn |",
                "|---|---|---|---|",
            ]
            for v, q in same["voices"].items():
                per_turn = " ".join(f"{x:.2f}" for x in q["per_turn"])
                md.append(f"| {v} | {q['mean']:.3f} | {q['max']:.3f} | {per_turn} |")
        md += ["", "| measure | measured | reference |", "|---|---|---|"]
        md.append(
            f"| words a second (languages.words) | {m['words_per_second']:.2f} | {ref['words_per_second']} (lexicon) |"
        )
        md.append(
            f"| backchannels a minute, planned | {m['backchannels_per_minute_planned']:.1f} | "
            f"{ref['backchannels_per_minute']} ({ref['backchannels_source'].split(';')[0]}) |"
        )
        md.append(f"| backchannels a minute, measured from the audio | {m['backchannels_per_minute_measured']:.1f} | |")
        md.append(f"| FTO mean (audio) | {ms(m['fto_mean'])} | {ms(ref['fto_mean'])} ({ref['fto_source']}) |")
        quantiles = " / ".join(ms(m[f"fto_p{round(q * 100)}"]) for q in QS)
        md.append(f"| FTO p10/p25/p50/p75/p90 (audio, {m['transitions']} transitions) | {quantiles} | |")
        md.append(f"| FTO within +/-500 ms | {m['fto_within_500ms']:.0%} | |")
        md.append(f"| overlap share of the dialogue (both speaking / duration) | {m['overlap_share']:.1%} | |")
        if "overlap_share_of_speech" in m:  # (records before 2026-12-07 have the dialogue's share only)
            band = f"audit band {ref['overlap_band']}: {ref['overlap_source']}" if "overlap_band" in ref else ""
            md.append(
                f"| overlap share of speech time (both / anyone speaking: the audit's) | "
                f"{m['overlap_share_of_speech']:.1%} | {band} |"
            )
        if r.get("exports"):
            md += ["", "| export | value |", "|---|---|"]
            md += [f"| {k} | {v if not isinstance(v, float) else f'{v:.2f}'} |" for k, v in r["exports"].items()]
        md += ["", *(f"- {n}" for n in r.get("notes", [])), ""]
    return "\n".join(md)


def head_commit() -> str:
    """The checkout's commit, marked "+ changes" when tracked files differ from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD"], check=False).returncode
    return head.stdout.strip() + (" + changes" if dirty else "") if head.returncode == 0 else "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--tokenizers", action="store_true", help="measure the packaged text tokenizers per language")
    ap.add_argument("--voices", nargs="+", metavar="LANGUAGE VOICE", help="a language, then voice ids to compare")
    ap.add_argument("--no-exports", action="store_true")
    ap.add_argument(
        "--rescore", action="store_true", help="render and transcribe every piece again: WER and CER per voice"
    )
    ap.add_argument("--command", default="", help="the generate command of the run(s), for the record")
    ap.add_argument("--note", action="append", default=[], help="a line of notes for the language's section")
    ap.add_argument(
        "--key",
        default=None,
        help="the record's key in languages.json (default: the run's language), e.g. 'fr kokoro': another run "
        "of a language beside the one recorded",
    )
    args = ap.parse_args()
    if args.voices:
        language, *ids = args.voices
        path = RESULTS / "languages_voices.json"
        results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        record = voice_rates(language, ids)
        results[language] = {"when": datetime.now(UTC).isoformat(timespec="seconds"), **record}
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (RESULTS / "languages_voices.md").write_text(voices_markdown(results), encoding="utf-8")
        runs = RESULTS / "languages.json"
        if runs.exists():  # a run's section shows its language's voices
            (RESULTS / "languages.md").write_text(
                markdown(json.loads(runs.read_text(encoding="utf-8"))), encoding="utf-8"
            )
        return
    if args.tokenizers:
        when = datetime.now(UTC).isoformat(timespec="seconds")
        rates = tokenizer_rates()
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "tokenizers_languages.json").write_text(
            json.dumps({"when": when, "languages": rates}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (RESULTS / "tokenizers_languages.md").write_text(tokenizer_markdown(rates, when), encoding="utf-8")
        print(tokenizer_markdown(rates, when))
        if not args.runs:
            return
    path = RESULTS / "languages.json"
    results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    for run in args.runs:
        m = measure_run(run)
        record = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": f"code at {head_commit()}",
            "command": args.command or f"generate ... --out {run}",
            "measures": m,
            "references": references(m["language"]),
            "exports": None if args.no_exports else export_rules(run),
            "rescored": rescore(run) if args.rescore else None,
            "notes": args.note,
        }
        results[args.key or m["language"]] = record
        print(json.dumps(record, indent=2, ensure_ascii=False))
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (RESULTS / "languages.md").write_text(markdown(results), encoding="utf-8")


if __name__ == "__main__":
    main()
