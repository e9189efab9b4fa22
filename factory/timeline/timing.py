"""Turn-taking timing: a model of floor-transfer offsets (FTO) fitted to human conversation.

An FTO is the time from one speaker's end to the next speaker's start: a gap (> 0) or an
overlap (< 0), as Heldner & Edlund (2010) measure it from 10 ms frame states. The model is a
two-part mixture of lognormals (Laskowski, Heldner & Edlund 2012): with probability
`overlap_probability` the next turn starts in overlap, with a lognormal overlap; otherwise after
a lognormal gap. Conversations differ in tempo, so each dialogue draws one lognormal tempo factor
that scales all its gaps and overlaps; the pooled (over dialogues) gap of a lognormal scaled by a
lognormal tempo is again lognormal, with sigma sqrt(gap_sigma^2 + tempo_sigma^2), which makes
the pooled quantiles analytic and the fit a small least-squares problem.

Like lhotse's meeting simulator the model has `fit` (from a table of human transitions, from
published quantiles, or from a user's corpus: RTTM or lhotse manifests) and `sample`; unlike it,
every draw takes a numpy Generator passed in, so a run is reproducible.

Context changes a draw (`TransitionContext`): answers to questions come faster, topic shifts and
long turns are followed by longer gaps (Stivers et al. 2009; Levinson & Torreira 2015), and in
assistant mode the agent's response latency can have its own distribution.

Defaults per language (`timing_defaults`): English's transition fields are fitted so that the FTO
measured from the rendered audio matches Switchboard (`ENGLISH`; benchmarks/timing_fit.py): the
audio adds transitions the plan does not have (a listener's token in a speaker's silent pause, a
next turn starting in the previous one's last pause), all short, so the planned draw must be wider
than the corpus it should measure as. A language with its own fit to its rendered audio
(timing_languages.yaml `fitted`: Japanese, fitted so the FTO measured from the audio has its
published mean) takes it; other languages move English's distribution by their published mean
offset (timing_languages.yaml, with citations); the config's null transition fields take the
dialogue language's defaults, and `fit-timing` (timing.model_file) overrides them.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field
from scipy import optimize, stats

from factory.conversation.measures import FRAME_S, measure  # a corpus is measured as the audit measures audio

log = logging.getLogger("duplex_factory")


class TimingFitError(ValueError):
    """A corpus or table the model cannot be fitted from; the message says why."""


class PublishedTiming(BaseModel):
    """Published turn-taking numbers to fit to: FTO quantiles (seconds, negative = overlap), the
    share of transitions made in overlap, and gap / between-overlap duration quantiles."""

    model_config = ConfigDict(extra="forbid")

    fto_quantiles: dict[float, float]
    transitions_in_overlap: float | None = Field(default=None, ge=0, le=1)
    gap_quantiles: dict[float, float] = Field(default_factory=dict)
    gap_share_over_1s: float | None = Field(default=None, ge=0, le=1)
    overlap_quantiles: dict[float, float] = Field(default_factory=dict)
    tempo_sigma: float = Field(default=0.25, ge=0, le=1, description="per-dialogue tempo spread (log scale)")


# Switchboard (../shared/reference/conversation.md): 2,438 conversations, 190K transitions,
# word alignments, frame states at 10 ms with a 180 ms bridge.
SWITCHBOARD = PublishedTiming(
    fto_quantiles={0.10: -0.35, 0.25: -0.11, 0.50: 0.13, 0.75: 0.35, 0.90: 0.65},
    transitions_in_overlap=0.34,
    gap_quantiles={0.50: 0.26, 0.90: 0.81},
    gap_share_over_1s=0.06,
    overlap_quantiles={0.50: 0.22, 0.90: 0.62},
    tempo_sigma=0.25,
)


@dataclass(frozen=True)
class TransitionContext:
    """What the timing of one floor transfer depends on besides chance."""

    tempo: float = 1.0  # this dialogue's tempo factor (`TimingModel.draw_tempo`)
    after_question: bool = False  # the previous turn asked a question
    topic_shift: bool = False  # the new turn starts a new topic
    previous_turn_s: float = 0.0  # how long the previous turn was
    agent_response: bool = False  # assistant mode: the agent answers the user
    overlap_probability: float | None = None  # this transition's overlap share (None: the model's)
    factor_norm: float = 1.0  # context gap factors are divided by this (their dialogue's geometric mean)


class TimingModel(BaseModel):
    """FTO distribution of ordinary floor transfers (barge-ins have their own stop latency).
    Medians and sigmas are per dialogue (before the tempo factor)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    overlap_probability: float = Field(ge=0, le=1, description="share of floor transfers made in overlap")
    gap_median: float = Field(gt=0, le=5)
    gap_sigma: float = Field(ge=0, le=3, description="within-dialogue log-scale spread of gaps")
    overlap_median: float = Field(gt=0, le=3)
    overlap_sigma: float = Field(ge=0, le=3)
    tempo_sigma: float = Field(ge=0, le=1, description="per-dialogue tempo spread (log scale)")
    gap_max: float = Field(default=3.0, gt=0, le=10)
    overlap_max: float = Field(default=1.5, gt=0, le=5)
    question_factor: float = Field(default=0.8, gt=0, le=3, description="gap scale after a question")
    topic_shift_factor: float = Field(default=1.5, gt=0, le=5, description="gap scale before a new topic")
    long_turn_s: float = Field(default=8.0, gt=0, le=60, description="a previous turn longer than this is long")
    long_turn_factor: float = Field(default=1.3, gt=0, le=5, description="gap scale after a long turn")
    agent_latency_median: float | None = Field(
        default=None,
        gt=0,
        le=10,
        description="assistant mode: the agent's response latency median (null: human timing)",
    )
    agent_latency_sigma: float = Field(default=0.4, ge=0, le=3)
    agent_overlap_probability: float = Field(default=0.0, ge=0, le=1, description="agent answers starting in overlap")

    # ----------------------------------------------------------------- drawing
    def draw_tempo(self, rng: np.random.Generator) -> float:
        return float(np.exp(rng.normal(0.0, self.tempo_sigma))) if self.tempo_sigma else 1.0

    def uses_agent_latency(self, ctx: TransitionContext) -> bool:
        return ctx.agent_response and self.agent_latency_median is not None

    def gap_factor(self, ctx: TransitionContext) -> float:
        """How much the context scales a gap (before `factor_norm`)."""
        factor = 1.0
        if ctx.after_question:
            factor *= self.question_factor
        if ctx.topic_shift:
            factor *= self.topic_shift_factor
        if ctx.previous_turn_s > self.long_turn_s:
            factor *= self.long_turn_factor
        return factor

    def sample(self, rng: np.random.Generator, context: TransitionContext | None = None) -> float:
        """One FTO in seconds (negative: the new turn starts that long before the previous ends)."""
        ctx = context or TransitionContext()
        if self.uses_agent_latency(ctx):
            assert self.agent_latency_median is not None  # uses_agent_latency checked it
            if rng.random() < self.agent_overlap_probability:
                return -min(float(rng.lognormal(math.log(self.overlap_median), self.overlap_sigma)), self.overlap_max)
            latency = float(rng.lognormal(math.log(self.agent_latency_median), self.agent_latency_sigma))
            return min(latency, self.gap_max)
        p = self.overlap_probability if ctx.overlap_probability is None else ctx.overlap_probability
        if rng.random() < p:
            overlap = float(rng.lognormal(math.log(self.overlap_median), self.overlap_sigma)) * ctx.tempo
            return -min(overlap, self.overlap_max)
        scale = ctx.tempo * self.gap_factor(ctx) / ctx.factor_norm
        return min(float(rng.lognormal(math.log(self.gap_median), self.gap_sigma)) * scale, self.gap_max)

    def ordinary_overlap_probability(self, n_transitions: int, n_barge_ins: int) -> float:
        """The overlap share of a dialogue's ordinary transitions that keeps its expected share of
        all transitions at `overlap_probability` when `n_barge_ins` of them are barge-ins (which
        are all overlaps): barge-ins take their place in the overlap share, not on top of it."""
        ordinary = n_transitions - n_barge_ins
        if ordinary <= 0:
            return self.overlap_probability
        p = (self.overlap_probability * n_transitions - n_barge_ins) / ordinary
        return float(np.clip(p, 0.0, 1.0))

    # ----------------------------------------------------------------- pooled distribution
    def pooled_sigmas(self) -> tuple[float, float]:
        return math.hypot(self.gap_sigma, self.tempo_sigma), math.hypot(self.overlap_sigma, self.tempo_sigma)

    def cdf(self, x: float | np.ndarray) -> np.ndarray:
        """Pooled FTO CDF over dialogues (no context effects, no caps)."""
        x = np.asarray(x, float)
        sg, so = self.pooled_sigmas()
        p = self.overlap_probability
        with np.errstate(divide="ignore"):
            over = p * stats.norm.sf((np.log(np.maximum(-x, 1e-12)) - math.log(self.overlap_median)) / max(so, 1e-9))
            gap = p + (1 - p) * stats.norm.cdf(
                (np.log(np.maximum(x, 1e-12)) - math.log(self.gap_median)) / max(sg, 1e-9)
            )
        return np.where(x < 0, over, np.where(x > 0, gap, p))

    def quantiles(self, qs: Sequence[float] = (0.10, 0.25, 0.50, 0.75, 0.90)) -> dict[float, float]:
        """Pooled FTO quantiles (analytic)."""
        sg, so = self.pooled_sigmas()
        p = self.overlap_probability
        out = {}
        for q in qs:
            if q < p:  # an overlap of the (1 - q/p) quantile
                out[q] = -self.overlap_median * math.exp(so * stats.norm.ppf(1 - q / p))
            else:
                out[q] = self.gap_median * math.exp(sg * stats.norm.ppf(min((q - p) / (1 - p), 1 - 1e-12)))
        return out

    # ----------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, source: Any, **options: Any) -> TimingModel:
        """Fit from published numbers (`PublishedTiming`), a table of human transitions (a
        sequence of FTOs in seconds, or a mapping / dataframe with an `fto` column and optionally
        `conversation`), or a corpus file: two-speaker RTTM (`.rttm`), or lhotse cuts or
        supervisions (a CutSet, or its JSONL manifest, `.jsonl` / `.jsonl.gz`). `options` set
        the fields not fitted (context factors, caps, agent latency)."""
        if isinstance(source, PublishedTiming):
            return cls.fit_quantiles(source, **options)
        if isinstance(source, str | Path):
            path = Path(source)
            if not path.exists():
                raise TimingFitError(f"{path}: no such file")
            name = path.name.lower()
            if name.endswith(".rttm"):
                return cls.fit_transitions(*_table(rttm_transitions(path)), **options)
            if name.endswith((".jsonl", ".jsonl.gz", ".json")):
                return cls.fit_transitions(*_table(lhotse_transitions(path)), **options)
            raise TimingFitError(f"{path}: expected an .rttm file or a lhotse .jsonl(.gz) manifest")
        if hasattr(source, "subset") and hasattr(source, "to_eager"):  # a lhotse CutSet
            return cls.fit_transitions(*_table(lhotse_transitions(source)), **options)
        if hasattr(source, "columns") or isinstance(source, Mapping):
            columns = list(getattr(source, "columns", source))  # a dataframe's columns, a mapping's keys
            if "fto" not in columns:
                raise TimingFitError(f"a transition table needs an 'fto' column (seconds); got {columns}")
            conv = list(source["conversation"]) if "conversation" in columns else None
            return cls.fit_transitions(list(source["fto"]), conv, **options)
        return cls.fit_transitions(list(source), None, **options)

    @classmethod
    def fit_quantiles(cls, published: PublishedTiming, **options: Any) -> TimingModel:
        """Least squares on the pooled CDF at every published point (FTO quantiles, the overlap
        share, gap and overlap duration quantiles, the share of gaps over 1 s)."""
        tau = published.tempo_sigma
        fto = sorted(published.fto_quantiles.items())
        if not fto:
            raise TimingFitError("published timing needs FTO quantiles")

        def unpack(v: np.ndarray) -> tuple[float, float, float, float, float]:
            p = 1 / (1 + math.exp(-v[0]))
            return p, math.exp(v[1]), math.exp(v[2]), math.exp(v[3]), math.exp(v[4])

        def residuals(v: np.ndarray) -> np.ndarray:
            p, gm, sg, om, so = unpack(v)
            r = []
            for q, x in fto:
                if x < 0:
                    r.append(p * stats.norm.sf((math.log(-x) - math.log(om)) / so) - q)
                else:
                    r.append(p + (1 - p) * stats.norm.cdf((math.log(max(x, 1e-9)) - math.log(gm)) / sg) - q)
            if published.transitions_in_overlap is not None:
                r.append(p - published.transitions_in_overlap)
            for q, x in published.gap_quantiles.items():
                r.append(stats.norm.cdf((math.log(x) - math.log(gm)) / sg) - q)
            if published.gap_share_over_1s is not None:
                r.append(stats.norm.sf(-math.log(gm) / sg) - published.gap_share_over_1s)
            for q, x in published.overlap_quantiles.items():
                r.append(stats.norm.cdf((math.log(x) - math.log(om)) / so) - q)
            return np.asarray(r)

        p0 = published.transitions_in_overlap or 0.3
        start = np.array([math.log(p0 / (1 - p0)), math.log(0.25), math.log(0.8), math.log(0.2), math.log(0.8)])
        fit = optimize.least_squares(residuals, start, method="lm")
        p, gm, sg, om, so = unpack(fit.x)
        return cls(
            overlap_probability=round(p, 4),
            gap_median=round(gm, 4),
            gap_sigma=round(_within(sg, tau), 4),
            overlap_median=round(om, 4),
            overlap_sigma=round(_within(so, tau), 4),
            tempo_sigma=tau,
            **options,
        )

    @classmethod
    def fit_transitions(
        cls, fto: Sequence[float], conversation: Sequence[Any] | None = None, **options: Any
    ) -> TimingModel:
        """Maximum-likelihood lognormals of a table of transitions (FTO seconds, one per floor
        transfer). With conversation ids, the tempo spread is the between-conversation variance
        of mean log durations less its sampling part; otherwise `tempo_sigma` (option, default 0)
        is taken as given and removed from the pooled spreads."""
        x = np.asarray(fto, float)
        x = x[np.isfinite(x) & (x != 0)]
        gaps, overlaps = x[x > 0], -x[x < 0]
        if len(gaps) < 10 or len(overlaps) < 10:
            raise TimingFitError(
                f"need at least 10 gaps and 10 overlaps to fit; got {len(gaps)} gaps, {len(overlaps)} overlaps"
            )
        tau = float(options.pop("tempo_sigma", 0.0))
        if conversation is not None:
            tau = _tempo_sigma(np.asarray(fto, float), list(conversation))
        lg, lo = np.log(gaps), np.log(overlaps)
        return cls(
            overlap_probability=round(len(overlaps) / len(x), 4),
            gap_median=round(float(np.exp(lg.mean())), 4),
            gap_sigma=round(_within(float(lg.std()), tau), 4),
            overlap_median=round(float(np.exp(lo.mean())), 4),
            overlap_sigma=round(_within(float(lo.std()), tau), 4),
            tempo_sigma=round(tau, 4),
            **options,
        )


