"""The dataset card's front matter: Hub size categories at every size, read back as YAML."""

from __future__ import annotations

import polars as pl
import pytest
import yaml

from factory.config import RunConfig
from factory.export.card import dataset_card, size_category


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


def _manifest(n_ok: int, n_rejected: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "status": ["ok"] * n_ok + ["rejected"] * n_rejected,
            "duration": [30.0] * n_ok + [None] * n_rejected,
            "reason": [None] * n_ok + ["intelligibility"] * n_rejected,
            "duplicate_of": [None] * (n_ok + n_rejected),
        },
        schema={"status": pl.String, "duration": pl.Float64, "reason": pl.String, "duplicate_of": pl.String},
    )


@pytest.mark.parametrize("n_ok,label", [(3, "n<1K"), (12_000, "10K<n<100K")])
def test_card_counts_only_produced_rows(n_ok: int, label: str) -> None:
    card = dataset_card(RunConfig(), _manifest(n_ok, n_rejected=995))  # rejected rows are not in the dataset
    front = yaml.safe_load(card.split("---")[1])
    assert front["size_categories"] == [label]
    assert f"dialogues: {n_ok} " in card and "- intelligibility: 995" in card
