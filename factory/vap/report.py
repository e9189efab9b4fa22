"""What the smoke-train reports (`smoke_train.json`) and its verdict rule: pydantic and plain
Python only, so `duplex-factory schemas` and the CLI's printing import it without torch or the run
reader.

Verdict rule: the data carries learnable turn-taking when, on at least `MIN_EVENTS` held-out
shift/hold events with both outcomes present, the model's shift/hold balanced accuracy beats both
the majority class (0.5) and the shifted control by the margin `margin(events, positives)`: at
least `MARGIN`, and at least two standard errors of a balanced accuracy measured on that many
events (worst case, each class's accuracy at 0.5). On 40 events that is 0.16, on 200 about 0.07:
a difference of a few events on a small held-out split is chance, not turn-taking. The control keeps every
channel's own tokens and only breaks their timing against each other, so the model beats it only
when the token streams carry *when* each side speaks relative to the other."""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

from factory.vap.measures import MODEL_RATE

REPORT = "smoke_train.json"
PLOT = "smoke_train.png"
MARGIN = 0.05
MIN_EVENTS = 20
CONTROL_SHIFT_S = 2.0
RULE = (
    f"learnable when, on >= {MIN_EVENTS} held-out shift/hold events (both outcomes present), the model's "
    f"shift/hold balanced accuracy beats the majority class (0.5) and the {CONTROL_SHIFT_S:g} s agent-shifted "
    f"control by >= max({MARGIN}, two standard errors of a balanced accuracy on that many events)"
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
    control: float | None
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
    learnable: bool
    verdict: str
    rule: str = RULE
    plot: str | None = None


def judge(shift_hold: Measure) -> tuple[bool, str]:
    """The verdict from the held-out shift/hold measure, by `RULE`."""
    m, c = shift_hold.model, shift_hold.control
    if m is None or shift_hold.events < MIN_EVENTS:
        return False, (
            f"it does not: too few held-out shift/hold events to judge ({shift_hold.events}, both outcomes "
            f"needed, at least {MIN_EVENTS})"
        )
    control = c if c is not None else 0.5
    need = margin(shift_hold.events, shift_hold.positives)
    numbers = f"shift/hold balanced accuracy {m:.3f} against majority 0.500 and shifted control {control:.3f}"
    if m >= 0.5 + need and m >= control + need:
        return True, f"this data carries learnable turn-taking: {numbers} (margin {need:.3f})"
    return False, f"it does not carry learnable turn-taking: {numbers} (margin {need:.3f} not met)"