def _within(pooled: float, tau: float) -> float:
    """Within-dialogue spread from a pooled one: pooled^2 = within^2 + tempo^2."""
    return math.sqrt(max(pooled**2 - tau**2, 0.05**2))


def _tempo_sigma(fto: np.ndarray, conversation: list[Any]) -> float:
    """Between-conversation spread of the mean log gap, less what sampling alone gives."""
    by: dict[Any, list[float]] = defaultdict(list)
    for x, c in zip(fto, conversation):
        if np.isfinite(x) and x > 0:
            by[c].append(math.log(x))
    groups = [np.asarray(v) for v in by.values() if len(v) >= 3]
    if len(groups) < 3:
        return 0.0
    means = np.array([g.mean() for g in groups])
    sampling = np.mean([g.var(ddof=1) / len(g) for g in groups])
    return float(math.sqrt(max(means.var(ddof=1) - sampling, 0.0)))


def _table(rows: list[tuple[str, float]]) -> tuple[list[float], list[str]]:
    return [f for _, f in rows], [c for c, _ in rows]


# --------------------------------------------------------------------------- corpora
Segments = dict[str, list[tuple[float, float]]]  # speaker -> (start, end) seconds


def conversation_fto(segments: Segments, frame_s: float = FRAME_S) -> list[float]:
    """FTOs of one two-speaker conversation, measured as the audit measures audio: 10 ms
    activity per speaker, then Heldner & Edlund frame states (`factory.conversation.measures`)."""
    if len(segments) != 2:
        raise TimingFitError(f"a conversation needs exactly two speakers; got {sorted(segments)}")
    end = max(e for spans in segments.values() for _, e in spans)
    n = int(math.ceil(end / frame_s)) + 1
    acts = []
    for speaker in sorted(segments):
        a = np.zeros(n, bool)
        for s, e in segments[speaker]:
            a[int(round(s / frame_s)) : int(round(e / frame_s))] = True
        acts.append(a)
    return list(measure(acts[0], acts[1], frame_s=frame_s).fto)


