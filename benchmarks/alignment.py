"""Accuracy of factory.render.align.align_words against Piper's exact word alignments.

Piper's word times come from its own phoneme durations (samples per phoneme, exact), so on the
same audio they are ground truth. We render SENTENCES with each piper voice of voices/cpu.yaml,
align the audio with align_words (no access to Piper's times), and compare every word boundary
(each start and each end): median, 95th percentile, share within 50 ms.

    python benchmarks/alignment.py            # writes benchmarks/results/alignment.{json,md}
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SENTENCES = [
    "The quick brown fox jumps over the lazy dog, and then it went home for dinner.",
    "Well, um, I think we should probably leave at 7:30 before the traffic gets bad.",
    "Could you send me the report by Friday afternoon?",
    "I don't know, honestly. It depends on what she says tomorrow.",
    "Mm-hmm, yeah, that makes sense to me.",
    "We spent about 25 dollars on groceries last week.",
    "Okay, so the first thing you want to do is open the settings menu.",
    "Actually, wait. I-I meant the other one, the blue one.",
    "My grandmother grew up in a small village near the mountains.",
    "Is it going to rain this weekend, or should we plan the picnic?",
    "The meeting was moved to Thursday because half the team was sick.",
    "Right, right. And what did the doctor say about your knee?",
    "Uh, I'm not sure that's a good idea, to be honest.",
    "They renovated the kitchen and added a huge window over the sink.",
    "So basically, the algorithm sorts everything before it searches.",
    "You should try the pasta there; it's really, really good.",
    "Three hundred people showed up, which nobody expected.",
    "Hold on, let me check my calendar real quick.",
    "The train was delayed for almost an hour this morning.",
    "I love that song! It reminds me of our road trip to Portland.",
    "Sure, I can pick up the kids after school today.",
    "What time does the pharmacy close on Sundays?",
    "He's been learning the guitar for about six months now.",
    "No, no, you've got it backwards: the red wire goes on top.",
    "We could, um, maybe order pizza instead of cooking tonight.",
    "The museum has a new exhibit on ancient Egyptian jewelry.",
    "Thanks so much for helping me move last weekend.",
    "If the printer jams again, just turn it off and on.",
    "I read somewhere that octopuses have three hearts.",
    "Honestly, I'd rather stay home and watch a movie.",
    "The flight leaves at noon, so we need to be there by ten.",
    "Yeah, exactly. That's what I was trying to say.",
    "She finally finished her thesis after four long years.",
    "Do you remember the name of that restaurant downtown?",
    "Let's not worry about the budget until next quarter.",
    "Oh wow, I didn't realize it was already December.",
    "The dog keeps barking at the mailman every single day.",
    "Can you believe how expensive concert tickets have gotten?",
    "I think the password is written on a sticky note somewhere.",
    "Alright, let's wrap this up and continue tomorrow morning.",
]

CONFIGS = {  # refinement variants compared in the same run (shift, before, after), seconds
    "raw": (0.0, 0.0, 0.0),
    "shift+40ms": (0.04, 0.0, 0.0),
    "shift+60ms": (0.06, 0.0, 0.0),
    "snap[-40,+80]": (0.0, 0.04, 0.08),
    "shift+40,snap[-40,+40]": (0.04, 0.04, 0.04),
    "shift+40,snap[-60,+60]": (0.04, 0.06, 0.06),
}


def errors(words, truth) -> np.ndarray:
    return 1000 * np.array(
        [abs(a.start - g.start) for a, g in zip(words, truth)] + [abs(a.end - g.end) for a, g in zip(words, truth)]
    )


def stats(err: np.ndarray) -> dict:
    return {
        "median_ms": round(float(np.median(err)), 1),
        "p95_ms": round(float(np.percentile(err, 95)), 1),
        "within_50ms": round(float(np.mean(err <= 50)), 3),
        "n_boundaries": int(err.size),
    }


def main() -> None:
    from factory.asr import to_16k
    from factory.render import align
    from factory.render.registry import get_backend
    from factory.render.voices import VoiceBank

    voices = [v for v in VoiceBank.load(ROOT / "voices" / "cpu.yaml") if v.backend == "piper"]
    backend = get_backend("piper")
    renders = []
    for i, text in enumerate(SENTENCES):
        voice = voices[i % len(voices)]
        renders.append((voice, text, backend.synthesize(text, voice)))
    audio_s = sum(u.duration for *_, u in renders)

    results: dict[str, dict] = {}
    timing: dict[str, float] = {}
    for method in ("forced", "asr"):
        raw = []
        t0 = time.perf_counter()
        for _voice, text, utt in renders:
            pcm = to_16k(utt.audio, utt.sample_rate)
            fn = align.forced_spans if method == "forced" else align.matched_spans
            raw.append(fn(pcm, text.split()))
        if method == "forced":
            forced_raw = raw
        timing[method] = time.perf_counter() - t0
        for name, (shift, before, after) in CONFIGS.items():
            errs = [
                errors(align.refine(spans, text.split(), utt.audio, utt.sample_rate, shift, before, after), utt.words)
                for spans, (voice, text, utt) in zip(raw, renders)
            ]
            results[f"{method}/{name}"] = stats(np.concatenate(errs))
    # the shipped default (align_words, method "auto" = forced below 30 s): same raw spans
    default = results["forced/default"] = stats(
        np.concatenate(
            [
                errors(align.refine(spans, text.split(), utt.audio, utt.sample_rate), utt.words)
                for spans, (voice, text, utt) in zip(forced_raw, renders)
            ]
        )
    )
    default_s = timing["forced"]
    report = {
        "what": "align_words vs Piper exact word alignments on the same audio (start and end of every word)",
        "sentences": len(SENTENCES),
        "voices": [v.id for v in voices],
        "audio_seconds": round(audio_s, 1),
        "default": {
            **default,
            "method": "auto (forced)",
            "shift": align.SHIFT,
            "snap_before": align.SNAP_BEFORE,
            "snap_after": align.SNAP_AFTER,
            "rtf": round(default_s / audio_s, 3),
            "tuned_on": "these same sentences (in-sample)",
        },
        "variants": results,
        "rtf_raw_spans": {k: round(v / audio_s, 3) for k, v in timing.items()},
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores (shared; load average {os.getloadavg()[0]:.1f} at end), "
            "Whisper-base int8, cpu_threads=1"
        ),
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "alignment.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Word alignment accuracy (align_words vs Piper exact alignments)",
        "",
        (
            f"{len(SENTENCES)} sentences, voices {report['voices']}, {report['audio_seconds']} s of audio. "
            "Error = |aligned - Piper| for every word start and end. Produced by `benchmarks/alignment.py`."
        ),
        "",
        "| config | median ms | p95 ms | within 50 ms | boundaries |",
        "|---|---|---|---|---|",
        f"| **default (align_words)** | {default['median_ms']} | {default['p95_ms']} "
        f"| {default['within_50ms']:.1%} | {default['n_boundaries']} |",
    ]
    for k, v in results.items():
        lines.append(f"| {k} | {v['median_ms']} | {v['p95_ms']} | {v['within_50ms']:.1%} | {v['n_boundaries']} |")
    lines += [
        "",
        f"Alignment RTF (default, end to end): {report['default']['rtf']}; raw spans: {report['rtf_raw_spans']}",
        f"Machine: {report['machine']}",
        "",
    ]
    (out / "alignment.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
