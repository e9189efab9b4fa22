"""What the smoke-train reports (`smoke_train.json`) and its verdict rule: pydantic and plain
Python only, so `duplex-factory schemas` and the CLI's printing import it without torch or the run
reader.

Verdict rule: the held-out shift/hold events are split by their last speaker, and each split is
scored against the control that breaks that speaker's timing: after the agent, the model trained
with the agent channel delayed by `CONTROL_SHIFT_S`; after the user, the model trained with the
user channel delayed as much. (One agent-shifted control keeps the user's channel whole, so after
the user it knows everything the model knows and only half of the turn-taking is tested.) The
data carries learnable turn-taking when, for EACH split with at least `MIN_EVENTS` events and both
outcomes present, the model's balanced accuracy beats both the majority class (0.5) and that
split's control by the margin `margin(events, positives)`: at least `MARGIN`, and at least two
standard errors of a balanced accuracy measured on that many events (worst case, each class's
accuracy at 0.5). On 40 events that is 0.16, on 200 about 0.07: a difference of a few events on a
small held-out split is chance, not turn-taking. A split with fewer events (or one outcome only)
makes the verdict "too few events": skipping it would leave that speaker's timing untested. A
control keeps every channel's own tokens and only breaks their timing against each other, so the
model beats it only when the token streams carry *when* each side speaks relative to the other."""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel, Field

from factory.vap.measures import MODEL_RATE

REPORT = "smoke_train.json"
PLOT = "smoke_train.png"
MARGIN = 0.05
MIN_EVENTS = 20
CONTROL_SHIFT_S = 2.0
SPEAKERS = ("user", "agent")  # the last speaker of a shift/hold event: the splits judged
RULE = (
    f"learnable when each last-speaker split of the held-out shift/hold events has >= {MIN_EVENTS} events "
    f"(both outcomes present) and in each the model's balanced accuracy beats the majority class (0.5) and that "
    f"split's control (after the agent: the {CONTROL_SHIFT_S:g} s agent-shifted one; after the user: the "
    f"{CONTROL_SHIFT_S:g} s user-shifted one) by >= max({MARGIN}, two standard errors of a balanced accuracy "
    f"on that many events)"
)


def margin(events: int, positives: int) -> float:
    """How much the model must beat each baseline by: `MARGIN`, or two worst-case standard errors
    of a balanced accuracy on `positives` and `events - positives` events, whichever is larger."""
    negatives = events - positives
    if positives <= 0 or negatives <= 0:
        return 1.0  # one outcome only: nothing to beat a baseline on
    standard_error = 0.5 * math.sqrt(0.25 / positives + 0.25 / negatives)
    return max(MARGIN, 2 * standard_error)


class Measure(BaseModel):
    """One VAP measure on the held-out split: event counts and balanced accuracies (None when the
    held-out split lacks one of the two outcomes)."""

    events: int
    positives: int
    model: float | None
    control: float | None = Field(description="the same model trained with the agent channel delayed by 2 s")
    user_control: float | None = Field(
        default=None, description="the same model trained with the user channel delayed by 2 s"
    )
    majority: float | None
    threshold: float = Field(description="the model's decision threshold, chosen on the train split's events")


class SmokeReport(BaseModel):
    """`smoke_train.json`: what the smoke-train measured and its verdict."""

    export: str
    format: str
    export_frame_rate: float
    model_frame_rate: float = MODEL_RATE
    train_dialogues: int
    held_out_dialogues: int
    steps: int
    batch: int
    seed: int
    threads: int
    seconds: float
    measures: dict[str, Measure]
    shift_hold_by_last_speaker: dict[str, Measure] = Field(
        default_factory=dict,
        description="the held-out shift/hold events split by who spoke last (user, agent), each its own threshold",
    )
    learnable: bool
    verdict: str
    rule: str = RULE
    plot: str | None = None


def split_control(speaker: str, measure: Measure) -> float | None:
    """The control a last-speaker split is judged against: the one that breaks that speaker's timing."""
    return measure.control if speaker == "agent" else measure.user_control


def judge(splits: Mapping[str, Measure]) -> tuple[bool, str]:
    """The verdict from the held-out shift/hold measure split by last speaker, by `RULE`."""
    few = [
        f"after the {sp} {splits[sp].events if sp in splits else 0}"
        for sp in SPEAKERS
        if sp not in splits or splits[sp].model is None or splits[sp].events < MIN_EVENTS
    ]
    if few:
        return False, (
            f"it does not: too few held-out shift/hold events to judge ({', '.join(few)}; per last speaker at "
            f"least {MIN_EVENTS}, both outcomes needed)"
        )
    judged = []
    for speaker in SPEAKERS:
        m = splits[speaker]
        assert m.model is not None  # checked above
        control = split_control(speaker, m)
        control = control if control is not None else 0.5
        need = margin(m.events, m.positives)
        ok = m.model >= 0.5 + need and m.model >= control + need
        judged.append(
            (
                ok,
                f"after the {speaker} {m.model:.3f} against majority 0.500 and the {speaker}-shifted control "
                f"{control:.3f} on {m.events} events (margin {need:.3f}{'' if ok else ' not met'})",
            )
        )
    numbers = "shift/hold balanced accuracy " + "; ".join(text for _, text in judged)
    if all(ok for ok, _ in judged):
        return True, f"this data carries learnable turn-taking: {numbers}"
    return False, f"it does not carry learnable turn-taking: {numbers}"