def read_rttm(path: Path) -> dict[str, Segments]:
    """RTTM (NIST) speaker turns: `SPEAKER <file> <chan> <start> <dur> <NA> <NA> <speaker> ...`,
    grouped by file. Other record types (SPKR-INFO, LEXEME, ...) and comments are skipped; a
    malformed SPEAKER line raises with its line number."""
    out: dict[str, Segments] = defaultdict(lambda: defaultdict(list))
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith((";", "#")) or fields[0] != "SPEAKER":
            continue
        try:
            file, start, dur, speaker = fields[1], float(fields[3]), float(fields[4]), fields[7]
        except (IndexError, ValueError) as exc:
            raise TimingFitError(f"{path}:{n}: not an RTTM SPEAKER line ({exc}): {line!r}") from None
        if dur < 0 or start < 0:
            raise TimingFitError(f"{path}:{n}: negative start or duration: {line!r}")
        out[file][speaker].append((start, start + dur))
    if not out:
        raise TimingFitError(f"{path}: no SPEAKER lines")
    return {f: dict(s) for f, s in out.items()}


def rttm_transitions(path: Path) -> list[tuple[str, float]]:
    """(conversation, FTO) of every two-speaker file of an RTTM; files with other speaker
    counts are refused by name (a diarisation with a third speaker is not a dyad)."""
    rows = []
    for file, segments in read_rttm(path).items():
        if len(segments) != 2:
            raise TimingFitError(f"{path}: file {file!r} has {len(segments)} speakers ({sorted(segments)}); need 2")
        rows += [(file, f) for f in conversation_fto(segments)]
    return rows


