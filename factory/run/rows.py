"""The run's own storage of Samples, as Hugging Face parquet shards: `data/<split>-NNNNN-of-MMMMM.parquet`
under the run folder, the layout `datasets.load_dataset(run_dir)` and the Hub's viewer understand.
`sample_to_row` and `row_to_sample` are exact inverses (audio included), so
`factory.run.read.read_samples` gives back what the pipeline made.

Audio is stereo 16-bit FLAC bytes (channel 0 = user, channel 1 = agent) in an `Audio` column,
written without torchcodec: bytes go in as a {bytes, path} struct and the column is cast to
`Audio`. Read it back with `cast_column("audio", Audio(decode=False))` + soundfile to keep both
channels (torchcodec's decoder averages stereo to mono). The agent's prompts travel in the row, so
a row is self-contained on the Hub: `role_prompt` (text) and `voice_prompt` (mono 16-bit FLAC of the
agent's voice-prompt clip; `voice_prompt_source` says how it was made).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Audio, Features, Value
from datasets import config as datasets_config

from factory.atomic import sha256_file, tmp_path
from factory.audio.mix import flac_bytes, read_audio
from factory.crash import crash_point
from factory.models import (
    AugmentationRecord,
    Channel,
    MixRecipe,
    Sample,
    SampleMeta,
    Scenario,
    Script,
    Timeline,
    VoicePrompt,
)
from factory.timeline.measures import transcript

# A shard's rows go to its file a row group at a time (`ShardWriter`): at most this many rows, and
# a group closes early once its rows reach datasets' 100 MB (the row groups the Hub's viewer
# expects), so a writer holds one group whatever the shard's size.
ROW_GROUP_ROWS = 32
ROW_GROUP_BYTES = 100 * 2**20

_AUDIO_STRUCT = {"bytes": Value("binary"), "path": Value("string")}
AUDIO_COLUMNS = ("audio", "audio_augmented", "voice_prompt")

ROW_FEATURES = Features(
    {
        "id": Value("string"),
        "audio": _AUDIO_STRUCT,
        "audio_augmented": _AUDIO_STRUCT,
        "augmentation": Value("string"),  # JSON list of AugmentationRecord, null when not augmented
        "duration": Value("float32"),
        "sample_rate": Value("int32"),
        "split": Value("string"),
        "mode": Value("string"),
        "text": Value("string"),  # readable transcript of what was spoken, in time order
        "user_text": Value("string"),
        "agent_text": Value("string"),
        "timeline": Value("string"),  # Timeline JSON (schemas/timeline.schema.json)
        "scenario": Value("string"),  # Scenario JSON
        "script": Value("string"),  # Script JSON: the planned text and behaviour marks
        "recipe": Value("string"),  # MixRecipe JSON (schemas/mix_recipe.schema.json)
        "user_voice": Value("string"),
        "agent_voice": Value("string"),
        "llm": Value("string"),
        "run_seed": Value("int64"),  # with sample_key and the run's config.yaml: regenerates the sample
        "sample_key": Value("string"),
        "role_prompt": Value("string"),  # the agent's text role prompt (factory.script.prompts)
        "voice_prompt": _AUDIO_STRUCT,  # mono FLAC: a clip of the agent's voice not in the dialogue
        "voice_prompt_source": Value("string"),  # VoicePrompt JSON: its render and gain
    }
)


class EncodedAudio(TypedDict):
    """A sample's audio columns as FLAC bytes (`encode_audio`): made once where the sample is made."""

    audio: bytes
    audio_augmented: bytes | None
    voice_prompt: bytes


def shard_name(split: str, index: int, total: int) -> str:
    return f"{split}-{index:05d}-of-{total:05d}"


def encode_audio(sample: Sample) -> EncodedAudio:
    """The FLAC bytes of a sample's audio columns (clean stems, augmented or None): the encode a
    shard row needs, done once where the sample is made (a worker process) and carried along."""
    sr = sample.sample_rate
    return EncodedAudio(
        audio=flac_bytes(sample.stems, sr),
        audio_augmented=flac_bytes(sample.augmented, sr) if sample.augmented is not None else None,
        voice_prompt=flac_bytes(sample.voice_prompt, sr),
    )


