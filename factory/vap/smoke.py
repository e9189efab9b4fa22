"""The smoke-train (`duplex-factory smoke-train EXPORT`, torch environment): the VAP model trained on
the export's train split and on two controls, one with the agent channel delayed by 2 s and one with
the user channel delayed by 2 s, each with several training seeds, all scored on the held-out split
with the run's own voice activity as the truth (shift/hold also split by the last speaker), and a
verdict (the rule: `factory.vap.report`). The export is read once; the controls are its tensors
shifted (`shift_channel`), and each dialogue's events are found once for every model."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from factory.atomic import atomic_write, atomic_write_text
from factory.models import Channel, Timeline
from factory.vap.data import Dialogue, Streams, held_out_split, load_streams, shift_channel
from factory.vap.measures import MEASURES, MODEL_RATE, Event, balanced_accuracy, best_threshold, events, score
from factory.vap.report import (
    CONTROL_SHIFT_S,
    MIN_SEEDS,
    PLOT,
    REPORT,
    SPEAKERS,
    TRAIN_SEEDS,
    Measure,
    SmokeReport,
    judge,
)

Scored = dict[str, tuple[np.ndarray, np.ndarray]]


def _split(speaker: str) -> str:
    return f"shift_hold after {speaker}"


def _scored(found: list[list[Event]], projections: list[np.ndarray]) -> Scored:
    """Scores and labels per measure, and the shift/hold events per last speaker (`_split`), from
    each dialogue's events (`found`) and its projection."""
    keys = [*MEASURES, *(_split(sp) for sp in SPEAKERS)]
    per: dict[str, tuple[list[float], list[bool]]] = {k: ([], []) for k in keys}
    for evs, p in zip(found, projections):
        for e in evs:
            into = [e.measure, _split(SPEAKERS[e.speaker])] if e.measure == "shift_hold" else [e.measure]
            for k in into:
                per[k][0].append(score(e, p))
                per[k][1].append(e.label)
    return {k: (np.asarray(s, np.float64), np.asarray(lab, bool)) for k, (s, lab) in per.items()}


def _fit_and_score(
    streams: Streams, found: tuple[list[list[Event]], list[list[Event]]], cfg: Any, phases: dict[str, float]
) -> tuple[dict[str, float], dict[str, float | None], list[np.ndarray]]:
    """Train on the train split; thresholds from the train events, balanced accuracy on the held out
    (each shift/hold split by last speaker with its own threshold: a pooled one can put a whole split
    on one side and score a model that tells shift from hold there as a constant guess). `found`:
    the train and the held-out dialogues' events; the wall seconds are added to `phases`."""
    from factory.vap.model import project, train  # lazy: torch (torch environment only, seconds to import)

    started = time.perf_counter()
    train_set, held = held_out_split(streams.dialogues)
    model = train(streams, train_set, cfg)
    trained = time.perf_counter()
    phases["train"] += trained - started
    tr = _scored(found[0], project(model, train_set, cfg))
    held_projection = project(model, held, cfg)
    te = _scored(found[1], held_projection)
    thresholds = {k: best_threshold(*tr[k]) for k in tr}
    accs = {k: balanced_accuracy(te[k][1], te[k][0] > t) if len(te[k][1]) else None for k, t in thresholds.items()}
    phases["score"] += time.perf_counter() - trained
    return thresholds, accs, held_projection


