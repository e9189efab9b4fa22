"""Counts, rates and shares read off a placed timeline, i.e. what was spoken (a barge-in cut drops
the marks after it): behaviour counts for the manifest, the per-sample behaviour gates and the
spoken behaviour rates. (Measures recomputed from the audio belong to the audit stage.)"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from factory.models import (
    IGNORED_KINDS,
    BackchannelEvent,
    BargeInEvent,
    EndReason,
    EventDropReason,
    FailedInterruptionEvent,
    HesitationEvent,
    IgnoredKind,
    LaughEvent,
    Script,
    Timeline,
    TurnKind,
    WordKind,
)


def behaviour_counts(timeline: Timeline) -> dict[str, int]:
    """Spoken behaviours: events exist only for what the placed audio holds."""
    hesitations = [e.kind for e in timeline.events if isinstance(e, HesitationEvent)]
    return {
        "fillers": hesitations.count("filler"),
        "restarts": hesitations.count("restart"),
        "pauses": hesitations.count("pause"),
        "backchannels": sum(isinstance(e, BackchannelEvent) for e in timeline.events),
        "laughs": sum(isinstance(e, LaughEvent) for e in timeline.events),
        "barge_ins": sum(isinstance(e, BargeInEvent) for e in timeline.events),
        "failed_interruptions": sum(isinstance(e, FailedInterruptionEvent) for e in timeline.events),
    }


def event_outcomes(
    script: Script, timeline: Timeline
) -> tuple[dict[IgnoredKind, int], dict[tuple[IgnoredKind, EventDropReason], int]]:
    """The events the agent must not answer: placed per kind (in the timeline, so in the audio)
    and the planned ones left out, per kind and reason: `no_room` for the planner's counts
    without a mark, `user_busy` for marks the timeline found no clear place for. Both empty
    when events are off (`Script.events_planned` null)."""
    if script.events_planned is None:
        return {}, {}
    placed: dict[IgnoredKind, int] = {kind: 0 for kind in IGNORED_KINDS}
    for e in timeline.ignored_events():
        placed[e.type] += 1
    marked = {kind: sum(m.type == kind for m in script.marks) for kind in IGNORED_KINDS}
    dropped: dict[tuple[IgnoredKind, EventDropReason], int] = {}
    for kind in IGNORED_KINDS:
        shortfalls: tuple[tuple[EventDropReason, int], ...] = (
            ("no_room", script.events_planned.get(kind, 0) - marked[kind]),
            ("user_busy", marked[kind] - placed[kind]),
        )
        for reason, n in shortfalls:
            if n > 0:
                dropped[(kind, reason)] = n
    return placed, dropped


def _is_floor_turn(turn) -> bool:
    """A turn that holds the floor: not a listener reaction, not a yielded interruption attempt."""
    return turn.kind is TurnKind.turn and turn.end_reason is not EndReason.yielded


def spoken_amounts(timeline: Timeline) -> dict[str, float]:
    """The bases of the rates: content words spoken in floor turns (no fillers, restart fragments
    or listener tokens) and minutes of floor-turn speech, the time a listener can react over."""
    floor = {t.id for t in timeline.turns if _is_floor_turn(t)}
    words = sum(w.spoken and w.kind is WordKind.word and w.turn in floor for w in timeline.words)
    minutes = sum(t.end - t.start for t in timeline.turns if t.id in floor) / 60
    return {"words": float(words), "speech_minutes": minutes}


# behaviour count -> the unit of its config target (`BehaviourSection`): `<count>_<unit>` is the target's name
RATE_UNITS = {
    "fillers": "per_100_words",
    "restarts": "per_100_words",
    "pauses": "per_100_words",
    "backchannels": "per_minute",
    "laughs": "per_minute",
    "barge_ins": "per_dialogue",
    "failed_interruptions": "per_dialogue",
}


def behaviour_rates(timelines: Timeline | Iterable[Timeline]) -> dict[str, float]:
    """Spoken behaviour rates, in the units of the config's `behaviour` targets, pooled over one or
    many dialogues (total count / total base, so long dialogues weigh by their length)."""
    timelines = [timelines] if isinstance(timelines, Timeline) else list(timelines)
    counts = dict.fromkeys(RATE_UNITS, 0)
    words = minutes = 0.0
    for tl in timelines:
        for k, v in behaviour_counts(tl).items():
            counts[k] += v
        amounts = spoken_amounts(tl)
        words, minutes = words + amounts["words"], minutes + amounts["speech_minutes"]
    bases = {"per_100_words": words / 100, "per_minute": minutes, "per_dialogue": float(len(timelines))}
    return {f"{name}_{unit}": counts[name] / bases[unit] if bases[unit] else 0.0 for name, unit in RATE_UNITS.items()}


def unmet_minimums(timeline: Timeline, minimums: dict[str, int]) -> list[str]:
    """Which behaviour minimums (name -> at least this many) the spoken dialogue misses."""
    counts = behaviour_counts(timeline)
    return [
        f"{counts[name]} {name} spoken, config asks for >= {need}"
        for name, need in minimums.items()
        if counts[name] < need
    ]


def overlap_share(timeline: Timeline, frame: float = 0.01) -> float:
    """Frames where both channels hold a turn / frames where anyone does (from the timeline). Events
    the agent must not answer are not turns, so not in it: the audit measures the audio's overlap
    share on turn speech alike (`factory.audit.measures.turn_speech`)."""
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
