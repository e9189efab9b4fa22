"""The tokenizer protocols every exporter codes against, and their identity record.

An audio tokenizer turns mono audio into integer codes `[n_q, T]` at a fixed frame rate; a text
tokenizer turns text into ids of one vocabulary. Each declares an identity (name, version,
weights hash, config) that an export's sidecar stores, so tokens can be traced to exactly the
model and codebook that made them and be reproduced or applied to other runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class TokenizerUnavailable(OSError):
    """A tokenizer cannot be built here: weights or a package are missing. The message names
    exactly what to install or download. An OSError, like the missing file it usually is, so
    callers that map missing files to an exit code catch it too."""


class TokenizerIdentity(BaseModel):
    """What made a token stream: stored in every export's sidecar."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="registry name, e.g. 'units', 'mimi', 'encodec', 'hf', 'gguf'")
    version: str = Field(description="the implementing package and version, e.g. 'moshi 0.2.13'")
    weights_sha256: str | None = Field(
        description="sha256 of the weights or codebook file; null for a randomly initialised model"
    )
    config: dict[str, Any] = Field(default_factory=dict, description="settings that change the tokens")


@runtime_checkable
class AudioTokenizer(Protocol):
    name: str
    sample_rate: int  # the rate the model consumes; encode() resamples from its `sr` argument
    frame_rate: float  # code frames per second
    n_q: int  # codebooks
    cardinality: int  # codes per codebook (ids are 0 .. cardinality-1)

    def n_frames(self, n_samples: int, sr: int) -> int:
        """Frames `encode` returns for `n_samples` at rate `sr` (each tokenizer documents its
        rounding; all tokenizers here give ceil(duration * frame_rate))."""
        ...

    def encode(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """Mono float32 `[n]` at rate `sr` -> int64 `[n_q, T]` with T == n_frames(n, sr)."""
        ...

    def encode_batch(self, audios: Sequence[np.ndarray], sr: int) -> list[np.ndarray]:
        """Like `encode` for each item, equal to one-by-one; batched, with a progress bar for long work."""
        ...

    def identity(self) -> TokenizerIdentity: ...


@runtime_checkable
class TextTokenizer(Protocol):
    name: str
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        """Ids of `text`, with no BOS/EOS added."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def token_to_id(self, token: str) -> int | None:
        """The id of one vocabulary entry (e.g. a special token), None when absent."""
        ...

    def identity(self) -> TokenizerIdentity: ...


def ceil_frames(n_samples: int, sr: int, frame_rate: float) -> int:
    """ceil(n_samples / sr * frame_rate), computed without float error for rational rates
    (12.5 Hz at 24 kHz: 1920 samples per frame; 1 s -> 13 frames)."""
    if n_samples < 0 or sr <= 0:
        raise ValueError(f"n_samples must be >= 0 and sr > 0, got {n_samples}, {sr}")
    frames = Fraction(n_samples) * Fraction(frame_rate).limit_denominator(1000) / sr
    return -(-frames.numerator // frames.denominator)
