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
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypedDict

import numpy as np
import pyarrow.parquet as pq
from datasets import Audio, Dataset, Features, Value

from factory.atomic import atomic_write, sha256_file
from factory.audio.mix import flac_bytes, read_audio
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


def write_shard(
    samples: Iterable[Sample],
    path: Path,
    sample_rate: int,
    encoded: Sequence[EncodedAudio | None] | None = None,
) -> str:
    """Write samples atomically (temporary name, then rename). Returns the file's sha256.
    `encoded`: each sample's `encode_audio` bytes, when already made (else encoded here)."""
    samples = list(samples)
    audio = list(encoded) if encoded is not None else [None] * len(samples)
    if len(audio) != len(samples):
        raise ValueError(f"{len(audio)} encoded audio entries for {len(samples)} samples")
    rows = [sample_to_row(s, a) for s, a in zip(samples, audio, strict=True)]
    # from_list([]) would drop the schema; an all-rejected shard is still a valid, empty shard
    ds = (
        Dataset.from_list(rows, features=ROW_FEATURES)
        if rows
        else Dataset.from_dict({name: [] for name in ROW_FEATURES}, features=ROW_FEATURES)
    )
    for column in AUDIO_COLUMNS:
        ds = ds.cast_column(column, Audio(sampling_rate=sample_rate))
    atomic_write(path, lambda tmp: ds.to_parquet(str(tmp)))
    return sha256_file(path)


def read_shard_rows(
    path: Path | BinaryIO, columns: list[str] | None = None, batch_size: int = 16
) -> Iterator[dict[str, Any]]:
    """Rows of one shard (a local path or an open fsspec file), a record batch at a time (memory
    stays flat in the shard's size)."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns):
        yield from batch.to_pylist()
