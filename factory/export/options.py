"""Export options: `ExportOptions` (what every format takes; the format's own settings arrive as
`format_options`, the raw KEY=VALUE pairs of `-o`) and `FormatOptions`, the base of each format's
own pydantic model. A format validates its `format_options` once, before any sample is read, like
the TTS backends' `BackendOptions`: an unknown key or a bad value is an `ExportError` naming the
format, the key and what it accepts."""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, ValidationError

from factory.export.errors import ExportError
from factory.tokenize import AudioTokenizer, TextTokenizer


class ExportOptions(BaseModel):
    """What every format takes. Format-specific settings go in `format_options` (each format
    validates them with its own `FormatOptions` model). Ready-made tokenizers may be passed in
    (`audio_tokenizer_obj`, `text_tokenizer_obj`); otherwise they are built from the names."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    audio_tokenizer: str = Field(
        default="units", description="'units' (k-means fitted on the run's audio), 'mimi', 'encodec'"
    )
    audio_tokenizer_options: dict[str, Any] = Field(default_factory=dict)
    text_tokenizer: str | None = Field(
        default=None,
        description="local HF tokenizer folder, 'gemma' (Gemma 3's packaged multilingual vocabulary), 'whisper' "
        "(Whisper base's), a SentencePiece .model or a .gguf; None = the embedded LLM's vocab for English runs, "
        "'gemma' for a run with any other language",
    )
    units_k: int = Field(default=256, ge=2, description="k-means codebook size of the 'units' tokenizer")
    units_fit_samples: int = Field(default=64, ge=1, description="dialogues the 'units' codebook is fitted on")
    seed: int = 0
    shard_size: int = Field(default=1000, ge=1, description="sequences per output parquet shard")
    tokenize_batch: int = Field(default=8, ge=1, description="dialogues per audio-tokenizer batch")
    use_augmented: bool = Field(default=False, description="tokenize the augmented mix instead of the clean one")
    source_run: str | None = None
    format_options: dict[str, Any] = Field(default_factory=dict, description="the format's own options, as given")
    # typed for the checker, not checked at run time: any object with the protocol's members will do
    audio_tokenizer_obj: SkipValidation[AudioTokenizer | None] = Field(default=None, exclude=True)
    text_tokenizer_obj: SkipValidation[TextTokenizer | None] = Field(default=None, exclude=True)


class FormatOptions(BaseModel):
    """A format's own options (`-o KEY=VALUE`); each format subclasses it with its fields, so a
    typo is an error naming the key. A format without options uses it as is (every key unknown)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FrameRateOptions(FormatOptions):
    """Formats whose token grid may be chosen: `frame_rate` (Hz) of the audio tokenizer (each
    such format restates the field with its own default)."""

    frame_rate: float = Field(gt=0, description="code frames per second of the audio tokenizer")


OptionsT = TypeVar("OptionsT", bound=FormatOptions)


def accepted(model: type[FormatOptions]) -> str:
    """The keys `model` takes, each with its allowed values (Literal) or type and default."""
    parts = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if get_origin(ann) is Literal:
            kind = " | ".join(map(repr, get_args(ann)))
        else:
            kind = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        default = "" if info.is_required() else f", default {info.get_default(call_default_factory=True)!r}"
        parts.append(f"{name} ({kind}{default})")
    return ", ".join(parts)


def parse_format_options(fmt: str, model: type[OptionsT], raw: dict[str, Any]) -> OptionsT:
    """`raw` validated as `model`; every problem in one ExportError naming the format and the key."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(map(str, err["loc"])) or "?"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown option {key!r}")
            else:
                problems.append(f"{key}={err.get('input')!r}: {err['msg'].removeprefix('Value error, ')}")
        takes = accepted(model)
        raise ExportError(
            f"{fmt} format options: {'; '.join(problems)} "
            f"({f'{fmt} takes: {takes}' if takes else f'{fmt} takes no format options'})"
        ) from None


def dump_options(options: ExportOptions) -> dict[str, Any]:
    """The options as the sidecar records them (JSON values; the tokenizer objects left out)."""
    return json.loads(options.model_dump_json())
