"""The export framework: a registry of training formats, their options, the export report, the
sidecar every export carries, and the timeline -> frame-grid helpers with the bad-input rules.

A format is a module of `factory.export` with
  NAME, FORMAT_VERSION, FRAME_RATE (its token grid, Hz; None when it has none),
  NEEDS_AUDIO_TOKENS (bool: `export_run` prepares an audio tokenizer for it),
  RULES (extra rules: name -> Rule, beside `COMMON_RULES`),
  export(samples, out_dir, options) -> ExportReport,
optionally validate_options(options) (raises ExportError; `export_run` calls it before any work),
and, for `duplex-factory inspect`, optionally decode(out_dir, sample_id) -> Decoded.

Bad input never disappears silently: each case has a rule (shift, drop, pad or error) in
`COMMON_RULES` or the format's `RULES`, and every application of a rule is counted in the
report (`ExportReport.rules`, zeros included, so a reader sees which rules were checked).

Times come from the timeline; frames follow `factory.timeline.frames` (the 100 Hz FrameView):
frame i covers [i / rate, (i + 1) / rate), and an instant t falls on the first frame whose centre
is at or after t (`frame_of`), so an edge moves by at most half a frame.
"""

from __future__ import annotations

import importlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from factory.atomic import atomic_write, atomic_write_text
from factory.models import Channel, Sample, Timeline
from factory.timeline.frames import n_frames as frames_covering

SIDECAR = "export.json"
UNITS_CODEBOOK = "units_codebook.json"
REPORT = "report.json"

# format name -> module; moshi / nemo-duplex are written by their own modules (same protocol)
FORMATS: dict[str, str] = {
    "bayling": "factory.export.bayling",
    "dgslm": "factory.export.dgslm",
    "lslm": "factory.export.lslm",
    "units-1s": "factory.export.units1s",
    "moshi": "factory.export.moshi",
    "nemo-duplex": "factory.export.nemo",
}


