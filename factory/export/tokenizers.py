"""The tokenizers an export uses (from `factory.tokenize`, behind its `AudioTokenizer` and
`TextTokenizer` protocols): the audio tokenizer passed in or built by name ('units' fitted on the
run's own audio, its codebook saved beside the export), the text tokenizer, their identities for
the sidecar, and the batched channel tokenization every token format streams through."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from factory import tokenize
from factory.export.errors import ExportError
from factory.export.grid import channel_audio
from factory.export.options import ExportOptions
from factory.export.output import UNITS_CODEBOOK, Sidecar
from factory.export.report import Timer
from factory.models import Channel, Sample
from factory.tokenize import AudioTokenizer, TextTokenizer


def fits_units(options: ExportOptions) -> bool:
    """Whether the export fits a 'units' codebook on the run's audio (none given, none saved)."""
    return (
        options.audio_tokenizer_obj is None
        and options.audio_tokenizer == "units"
        and not options.audio_tokenizer_options.get("codebook")
    )


def channel_tokenizer(
    options: ExportOptions, frame_rate: float, samples: Iterable[Sample], out_dir: Path
) -> tuple[AudioTokenizer, Iterable[Sample]]:
    """`audio_tokenizer_for` fitted, when it must be, on both channels of `samples`; returns the
    tokenizer and the samples to export (held in memory only when the fit needs a first pass)."""
    samples = list(samples) if fits_units(options) else samples
    tok = audio_tokenizer_for(
        options,
        frame_rate,
        lambda: ((channel_audio(s, ch, options.use_augmented), s.sample_rate) for s in samples for ch in Channel),
        out_dir,
    )
    return tok, samples


def audio_tokenizer_for(
    options: ExportOptions, frame_rate: float, fit_audio: Callable[[], Iterable[tuple[np.ndarray, int]]], out_dir: Path
) -> AudioTokenizer:
    """The audio tokenizer an export uses: the one passed in, else by name; 'units' is fitted
    with `options.seed` on `fit_audio()` (mono pieces of the run's own audio) at `frame_rate`
    and its codebook saved as `out_dir/units_codebook.json`, so the tokens can be reproduced and applied to
    other runs. Missing weights of a named tokenizer raise ExportError (exit 3)."""
    if options.audio_tokenizer_obj is not None:
        return options.audio_tokenizer_obj
    if fits_units(options):
        pieces = list(fit_audio())
        if not pieces:
            raise ExportError("no audio to fit the 'units' tokenizer on", exit_code=4)
        sr = pieces[0][1]
        tok = tokenize.fit_units([a for a, _ in pieces], sr, frame_rate, options.units_k, options.seed)
        out_dir.mkdir(parents=True, exist_ok=True)
        tok.save(out_dir / UNITS_CODEBOOK)
        return tok
    try:
        return tokenize.get_audio_tokenizer(options.audio_tokenizer, **options.audio_tokenizer_options)
    except (tokenize.TokenizerUnavailable, FileNotFoundError, ImportError) as exc:
        raise ExportError(f"audio tokenizer {options.audio_tokenizer!r} unavailable: {exc}", exit_code=3) from None
    except ValueError as exc:  # includes a missing or damaged units codebook
        code = 3 if "not found" in str(exc) else 2
        raise ExportError(f"audio tokenizer {options.audio_tokenizer!r}: {exc}", exit_code=code) from None


def save_codebook(tokenizer: AudioTokenizer, out_dir: Path) -> str | None:
    """Keep a units codebook beside the export (the tokens are reproducible from it and it
    tokenizes other runs identically); returns its path relative to the export."""
    if not isinstance(tokenizer, tokenize.UnitsTokenizer):
        return None
    path = Path(out_dir) / UNITS_CODEBOOK
    if not path.exists() or path.read_text(encoding="utf-8") != tokenizer.to_json():  # never a stale codebook
        tokenizer.save(path)
    return UNITS_CODEBOOK


def text_tokenizer_for(options: ExportOptions) -> TextTokenizer:
    if options.text_tokenizer_obj is not None:
        return options.text_tokenizer_obj
    try:
        return tokenize.get_text_tokenizer(options.text_tokenizer)
    except (tokenize.TokenizerUnavailable, FileNotFoundError, ImportError) as exc:
        raise ExportError(f"text tokenizer {options.text_tokenizer!r} unavailable: {exc}", exit_code=3) from None


def identity_dict(tokenizer: AudioTokenizer | TextTokenizer | None) -> dict[str, Any] | None:
    if tokenizer is None:
        return None
    return tokenizer.identity().model_dump(mode="json")


def text_audio_sidecar(
    *,
    name: str,
    version: str,
    frame_rate: float,
    sample_rate: int | None,
    specials: Sequence[str],
    text_tok: TextTokenizer,
    text_offset: int,
    audio_tok: AudioTokenizer,
    audio_offset: int,
    export_options: ExportOptions,
    out_dir: Path,
    **rest: Any,
) -> Sidecar:
    """The sidecar of a format whose id space is specials, then text ids, then audio codes (bayling,
    units-1s): ranges, both tokenizers' identities, the saved codebook; `rest` is format-specific."""
    return Sidecar(
        format=name,
        format_version=version,
        frame_rate=frame_rate,
        sample_rate=sample_rate,
        special_tokens={token: i for i, token in enumerate(specials)},
        id_layout={
            "special": (0, len(specials)),
            "text": (text_offset, text_tok.vocab_size),
            "audio": (audio_offset, audio_tok.cardinality),
        },
        vocabulary_path=export_options.text_tokenizer
        or "embedded LLM vocabulary (factory.tokenize.get_text_tokenizer(None))",
        audio_tokenizer=identity_dict(audio_tok),
        audio_tokenizer_path=save_codebook(audio_tok, out_dir),
        text_tokenizer=identity_dict(text_tok),
        source_run=export_options.source_run,
        **rest,
    )


def tokenized(
    samples: Iterable[Sample], tokenizer: AudioTokenizer, batch: int, augmented: bool, timer: Timer
) -> Iterator[tuple[Sample, list[np.ndarray]]]:
    """(sample, [user codes, agent codes]) in order, tokenizing `batch` dialogues (2 * batch
    channels) per `encode_batch` call, so a batched model (Mimi, EnCodec) sees full batches while
    the export still streams. Time inside the tokenizer goes to `timer`."""
    buffer: list[Sample] = []

    def flush() -> Iterator[tuple[Sample, list[np.ndarray]]]:
        audios = [channel_audio(s, ch, augmented) for s in buffer for ch in Channel]
        srs = {s.sample_rate for s in buffer}
        with timer:
            if len(srs) == 1:
                codes = [np.asarray(c, np.int64) for c in tokenizer.encode_batch(audios, srs.pop())]
            else:  # a batch mixing rates (runs never do): one sample at a time
                codes = [np.asarray(c, np.int64) for s in buffer for c in encode_channels(tokenizer, s, augmented)]
        for i, s in enumerate(buffer):
            yield s, codes[2 * i : 2 * i + 2]
        buffer.clear()

    for s in samples:
        buffer.append(s)
        if len(buffer) >= batch:
            yield from flush()
    if buffer:
        yield from flush()


def encode_channels(tokenizer: AudioTokenizer, sample: Sample, augmented: bool = False) -> list[np.ndarray]:
    """Both channels of a sample, tokenized in one batch: [user [n_q, T], agent [n_q, T]]."""
    audios = [channel_audio(sample, ch, augmented) for ch in Channel]
    return [np.asarray(t, np.int64) for t in tokenizer.encode_batch(audios, sample.sample_rate)]
