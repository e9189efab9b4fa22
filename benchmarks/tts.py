"""TTS speed, cache speed-up, ASR speed and voice distinctness on this machine.

    python benchmarks/tts.py            # prints tables, writes benchmarks/results/tts.{json,md}

- RTF (compute seconds / audio seconds) per voice of voices/cpu.yaml, same 3 sentences, after
  one warm-up render per backend (model load excluded; reported separately). espeak is the
  baseline in the same run (the box is shared and noisy: compare ratios, not absolutes).
- Cache: CachedBackend(piper) miss vs hit time on the same sentences.
- ASR: faster-whisper Whisper-base int8 (1 thread) RTF on the piper renderings, greedy vs beam 5,
  with and without word timestamps.
- Distinctness: per voice, median F0 (librosa.pyin, voiced frames only) and median spectral
  centroid over the same 3 sentences.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SENTENCES = [
    "Could you send me the report by Friday afternoon, please?",
    "Honestly, I think the second option sounds a lot better than the first one.",
    "Yeah, we went hiking near the lake last weekend and it rained the whole time.",
]


def voice_features(audio: np.ndarray, sr: int) -> tuple[float, float]:
    import librosa

    from factory.audio.edit import resample

    y = resample(np.asarray(audio), sr, 16000, length="soxr").astype(np.float32)
    f0, voiced, _ = librosa.pyin(y, fmin=60, fmax=450, sr=16000, frame_length=1024, hop_length=256)
    f0 = f0[voiced & np.isfinite(f0)]
    cent = librosa.feature.spectral_centroid(y=y, sr=16000, n_fft=1024, hop_length=256)[0]
    rms = librosa.feature.rms(y=y, frame_length=1024, hop_length=256)[0]
    n = min(len(cent), len(rms))
    speech = cent[:n][rms[:n] > 0.1 * rms.max()]
    return (float(np.median(f0)) if f0.size else float("nan")), float(np.median(speech))


def main() -> None:
    from factory import asr
    from factory.render.cache import CachedBackend
    from factory.render.registry import get_backend
    from factory.render.voices import VoiceBank

    voices = list(VoiceBank.load(ROOT / "voices" / "cpu.yaml"))
    load_s: dict[str, float] = {}
    for name in sorted({v.backend for v in voices}):
        t0 = time.perf_counter()
        backend = get_backend(name)
        backend.synthesize("Warm up.", next(v for v in voices if v.backend == name))
        load_s[name] = round(time.perf_counter() - t0, 2)

    rows, renders = [], {}
    for voice in voices:
        backend = get_backend(voice.backend)
        compute = audio_s = 0.0
        renders[voice.id] = []
        for text in SENTENCES:
            t0 = time.perf_counter()
            utt = backend.synthesize(text, voice)
            compute += time.perf_counter() - t0
            audio_s += utt.duration
            renders[voice.id].append(utt)
        f0s, cents = zip(*(voice_features(u.audio, u.sample_rate) for u in renders[voice.id]))
        rows.append(
            {
                "voice": voice.id,
                "backend": voice.backend,
                "gender": voice.gender,
                "split": voice.split,
                "audio_s": round(audio_s, 2),
                "rtf": round(compute / audio_s, 4),
                "median_f0_hz": round(float(np.nanmedian(f0s)), 1),
                "median_centroid_hz": round(float(np.median(cents)), 0),
            }
        )
    espeak_rtf = np.median([r["rtf"] for r in rows if r["backend"] == "espeak"])
    by_backend = {
        b: {
            "median_rtf": round(float(np.median([r["rtf"] for r in rows if r["backend"] == b])), 4),
            "vs_espeak": round(float(np.median([r["rtf"] for r in rows if r["backend"] == b]) / espeak_rtf), 1),
            "first_render_incl_load_s": load_s[b],
        }
        for b in sorted({r["backend"] for r in rows})
    }

    # cache: miss vs hit, piper
    piper_voice = next(v for v in voices if v.backend == "piper")
    with tempfile.TemporaryDirectory() as tmp:
        cached = CachedBackend(get_backend("piper"), tmp)
        t0 = time.perf_counter()
        for text in SENTENCES:
            cached.synthesize(text, piper_voice, rate=1.05)
        miss = time.perf_counter() - t0
        t0 = time.perf_counter()
        reps = 20
        for _ in range(reps):
            for text in SENTENCES:
                cached.synthesize(text, piper_voice, rate=1.05)
        hit = (time.perf_counter() - t0) / reps
        cache = {
            "miss_s": round(miss, 4),
            "hit_s": round(hit, 5),
            "speedup": round(miss / hit, 0),
            "stats": cached.cache_stats.as_dict(),
        }

    # ASR
    t0 = time.perf_counter()
    asr.load_model()
    asr_load = time.perf_counter() - t0
    piper_utts = renders[piper_voice.id]
    piper_audio = sum(u.duration for u in piper_utts)
    asr_rows = {}
    for label, kw in {
        "greedy": {},
        "greedy+word_timestamps": {"word_timestamps": True},
        "beam5": {"beam_size": 5},
    }.items():
        t0 = time.perf_counter()
        texts = [asr.transcribe(u.audio, u.sample_rate, **kw).text for u in piper_utts]
        dt = time.perf_counter() - t0
        from factory.asr import wer

        asr_rows[label] = {
            "rtf": round(dt / piper_audio, 3),
            "mean_wer": round(float(np.mean([wer(s, t) for s, t in zip(SENTENCES, texts)])), 3),
        }
    report = {
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores (shared, noisy; "
            f"load average {os.getloadavg()[0]:.1f} at start)"
        ),
        "sentences": SENTENCES,
        "voices": rows,
        "by_backend": by_backend,
        "cache_piper": cache,
        "asr": {"model": asr.MODEL_ID, "load_s": round(asr_load, 2), "audio_s": round(piper_audio, 2), **asr_rows},
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tts.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# TTS benchmark",
        "",
        (
            f"Machine: {report['machine']}. Produced by `benchmarks/tts.py`; "
            "RTF = compute s / audio s, model load excluded (first render incl. load listed per backend)."
        ),
        "",
        "| voice | backend | gender | split | audio s | RTF | median F0 Hz | median centroid Hz |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['voice']} | {r['backend']} | {r['gender']} | {r['split']} | {r['audio_s']} | {r['rtf']} | "
        f"{r['median_f0_hz']} | {r['median_centroid_hz']:.0f} |"
        for r in rows
    ]
    lines += ["", "| backend | median RTF | x espeak | first render incl. load s |", "|---|---|---|---|"]
    lines += [
        f"| {b} | {v['median_rtf']} | {v['vs_espeak']} | {v['first_render_incl_load_s']} |"
        for b, v in by_backend.items()
    ]
    lines += [
        "",
        (
            f"Cache (piper, {len(SENTENCES)} sentences): miss {cache['miss_s']} s, hit {cache['hit_s']} s, "
            f"speed-up x{cache['speedup']:.0f}"
        ),
        "",
        f"ASR ({asr.MODEL_ID}, load {report['asr']['load_s']} s, {report['asr']['audio_s']} s of piper audio):",
        "",
        "| decoding | RTF | mean WER |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v['rtf']} | {v['mean_wer']} |" for k, v in asr_rows.items()]
    lines.append("")
    (out / "tts.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