def lhotse_transitions(source: Any) -> list[tuple[str, float]]:
    """(conversation, FTO) from lhotse data: a CutSet (needs lhotse), or a JSONL manifest read
    without lhotse: cuts (`supervisions` with starts relative to the cut) or supervision
    segments (`recording_id`, `start`, `duration`, `speaker`)."""
    groups: dict[str, Segments] = defaultdict(lambda: defaultdict(list))
    for item in _lhotse_items(source):
        if "supervisions" in item:  # a cut: its supervisions are relative to the cut start
            for s in item["supervisions"]:
                start = float(s["start"])
                groups[item["id"]][str(s.get("speaker"))].append((max(start, 0.0), start + float(s["duration"])))
        elif "recording_id" in item and "duration" in item:
            start = float(item["start"])
            key = item["recording_id"]
            groups[key][str(item.get("speaker"))].append((start, start + float(item["duration"])))
    if not groups:
        raise TimingFitError("no lhotse cuts or supervisions with speakers found")
    rows = []
    for conv, segments in groups.items():
        if len(segments) != 2:
            raise TimingFitError(f"lhotse conversation {conv!r} has {len(segments)} speakers; need 2")
        rows += [(conv, f) for f in conversation_fto(segments)]
    return rows


def _lhotse_items(source: Any) -> Iterable[dict]:
    if isinstance(source, str | Path):
        path = Path(source)
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise TimingFitError(f"{path}:{n}: not JSON: {exc}") from None
        return
    for cut in source:  # a lhotse CutSet
        yield {"id": cut.id, "supervisions": [s.to_dict() for s in cut.supervisions]}


