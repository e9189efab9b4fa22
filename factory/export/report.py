"""The export report and its bad-input rules. Bad input never disappears silently: each case has
a rule (shift, drop, pad or error) in `COMMON_RULES` or the format's own, and every application
of a rule is counted in the report (`ExportReport.rules`, zeros included, so a reader sees which
rules were checked)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from factory.models import Sample


@dataclass(frozen=True)
class Rule:
    action: Literal["shift", "drop", "pad", "error"]
    doc: str


# the rules of reading a run, which every format applies
RUN_RULES: dict[str, Rule] = {
    "rejected_samples": Rule(
        "drop", "samples the run rejected (manifest status 'rejected') have no audio and are not exported"
    ),
    "empty_source_shards": Rule("drop", "run shards with no sample (all rejected) are skipped"),
    "empty_output_shard": Rule(
        "drop", "an output shard is only written when it holds a sequence; zero sequences in all is an error"
    ),
}

COMMON_RULES: dict[str, Rule] = {
    "word_overlaps_previous_tokens": Rule(
        "shift",
        "a word starts before the previous word's text tokens are out: its tokens start in the first free "
        "frame after them (moshi-finetune drops the leftover instead; we keep every token)",
    ),
    "tokens_past_end": Rule(
        "drop", "text tokens that no longer fit before the end of the dialogue after a shift are dropped"
    ),
    "word_past_end": Rule("drop", "a word that starts at or after the end of the audio is dropped"),
    "word_end_clipped": Rule("shift", "a word that ends after the end of the audio ends at the end of the audio"),
    "audio_frames_adjusted": Rule(
        "pad",
        "the audio tokenizer gave a different number of frames than the timeline covers: the token "
        "array is trimmed, or padded by repeating its last frame, to the timeline's frame count",
    ),
    "frame_rate_not_dividing_sample_rate": Rule(
        "error", "the frame rate does not divide the sample rate into whole samples per frame: the export stops"
    ),
    "rejected_samples": RUN_RULES["rejected_samples"],
    "empty_source_shards": RUN_RULES["empty_source_shards"],
    "empty_sample": Rule("drop", "a sample with no duration or no spoken word gives no sequence and is dropped"),
    "empty_output_shard": RUN_RULES["empty_output_shard"],
}


class DroppedSample(BaseModel):
    id: str
    rule: str
    detail: str = ""


class ExportReport(BaseModel):
    format: str
    format_version: str
    out_dir: str
    samples_in: int = 0
    samples_out: int = 0
    dialogue_seconds: float = 0.0
    shards: list[str] = Field(default_factory=list)
    rules: dict[str, int] = Field(default_factory=dict, description="times each rule was applied")
    rule_actions: dict[str, str] = Field(default_factory=dict)
    dropped: list[DroppedSample] = Field(default_factory=list)
    seconds_tokenize: float = 0.0
    seconds_total: float = 0.0


class RuleCounter:
    """Counts rule applications and remembers dropped samples for the report."""

    def __init__(self, rules: dict[str, Rule]) -> None:
        self.rules = rules
        self.counts: Counter[str] = Counter(dict.fromkeys(rules, 0))
        self.dropped: list[DroppedSample] = []

    def add(self, rule: str, n: int = 1) -> None:
        if rule not in self.rules:
            raise KeyError(f"undocumented rule {rule!r}")
        self.counts[rule] += n

    def drop(self, sample_id: str, rule: str, detail: str = "") -> None:
        self.add(rule)
        self.dropped.append(DroppedSample(id=sample_id, rule=rule, detail=detail))


def usable(samples: Iterable[Sample], report: ExportReport, counter: RuleCounter) -> Iterator[Sample]:
    """The samples that give a sequence; the others are dropped and counted (rule empty_sample)."""
    for s in samples:
        report.samples_in += 1
        if is_empty(s):
            counter.drop(s.id, "empty_sample", f"duration {s.timeline.duration:.2f} s, no spoken word")
            continue
        yield s


def is_empty(sample: Sample) -> bool:
    tl = sample.timeline
    return tl.duration <= 0 or len(sample.stems) == 0 or not any(w.spoken for w in tl.words)


@dataclass
class Timer:
    """Accumulates the seconds spent inside `with timer:` (tokenization, for the benchmark)."""

    seconds: float = 0.0
    _t0: float = field(default=0.0, repr=False)

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter() - self._t0