def sample_to_row(sample: Sample, encoded: EncodedAudio | None = None) -> dict[str, Any]:
    """A shard row; `encoded`: the sample's `encode_audio` bytes when already made."""
    meta, sr = sample.meta, sample.sample_rate
    tl = meta.timeline
    audio = encoded if encoded is not None else encode_audio(sample)
    return {
        "id": meta.id,
        "audio": {"bytes": audio["audio"], "path": f"{meta.id}.flac"},
        "audio_augmented": {"bytes": audio["audio_augmented"], "path": f"{meta.id}.aug.flac"}
        if audio["audio_augmented"] is not None
        else None,
        "augmentation": json.dumps([a.model_dump(mode="json") for a in meta.augmentation])
        if meta.augmentation is not None
        else None,
        "duration": tl.duration,
        "sample_rate": sr,
        "split": meta.split,
        "mode": meta.scenario.mode.value,
        "text": transcript(tl),
        "user_text": " ".join(t.spoken_text for t in tl.turns if t.channel is Channel.user),
        "agent_text": " ".join(t.spoken_text for t in tl.turns if t.channel is Channel.agent),
        "timeline": tl.model_dump_json(),
        "scenario": meta.scenario.model_dump_json(),
        "script": meta.script.model_dump_json(),
        "recipe": meta.recipe.model_dump_json(),
        "user_voice": meta.voices[Channel.user],
        "agent_voice": meta.voices[Channel.agent],
        "llm": meta.llm,
        "run_seed": meta.run_seed,
        "sample_key": meta.sample_key,
        "role_prompt": meta.role_prompt,
        "voice_prompt": {"bytes": audio["voice_prompt"], "path": f"{meta.id}.voice_prompt.flac"},
        "voice_prompt_source": meta.voice_prompt.model_dump_json(),
    }


def row_meta(row: dict[str, Any]) -> SampleMeta:
    """A row's metadata, without decoding its audio."""
    augmentation = row.get("augmentation")
    return SampleMeta(
        id=row["id"],
        split=row["split"],
        run_seed=row["run_seed"],
        sample_key=row["sample_key"],
        scenario=Scenario.model_validate_json(row["scenario"]),
        script=Script.model_validate_json(row["script"]),
        timeline=Timeline.model_validate_json(row["timeline"]),
        recipe=MixRecipe.model_validate_json(row["recipe"]),
        augmentation=[AugmentationRecord.model_validate(a) for a in json.loads(augmentation)] if augmentation else None,
        voices={Channel.user: row["user_voice"], Channel.agent: row["agent_voice"]},
        llm=row["llm"],
        role_prompt=row["role_prompt"],
        voice_prompt=VoicePrompt.model_validate_json(row["voice_prompt_source"]),
    )


def row_to_sample(row: dict[str, Any]) -> Sample:
    stems, _ = read_audio(row["audio"]["bytes"])
    aug = row.get("audio_augmented")
    augmented = read_audio(aug["bytes"])[0] if aug and aug.get("bytes") else None
    return Sample(meta=row_meta(row), stems=stems, voice_prompt=read_voice_prompt(row), augmented=augmented)


def read_voice_prompt(row: dict[str, Any]) -> np.ndarray:
    """A row's voice-prompt clip, mono float32."""
    return read_audio(row["voice_prompt"]["bytes"])[0][:, 0]


def row_features(sample_rate: int) -> Features:
    """`ROW_FEATURES` with the audio columns as `Audio` at the run's rate (what the Hub decodes)."""
    features = Features(ROW_FEATURES.copy())
    for column in AUDIO_COLUMNS:
        features[column] = Audio(sampling_rate=sample_rate)
    return features


def _column_options(features: Features, schema: pa.Schema) -> dict[str, Any]:
    """The per-column compression and encodings `Dataset.to_parquet` gives its writer: datasets
    5.2's `get_parquet_column_options` (leaf paths), or where the installed datasets predates it
    (the torch environment's 5.0: moshi pins huggingface-hub < 1, datasets 5.2 needs >= 1.31)
    what that version's writer passes inline (top-level columns), so a shard written there is the
    file that version's `to_parquet` would write."""
    try:
        # lazy: present from datasets 5.2 only
        from datasets.io.parquet import get_parquet_column_options
    except ImportError:
        from datasets.features.features import require_storage_embed  # lazy: the fallback's only use

        embed = {col: require_storage_embed(feature) for col, feature in features.items()}
        return {
            "compression": {col: "none" if e else "snappy" for col, e in embed.items()},
            "use_dictionary": [col for col, e in embed.items() if not e],
            "column_encoding": {col: "PLAIN" for col, e in embed.items() if e},
        }
    return get_parquet_column_options(features, schema)