# --------------------------------------------------------------------------- context
_WORD = re.compile(r"[a-z']+")
_STOP = frozenset(
    "a an the and or but so if then i you he she it we they me my your our their is are was were be been "
    "to of in on at for with that this what there here do did does not no yes yeah oh um uh well just "
    "like okay ok right really very can could would should will have has had about how why when".split()
)


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2}


def is_topic_shift(previous: Sequence[str], text: str, min_words: int = 4) -> bool:
    """Lexical cohesion (as TextTiling): a turn of at least `min_words` content words sharing
    none with the previous turns starts a new topic."""
    words = content_words(text)
    if len(words) < min_words or not previous:
        return False
    return not words & set().union(*(content_words(t) for t in previous))


def is_question(text: str) -> bool:
    return text.rstrip().rstrip('"”’').endswith("?")


# The fields a language's defaults supply where the config leaves them null.
LANGUAGE_FIELDS = ("overlap_probability", "gap_median", "gap_sigma", "overlap_median", "overlap_sigma", "tempo_sigma")

# English: the transition fields whose FTO measured from the audio (energy VAD, 10 ms frames, 180 ms
# bridge) matches Switchboard: its quantiles, 79 % within +/-500 ms, 34 % in overlap, gap and
# between-overlap medians (`benchmarks/timing_fit.py --fit 60 --fit-on tts`: Gauss-Newton on 60
# dialogues of real espeak/Piper renders, started from a fit on the planner-path corpus; checked on
# 60 other dialogues, benchmarks/results/timing_fit.md). `fit(SWITCHBOARD)`, the planned draw
# alone, measured -310/-155/+90/+250/+464 ms and 89 % within +/-500 ms on those renders.
ENGLISH = TimingModel(
    overlap_probability=0.2567,
    gap_median=0.3965,
    gap_sigma=0.6529,
    overlap_median=0.8449,  # long: the placer clips overlaps to half of either turn, pauses end them
    overlap_sigma=0.9482,
    tempo_sigma=0.25,
)


