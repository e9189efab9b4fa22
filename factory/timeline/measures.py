"""Counts and shares read off a timeline: behaviour counts for the manifest and the per-sample
behaviour gates. (Measures recomputed from the audio belong to the audit stage.)"""

from __future__ import annotations

import numpy as np

from factory.models import BackchannelEvent, BargeInEvent, HesitationEvent, Timeline


def behaviour_counts(timeline: Timeline) -> dict[str, int]:
    return {
        "fillers": sum(isinstance(e, HesitationEvent) and e.kind == "filler" for e in timeline.events),
        "backchannels": sum(isinstance(e, BackchannelEvent) for e in timeline.events),
        "barge_ins": sum(isinstance(e, BargeInEvent) for e in timeline.events),
    }


def unmet_minimums(timeline: Timeline, minimums: dict[str, int]) -> list[str]:
    """Which behaviour minimums (name -> at least this many) the spoken dialogue misses."""
    counts = behaviour_counts(timeline)
    return [
        f"{counts[name]} {name} spoken, config asks for >= {need}"
        for name, need in minimums.items()
        if counts[name] < need
    ]


def overlap_share(timeline: Timeline, frame: float = 0.01) -> float:
    """Frames where both channels hold a turn / frames where anyone does (from the timeline)."""
    n = int(np.ceil(timeline.duration / frame))
    active = np.zeros((2, n), bool)
    for t in timeline.turns:
        active[t.channel.index, int(t.start / frame) : int(np.ceil(t.end / frame))] = True
    anyone = active.any(0).sum()
    return float(active.all(0).sum() / anyone) if anyone else 0.0


def transcript(timeline: Timeline) -> str:
    """Readable transcript of what was spoken, in time order."""
    lines = []
    for t in timeline.turns:
        tag = f"{t.channel.value}{' (backchannel)' if t.kind.value == 'backchannel' else ''}"
        cut = " [interrupted]" if t.end_reason.value == "interrupted" else ""
        lines.append(f"[{t.start:7.2f}-{t.end:7.2f}] {tag}: {t.spoken_text}{cut}")
    return "\n".join(lines)
