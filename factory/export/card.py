"""The dataset card (README.md with YAML front matter) that travels with a run's shards."""

from __future__ import annotations

import polars as pl
import yaml

from factory.config import RunConfig

# The Hub's `size_categories` labels, each with the row count where the next one starts.
_SIZE_CATEGORIES = [
    ("n<1K", 10**3),
    ("1K<n<10K", 10**4),
    ("10K<n<100K", 10**5),
    ("100K<n<1M", 10**6),
    ("1M<n<10M", 10**7),
    ("10M<n<100M", 10**8),
    ("100M<n<1B", 10**9),
    ("1B<n<10B", 10**10),
    ("10B<n<100B", 10**11),
    ("100B<n<1T", 10**12),
]


def size_category(n_rows: int) -> str:
    """The Hub's size category of `n_rows` (a boundary count belongs to the larger class: 1000 -> "1K<n<10K")."""
    return next((label for label, upper in _SIZE_CATEGORIES if n_rows < upper), "n>1T")


def dataset_card(cfg: RunConfig, manifest: pl.DataFrame, audit: dict | None = None) -> str:
    """The card of a run. `audit` (from `factory.audit.report.card_audit`, when the run has been
    audited): `rows` of (measure, value, band, in band, reference) and `plot`, an image path
    relative to the card."""
    ok = manifest.filter(pl.col("status") == "ok")
    rejected = manifest.filter(pl.col("status") == "rejected")
    hours = float(ok["duration"].sum() or 0) / 3600
    front = {
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": cfg.run.split, "path": f"data/{cfg.run.split}-*.parquet"}],
            }
        ],
        "task_categories": ["audio-to-audio", "automatic-speech-recognition"],
        "language": ["en"],
        "tags": ["full-duplex", "spoken-dialogue", "synthetic", "two-channel", "turn-taking"],
        "size_categories": [size_category(len(ok))],
    }
    reasons = rejected.group_by("reason").len().sort("len", descending=True) if len(rejected) else None
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {cfg.run_id}",
        "",
        "Synthetic two-channel conversational speech made by duplex-factory.",
        "",
        (
            f"- dialogues: {len(ok)} ({hours:.2f} h), rejected: {len(rejected)}, "
            f"near-duplicate scripts: {manifest['duplicate_of'].is_not_null().sum()} (`duplicate_of` in the manifest)"
        ),
        f"- sample rate: {cfg.audio.sample_rate} Hz, stereo FLAC: **channel 0 = user, channel 1 = agent**",
        f"- seed: {cfg.run.seed} (the same config and seed reproduce these bytes; see config.yaml)",
        (
            "- columns: `audio` (clean), `audio_augmented` (noise added, or null), `timeline` (JSON, schema "
            "`timeline.schema.json` of duplex-factory), transcripts, scenario, voices."
        ),
        (
            "- read stereo with `ds.cast_column('audio', Audio(decode=False))` and soundfile; "
            "torchcodec's decoder averages the channels."
        ),
        "- the per-sample manifest (`manifest.parquet`) lists every sample, produced or rejected, with the reason.",
    ]
    if audit:
        lines += [
            "",
            "## Audit (measured from the audio)",
            "",
            f"{audit['summary']}",
            "",
            "| measure | value | human / quality band | in band | reference |",
            "|---|---|---|---|---|",
        ]
        lines += [f"| {m} | {v} | {b} | {ok} | {src} |" for m, v, b, ok, src in audit["rows"]]
        if audit.get("plot"):
            lines += ["", f"![floor-transfer offsets against Switchboard]({audit['plot']})"]
    if reasons is not None:
        lines += ["", "## Rejections", ""] + [f"- {r['reason']}: {r['len']}" for r in reasons.iter_rows(named=True)]
    return "\n".join(lines) + "\n"