class FittedTransitions(BaseModel):
    """A language's transition fields fitted so the FTO measured from its rendered audio matches its
    published figures (`benchmarks/timing_fit.py --language <code> --fit N --fit-on tts`)."""

    model_config = ConfigDict(extra="forbid")

    overlap_probability: float = Field(gt=0, lt=1)
    gap_median: float = Field(gt=0)
    gap_sigma: float = Field(gt=0)
    overlap_median: float = Field(gt=0)
    overlap_sigma: float = Field(gt=0)
    how: str = Field(min_length=1, description="the command and dialogues of the fit")


class LanguageTiming(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mean_offset_s: float = Field(ge=-1, le=2, description="published mean floor-transfer offset (seconds)")
    source: str = Field(min_length=1, description="where the figure is published: source, table or section, value")
    fitted: FittedTransitions | None = None


class LanguageTimingFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference: LanguageTiming  # the mean English (Switchboard) stands for
    languages: dict[str, LanguageTiming]


LANGUAGES_FILE = Path(__file__).with_name("timing_languages.yaml")


@functools.cache
def language_timing() -> LanguageTimingFile:
    """The published per-language figures (`timing_languages.yaml`)."""
    return LanguageTimingFile.model_validate(yaml.safe_load(LANGUAGES_FILE.read_text(encoding="utf-8")))


@functools.cache
def timing_defaults(language: str = "en") -> TimingModel:
    """The timing model of a language (BCP-47; its primary subtag decides): English's fit to the
    audio; a language's own fit to its audio where timing_languages.yaml has one (`fitted`); else
    English's FTO quantiles moved by the language's published mean offset less the reference mean
    and re-fitted (`fit_quantiles`). A language without published figures gets English's, with a
    logged note."""
    tag = re.split(r"[-_]", language.strip())[0].lower()
    if tag == "en":
        return ENGLISH
    figures = language_timing()
    entry = figures.languages.get(tag)
    if entry is None:
        log.info("timing: no published turn-timing figures for language %r; using English's", language)
        return ENGLISH
    if entry.fitted is not None:
        return ENGLISH.model_copy(update=entry.fitted.model_dump(exclude={"how"}))
    shift = entry.mean_offset_s - figures.reference.mean_offset_s
    grid = [round(0.05 * k, 2) for k in range(1, 20)]  # the whole distribution moves, not five points
    moved = PublishedTiming(
        fto_quantiles={q: x + shift for q, x in ENGLISH.quantiles(grid).items()}, tempo_sigma=ENGLISH.tempo_sigma
    )
    return TimingModel.fit_quantiles(moved)


def timing_model(section: Any, language: str = "en") -> TimingModel:
    """The model a run's `timing` config section describes for a dialogue in `language`: its
    `model_file` (a fitted model's JSON) when set, else its fields, the null transition fields
    (`LANGUAGE_FIELDS`) taken from the language's defaults (`timing_defaults`)."""
    if getattr(section, "model_file", None) is not None:
        path = Path(section.model_file)
        if not path.is_file():
            raise TimingFitError(f"timing.model_file {path} not found")
        return TimingModel.model_validate_json(path.read_text(encoding="utf-8"))
    defaults = timing_defaults(language)
    fields = {name: getattr(section, name) for name in TimingModel.model_fields}
    for name in LANGUAGE_FIELDS:
        if fields[name] is None:
            fields[name] = getattr(defaults, name)
    return TimingModel(**fields)


# A barge-in's stop latency, unless configured: Switchboard's between-overlap durations (the overlap
# lognormal of `fit(SWITCHBOARD)`), not the ordinary transitions' overlap draw, which is wider so
# that the audio measures as Switchboard (`ENGLISH`).
BARGE_IN_STOP_MEDIAN, BARGE_IN_STOP_SIGMA = 0.2174, 0.8041


def barge_in_stop(rng: np.random.Generator, section: Any, tempo: float = 1.0) -> float:
    """How long after the interrupter's onset a barge-in's victim stops (seconds): from the
    section's own stop-latency lognormal when set, else like Switchboard's between-overlaps."""
    if section.barge_in_stop_median is None:
        median, sigma = BARGE_IN_STOP_MEDIAN, BARGE_IN_STOP_SIGMA
    else:
        median, sigma = section.barge_in_stop_median, section.barge_in_stop_sigma
    x = float(rng.lognormal(math.log(median), sigma)) * tempo
    return float(np.clip(x, section.barge_in_stop.low, section.barge_in_stop.high))
