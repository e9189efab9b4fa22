"""Coqui multi-speaker VITS: word times from the model's own durations, and padded batches
that equal their items rendered alone.

VITS predicts frames per input token (`outputs["durations"]` of `Vits.inference`); the tokens
are decoded back to characters/phonemes, and the runs between space tokens are mapped onto the
text's whitespace tokens with `factory.render.text.map_spans`. Its noise (duration predictor and
prior) is drawn per item from generators seeded by (text, voice, rate, params), on the CPU, so
the same input gives the same durations and audio on the same device, whatever batch it was in.

torch and coqui-tts are optional heavy dependencies (the coqui environment only): they are
imported inside the functions that need them, so the package imports everywhere."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from factory.models import Utterance, Voice
from factory.render.base import SynthesisRequest, TTSError
from factory.render.coqui.models import Loaded
from factory.render.text import build_utterance, map_spans

VITS_PARAMS = {"length_scale", "noise_scale", "noise_scale_dp"}
_NOT_SOUNDS = {" ", "ˈ", "ˌ", "ː", "ˑ"}


@contextmanager
def _masked_convs(decoder: Any, lengths: Any, frames: int, active: bool) -> Iterator[None]:
    """While active, every Conv1d/ConvTranspose1d of `decoder` sees its input zeroed past each
    item's length (at that layer's resolution, a multiple of `frames`), exactly what a lone
    item's conv padding would show it: no padded sample leaks into a shorter item. The
    conditioning layers (cond_layer, conds: [B, C, 1] speaker inputs) are left alone."""
    if not active:
        yield
        return
    import torch  # lazy: optional heavy dependency

    def pre(_module: Any, args: tuple) -> tuple | None:
        x = args[0]
        t = x.shape[-1]
        if t % frames:
            return None
        mask = torch.arange(t, device=x.device)[None, :] < (lengths * (t // frames))[:, None]
        return (x * mask.unsqueeze(1).to(x.dtype), *args[1:])

    convs = (torch.nn.Conv1d, torch.nn.ConvTranspose1d)
    handles = [
        m.register_forward_pre_hook(pre)
        for name, m in decoder.named_modules()
        if isinstance(m, convs) and not name.startswith("cond")
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def speaker_id(loaded: Loaded, voice: Voice) -> int | None:
    manager = getattr(loaded.model, "speaker_manager", None)
    names = dict(manager.name_to_id) if manager is not None and manager.name_to_id else {}
    if len(names) <= 1:
        if voice.speaker and voice.speaker not in names:
            raise TTSError(
                f"voice {voice.id}: model {voice.model!r} has a single speaker, "
                f"but speaker {voice.speaker!r} was asked for"
            )
        return next(iter(names.values()), None)
    if voice.speaker is None:
        raise TTSError(
            f"voice {voice.id}: model {voice.model!r} has {len(names)} speakers; set "
            f"`speaker` to one of them, e.g. {sorted(names)[:5]}"
        )
    if voice.speaker not in names:
        raise TTSError(
            f"voice {voice.id}: unknown speaker {voice.speaker!r} for model {voice.model!r}; "
            f"it has {len(names)} speakers, e.g. {sorted(names)[:8]}"
        )
    return int(names[voice.speaker])


def _sound_chars(model: Any, ids: Sequence[int]) -> list[str]:
    """Token ids decoded to characters; blanks, pads, bos/eos become ''."""
    chars = model.tokenizer.characters
    skip = {chars.blank, chars.pad, chars.bos, chars.eos} - {None}
    out = []
    for i in ids:
        c = chars.id_to_char(int(i))
        out.append("" if c in skip else c)
    return out


def _is_sound(model: Any, c: str) -> bool:
    """A letter or phoneme: not a space, punctuation, or IPA stress/length mark (those
    carry frames, which stay inside their word's span, but no weight)."""
    return bool(c) and c not in _NOT_SOUNDS and c not in model.tokenizer.characters.punctuations


def _token_weight(loaded: Loaded, token: str, language: str | None) -> float:
    """Sounds (characters or phonemes the model reads) in one token said alone."""
    key = f"{language}\x00{token}"
    if key not in loaded.weights:
        ids = loaded.model.tokenizer.text_to_ids(token, language=language)
        chars = _sound_chars(loaded.model, ids)
        loaded.weights[key] = float(sum(_is_sound(loaded.model, c) for c in chars))
    return loaded.weights[key]


def model_language(loaded: Loaded, voice: Voice) -> tuple[str | None, Any]:
    manager = getattr(loaded.model, "language_manager", None)
    if manager is None or manager.num_languages <= 1:
        return None, None
    lang = voice.language
    if lang not in manager.name_to_id:
        lang = lang.split("-")[0]
    if lang not in manager.name_to_id:
        raise TTSError(
            f"voice {voice.id}: language {voice.language!r} not in model languages {sorted(manager.name_to_id)}"
        )
    return lang, manager.name_to_id[lang]


def render_batch(
    items: list[tuple[SynthesisRequest, list[str], int | None]], loaded: Loaded
) -> tuple[list[Utterance | TTSError], int]:
    """(results in item order, batches split after a failure). Coqui's `Vits.inference`,
    staged so that a batch equals its items rendered alone.

    Per item (cheap, text-length work): text encoder, duration predictor with the item's
    own seeded noise, alignment path, prior noise from the item's own generator. Batched
    (the T_dec-length work that dominates): the flow on the padded prior with `y_mask`, and
    the HiFi-GAN decoder with every conv's input masked to each item's length, so padding
    never reaches a shorter item's samples (Coqui's own batched inference lets the decoder's
    biases leak into them). Durations, hence lengths and word times, are exactly the
    one-at-a-time ones; audio equals it up to float rounding of batched kernels."""
    import torch  # lazy: optional heavy dependency

    model = loaded.model
    results: list[Utterance | TTSError | None] = [None] * len(items)
    priors: list[tuple[int, list[int], str | None, np.ndarray, Any, Any]] = []
    with loaded.lock, torch.inference_mode():
        for k, (r, _tokens, speaker) in enumerate(items):
            try:
                priors.append((k, *_vits_prior(loaded, r, speaker)))
            except TTSError as exc:
                results[k] = exc
            except Exception as exc:  # noqa: BLE001 — one item's model error stays in its slot
                results[k] = TTSError(
                    f"coqui VITS synthesis failed for voice {r.voice.id}: {type(exc).__name__}: {exc}"
                )
        audios, splits = _decode_or_split(model, [p[4] for p in priors], [p[5] for p in priors])
    hop = int(model.config.audio.hop_length)
    sr = loaded.sample_rate
    for (k, ids, language, dur, _, _), audio in zip(priors, audios, strict=True):
        r, tokens, _ = items[k]
        if isinstance(audio, TTSError):
            results[k] = audio
            continue
        spans = _vits_spans(loaded, tokens, ids, dur, hop, sr, language)
        results[k] = build_utterance(r.text, r.voice.id, audio, sr, tokens, spans)
    return [x for x in results if x is not None], splits


def _vits_prior(
    loaded: Loaded, r: SynthesisRequest, speaker: int | None
) -> tuple[list[int], str | None, np.ndarray, Any, Any]:
    """One item up to the prior: (token ids, language, frames per token, z_p [1, C, T], g)."""
    import torch  # lazy: optional heavy dependency
    from TTS.tts.utils.helpers import generate_path, sequence_mask  # lazy: coqui-tts, optional

    model, voice = loaded.model, r.voice
    device = model.device
    language, language_id = model_language(loaded, voice)
    ids = model.tokenizer.text_to_ids(r.text, language=language)
    if len(ids) == 0:
        raise TTSError(f"coqui: nothing the model can read in {r.text!r}")
    params = voice.params
    length_scale = float(params.get("length_scale", model.length_scale)) / r.rate
    noise_scale = float(params.get("noise_scale", model.inference_noise_scale))
    noise_scale_dp = float(params.get("noise_scale_dp", model.inference_noise_scale_dp))
    seed_src = json.dumps([r.text, voice.id, voice.model, voice.speaker, r.rate, sorted(params.items())])
    seed = int.from_bytes(hashlib.sha256(seed_src.encode()).digest()[:8], "little") & (2**63 - 1)

    x = torch.tensor([ids], dtype=torch.long, device=device)
    sid = None if speaker is None else torch.tensor([speaker], device=device)
    g = model._get_speaker_conditioning({"speaker_ids": sid, "d_vectors": None}, "emb_g", normalize_embedding=False)
    lang_emb = None
    if model.args.use_language_embedding and language_id is not None:
        lang_emb = model.emb_l(torch.tensor([language_id], device=device)).unsqueeze(-1)
    x, m_p, logs_p, x_mask = model.text_encoder(x, torch.tensor([len(ids)], device=device), lang_emb=lang_emb)
    g_dp = g if model.args.condition_dp_on_speaker else None
    # the stochastic duration predictor draws its noise from torch's CPU generator
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model.args.use_sdp:
            logw = model.duration_predictor(
                x, x_mask, g=g_dp, reverse=True, noise_scale=noise_scale_dp, lang_emb=lang_emb
            )
        else:
            logw = model.duration_predictor(x, x_mask, g=g_dp, lang_emb=lang_emb)
    w_ceil = torch.ceil(torch.exp(logw) * x_mask * length_scale)
    y_lengths = torch.clamp_min(torch.sum(w_ceil, [1, 2]), 1).long()
    y_mask = sequence_mask(y_lengths, None).to(x_mask.dtype).unsqueeze(1)
    attn = generate_path(w_ceil.squeeze(1), (x_mask * y_mask.transpose(1, 2)).squeeze(1).transpose(1, 2))
    m_p = torch.matmul(attn.transpose(1, 2), m_p.transpose(1, 2)).transpose(1, 2)
    logs_p = torch.matmul(attn.transpose(1, 2), logs_p.transpose(1, 2)).transpose(1, 2)
    # the item's own prior noise, drawn on the CPU: the same whatever batch it joins
    gen = torch.Generator().manual_seed(seed ^ 0x5EED)
    eps = torch.randn(tuple(m_p.shape), generator=gen).to(device=device, dtype=m_p.dtype)
    z_p = m_p + eps * torch.exp(logs_p) * noise_scale
    return ids, language, w_ceil[0, 0].float().cpu().numpy(), z_p, g


def _decode_or_split(model: Any, priors: list[Any], gs: list[Any]) -> tuple[list[np.ndarray | TTSError], int]:
    """(audio per item, batches split). Decode a batch; when it fails (CUDA out of memory on
    long texts, ...), decode each half on its own, down to single items, so one batch too big
    for the device costs time, not renders (items are independent, so the audio is the same).
    A single item that fails holds its TTSError."""
    if not priors:
        return [], 0
    try:
        return list(_vits_decode(model, priors, gs)), 0
    except Exception as exc:  # noqa: BLE001 — split, or fail this item only
        if len(priors) == 1:
            return [TTSError(f"coqui VITS decoding failed: {type(exc).__name__}: {exc}")], 0
        import torch  # lazy: optional heavy dependency

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(priors) // 2
        first, a = _decode_or_split(model, priors[:half], gs[:half])
        second, b = _decode_or_split(model, priors[half:], gs[half:])
        return first + second, 1 + a + b


def _vits_decode(model: Any, priors: list[Any], gs: list[Any]) -> list[np.ndarray]:
    """Flow + decoder over the padded batch of priors ([1, C, T_b] each); audio per item."""
    import torch  # lazy: optional heavy dependency

    device = model.device
    lengths = torch.tensor([p.shape[-1] for p in priors], dtype=torch.long, device=device)
    frames = int(lengths.max())
    z_p = torch.zeros(len(priors), priors[0].shape[1], frames, device=device, dtype=priors[0].dtype)
    for b, p in enumerate(priors):
        z_p[b, :, : p.shape[-1]] = p[0]
    y_mask = (torch.arange(frames, device=device)[None, :] < lengths[:, None]).to(z_p.dtype).unsqueeze(1)
    g = None if gs[0] is None else torch.cat(gs, 0)
    z = model.flow(z_p, y_mask, g=g, reverse=True)
    z, _, _, y_mask = model.upsampling_z(z, y_lengths=lengths, y_mask=y_mask)
    z = (z * y_mask)[:, :, : model.max_inference_len]
    dec_lengths = y_mask[:, 0, : z.shape[-1]].sum(-1).long()
    with _masked_convs(model.waveform_decoder, dec_lengths, z.shape[-1], len(priors) > 1):
        o = model.waveform_decoder(z, g=g)
    per_frame = o.shape[-1] // z.shape[-1]
    wav = o[:, 0, :].detach().float().cpu().numpy()
    return [wav[b, : int(dec_lengths[b]) * per_frame] for b in range(len(priors))]


def _vits_spans(
    loaded: Loaded,
    tokens: list[str],
    ids: Sequence[int],
    dur: np.ndarray,
    hop: int,
    sr: int,
    language: str | None,
) -> list[tuple[float, float] | None]:
    """Per-token spans from per-input-token frame counts: the model's words are the runs
    of sound tokens between space tokens; blanks and punctuation carry time but no weight."""
    model = loaded.model
    chars = _sound_chars(model, ids)
    edges = np.concatenate([[0.0], np.cumsum(dur)]) * hop / sr
    units: list[tuple[float, float, float]] = []
    start = end = None
    weight = 0.0
    for k, c in enumerate(chars):
        if c == " ":
            if start is not None:
                units.append((start, end, weight))
            start, weight = None, 0.0
        elif _is_sound(model, c):
            if start is None:
                start = float(edges[k])
            end = float(edges[k + 1])
            weight += 1.0
    if start is not None:
        units.append((start, end, weight))
    weights = [_token_weight(loaded, t, language) for t in tokens]
    return map_spans(tokens, weights, units)
