"""Reference ranges ("bands") the audit sets each measure against.

Human bands come from `/work/shared/reference/conversation.md` (Switchboard measured with the same
method as `factory.conversation.measures`: 10 ms frame states, 180 ms bridge). Where the reference
gives a range it is the band; where it gives one number the band is that number with a stated
tolerance (`note`). Quality bands (ASR, agreement with the plan, loudness) are what the factory
itself promises, not human data. A band applies to the run's (or a shard's) pooled value; single
dialogues spread wider (Switchboard's per-conversation median FTO has sd ~0.12 s).

Bands per language (`bands_for`): a language's own published figures replace the English ones
measure by measure (`LANGUAGE_BANDS`, each cited: source, page or table, value); every other human
measure keeps its English band, which then says so (`Band.borrowed`: the audit prints "English
band" next to it and does not gate a shard on it, since it is not that language's norm). A
language's own figure measured another way than the audit measures it (another unit, another
denominator) is a reference, not a gate (`Band.gated` False): shown with its band, "reference, not
gated", and never failing a shard. Quality promises (human=False) hold for every language, except
that the ASR round trip scores characters (CER) where words are not space-separated (Japanese).

This module is pure data: the audit judges against it and the config validates gate names against it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Band:
    low: float | None
    high: float | None
    source: str
    note: str = ""
    human: bool = True  # False: a quality promise of the factory, not a human reference
    # whose data it is: a primary language subtag ("en"), or None for a quality promise (any language)
    language: str | None = "en"
    judges: str = "en"  # the language whose samples it judges (set by `bands_for`)
    metric: str = ""  # what the value counts where the measure's name does not say it (asr_wer: WER or CER)
    # False: the language's own figure, but measured otherwise than the audit measures (a reference
    # shown beside the value that never fails a shard)
    gated: bool = True

    @property
    def borrowed(self) -> bool:
        """A human band taken from another language's data (English) for lack of this one's."""
        return self.language is not None and self.language != base(self.judges)

    @property
    def not_gated(self) -> bool:
        """Shown, never gating a shard: borrowed from another language, or a reference (`gated` False)."""
        return self.borrowed or not self.gated

    @property
    def tag(self) -> str:
        """What the audit's outputs print next to the band: "English band" when borrowed,
        "reference, not gated" for the language's own figure measured otherwise."""
        if self.borrowed:
            return f"{LANGUAGE_NAMES.get(self.language or '', self.language)} band"
        return "" if self.gated else "reference, not gated"

    def contains(self, value: float) -> bool:
        if value != value:  # NaN: not measurable here, not out of band
            return True
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def label(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"[{lo}, {hi}]"

    def shown(self) -> str:
        """The band as the audit's tables print it: "[lo, hi]", with "(English band)" when borrowed
        and the metric where the language scores another one than the measure's name says (CER)."""
        extra = [t for t in (self.tag, self.metric if self.metric not in ("", "WER") else "") if t]
        return self.label() + (f" ({', '.join(extra)})" if extra else "")


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
    "planned_found": Band(0.95, 1.0, "factory: planned speech is in the audio", human=False, language=None),
    "audio_explained": Band(0.95, 1.0, "factory: speech in the audio is planned", human=False, language=None),
    "asr_wer": Band(0.0, 0.3, "factory: Whisper-base understands the voices", human=False, language=None, metric="WER"),
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

LANGUAGE_NAMES = {"en": "English", "ja": "Japanese", "da": "Danish"}

STIVERS = "Stivers et al. 2009, PNAS 106(26): 10587-10592, Results (per-language mean response offsets)"

# A language's own published figures, replacing (or adding to) English's measure by measure. Only
# what a named publication gives for that language; everything else stays English, marked borrowed.
# The mean FTO band keeps the +/- 0.1 s tolerance of the Switchboard quantile bands. Stivers et al.
# give means per language (the same figures as factory/timeline/timing_languages.yaml); English's own
# mean is not on file, so English has no fto_mean_s band (its location is judged by the median).
LANGUAGE_BANDS: dict[str, dict[str, Band]] = {
    "ja": {
        "fto_mean_s": Band(-0.093, 0.107, f"{STIVERS}: Japanese +7 ms", "+7 ms +/- 0.1 s", language="ja"),
        # Overlap: the one time-based Japanese figure found (2026-12-07; searched: J-Moshi, Ohashi et al.
        # 2025; Yuan, Liberman & Cieri 2007 (ICPhS), CALLHOME/CallFriend; Koiso & Den 2000 and 2010, Map
        # Task and three-party conversations; Den et al. response tokens; Kajikawa et al. 2004; CEJC; CSJ).
        # It is CALLHOME Japanese (120 calls; the utterance times of TalkBank's CABank transcripts, as the
        # `talkbank/callhome` jpn config carries them) in an aggregate audit on Hugging Face: 3.531143 h of
        # cross-speaker overlap in 18.741322 h of audio, 18.8 % of the audio. Speech time is at most the
        # audio, so the same spans overlap on at least 18.8 % of speech time: the low end, no high end.
        # A reference, not a gate: utterance spans of a transcript (pauses inside an utterance count as
        # speech), not the audit's 10 ms energy frames with a 180 ms bridge, and a data audit, not a paper.
        # Read, not used: Yuan et al. 2007 sec. 1 quote Kajikawa "45% in Japanese vs. 5% in English"
        # overlap ratios without a definition (and Furo finding fewer Japanese overlaps than English).
        "overlap_share": Band(
            0.188,
            None,
            "CALLHOME Japanese (TalkBank utterance times), Hugging Face dataset card "
            "ayousanz/callhome-ja-plus-audit: 3.531143 h cross-speaker overlap in 18.741322 h of audio",
            "18.8 % of the audio, so >= 18.8 % of speech time; transcript spans, not 10 ms frames",
            language="ja",
            gated=False,
        ),
        # the QA and the audit's ASR round trip score characters where words are not space-separated
        "asr_wer": Band(
            0.0, 0.3, "factory: Whisper-base understands the voices (CER)", human=False, language=None, metric="CER"
        ),
    },
    "da": {
        "fto_mean_s": Band(0.369, 0.569, f"{STIVERS}: Danish +469 ms", "+469 ms +/- 0.1 s", language="da"),
    },
}


def base(language: str) -> str:
    """The primary subtag ("ja-JP" -> "ja"); `factory.languages.base`, which this pure module may not import."""
    return language.split("-")[0].lower()


def bands_for(language: str = "en") -> dict[str, Band]:
    """The bands that judge samples of `language` (BCP-47): its own published figures where
    `LANGUAGE_BANDS` has them, English's elsewhere (`Band.borrowed`), each with `judges` set."""
    own = LANGUAGE_BANDS.get(base(language), {})
    merged = {m: own.get(m, b) for m, b in BANDS.items()} | {m: b for m, b in own.items() if m not in BANDS}
    return {m: replace(b, judges=base(language)) for m, b in merged.items()}


def headline(language: str = "en") -> tuple[str, ...]:
    """The headline measures of `language`: `HEADLINE`, with the measures only its own data has
    (Japanese: the mean FTO) after the median FTO."""
    extra = tuple(m for m in LANGUAGE_BANDS.get(base(language), {}) if m not in BANDS)
    i = HEADLINE.index("fto_p50_s") + 1
    return HEADLINE[:i] + extra + HEADLINE[i:]


def known_measures() -> set[str]:
    """Every measure some language has a band for (the names `audit.shard_bands` may use)."""
    return set(BANDS).union(*LANGUAGE_BANDS.values())
