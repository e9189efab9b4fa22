"""The dataset card: front matter the Hub and `datasets` accept, size categories at every size,
and statistics that agree with the manifest they come from."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCard, DatasetCardData

from factory.config import RunConfig
from factory.export.card import dataset_card, shard_features, size_category


@pytest.mark.parametrize(
    "n,label",
    [
        (0, "n<1K"),
        (999, "n<1K"),
        (1000, "1K<n<10K"),
        (9_999, "1K<n<10K"),
        (10_000, "10K<n<100K"),
        (99_999, "10K<n<100K"),
        (100_000, "100K<n<1M"),
        (999_999, "100K<n<1M"),
        (1_000_000, "1M<n<10M"),
        (9_999_999, "1M<n<10M"),
        (10**7, "10M<n<100M"),
        (10**8, "100M<n<1B"),
        (10**9, "1B<n<10B"),
        (10**10, "10B<n<100B"),
        (10**11, "100B<n<1T"),
        (10**12 - 1, "100B<n<1T"),
        (10**12, "n>1T"),
    ],
)
def test_size_category_boundaries(n: int, label: str) -> None:
    assert size_category(n) == label


def _manifest(n_ok: int, n_rejected: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    ok = pl.DataFrame(
        {
            "id": [f"train-{i:07d}" for i in range(n_ok)],
            "status": ["ok"] * n_ok,
            "duration": rng.uniform(20, 40, n_ok),
            "n_turns": rng.poisson(7, n_ok),
            "n_words": rng.poisson(90, n_ok),
            "n_barge_ins": rng.poisson(1, n_ok),
            "n_backchannels": rng.poisson(2, n_ok),
            "n_fillers": rng.poisson(3, n_ok),
            "n_laughs": rng.poisson(0.3, n_ok),
            "n_failed_interruptions": rng.poisson(0.4, n_ok),
            "overlap_share": rng.uniform(0, 0.1, n_ok),
            "wer_max": rng.uniform(0, 0.5, n_ok),
            "user_voice": ["piper-joe"] * n_ok,
            "agent_voice": ["kokoro-jf_alpha"] * n_ok,
            "llm": ["llama.cpp:SmolLM2"] * n_ok,
        }
    )
    rejected = pl.DataFrame(
        {
            "id": [f"train-{n_ok + i:07d}" for i in range(n_rejected)],
            "status": ["rejected"] * n_rejected,
            "reason": ["intelligibility"] * n_rejected,
        }
    )
    return pl.concat([ok, rejected], how="diagonal").with_columns(duplicate_of=pl.lit(None, pl.String))


@pytest.mark.parametrize(
    "n_ok,label", [(999, "n<1K"), (1000, "1K<n<10K"), (10_001, "10K<n<100K"), (1_000_001, "1M<n<10M")]
)
def test_card_front_matter_is_valid_hub_metadata_at_every_size(n_ok: int, label: str) -> None:
    cfg = RunConfig.model_validate({"run": {"license": "cc-by-4.0", "split": "train"}})
    text = dataset_card(cfg, _manifest(n_ok, n_rejected=5), data_bytes=123_456)  # rejected rows are not data
    card = DatasetCard(text)  # huggingface_hub parses the front matter into DatasetCardData
    data = card.data
    assert isinstance(data, DatasetCardData)
    assert data.size_categories == [label]
    assert data.license == "cc-by-4.0" and data.language == ["en"] and "full-duplex" in data.tags
    assert data.configs == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}
    ]
    # `datasets` reads dataset_info back: the features are exactly those of the shards, and the split
    # counts only produced rows.
    info = DatasetInfosDict.from_dataset_card_data(data)["default"]
    assert info.features == shard_features(cfg.audio.sample_rate)
    assert info.splits["train"].num_examples == n_ok
    assert f"dialogues: {n_ok} " in text and "- intelligibility: 5" in text


def test_card_statistics_agree_with_the_manifest() -> None:
    manifest = _manifest(300, n_rejected=0, seed=3)
    text = dataset_card(RunConfig(), manifest)
    minutes = manifest["duration"].sum() / 60
    rows = {
        key.strip(): value.strip()
        for key, value in (line.strip("| ").split(" | ", 1) for line in text.splitlines() if line.startswith("| "))
    }
    assert rows["backchannels per minute"] == f"{manifest['n_backchannels'].sum() / minutes:.1f}"
    share_none = (manifest["n_barge_ins"] == 0).mean()
    assert f"dialogues with none: {share_none:.0%}" in rows["barge-ins per dialogue"]
    assert rows["words per minute"] == f"{manifest['n_words'].sum() / minutes:.0f}"
    # both channels are documented, and how to read them without the mono-averaging decoder
    assert "channel 0 = user, channel 1 = agent" in text and "decode=False" in text


def test_the_card_counts_each_script_source_with_its_license() -> None:
    manifest = _manifest(7, n_rejected=2, seed=1)
    assert "## Script sources" not in dataset_card(RunConfig(), manifest)  # a manifest from before sources: no table
    kinds = ["llm", "dataset", "llm", "dataset", "dataset", "llm", "dataset"]
    manifest = manifest.with_columns(
        source_kind=pl.Series(kinds + [None, None]),
        source_dataset=pl.Series([None if k == "llm" else "en-everyday" for k in kinds] + [None, None]),
        source_license=pl.Series([None if k == "llm" else "CC0-1.0" for k in kinds] + [None, None]),
        llm=pl.Series([k == "llm" and "llama.cpp:SmolLM2" or "" for k in kinds] + [None, None]),
    )
    text = dataset_card(RunConfig(), manifest)
    assert "## Script sources" in text
    assert "| en-everyday | dataset | CC0-1.0 | 4 |" in text  # rejected rows are not counted
    assert "| llama.cpp:SmolLM2 | llm | the LLM's output terms | 3 |" in text