class ShardWriter:
    """One shard's parquet file, written a row group at a time as samples arrive (in the order
    given), so memory holds one row group, not the shard. The writer is datasets' own
    (`Dataset.to_parquet`'s `pq.ParquetWriter` options: its schema with the features, per-column
    compression and encodings, content-defined chunking, page index), so the file reads as the
    same dataset; only the row groups differ from a whole-shard `to_parquet` (`ROW_GROUP_ROWS`).
    Atomic: rows go to a temporary sibling (`factory.atomic.tmp_path`), renamed onto `path` by
    `close`; a writer left by an exception (or a killed process) leaves no file under `path`.
    Use as a context manager; `sha256` is the published file's checksum."""

    def __init__(
        self,
        path: Path,
        sample_rate: int,
        *,
        rows_per_group: int = ROW_GROUP_ROWS,
        bytes_per_group: int = ROW_GROUP_BYTES,
    ) -> None:
        if rows_per_group < 1:
            raise ValueError(f"rows_per_group must be >= 1, got {rows_per_group}")
        self.path, self.tmp = path, tmp_path(path)
        self.rows_per_group, self.bytes_per_group = rows_per_group, bytes_per_group
        self.n_rows, self.n_groups, self.sha256 = 0, 0, ""
        features = row_features(sample_rate)
        self._schema = features.arrow_schema
        # pyarrow takes the chunking options as a dict too (its stubs say bool), as datasets passes them
        self._cdc: Any = datasets_config.DEFAULT_CDC_OPTIONS
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
            self.tmp,
            schema=self._schema,
            use_content_defined_chunking=self._cdc,
            write_page_index=True,
            **_column_options(features, self._schema),
        )
        self._rows: list[dict[str, Any]] = []
        self._bytes = 0

    def add(self, sample: Sample, encoded: EncodedAudio | None = None) -> None:
        """Append a sample's row (`encoded`: its `encode_audio` bytes, when already made)."""
        row = sample_to_row(sample, encoded)
        self._rows.append(row)
        self._bytes += _row_bytes(row)
        self.n_rows += 1
        if len(self._rows) >= self.rows_per_group or self._bytes >= self.bytes_per_group:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        assert self._writer is not None, "the shard writer is closed"
        self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self._schema))
        self._rows, self._bytes = [], 0
        self.n_groups += 1

    def close(self) -> str:
        """Write the last row group, publish the file under its name; returns its sha256."""
        assert self._writer is not None, "the shard writer is closed"
        self._flush()
        self._writer.add_key_value_metadata({"content_defined_chunking": json.dumps(self._cdc)})
        self._writer.close()
        self._writer = None
        crash_point("atomic_write")
        os.replace(self.tmp, self.path)
        self.sha256 = sha256_file(self.path)
        return self.sha256

    def abort(self) -> None:
        """Drop what was written (nothing appears under `path`)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._rows = []
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def _row_bytes(row: dict[str, Any]) -> int:
    """A row's size as the row group's budget counts it: its strings and audio bytes."""
    size = 0
    for value in row.values():
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, dict):
            size += len(value.get("bytes") or b"")
    return size


def write_shard(
    samples: Iterable[Sample],
    path: Path,
    sample_rate: int,
    encoded: Sequence[EncodedAudio | None] | None = None,
) -> str:
    """Write samples atomically (`ShardWriter`; an empty iterable gives a valid, empty shard).
    Returns the file's sha256. `encoded`: each sample's `encode_audio` bytes, when already made
    (else encoded here)."""
    samples = list(samples)
    audio = list(encoded) if encoded is not None else [None] * len(samples)
    if len(audio) != len(samples):
        raise ValueError(f"{len(audio)} encoded audio entries for {len(samples)} samples")
    with ShardWriter(path, sample_rate) as writer:
        for sample, a in zip(samples, audio, strict=True):
            writer.add(sample, a)
    return writer.sha256


def read_shard_rows(
    path: Path | BinaryIO, columns: list[str] | None = None, batch_size: int = 16
) -> Iterator[dict[str, Any]]:
    """Rows of one shard (a local path or an open fsspec file), a record batch at a time, one row
    group at a time: memory stays flat in the shard's size. (One `iter_batches` over the whole
    file keeps the column chunks it pre-buffered until it ends: pyarrow's pool peaked at about the
    file's size, 173 MB for a 170 MB file of 1,000 rows, against 16 MB a row group at a time.)"""
    file = pq.ParquetFile(path)
    for group in range(file.num_row_groups):
        for batch in file.iter_batches(batch_size=batch_size, row_groups=[group], columns=columns):
            yield from batch.to_pylist()
