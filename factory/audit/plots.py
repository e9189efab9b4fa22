"""Pictures for auditing: one dialogue's waveforms under its timeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from factory.models import Channel, EndReason, Timeline, TurnKind

_COLORS = {
    TurnKind.turn: "#4C72B0",
    TurnKind.backchannel: "#55A868",
    TurnKind.laugh: "#C44E52",
    TurnKind.filler: "#8172B2",
}


def plot_dialogue(timeline: Timeline, stereo: np.ndarray, sample_rate: int, path: Path) -> Path:
    """Waveform per channel with the timeline's turns, words and events drawn over it."""
    import matplotlib  # lazy: heavy, and only figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after the headless backend is chosen

    width = max(12.0, min(40.0, timeline.duration * 0.6))
    fig, axes = plt.subplots(2, 1, figsize=(width, 5.5), sharex=True)
    t = np.arange(len(stereo)) / sample_rate
    for ch, ax in zip(Channel, axes):
        ax.plot(t, stereo[:, ch.index], color="0.6", linewidth=0.4)
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel(f"ch{ch.index}\n{ch.value}\n{timeline.voices[ch]}", rotation=0, ha="right", va="center")
        for turn in (x for x in timeline.turns if x.channel is ch):
            color = "#DD8452" if turn.end_reason is EndReason.yielded else _COLORS[turn.kind]
            ax.axvspan(turn.start, turn.end, color=color, alpha=0.18)
            label = turn.spoken_text if len(turn.spoken_text) < 60 else turn.spoken_text[:57] + "..."
            ax.text(turn.start, 0.92, f"{turn.id}: {label}", fontsize=7, va="top", clip_on=True)
            if turn.end_reason is EndReason.interrupted:
                ax.axvline(turn.end, color="#C44E52", linewidth=1.5)
        for word in (w for w in timeline.words if w.channel is ch and w.spoken):
            ax.plot([word.start, word.end], [-0.95, -0.95], color="0.2", linewidth=2, solid_capstyle="butt")
        for e in timeline.events:
            if e.type == "hesitation" and e.channel is ch:
                ax.axvspan(e.start, e.end, ymin=0, ymax=0.08, color="#8172B2")
    for e in timeline.events:
        if e.type == "barge_in":
            for ax in axes:
                ax.axvline(e.onset, color="#C44E52", linestyle="--", linewidth=1)
        elif e.type == "overlap":
            for ax in axes:
                ax.axvspan(e.start, e.end, color="#937860", alpha=0.12)
    axes[-1].set_xlabel("seconds")
    axes[0].set_title(
        f"{timeline.id}: turns shaded (blue turn, green backchannel, red laugh, orange yielded), "
        "red line = interrupted stop, dashed = barge-in onset, bars = words, purple = hesitations",
        fontsize=8,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
