"""Reference ranges ("bands") the audit sets each measure against.

Human bands come from `/work/shared/reference/conversation.md` (Switchboard measured with the same
method as `factory.conversation.measures`: 10 ms frame states, 180 ms bridge). Where the reference
gives a range it is the band; where it gives one number the band is that number with a stated
tolerance (`note`). Quality bands (ASR, agreement with the plan, loudness) are what the factory
itself promises, not human data. A band applies to the run's (or a shard's) pooled value; single
dialogues spread wider (Switchboard's per-conversation median FTO has sd ~0.12 s).

This module is pure data: the audit judges against it and the config validates gate names against it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Band:
    low: float | None
    high: float | None
    source: str
    note: str = ""
    human: bool = True  # False: a quality promise of the factory, not a human reference

    def contains(self, value: float) -> bool:
        if value != value:  # NaN: not measurable here, not out of band
            return True
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def label(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"[{lo}, {hi}]"


SWB = "Switchboard ms98 alignments (conversation.md)"

BANDS: dict[str, Band] = {
    "fto_p10_s": Band(-0.45, -0.25, SWB, "p10 -0.35 s +/- 0.1"),
    "fto_p25_s": Band(-0.21, -0.01, SWB, "p25 -0.11 s +/- 0.1"),
    "fto_p50_s": Band(0.05, 0.25, "Switchboard +0.13 s; CANDOR +0.08 s; modes 0-200 ms (Stivers 2009)"),
    "fto_p75_s": Band(0.25, 0.45, SWB, "p75 +0.35 s +/- 0.1"),
    "fto_p90_s": Band(0.50, 0.80, SWB, "p90 +0.65 s +/- 0.15"),
    "transitions_in_overlap": Band(0.30, 0.50, "Switchboard 30-34 %; CANDOR ~50 %"),
    "fto_within_500ms": Band(0.70, 0.82, "Heldner & Edlund 2010: 70-82 % of speaker changes"),
    "overlap_share": Band(0.03, 0.06, "Levinson & Torreira 2015: ~4-5 % of speech time", "4-5 % +/- 1 point"),
    "gap_median_s": Band(0.18, 0.34, SWB, "0.26 s +/- 30 %"),
    "between_overlap_median_s": Band(0.15, 0.29, SWB, "0.22 s +/- 30 %"),
    "within_overlap_median_s": Band(0.29, 0.53, SWB, "0.41 s +/- 30 %"),
    "pause_median_s": Band(0.40, 0.50, "Switchboard within-turn pauses: median 0.4-0.5 s"),
    "ipu_median_s": Band(0.9, 1.5, "Levinson & Torreira 2015: median ~1.2 s", "+/- 25 %"),
    "ipu_mean_s": Band(1.3, 2.1, "Levinson & Torreira 2015: mean ~1.7 s", "+/- 25 %"),
    "fillers_per_100_words": Band(2.0, 4.0, "Fox Tree 1995; Bortfeld 2001: filled pauses ~3 per 100 words"),
    "barge_ins_per_minute": Band(1.0, None, "Sellen 1995: interruptions more than once per minute in dyads"),
    "words_per_second": Band(3.5, 4.0, "Switchboard: ~3.5-4 words/s within speech"),
    "stop_latency_s": Band(0.0, 1.0, "LSLM: the interrupted speaker stops within [0, 2 mu], mu = 0.5 s"),
    # quality promises of the factory itself
    "planned_found": Band(0.95, 1.0, "factory: planned speech is in the audio", human=False),
    "audio_explained": Band(0.95, 1.0, "factory: speech in the audio is planned", human=False),
    "asr_wer": Band(0.0, 0.3, "factory: Whisper-base understands the voices", human=False),
}

# the measures shown first (tables, card)
HEADLINE = (
    "fto_p50_s",
    "transitions_in_overlap",
    "fto_within_500ms",
    "overlap_share",
    "gap_median_s",
    "ipu_median_s",
    "fillers_per_100_words",
    "barge_ins_per_minute",
    "stop_latency_s",
    "planned_found",
    "audio_explained",
    "asr_wer",
)
