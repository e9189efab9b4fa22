"""Coqui TTS backend (coqui-tts 0.28, GPU production path; also runs on CPU).

Two kinds of voice (`voices/gpu/coqui.yaml` documents both):

* Multi-speaker VITS: `voice.model` is a local folder holding a checkpoint (`model.pth`,
  `model_file.pth`, `checkpoint.pth` or `best_model*.pth`) and `config.json` (plus the speakers
  file, e.g. `speaker_ids.json`), or a Coqui model name such as `tts_models/en/vctk/vits`
  that was downloaded beforehand; `voice.speaker` is the speaker name inside the model
  (e.g. `p225`). Word times come from the model's own durations: VITS predicts frames per
  input token (`outputs["durations"]` of `Vits.inference`), the tokens are decoded back to
  characters/phonemes, and the runs between space tokens are mapped onto the text's
  whitespace tokens with `factory.render.text.map_spans`.
* XTTS-v2 cloning: `voice.model` is an XTTS folder (`model.pth`, `config.json`, `vocab.json`,
  optionally `speakers_xtts.pth`) or `tts_models/multilingual/multi-dataset/xtts_v2`;
  `voice.reference` is the reference clip (a few seconds of clean speech), or `voice.speaker`
  one of the model's built-in speakers. XTTS generates audio autoregressively and has no
  durations, so word times come from forced alignment after synthesis
  (`factory.render.align.align_words`); without it the call fails with a TTSError that says so.

Models are loaded through Coqui's own API (`TTS.api.TTS(model_path=..., config_path=...)`),
moved to the device once (`.to(device)`: cuda when available, else cpu), and cached per
(model, device) for the life of the backend. Nothing is downloaded at run time unless
`COQUI_ALLOW_DOWNLOAD=1` is set (production machines may be offline): a model name must be in
Coqui's cache (`tts --model_name NAME --list_models` fills it; XTTS-v2 comes from the
Hugging Face hub, repo `tts-hub/XTTS-v2`, formerly `coqui/XTTS-v2`).

Determinism: VITS draws its noise (duration predictor and prior) per item from generators
seeded by (text, voice, rate, params), on the CPU, so the same input gives the same durations
and the same audio on the same device, whatever batch it was rendered in.

Batching (`synthesize_many(requests)`, the protocol's batch call): VITS requests of one model
(any speakers, rates, languages) run the text encoder and duration predictor per item, then the
flow and the HiFi-GAN decoder -- the T_dec-length work that dominates -- as padded batches of
`batch_size` sorted by length, with every decoder conv's input masked to each item's length so
no padding leaks into a shorter item (`_vits_batch`). Default batch 16 on CUDA, 1 on CPU,
where padding costs more than batching saves. `batch_stats` counts the fill. XTTS has no
batched inference in Coqui: it renders one by one, computing the conditioning latents of each
reference clip once per backend (cached) and reusing them. The CUDA path is written against
Coqui's real API and tested on CPU only here (no GPU on the development machine).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from factory.models import Utterance, Voice
from factory.render.base import (
    BackendOptions,
    BackendUnavailable,
    BatchStats,
    SynthesisRequest,
    TTSError,
    render_identity,
)
from factory.render.text import build_utterance, check_params, check_text, map_spans

INSTALL_HINT = (
    "coqui-tts is not installed in this environment: run scripts/setup_coqui.sh (CPU) or "
    "pip install 'duplex-factory[gpu]' in a torch environment"
)
XTTS_V2 = "tts_models/multilingual/multi-dataset/xtts_v2"
VITS_PARAMS = {"length_scale", "noise_scale", "noise_scale_dp"}
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
CHECKPOINT_NAMES = ("model.pth", "model_file.pth", "model_file.pth.tar", "checkpoint.pth")
DEFAULT_BATCH = 16
_NOT_SOUNDS = {" ", "ˈ", "ˌ", "ː", "ˑ"}


def _download_allowed() -> bool:
    return os.environ.get("COQUI_ALLOW_DOWNLOAD", "") == "1"


def _download_hint(name: str) -> str:
    if "xtts" in name:
        return (
            f"download it once on a machine with network: COQUI_TOS_AGREED=1 tts --model_name {name} "
            "--text hi --out_path /tmp/x.wav (or huggingface-cli download tts-hub/XTTS-v2 --local-dir DIR, "
            "formerly coqui/XTTS-v2, and set voice.model to DIR), or set COQUI_ALLOW_DOWNLOAD=1"
        )
    return (
        f"download it once on a machine with network: tts --model_name {name} --text hi "
        "--out_path /tmp/x.wav (see `tts --list_models`), copy the folder and set voice.model to it, "
        "or set COQUI_ALLOW_DOWNLOAD=1"
    )


@dataclass
class _Loaded:
    """One loaded model on one device."""

    api: Any  # TTS.api.TTS
    model: Any  # the tts_model inside the synthesizer (Vits, Xtts, ...)
    kind: str  # "vits" | "xtts" | other config.model
    sample_rate: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    latents: dict[tuple[str, float, tuple], tuple[Any, Any]] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)


@contextmanager
def _masked_convs(decoder: Any, lengths: Any, frames: int, active: bool) -> Iterator[None]:
    """While active, every Conv1d/ConvTranspose1d of `decoder` sees its input zeroed past each
    item's length (at that layer's resolution, a multiple of `frames`), exactly what a lone
    item's conv padding would show it: no padded sample leaks into a shorter item. The
    conditioning layers (cond_layer, conds: [B, C, 1] speaker inputs) are left alone."""
    if not active:
        yield
        return
    import torch

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


class CoquiBackend:
    name = "coqui"

    class Options(BackendOptions):
        device: str | None = None  # "cuda", "cuda:1", "cpu"; default: CUDA when available
        batch_size: int | None = None  # texts per padded batch; default 16 on CUDA, 1 on CPU

    def __init__(
        self, options: Options | None = None, *, device: str | None = None, batch_size: int | None = None
    ) -> None:
        options = options or self.Options(device=device, batch_size=batch_size)
        self.options = options
        device, batch_size = options.device, options.batch_size
        try:
            import torch
            import TTS.api  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(f"{INSTALL_HINT} ({exc})") from exc
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # Batches pay off on a GPU; on CPU padding costs more than it saves (measured: 8 texts
        # batched 0.66 s per s of audio vs 0.41 one by one, 2 cores), so CPU goes one by one.
        self.batch_size = batch_size or (DEFAULT_BATCH if self.device.startswith("cuda") else 1)
        self._models: dict[tuple[str, str], _Loaded] = {}
        self.batch_stats = BatchStats()
        self.split_batches = 0  # batches that failed whole and were decoded in halves
        self._lock = threading.Lock()
        self._tmp = Path(tempfile.mkdtemp(prefix="coqui-configs-"))

    def cache_identity(self) -> str:
        # The device is part of it: CUDA kernels do not give CPU's bytes.
        return render_identity(__name__, ("coqui-tts", "torch", "transformers"), f"device={self.device}")

    # ------------------------------------------------------------------ model resolution
    def _resolve(self, spec: str) -> tuple[Path, Path]:
        """(checkpoint file or folder, config.json) of a voice's model, without downloading
        unless COQUI_ALLOW_DOWNLOAD=1."""
        if not spec:
            raise TTSError(
                "coqui voices need `model`: a local model folder or a Coqui model name "
                f"(e.g. tts_models/en/vctk/vits or {XTTS_V2})"
            )
        path = Path(spec).expanduser()
        if path.exists() or "/" in spec and not spec.startswith(("tts_models/", "voice_conversion_models/")):
            return self._local(path)
        return self._by_name(spec)

    def _local(self, path: Path) -> tuple[Path, Path]:
        if not path.exists():
            raise BackendUnavailable(
                f"coqui model folder {path} does not exist: it needs a checkpoint (model.pth) and config.json; "
                "download a model with `tts --model_name NAME --text hi --out_path x.wav` (names: "
                "`tts --list_models`) or XTTS-v2 from the Hugging Face hub (tts-hub/XTTS-v2, formerly "
                "coqui/XTTS-v2), and point voice.model at its folder"
            )
        folder = path if path.is_dir() else path.parent
        config = folder / "config.json"
        if not config.is_file():
            raise BackendUnavailable(f"coqui model {path}: no config.json in {folder}")
        if path.is_file():
            return path, config
        for name in CHECKPOINT_NAMES:
            if (folder / name).is_file():
                checkpoint = folder / name
                break
        else:
            found = sorted(folder.glob("best_model*.pth")) or sorted(folder.glob("*.pth"))
            found = [f for f in found if not f.name.startswith(("speakers", "speaker_ids", "model_se"))]
            if not found:
                raise BackendUnavailable(
                    f"coqui model folder {folder} has config.json but no checkpoint "
                    f"({', '.join(CHECKPOINT_NAMES)} or best_model*.pth)"
                )
            checkpoint = found[-1]
        if json.loads(config.read_text(encoding="utf-8")).get("model") == "xtts":
            for need in ("model.pth", "vocab.json"):
                if not (folder / need).is_file():
                    raise BackendUnavailable(f"XTTS model folder {folder} lacks {need}")
            return folder, config  # Xtts.load_checkpoint takes the folder
        return checkpoint, self._fix_paths(folder, config)

    def _fix_paths(self, folder: Path, config: Path) -> Path:
        """A model folder that was downloaded elsewhere and copied here keeps absolute paths
        (speakers file, stats...) from the machine it came from in config.json. Coqui fixes
        them at download time (`ModelManager._update_paths`); do the same on a private copy
        when a path in the config no longer exists, leaving the user's folder untouched."""
        raw = json.loads(config.read_text(encoding="utf-8"))
        keys = (
            "speakers_file",
            "d_vector_file",
            "language_ids_file",
            "speaker_encoder_model_path",
            "speaker_encoder_config_path",
        )

        def stale(section: dict) -> bool:
            for key in keys:
                value = section.get(key)
                values = value if isinstance(value, list) else [value]
                if any(isinstance(v, str) and v and not Path(v).is_file() for v in values):
                    return True
            return False

        stats = (raw.get("audio") or {}).get("stats_path")
        if not (stale(raw) or stale(raw.get("model_args") or {}) or (stats and not Path(stats).is_file())):
            return config
        from TTS.utils.manage import ModelManager

        digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]
        copy = self._tmp / f"{digest}-config.json"
        shutil.copyfile(config, copy)
        ModelManager(progress_bar=False)._update_paths(folder, copy)
        return copy

    def _by_name(self, name: str) -> tuple[Path, Path]:
        from TTS.utils.manage import ModelManager

        manager = ModelManager(progress_bar=False)
        try:
            item, full_name, _ = manager._set_model_item(name)
        except Exception as exc:  # unknown name: Coqui raises ValueError/KeyError
            raise BackendUnavailable(
                f"unknown Coqui model name {name!r} ({exc}); list them with "
                "`tts --list_models`, or set voice.model to a local folder"
            ) from exc
        folder: Path | None = manager.output_prefix / full_name
        if "repo_id" in item:  # hub models (XTTS) live in the Hugging Face cache
            from huggingface_hub import snapshot_download

            try:
                folder = Path(
                    snapshot_download(
                        item["repo_id"],
                        allow_patterns=item.get("allow"),
                        ignore_patterns=item.get("ignore"),
                        local_files_only=True,
                    )
                )
            except Exception:  # noqa: BLE001 — not in the local HF cache (LocalEntryNotFoundError, ...)
                folder = None
        if folder is None or not (folder / "config.json").is_file():
            if not _download_allowed():
                raise BackendUnavailable(
                    f"Coqui model {name} is not downloaded (looked in "
                    f"{manager.output_prefix / full_name} and the Hugging Face cache); " + _download_hint(name)
                )
            try:
                model_path, config_path, _ = manager.download_model(name)
            except Exception as exc:
                raise BackendUnavailable(f"could not download Coqui model {name}: {exc}") from exc
            folder = Path(config_path).parent if Path(model_path).is_file() else Path(model_path)
        return self._local(folder)

    def _load(self, voice: Voice) -> _Loaded:
        key = (voice.model, self.device)
        with self._lock:
            loaded = self._models.get(key)
            if loaded is not None:
                return loaded
            checkpoint, config = self._resolve(voice.model)
            from TTS.api import TTS

            try:
                api = TTS(model_path=str(checkpoint), config_path=str(config), progress_bar=False).to(self.device)
            except Exception as exc:
                raise TTSError(
                    f"coqui could not load model {voice.model!r} ({checkpoint}): {type(exc).__name__}: {exc}"
                ) from exc
            synth = api.synthesizer
            model = synth.tts_model
            kind = str(getattr(synth.tts_config, "model", type(model).__name__)).lower()
            loaded = _Loaded(api=api, model=model, kind=kind, sample_rate=int(synth.output_sample_rate))
            self._models[key] = loaded
            return loaded

    # ------------------------------------------------------------------ public API
    def speakers(self, voice: Voice) -> list[str]:
        """Speaker names of the voice's model (built-in XTTS speakers for XTTS)."""
        return list(self._load(voice).api.speakers or [])

    def synthesize(self, text: str, voice: Voice, *, rate: float = 1.0) -> Utterance:
        result = self.synthesize_many([SynthesisRequest(text, voice, rate)])[0]
        if isinstance(result, TTSError):
            raise result
        return result

    def synthesize_many(
        self, requests: Sequence[SynthesisRequest], *, batch_size: int | None = None
    ) -> list[Utterance | TTSError]:
        """Render a batch, in request order; a request that fails holds its TTSError. VITS
        requests of one model (any speakers, rates, languages) go through the flow and the
        decoder as padded batches of `batch_size` (default the backend's), sorted by length;
        each item's audio and word times equal its one-at-a-time render (see `_vits_batch`).
        XTTS renders one by one, reusing each reference clip's conditioning latents."""
        out: list[Utterance | TTSError | None] = [None] * len(requests)
        vits: dict[str, list[tuple[int, list[str], _Loaded, int | None]]] = {}
        for i, r in enumerate(requests):
            try:
                voice = r.voice
                if voice.backend != "coqui":
                    raise TTSError(f"voice {voice.id} is for backend {voice.backend!r}, not coqui")
                if not r.rate > 0:
                    raise TTSError(f"rate must be > 0, got {r.rate}")
                tokens = check_text(r.text)
                loaded = self._load(voice)
                if loaded.kind == "vits":
                    check_params(voice.params, VITS_PARAMS, "coqui vits")
                    vits.setdefault(voice.model, []).append((i, tokens, loaded, self._vits_speaker(loaded, voice)))
                elif loaded.kind == "xtts":
                    check_params(voice.params, XTTS_PARAMS, "coqui xtts")
                    self.batch_stats.add(1, 1)
                    out[i] = self._xtts(r.text, tokens, voice, loaded, r.rate)
                else:
                    raise TTSError(
                        f"coqui model {voice.model!r} is a {loaded.kind!r} model; this backend supports "
                        "VITS (own word durations) and XTTS (cloning)"
                    )
            except TTSError as exc:
                out[i] = exc
        size = max(1, batch_size or self.batch_size)
        for items in vits.values():
            items.sort(key=lambda item: len(requests[item[0]].text))
            for at in range(0, len(items), size):
                chunk = items[at : at + size]
                rendered = self._vits_batch(
                    [(requests[i], tokens, speaker) for i, tokens, _, speaker in chunk], chunk[0][2]
                )
                self.batch_stats.add(len(chunk), size)
                for (i, *_), result in zip(chunk, rendered, strict=True):
                    out[i] = result
        return [r for r in out if r is not None]

    # ------------------------------------------------------------------ VITS
    def _vits_speaker(self, loaded: _Loaded, voice: Voice) -> int | None:
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

    def _sound_chars(self, model: Any, ids: Sequence[int]) -> list[str]:
        """Token ids decoded to characters; blanks, pads, bos/eos become ''."""
        chars = model.tokenizer.characters
        skip = {chars.blank, chars.pad, chars.bos, chars.eos} - {None}
        out = []
        for i in ids:
            c = chars.id_to_char(int(i))
            out.append("" if c in skip else c)
        return out

    def _is_sound(self, model: Any, c: str) -> bool:
        """A letter or phoneme: not a space, punctuation, or IPA stress/length mark (those
        carry frames, which stay inside their word's span, but no weight)."""
        return bool(c) and c not in _NOT_SOUNDS and c not in model.tokenizer.characters.punctuations

    def _token_weight(self, loaded: _Loaded, token: str, language: str | None) -> float:
        """Sounds (characters or phonemes the model reads) in one token said alone."""
        key = f"{language}\x00{token}"
        if key not in loaded.weights:
            ids = loaded.model.tokenizer.text_to_ids(token, language=language)
            chars = self._sound_chars(loaded.model, ids)
            loaded.weights[key] = float(sum(self._is_sound(loaded.model, c) for c in chars))
        return loaded.weights[key]

    def _language(self, loaded: _Loaded, voice: Voice) -> tuple[str | None, Any]:
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

    def _vits_batch(
        self, items: list[tuple[SynthesisRequest, list[str], int | None]], loaded: _Loaded
    ) -> list[Utterance | TTSError]:
        """Coqui's `Vits.inference`, staged so that a batch equals its items rendered alone.

        Per item (cheap, text-length work): text encoder, duration predictor with the item's
        own seeded noise, alignment path, prior noise from the item's own generator. Batched
        (the T_dec-length work that dominates): the flow on the padded prior with `y_mask`, and
        the HiFi-GAN decoder with every conv's input masked to each item's length, so padding
        never reaches a shorter item's samples (Coqui's own batched inference lets the decoder's
        biases leak into them). Durations, hence lengths and word times, are exactly the
        one-at-a-time ones; audio equals it up to float rounding of batched kernels."""
        import torch

        model = loaded.model
        results: list[Utterance | TTSError | None] = [None] * len(items)
        priors: list[tuple[int, list[int], str | None, np.ndarray, Any, Any]] = []
        with loaded.lock, torch.inference_mode():
            for k, (r, _tokens, speaker) in enumerate(items):
                try:
                    priors.append((k, *self._vits_prior(loaded, r, speaker)))
                except TTSError as exc:
                    results[k] = exc
                except Exception as exc:  # noqa: BLE001 — one item's model error stays in its slot
                    results[k] = TTSError(
                        f"coqui VITS synthesis failed for voice {r.voice.id}: {type(exc).__name__}: {exc}"
                    )
            audios = self._decode_or_split(model, [p[4] for p in priors], [p[5] for p in priors])
        hop = int(model.config.audio.hop_length)
        sr = loaded.sample_rate
        for (k, ids, language, dur, _, _), audio in zip(priors, audios, strict=True):
            r, tokens, _ = items[k]
            if isinstance(audio, TTSError):
                results[k] = audio
                continue
            spans = self._vits_spans(loaded, tokens, ids, dur, hop, sr, language)
            results[k] = build_utterance(r.text, r.voice.id, audio, sr, tokens, spans)
        return [x for x in results if x is not None]

    def _vits_prior(
        self, loaded: _Loaded, r: SynthesisRequest, speaker: int | None
    ) -> tuple[list[int], str | None, np.ndarray, Any, Any]:
        """One item up to the prior: (token ids, language, frames per token, z_p [1, C, T], g)."""
        import torch
        from TTS.tts.utils.helpers import generate_path, sequence_mask

        model, voice = loaded.model, r.voice
        device = model.device
        language, language_id = self._language(loaded, voice)
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

    def _decode_or_split(self, model: Any, priors: list[Any], gs: list[Any]) -> list[np.ndarray | TTSError]:
        """Decode a batch; when it fails (CUDA out of memory on long texts, ...), decode each
        half on its own, down to single items, so one batch too big for the device costs time,
        not renders (items are independent, so the audio is the same). A single item that
        fails holds its TTSError."""
        if not priors:
            return []
        try:
            return list(self._vits_decode(model, priors, gs))
        except Exception as exc:  # noqa: BLE001 — split, or fail this item only
            if len(priors) == 1:
                return [TTSError(f"coqui VITS decoding failed: {type(exc).__name__}: {exc}")]
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.split_batches += 1
            half = len(priors) // 2
            return self._decode_or_split(model, priors[:half], gs[:half]) + self._decode_or_split(
                model, priors[half:], gs[half:]
            )

    def _vits_decode(self, model: Any, priors: list[Any], gs: list[Any]) -> list[np.ndarray]:
        """Flow + decoder over the padded batch of priors ([1, C, T_b] each); audio per item."""
        import torch

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
        self,
        loaded: _Loaded,
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
        chars = self._sound_chars(model, ids)
        edges = np.concatenate([[0.0], np.cumsum(dur)]) * hop / sr
        units: list[tuple[float, float, float]] = []
        start = end = None
        weight = 0.0
        for k, c in enumerate(chars):
            if c == " ":
                if start is not None:
                    units.append((start, end, weight))
                start, weight = None, 0.0
            elif self._is_sound(model, c):
                if start is None:
                    start = float(edges[k])
                end = float(edges[k + 1])
                weight += 1.0
        if start is not None:
            units.append((start, end, weight))
        weights = [self._token_weight(loaded, t, language) for t in tokens]
        return map_spans(tokens, weights, units)

    # ------------------------------------------------------------------ XTTS
    def _xtts(self, text: str, tokens: list[str], voice: Voice, loaded: _Loaded, rate: float) -> Utterance:
        import torch

        model = loaded.model
        lang = voice.language.lower()
        lang = lang if lang in model.config.languages else lang.split("-")[0]
        if lang not in model.config.languages:
            raise TTSError(
                f"voice {voice.id}: XTTS does not speak {voice.language!r}; languages: {model.config.languages}"
            )
        params = dict(voice.params)
        cond = {k: params.pop(k) for k in ("gpt_cond_len", "gpt_cond_chunk_len", "max_ref_len") if k in params}
        latents = self._xtts_latents(voice, loaded, cond)
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
            from factory.render.align import align_words

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

    def _xtts_latents(self, voice: Voice, loaded: _Loaded, cond: dict[str, Any]) -> tuple[Any, Any]:
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