def smoke_train(
    export_dir: Path,
    run: str | None = None,
    out_dir: Path | None = None,
    steps: int = 400,
    batch: int = 16,
    seed: int = 0,
    train_seeds: int = TRAIN_SEEDS,
    threads: int = 1,
    plot_dialogues: int = 3,
    storage_options: dict[str, Any] | None = None,
    timelines: Mapping[str, Timeline] | None = None,
) -> SmokeReport:
    """Train (the model and both controls, each with the seeds `seed`, `seed + 1`, ... `train_seeds`
    of them), score, judge; write `smoke_train.json` and `smoke_train.png` (the first seed's model)
    into `out_dir` (default EXPORT/smoke-train). The voice-activity truth is the run's timelines
    (`run`, default the export's source run), or `timelines` by sample id."""
    from factory.vap.model import TrainConfig  # lazy: torch (torch environment only, seconds to import)

    if train_seeds < MIN_SEEDS:
        raise ValueError(
            f"smoke-train needs at least {MIN_SEEDS} training seeds (the verdict's margin counts their spread), "
            f"not {train_seeds}"
        )
    started = time.perf_counter()
    export_dir = Path(export_dir)
    out_dir = Path(out_dir) if out_dir else export_dir / "smoke-train"
    seeds = [seed + k for k in range(train_seeds)]
    streams = load_streams(export_dir, run, storage_options, timelines)
    train_set, held = held_out_split(streams.dialogues)
    found = ([events(d.activity) for d in train_set], [events(d.activity) for d in held])  # the same for every model
    variants = {
        "model": streams,
        "control": shift_channel(streams, Channel.agent, CONTROL_SHIFT_S),
        "user_control": shift_channel(streams, Channel.user, CONTROL_SHIFT_S),
    }
    phases = {"load": time.perf_counter() - started, "train": 0.0, "score": 0.0}
    thresholds: list[dict[str, float]] = []
    accs: dict[str, list[dict[str, float | None]]] = {v: [] for v in variants}
    projection: list[np.ndarray] = []
    for s in seeds:
        cfg = TrainConfig(steps=steps, batch=batch, seed=s, threads=threads)
        for name, variant in variants.items():
            th, acc, proj = _fit_and_score(variant, found, cfg, phases)
            accs[name].append(acc)
            if name == "model":
                thresholds.append(th)
                projection = projection or proj  # the first seed's, for the plot
    held_events = _scored(found[1], projection)
    measures = {}
    for k, (_, labels) in held_events.items():
        measures[k] = Measure.of(
            events=len(labels),
            positives=int(labels.sum()),
            model=[a[k] for a in accs["model"]],
            control=[a[k] for a in accs["control"]],
            user_control=[a[k] for a in accs["user_control"]],
            majority=balanced_accuracy(labels, np.zeros_like(labels)),  # a constant guess: 0.5
            thresholds=[th[k] for th in thresholds],
        )
    by_speaker = {sp: measures.pop(_split(sp)) for sp in SPEAKERS}
    learnable, verdict = judge(by_speaker)
    report = SmokeReport(
        export=str(export_dir),
        format=streams.format,
        export_frame_rate=streams.export_rate,
        train_dialogues=len(train_set),
        held_out_dialogues=len(held),
        steps=steps,
        batch=batch,
        seeds=seeds,
        threads=threads,
        seconds=0.0,
        phase_seconds=phases,
        measures=measures,
        shift_hold_by_last_speaker=by_speaker,
        learnable=learnable,
        verdict=verdict,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    if plot_dialogues:
        plot_projection(out_dir / PLOT, held[:plot_dialogues], projection[:plot_dialogues])
        report.plot = str(out_dir / PLOT)
    report.seconds = time.perf_counter() - started
    atomic_write_text(out_dir / REPORT, report.model_dump_json(indent=2))
    return report


def plot_projection(path: Path, dialogues: list[Dialogue], projections: list[np.ndarray]) -> None:
    """Per held-out dialogue, each channel's true activity and its projected activity over the
    next 0.24 s (the first bin), on one time axis."""
    import matplotlib  # lazy: plotting only here, seconds to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: see above

    fig, axes = plt.subplots(len(dialogues), 1, figsize=(12, 2.6 * len(dialogues)), squeeze=False)
    for ax, d, p in zip(axes[:, 0], dialogues, projections):
        t = np.arange(d.activity.shape[1]) / MODEL_RATE
        for ch, (name, colour, sign) in enumerate((("user", "tab:blue", 1), ("agent", "tab:orange", -1))):
            ax.fill_between(t, 0, sign * d.activity[ch], step="post", color=colour, alpha=0.25, label=f"{name} true")
            ax.plot(t, sign * p[:, ch, 0], color=colour, lw=1, label=f"{name} projected (next 0.24 s)")
        ax.set_title(d.id, fontsize=9)
        ax.set_ylim(-1.05, 1.05)
        ax.set_yticks([-1, 0, 1], ["agent", "", "user"])
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=4)
    axes[-1, 0].set_xlabel("time, s")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