class ExportError(ValueError):
    """An export cannot be made as asked (unknown format, a frame rate that does not divide the
    sample rate, no sample left...): the message says what and what to do. `exit_code` is the
    CLI's: 2 bad option/config, 3 missing tokenizer weights or backend, 4 nothing exported."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Rule:
    action: Literal["shift", "drop", "pad", "error"]
    doc: str


COMMON_RULES: dict[str, Rule] = {
    "word_overlaps_previous_tokens": Rule(
        "shift",
        "a word starts before the previous word's text tokens are out: its tokens start in the first free "
        "frame after them (moshi-finetune drops the leftover instead; we keep every token)",
    ),
    "tokens_past_end": Rule(
        "drop", "text tokens that no longer fit before the end of the dialogue after a shift are dropped"
    ),
    "word_past_end": Rule("drop", "a word that starts at or after the end of the audio is dropped"),
    "word_end_clipped": Rule("shift", "a word that ends after the end of the audio ends at the end of the audio"),
    "audio_frames_adjusted": Rule(
        "pad",
        "the audio tokenizer gave a different number of frames than the timeline covers: the token "
        "array is trimmed, or padded by repeating its last frame, to the timeline's frame count",
    ),
    "frame_rate_not_dividing_sample_rate": Rule(
        "error", "the frame rate does not divide the sample rate into whole samples per frame: the export stops"
    ),
    "rejected_samples": Rule(
        "drop", "samples the run rejected (manifest status 'rejected') have no audio and are not exported"
    ),
    "empty_source_shards": Rule("drop", "run shards with no sample (all rejected) are skipped"),
    "empty_sample": Rule("drop", "a sample with no duration or no spoken word gives no sequence and is dropped"),
    "empty_output_shard": Rule(
        "drop", "an output shard is only written when it holds a sequence; zero sequences in all is an error"
    ),
}


class ExportOptions(BaseModel):
    """What every format takes. Format-specific settings go in `format_options` (each format
    validates its own). Ready-made tokenizers may be passed in (`audio_tokenizer_obj`,
    `text_tokenizer_obj`); otherwise they are built from the names."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    audio_tokenizer: str = Field("units", description="'units' (k-means fitted on the run's audio), 'mimi', 'encodec'")
    audio_tokenizer_options: dict[str, Any] = Field(default_factory=dict)
    text_tokenizer: str | None = Field(None, description="local HF tokenizer folder; None = the embedded LLM's vocab")
    units_k: int = Field(256, ge=2, description="k-means codebook size of the 'units' tokenizer")
    units_fit_samples: int = Field(64, ge=1, description="dialogues the 'units' codebook is fitted on")
    seed: int = 0
    shard_size: int = Field(1000, ge=1, description="sequences per output parquet shard")
    tokenize_batch: int = Field(8, ge=1, description="dialogues per audio-tokenizer batch")
    use_augmented: bool = Field(False, description="tokenize the augmented mix instead of the clean one")
    source_run: str | None = None
    format_options: dict[str, Any] = Field(default_factory=dict)
    audio_tokenizer_obj: Any = Field(None, exclude=True)
    text_tokenizer_obj: Any = Field(None, exclude=True)


class DroppedSample(BaseModel):
    id: str
    rule: str
    detail: str = ""


class ExportReport(BaseModel):
    format: str
    format_version: str
    out_dir: str
    samples_in: int = 0
    samples_out: int = 0
    dialogue_seconds: float = 0.0
    shards: list[str] = Field(default_factory=list)
    rules: dict[str, int] = Field(default_factory=dict, description="times each rule was applied")
    rule_actions: dict[str, str] = Field(default_factory=dict)
    dropped: list[DroppedSample] = Field(default_factory=list)
    seconds_tokenize: float = 0.0
    seconds_total: float = 0.0


class Sidecar(BaseModel):
    """`export.json` beside the shards: everything needed to read the token ids back."""

    format: str
    format_version: str
    frame_rate: float | None
    sample_rate: int | None = Field(None, description="rate of the audio the tokenizer was fed")
    special_tokens: dict[str, int] = Field(default_factory=dict)
    id_layout: dict[str, tuple[int, int]] = Field(
        default_factory=dict, description="range name -> (first id, size) in the exported id space"
    )
    vocabulary: list[str] | None = Field(None, description="the text vocabulary (id - text offset -> token)")
    vocabulary_path: str | None = Field(None, description="or the tokenizer folder it comes from")
    audio_tokenizer: dict[str, Any] | None = None
    audio_tokenizer_path: str | None = Field(None, description="saved codebook (units), relative to the export")
    text_tokenizer: dict[str, Any] | None = None
    source_run: str | None = None
    layout: str = Field("", description="the sequence layout in words")
    columns: dict[str, str] = Field(default_factory=dict, description="parquet column -> meaning")
    options: dict[str, Any] = Field(default_factory=dict)
    rules: dict[str, str] = Field(default_factory=dict, description="rule -> action: doc")


class RuleCounter:
    """Counts rule applications and remembers dropped samples for the report."""

    def __init__(self, rules: dict[str, Rule]) -> None:
        self.rules = rules
        self.counts: Counter[str] = Counter(dict.fromkeys(rules, 0))
        self.dropped: list[DroppedSample] = []

    def add(self, rule: str, n: int = 1) -> None:
        if rule not in self.rules:
            raise KeyError(f"undocumented rule {rule!r}")
        self.counts[rule] += n

    def drop(self, sample_id: str, rule: str, detail: str = "") -> None:
        self.add(rule)
        self.dropped.append(DroppedSample(id=sample_id, rule=rule, detail=detail))


# --------------------------------------------------------------------------- registry
def known_formats() -> list[str]:
    return sorted(FORMATS)


def get_format(name: str):
    """The module of format `name`; an unknown name lists the known ones."""
    if name not in FORMATS:
        raise ExportError(f"unknown export format {name!r}; known formats: {', '.join(known_formats())}")
    try:
        return importlib.import_module(FORMATS[name])
    except ModuleNotFoundError as exc:
        if exc.name == FORMATS[name]:
            raise ExportError(f"format {name!r} is registered but its module {exc.name} is not installed") from None
        raise


def all_rules(module) -> dict[str, Rule]:
    return {**COMMON_RULES, **getattr(module, "RULES", {})}


# --------------------------------------------------------------------------- frame grid
def samples_per_frame(sample_rate: int, frame_rate: float, counter: RuleCounter | None = None) -> int:
    """Whole samples per frame, or the `frame_rate_not_dividing_sample_rate` error."""
    spf = sample_rate / frame_rate
    if abs(spf - round(spf)) > 1e-9:
        if counter is not None:
            counter.add("frame_rate_not_dividing_sample_rate")
        raise ExportError(
            f"frame rate {frame_rate} Hz does not divide the sample rate {sample_rate} Hz "
            f"({spf:.3f} samples per frame); pick a frame rate with whole samples per frame "
            f"(e.g. 12.5, 25 or 50 Hz) or resample the run (rule frame_rate_not_dividing_sample_rate)"
        )
    return round(spf)


def frame_of(t: float, rate: float) -> int:
    """The frame an instant falls on: the first frame whose centre is at or after `t` (the
    FrameView's convention, `factory.timeline.frames`)."""
    return max(math.ceil(round(t * rate - 0.5, 6)), 0)


def n_frames(timeline: Timeline, rate: float) -> int:
    return frames_covering(timeline.duration, rate)


@dataclass
class PlacedWord:
    """A word's tokens on the frame grid: `tokens[k]` sits in frame `first + k`."""

    index: int  # into timeline.words
    first: int
    tokens: list[int]
    shifted: bool = False


def place_words(
    words: Sequence[tuple[int, float, float, list[int]]],
    rate: float,
    n: int,
    duration: float,
    counter: RuleCounter,
    tokens_per_frame: int = 1,
) -> list[PlacedWord]:
    """Place each (word index, start, end, tokens) on a grid of `n` frames at `rate`, one token
    per frame (or `tokens_per_frame`), first token at `frame_of(start)`, in time order. Applies
    and counts word_past_end (drop), word_end_clipped, word_overlaps_previous_tokens (shift)
    and tokens_past_end (drop)."""
    placed: list[PlacedWord] = []
    free = 0  # first slot not yet taken, in token slots
    for index, start, end, tokens in sorted(words, key=lambda w: (w[1], w[0])):
        if start >= duration:
            counter.add("word_past_end")
            continue
        if end > duration:
            counter.add("word_end_clipped")
        slot = frame_of(start, rate) * tokens_per_frame
        shifted = slot < free
        if shifted:
            counter.add("word_overlaps_previous_tokens")
            slot = free
        room = n * tokens_per_frame - slot
        kept = tokens[: max(room, 0)]
        if len(kept) < len(tokens):
            counter.add("tokens_past_end", len(tokens) - len(kept))
        if not kept:
            continue
        placed.append(PlacedWord(index=index, first=slot, tokens=list(kept), shifted=shifted))
        free = slot + len(kept)
    return placed


def fit_frames(tokens: np.ndarray, n: int, counter: RuleCounter) -> np.ndarray:
    """[n_q, T] -> [n_q, n]: trim, or repeat the last frame (rule audio_frames_adjusted)."""
    tokens = np.asarray(tokens, np.int64)
    if tokens.ndim == 1:
        tokens = tokens[None]
    t = tokens.shape[1]
    if t == n:
        return tokens
    counter.add("audio_frames_adjusted")
    if t > n:
        return tokens[:, :n]
    last = tokens[:, -1:] if t else np.zeros((tokens.shape[0], 1), np.int64)
    return np.concatenate([tokens, np.repeat(last, n - t, axis=1)], axis=1)


def channel_audio(sample: Sample, channel: Channel, augmented: bool = False) -> np.ndarray:
    audio = sample.augmented if augmented and sample.augmented is not None else sample.stems
    return np.ascontiguousarray(audio[:, channel.index], dtype=np.float32)


def usable(samples: Iterable[Sample], report: ExportReport, counter: RuleCounter) -> Iterator[Sample]:
    """The samples that give a sequence; the others are dropped and counted (rule empty_sample)."""
    for s in samples:
        report.samples_in += 1
        if is_empty(s):
            counter.drop(s.id, "empty_sample", f"duration {s.timeline.duration:.2f} s, no spoken word")
            continue
        yield s


def silence_tokens(tokenizer, sr: int, n: int = 1) -> np.ndarray:
    """[n_q, n] tokens of digital silence: what pads a channel past the end of its audio."""
    frame = round(sr / tokenizer.frame_rate)
    codes = np.asarray(tokenizer.encode(np.zeros(frame * (n + 2), np.float32), sr), np.int64)
    return codes[:, 1 : n + 1] if codes.shape[1] >= n + 2 else np.repeat(codes[:, :1], n, axis=1)


def is_empty(sample: Sample) -> bool:
    tl = sample.timeline
    return tl.duration <= 0 or len(sample.stems) == 0 or not any(w.spoken for w in tl.words)


# --------------------------------------------------------------------------- tokenizers
def channel_tokenizer(
    options: ExportOptions, frame_rate: float, samples: Iterable[Sample], out_dir: Path
) -> tuple[Any, Iterable[Sample]]:
    """`audio_tokenizer_for` fitted, when it must be, on both channels of `samples`; returns the
    tokenizer and the samples to export (held in memory only when the fit needs a first pass)."""
    fits = (
        options.audio_tokenizer_obj is None
        and options.audio_tokenizer == "units"
        and not options.audio_tokenizer_options.get("codebook")
    )
    samples = list(samples) if fits else samples
    tok = audio_tokenizer_for(
        options,
        frame_rate,
        lambda: ((channel_audio(s, ch, options.use_augmented), s.sample_rate) for s in samples for ch in Channel),
        out_dir,
    )
    return tok, samples


def audio_tokenizer_for(
    options: ExportOptions, frame_rate: float, fit_audio: Callable[[], Iterable[tuple[np.ndarray, int]]], out_dir: Path
):
    """The audio tokenizer an export uses: the one passed in, else by name; 'units' is fitted
    with `options.seed` on `fit_audio()` (mono pieces of the run's own audio) at `frame_rate`
    and its codebook saved as `out_dir/units_codebook.json`, so the tokens can be reproduced and applied to
    other runs. Missing weights of a named tokenizer raise ExportError (exit 3)."""
    if options.audio_tokenizer_obj is not None:
        return options.audio_tokenizer_obj
    from factory import tokenize

    if options.audio_tokenizer == "units" and not options.audio_tokenizer_options.get("codebook"):
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


def save_codebook(tokenizer, out_dir: Path) -> str | None:
    """Keep a units codebook beside the export (the tokens are reproducible from it and it
    tokenizes other runs identically); returns its path relative to the export."""
    if not hasattr(tokenizer, "save"):
        return None
    path = Path(out_dir) / UNITS_CODEBOOK
    if not path.exists() or path.read_text(encoding="utf-8") != tokenizer.to_json():  # never a stale codebook
        tokenizer.save(path)
    return UNITS_CODEBOOK


def text_tokenizer_for(options: ExportOptions):
    if options.text_tokenizer_obj is not None:
        return options.text_tokenizer_obj
    from factory import tokenize

    try:
        return tokenize.get_text_tokenizer(options.text_tokenizer)
    except (tokenize.TokenizerUnavailable, FileNotFoundError, ImportError) as exc:
        raise ExportError(f"text tokenizer {options.text_tokenizer!r} unavailable: {exc}", exit_code=3) from None


def identity_dict(tokenizer) -> dict[str, Any] | None:
    if tokenizer is None:
        return None
    ident = tokenizer.identity()
    return ident.model_dump(mode="json") if hasattr(ident, "model_dump") else dict(ident)


def text_audio_sidecar(
    *,
    name: str,
    version: str,
    frame_rate: float,
    sample_rate: int,
    specials: Sequence[str],
    text_tok,
    text_offset: int,
    audio_tok,
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
    samples: Iterable[Sample], tokenizer, batch: int, augmented: bool, timer: Timer
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


def encode_channels(tokenizer, sample: Sample, augmented: bool = False) -> list[np.ndarray]:
    """Both channels of a sample, tokenized in one batch: [user [n_q, T], agent [n_q, T]]."""
    audios = [channel_audio(sample, ch, augmented) for ch in Channel]
    return [np.asarray(t, np.int64) for t in tokenizer.encode_batch(audios, sample.sample_rate)]


# --------------------------------------------------------------------------- shards
class ShardWriter:
    """Rows -> `data/<split>-NNNNN.parquet`, `shard_size` rows per file, written atomically.
    A shard is written only when it holds a row (rule empty_output_shard)."""

    def __init__(self, out_dir: Path, schema: pa.Schema, shard_size: int) -> None:
        self.out_dir, self.schema, self.shard_size = Path(out_dir), schema, shard_size
        self.buffers: dict[str, list[dict]] = {}
        self.counts: Counter[str] = Counter()
        self.paths: list[str] = []

    def add(self, split: str, row: dict) -> None:
        buf = self.buffers.setdefault(split, [])
        buf.append(row)
        if len(buf) >= self.shard_size:
            self._flush(split)

    def _flush(self, split: str) -> None:
        rows = self.buffers.get(split) or []
        if not rows:
            return
        path = self.out_dir / "data" / f"{split}-{self.counts[split]:05d}.parquet"
        table = pa.Table.from_pylist(rows, schema=self.schema)
        atomic_write(path, lambda tmp: pq.write_table(table, tmp))
        self.counts[split] += 1
        self.paths.append(str(path.relative_to(self.out_dir)))
        self.buffers[split] = []

    def close(self) -> list[str]:
        for split in list(self.buffers):
            self._flush(split)
        return self.paths


def read_rows(out_dir: Path, columns: list[str] | None = None) -> Iterator[dict]:
    for path in sorted((Path(out_dir) / "data").glob("*.parquet")):
        yield from pq.read_table(path, columns=columns).to_pylist()


def read_row(out_dir: Path, sample_id: str) -> dict:
    for path in sorted((Path(out_dir) / "data").glob("*.parquet")):
        table = pq.read_table(path, filters=[("id", "=", sample_id)])
        if table.num_rows:
            return table.to_pylist()[0]
    raise ExportError(f"no sequence {sample_id!r} in {out_dir}")


def read_sidecar(out_dir: Path) -> Sidecar:
    path = Path(out_dir) / SIDECAR
    if not path.exists():
        raise ExportError(f"{out_dir} is not an export (no {SIDECAR})")
    return Sidecar.model_validate_json(path.read_text())


def finish(
    out_dir: Path,
    sidecar: Sidecar,
    report: ExportReport,
    counter: RuleCounter,
    writer: ShardWriter | None,
    started: float,
) -> ExportReport:
    """Close the shards, fill the report's counts, write sidecar and report. Zero sequences out
    is an error (exit 4), never an empty export that looks fine."""
    report.shards = writer.close() if writer else report.shards
    report.rules = dict(counter.counts)
    report.rule_actions = {k: r.action for k, r in counter.rules.items()}
    report.dropped = counter.dropped
    report.seconds_total = time.perf_counter() - started
    sidecar.rules = {k: f"{r.action}: {r.doc}" for k, r in counter.rules.items()}
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / SIDECAR, sidecar.model_dump_json(indent=2))
    atomic_write_text(out_dir / REPORT, report.model_dump_json(indent=2))
    if report.samples_out == 0:
        counter.add("empty_output_shard")
        report.rules = dict(counter.counts)
        atomic_write_text(out_dir / REPORT, report.model_dump_json(indent=2))
        raise ExportError(
            f"no sequence exported from {report.samples_in} samples "
            f"({', '.join(f'{d.id}: {d.rule}' for d in counter.dropped[:5])})",
            exit_code=4,
        )
    return report


# --------------------------------------------------------------------------- decoding (inspect)
class Decoded(BaseModel):
    """One exported sequence read back onto its frame grid: per track (e.g. 'user audio',
    'text', 'agent audio', 'state'), one label per frame."""

    id: str
    format: str
    frame_rate: float
    tracks: dict[str, list[str]]


# --------------------------------------------------------------------------- running on a run folder
def _run_counts(run_dir: Path) -> tuple[int, int, list[tuple[str, str]]]:
    """Rejected samples (from the manifest) and empty data shards of a run."""
    import polars as pl

    rejected: list[tuple[str, str]] = []
    manifest = run_dir / "manifest.parquet"
    parts = [manifest] if manifest.exists() else sorted((run_dir / "manifests").glob("*.parquet"))
    for part in parts:
        df = pl.read_parquet(part).filter(pl.col("status") == "rejected")
        rejected += [(r["id"], r["reason"] or "") for r in df.iter_rows(named=True)]
    empty = sum(pq.read_metadata(p).num_rows == 0 for p in sorted((run_dir / "data").glob("*.parquet")))
    return len(rejected), empty, rejected


def prepare_out_dir(out_dir: Path, module) -> None:
    """Make `out_dir` ready for a fresh export. A previous export there (it has export.json) loses
    its shards, sidecar, report and the format's `OUTPUTS`, so no stale shard is read with the new
    ones; a folder holding anything else is refused rather than written into."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return
    if not (out_dir / SIDECAR).exists():
        foreign = [p for p in out_dir.rglob("*") if p.is_file() and p.name != UNITS_CODEBOOK]
        if foreign:
            raise ExportError(
                f"{out_dir} exists and is not an export (no {SIDECAR}; holds e.g. {foreign[0].name}): "
                "give --out a new or empty folder"
            )
        return
    for pattern in ("data/*.parquet", SIDECAR, REPORT, *getattr(module, "OUTPUTS", ())):
        for path in out_dir.glob(pattern):
            path.unlink()


def export_run(
    run_dir: Path,
    format_name: str,
    out_dir: Path | None = None,
    options: ExportOptions | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExportReport:
    """Export a finished run folder: resolve the format, count what the run rejected, prepare
    the audio tokenizer (fitting 'units' on the run's own audio), then stream the samples."""
    from factory.run.read import RunFolderError, read_samples

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"run folder {run_dir} does not exist")
    module = get_format(format_name)
    out_dir = Path(out_dir) if out_dir else run_dir / "exports" / format_name
    options = (options or ExportOptions()).model_copy(update={"source_run": str(run_dir)})
    if hasattr(module, "validate_options"):  # bad options fail before any work
        module.validate_options(options)
    try:
        n_rejected, n_empty, rejected = _run_counts(run_dir)
        from factory.run.read import complete_shards

        complete_shards(run_dir, verify=False)
    except RunFolderError as exc:
        raise ExportError(str(exc)) from None
    prepare_out_dir(out_dir, module)
    if getattr(module, "NEEDS_AUDIO_TOKENS", False) and options.audio_tokenizer_obj is None:
        started = time.perf_counter()

        def fit_audio():
            for i, s in enumerate(read_samples(run_dir, verify=False)):
                if i >= options.units_fit_samples:
                    break
                for ch in Channel:
                    yield channel_audio(s, ch, options.use_augmented), s.sample_rate

        rate = float(options.format_options.get("frame_rate", module.FRAME_RATE))
        tok = audio_tokenizer_for(options, rate, fit_audio, out_dir)
        options = options.model_copy(update={"audio_tokenizer_obj": tok})
        fit_seconds = time.perf_counter() - started
    else:
        fit_seconds = 0.0

    def samples() -> Iterator[Sample]:
        for i, s in enumerate(read_samples(run_dir)):
            yield s
            if progress:
                progress(i + 1)

    try:
        report = module.export(samples(), out_dir, options)
    except ExportError as exc:
        raise _with_run_counts(exc, out_dir, n_rejected, n_empty, rejected) from None
    report.rules["rejected_samples"] = report.rules.get("rejected_samples", 0) + n_rejected
    report.rules["empty_source_shards"] = report.rules.get("empty_source_shards", 0) + n_empty
    report.dropped += [DroppedSample(id=i, rule="rejected_samples", detail=r) for i, r in rejected]
    report.samples_in += n_rejected
    report.seconds_tokenize += fit_seconds  # the units fit is tokenizer work, timed before the export
    report.seconds_total += fit_seconds
    atomic_write_text(out_dir / REPORT, report.model_dump_json(indent=2))
    return report


def _with_run_counts(exc: ExportError, out_dir: Path, n_rejected: int, n_empty: int, rejected) -> ExportError:
    path = out_dir / REPORT
    if path.exists():  # an all-dropped export still reports what the run rejected
        report = ExportReport.model_validate_json(path.read_text())
        report.rules["rejected_samples"] = n_rejected
        report.rules["empty_source_shards"] = n_empty
        report.dropped += [DroppedSample(id=i, rule="rejected_samples", detail=r) for i, r in rejected]
        atomic_write_text(path, report.model_dump_json(indent=2))
    if n_rejected:
        return ExportError(f"{exc} (and {n_rejected} samples the run rejected)", exc.exit_code)
    return exc


def start_report(module, out_dir: Path) -> tuple[ExportReport, RuleCounter, float]:
    """A fresh report and counter for `module`'s rules (the first thing a format's export does)."""
    counter = RuleCounter(all_rules(module))
    report = ExportReport(format=module.NAME, format_version=module.FORMAT_VERSION, out_dir=str(out_dir))
    return report, counter, time.perf_counter()


def dump_options(options: ExportOptions) -> dict[str, Any]:
    return json.loads(options.model_dump_json())


@dataclass
class Timer:
    """Accumulates the seconds spent inside `with timer:` (tokenization, for the benchmark)."""

    seconds: float = 0.0
    _t0: float = field(default=0.0, repr=False)

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds += time.perf_counter() - self._t0
