"""Coqui XTTS-v2 cloning: from a reference clip (a few seconds of clean speech) or one of the
model's built-in speakers. XTTS generates audio autoregressively and has no durations, so word
times come from forced alignment after synthesis (`factory.render.align.align_words`); without
it a render fails with a TTSError that says so. Coqui has no batched XTTS inference: renders go
one by one, computing each reference clip's conditioning latents once per loaded model.

torch is an optional heavy dependency (the coqui environment only), imported where needed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from factory.models import Utterance, Voice
from factory.render.align import align_words
from factory.render.base import TTSError
from factory.render.coqui.models import Loaded
from factory.render.text import build_utterance

XTTS_PARAMS = {
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "length_penalty",
    "gpt_cond_len",
    "gpt_cond_chunk_len",
    "max_ref_len",
}


def render(text: str, tokens: list[str], voice: Voice, loaded: Loaded, rate: float) -> Utterance:
    import torch  # lazy: optional heavy dependency

    model = loaded.model
    lang = voice.language.lower()
    lang = lang if lang in model.config.languages else lang.split("-")[0]
    if lang not in model.config.languages:
        raise TTSError(f"voice {voice.id}: XTTS does not speak {voice.language!r}; languages: {model.config.languages}")
    params = dict(voice.params)
    cond = {k: params.pop(k) for k in ("gpt_cond_len", "gpt_cond_chunk_len", "max_ref_len") if k in params}
    latents = conditioning(voice, loaded, cond)
    seed_src = json.dumps(
        [text, voice.id, voice.model, voice.reference, voice.speaker, rate, sorted(voice.params.items())]
    )
    seed = int.from_bytes(hashlib.sha256(seed_src.encode()).digest()[:8], "little") & (2**63 - 1)
    device = model.device
    with loaded.lock:
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed)
                out = model.inference(text, lang, latents[0], latents[1], speed=rate, **params)
        except Exception as exc:
            raise TTSError(f"XTTS synthesis failed for voice {voice.id}: {type(exc).__name__}: {exc}") from exc
    wav = out["wav"]
    audio = wav.detach().float().cpu().numpy() if hasattr(wav, "detach") else np.asarray(wav, np.float32)
    audio = audio.ravel().astype(np.float32)
    sr = loaded.sample_rate
    try:
        words = align_words(audio, sr, text, language=lang)
    except Exception as exc:  # ImportError (no faster-whisper here), BackendUnavailable, TTSError
        raise TTSError(
            "XTTS produces no word durations (it generates audio tokens autoregressively); word times for "
            "XTTS come from the alignment step, factory.render.align.align_words(audio, sample_rate, text) "
            f"(Whisper forced alignment), which failed here: {type(exc).__name__}: {exc}. Install "
            "faster-whisper and its weights in this environment (see README, 'Alignment')"
        ) from exc
    spans = [(w.start, w.end) if w.end > w.start else None for w in words]
    if all(s is None for s in spans):
        raise TTSError(f"alignment found no words in the XTTS audio for {text!r}")
    return build_utterance(text, voice.id, audio, sr, tokens, spans)


def conditioning(voice: Voice, loaded: Loaded, cond: dict[str, Any]) -> tuple[Any, Any]:
    model = loaded.model
    if voice.reference:
        ref = Path(voice.reference).expanduser()
        if not ref.is_file():
            raise TTSError(f"voice {voice.id}: reference clip {ref} does not exist")
        key = (str(ref.resolve()), ref.stat().st_mtime, tuple(sorted(cond.items())))
        with loaded.lock:
            if key not in loaded.latents:
                kwargs = {
                    "gpt_cond_len": cond.get("gpt_cond_len", model.config.gpt_cond_len),
                    "gpt_cond_chunk_len": cond.get("gpt_cond_chunk_len", model.config.gpt_cond_chunk_len),
                    "max_ref_length": cond.get("max_ref_len", model.config.max_ref_len),
                    "sound_norm_refs": model.config.sound_norm_refs,
                }
                try:
                    loaded.latents[key] = model.get_conditioning_latents(audio_path=[str(ref)], **kwargs)
                except Exception as exc:
                    raise TTSError(
                        f"voice {voice.id}: could not read reference clip {ref}: {type(exc).__name__}: {exc}"
                    ) from exc
            return loaded.latents[key]
    speakers = getattr(model, "speaker_manager", None)
    known = dict(getattr(speakers, "speakers", {}) or {})
    if voice.speaker is None:
        raise TTSError(
            f"voice {voice.id}: XTTS needs `reference` (a clip to clone) or `speaker` "
            f"(a built-in speaker, e.g. {sorted(known)[:5]})"
        )
    if voice.speaker not in known:
        raise TTSError(
            f"voice {voice.id}: unknown XTTS speaker {voice.speaker!r}; built-in: "
            f"{sorted(known)[:8]}{'...' if len(known) > 8 else ''}"
        )
    entry = known[voice.speaker]
    return entry["gpt_cond_latent"], entry["speaker_embedding"]
