"""Per-sample audit measures, computed from the audio and checked against the timeline.

For one `Sample` (clean stems, channel 0 = user, 1 = agent):

- voice activity per channel at 10 ms from each requested detector (`factory.audio.vad`), and the
  Heldner & Edlund measures of each (`factory.conversation.measures`), side by side; the first
  detector is the primary one (gates, bands, report). The measures are made of turn speech: the
  timeline's events the agent must not answer (side talk, background speech, non-speech sounds
  on the user's channel) are taken out of the activity where the user's own words do not explain
  it (`turn_speech`), since they are neither a turn nor two speakers overlapping; the speech so
  left out is its own measure (`<vad>_event_s`, against the timeline's `event_s`), and the plan's
  overlap share measured the same way from its words (`plan_overlap_share`) stands beside the
  audio's;
- from the timeline, checked against the primary activity: fillers per 100 words (a filler counts
  when the audio holds it), barge-ins (the interrupter starts, the victim is speaking, the victim
  stops) and the victim's stop latency measured in the audio (both on turn speech), and agreement:
  the share of planned speech (spoken words and events) found in the audio and the share of audio
  speech the plan explains, each with a tolerance of `tolerance_s` at word edges;
- an ASR round trip on `asr_turns` floor turns drawn with `rng_for(run_seed, sample_key,
  "audit_asr")`: each turn's spoken span of its own channel through Whisper in the dialogue's
  language, scored against the spoken text by that language's metric (`factory.asr.error_rate`:
  WER, or CER where words are not space-separated; the row's `asr_metric` says which), per voice;
- loudness (ITU-R BS.1770, pyloudnorm) and sample peak per channel.

Everything lands in one flat dict (`SampleAudit.row`): scalars plus list columns (the H&E
durations) so run and shard values can be pooled from `audit.parquet` alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyloudnorm

from factory.asr import error_rate, is_exempt, transcribe
from factory.audio.vad import detect_speech, frame_samples
from factory.conversation.measures import BRIDGE_S, ConversationMeasures, bridge, measure
from factory.languages import base, spaced
from factory.models import (
    BargeInEvent,
    Channel,
    EndReason,
    Sample,
    Timeline,
    TurnKind,
    WordKind,
)
from factory.seeding import rng_for
from factory.timeline.measures import behaviour_counts, spoken_amounts

LIST_MEASURES = ("fto", "gaps", "pauses", "between_overlaps", "within_overlaps", "ipu_durations")
ONSET_SEARCH_S = (0.10, 0.30)  # an interrupter's audio onset is looked for this far before/after the plan's
STOP_SEARCH_S = 0.30  # the victim's audio stop may trail the planned stop by this much


@dataclass(frozen=True)
class BargeInCheck:
    """One planned barge-in as the audio shows it (times in seconds; None: not found)."""

    by: int
    onset_plan: float
    stop_plan: float
    onset_audio: float | None
    stop_audio: float | None
    in_pause: bool = False  # the interrupter started while the victim was silent (a pause in its turn)

    @property
    def found(self) -> bool:
        return self.onset_audio is not None and self.stop_audio is not None

    @property
    def latency_plan(self) -> float:
        return self.stop_plan - self.onset_plan

    @property
    def latency_audio(self) -> float:
        if self.onset_audio is None or self.stop_audio is None:  # not found
            return math.nan
        return self.stop_audio - self.onset_audio


@dataclass
class SampleAudit:
    id: str
    row: dict
    activity: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # detector -> (user, agent)
    # detector -> (user, agent) turn speech: `activity` less the events the agent must not answer (`turn_speech`)
    turn_activity: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    conversation: dict[str, ConversationMeasures] = field(default_factory=dict)
    barge_ins: list[BargeInCheck] = field(default_factory=list)
    frame_s: float = 0.01


def _span(start: float, end: float, n: int, frame_s: float) -> slice:
    """The frames of the grid whose centre [start, end) covers, at least the frame it starts in."""
    first = max(0, math.ceil(start / frame_s - 0.5))
    return slice(first, min(n, max(math.ceil(end / frame_s - 0.5), first + 1)))


def plan_activity(timeline: Timeline, n: int, frame_s: float, events: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel frames inside a spoken word of the timeline or (`events`) an event the agent must
    not answer (side talk, background or non-speech sound, on the user's channel), on the
    detector's grid (a word marks the frames whose centre it covers, at least the frame it starts
    in). `events=False`: the turns' speech alone, what the turn-taking measures are made of."""
    out = np.zeros((2, n), bool)
    for w in timeline.words:
        if w.spoken and w.end > w.start:
            out[w.channel.index, _span(w.start, w.end, n, frame_s)] = True
    if events:  # sound the agent must not answer is planned sound on the user's channel
        out |= event_frames(timeline, n, frame_s)
    return out[0], out[1]


def event_frames(timeline: Timeline, n: int, frame_s: float) -> np.ndarray:
    """(2, n): per channel, the frames inside an event the agent must not answer (its audible span)."""
    out = np.zeros((2, n), bool)
    for e in timeline.ignored_events():
        out[e.channel.index, _span(e.start, e.end, n, frame_s)] = True
    return out


def turn_speech(
    activity: tuple[np.ndarray, np.ndarray], timeline: Timeline, frame_s: float, tolerance_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's voice activity less the sound the agent must not answer: the frames of an
    event's span (widened by `tolerance_frames`) that the channel's own spoken words (widened as
    much) do not explain. Side talk, background speech and non-speech sounds are not turns: they
    are not the user taking the floor, and the agent talking over them is not two speakers
    overlapping (what overlap share and FTO count in human conversation), so the turn-taking
    measures are made of what is left. An event under the user's own speech (a TV while the user
    talks) leaves the user's words; one in a pause of the user's turn (side talk) leaves the pause."""
    n = len(activity[0])
    words = np.stack(plan_activity(timeline, n, frame_s, events=False))
    events = event_frames(timeline, n, frame_s)
    out = [
        np.asarray(act, bool) & ~(_dilate(e, tolerance_frames) & ~_dilate(w, tolerance_frames))
        for act, w, e in zip(activity, words, events, strict=True)
    ]
    return out[0], out[1]


def _dilate(x: np.ndarray, k: int) -> np.ndarray:
    if k <= 0 or not x.any():
        return x
    padded = np.concatenate([np.zeros(k, bool), x, np.zeros(k, bool)])
    csum = np.concatenate([[0], np.cumsum(padded)])
    return (csum[2 * k + 1 :] - csum[: -2 * k - 1]) > 0


def agreement(plan: np.ndarray, audio: np.ndarray, tolerance_frames: int) -> tuple[float, float]:
    """(share of planned frames the audio holds, share of audio frames the plan explains), each
    allowing `tolerance_frames` of slack at the other side's edges."""
    found = (plan & _dilate(audio, tolerance_frames)).sum() / plan.sum() if plan.any() else math.nan
    explained = (audio & _dilate(plan, tolerance_frames)).sum() / audio.sum() if audio.any() else math.nan
    return float(found), float(explained)


def check_barge_ins(timeline: Timeline, user: np.ndarray, agent: np.ndarray, frame_s: float) -> list[BargeInCheck]:
    """Each planned barge-in in the audio: the interrupter's speech onset nearest the planned
    one (its first active frame there when it never falls silent), and the end of the victim's
    speech over it: the run (silences shorter than the 180 ms bridge do not end it) that holds
    the onset, or, when the onset falls in a pause of the victim, the run in which the victim
    resumes over the interrupter, up to the last speech it begins before the planned stop (plus
    `STOP_SEARCH_S`). Not found when the interrupter is silent there, the victim does
    not speak over it, or the victim's speech runs on past the planned stop."""
    bridge_frames = round(BRIDGE_S / frame_s)
    channels = (bridge(user, bridge_frames), bridge(agent, bridge_frames))
    raw = (user, agent)
    n = len(user)
    out = []
    for e in (e for e in timeline.events if isinstance(e, BargeInEvent)):
        by = e.by.index
        lo = max(0, int((e.onset - ONSET_SEARCH_S[0]) / frame_s))
        hi = min(n, int(math.ceil((e.onset + ONSET_SEARCH_S[1]) / frame_s)))
        x = raw[by]
        # speech onsets (silence -> speech) near the plan's; the interrupter may have been talking just
        # before (its own previous turn ending), so the first active frame alone can be too early
        edges = [j for j in range(lo, hi) if x[j] and (j == 0 or not x[j - 1])]
        hits = np.flatnonzero(x[lo:hi])
        onset = stop = None
        in_pause = False
        if edges or len(hits):
            planned = e.onset / frame_s
            k = min(edges, key=lambda j: abs(j - planned)) if edges else lo + int(hits[0])
            onset = k * frame_s
            victim = channels[1 - by]
            last = min(n, int(math.ceil((e.victim_stop + STOP_SEARCH_S) / frame_s)))
            start = k if victim[k] else next((j for j in range(k, last) if victim[j]), None)
            in_pause = not victim[k]
            if start is not None:
                # the victim's last speech that begins before the planned stop (+ slack): a pause
                # inside its turn longer than the bridge does not make an early stop
                end = start
                while True:
                    while end < n and victim[end]:
                        end += 1
                    resume = next((j for j in range(end, last) if victim[j]), None)
                    if resume is None:
                        break
                    end = resume
                if end <= last:
                    stop = end * frame_s
        out.append(BargeInCheck(by, e.onset, e.victim_stop, onset, stop, in_pause))
    return out


def fillers_found(timeline: Timeline, user: np.ndarray, agent: np.ndarray, frame_s: float) -> tuple[int, int]:
    """(fillers spoken in the timeline, of which the audio holds at least half of the frames)."""
    channels, planned, found = (user, agent), 0, 0
    for w in timeline.words:
        if w.kind is not WordKind.filler or not w.spoken:
            continue
        planned += 1
        x = channels[w.channel.index]
        first = max(0, math.ceil(w.start / frame_s - 0.5))
        last = min(len(x), max(math.ceil(w.end / frame_s - 0.5), first + 1))
        if last > first and x[first:last].mean() >= 0.5:
            found += 1
    return planned, found


def loudness(stems: np.ndarray, sr: int) -> dict[str, float]:
    """Integrated loudness (LUFS, BS.1770) and sample peak (dBFS) per channel; -inf when silent."""
    meter = pyloudnorm.Meter(sr)
    out = {}
    for ch in Channel:
        x = np.asarray(stems[:, ch.index], np.float64)
        peak = float(np.abs(x).max()) if len(x) else 0.0
        out[f"peak_dbfs_{ch.value}"] = 20 * math.log10(peak) if peak > 0 else -math.inf
        out[f"lufs_{ch.value}"] = float(meter.integrated_loudness(x)) if peak > 0 else -math.inf
    return out


def asr_round_trip(sample: Sample, n_turns: int) -> list[tuple[str, str, float]]:
    """(voice, heard text, error rate) for up to `n_turns` floor turns of the sample, drawn with the
    sample's own generator, heard and scored in its language (WER, or CER where words are not
    space-separated); backchannel-length turns are skipped (Whisper hallucinates on them)."""
    if n_turns <= 0:
        return []
    tl, sr = sample.timeline, sample.sample_rate
    language = sample.meta.scenario.language
    turns = [
        t
        for t in tl.turns
        if t.kind is TurnKind.turn and t.end_reason is not EndReason.yielded and not is_exempt(t.spoken_text, language)
    ]
    if not turns:
        return []
    rng = rng_for(sample.meta.run_seed, sample.meta.sample_key, "audit_asr")
    picked = sorted(rng.choice(len(turns), size=min(n_turns, len(turns)), replace=False).tolist())
    out = []
    for i in picked:
        t = turns[i]
        clip = sample.stems[int(t.start * sr) : int(math.ceil(t.end * sr)), t.channel.index]
        heard = transcribe(clip, sr, base(language)).text
        out.append((t.voice_id, heard, error_rate(t.spoken_text, heard, language)))
    return out


def channel_activity(audio: np.ndarray, sr: int, vad: str = "energy") -> tuple[np.ndarray, np.ndarray, float]:
    """Per-channel activity of a stereo signal ([n, 2] or [2, n]) from `factory.audio.vad`, and
    the grid's true frame length (10 ms rounded to whole samples)."""
    x = np.asarray(audio)
    if x.ndim != 2 or 2 not in x.shape:
        raise ValueError(f"expected stereo audio shaped [n, 2] or [2, n], got {x.shape}")
    if x.shape[1] != 2 or (x.shape[0] == 2 and x.shape[1] != 2):
        x = x.T
    a = detect_speech(np.ascontiguousarray(x[:, 0], np.float32), sr, vad)
    b = detect_speech(np.ascontiguousarray(x[:, 1], np.float32), sr, vad)
    return a, b, frame_samples(sr) / sr


def measure_stereo(audio: np.ndarray, sr: int, vad: str = "energy", **kwargs) -> ConversationMeasures:
    """`measure` on the voice activity of each channel of a stereo signal ([n, 2] or [2, n]),
    channel 0 = speaker A (user), channel 1 = speaker B (agent). `vad`: energy, webrtc or silero."""
    a, b, frame_s = channel_activity(audio, sr, vad)
    return measure(a, b, frame_s=frame_s, **kwargs)


def audit_sample(
    sample: Sample,
    vads: tuple[str, ...] = ("energy", "webrtc"),
    asr_turns: int = 0,
    tolerance_s: float = 0.03,
    shard: str = "",
) -> SampleAudit:
    """Every measure of one sample (see the module docstring); `vads[0]` is the primary detector."""
    if not vads:
        raise ValueError("audit_sample needs at least one VAD method")
    primary = vads[0]
    tl, sr, stems = sample.timeline, sample.sample_rate, sample.stems
    frame_s = frame_samples(sr) / sr
    minutes = len(stems) / sr / 60
    row: dict = {
        "id": sample.id,
        "shard": shard,
        "split": sample.meta.split,
        "duration_s": len(stems) / sr,
        "user_voice": sample.meta.voices[Channel.user],
        "agent_voice": sample.meta.voices[Channel.agent],
        "primary_vad": primary,
        "language": sample.meta.scenario.language,  # its bands: factory.conversation.bands.bands_for
    }
    audit = SampleAudit(sample.id, row, frame_s=frame_s)
    tol = round(tolerance_s / frame_s)
    for method in vads:
        heard = (
            detect_speech(np.ascontiguousarray(stems[:, 0]), sr, method),
            detect_speech(np.ascontiguousarray(stems[:, 1]), sr, method),
        )
        # the turn-taking measures on turn speech: events the agent must not answer are not turns
        user, agent = turn_speech(heard, tl, frame_s, tol)
        m = measure(user, agent, frame_s=frame_s)
        audit.activity[method], audit.turn_activity[method], audit.conversation[method] = heard, (user, agent), m
        for k, v in m.summary().items():
            row[f"{method}_{k}"] = v
        for k in LIST_MEASURES:
            row[f"{method}_{k}"] = [float(x) for x in getattr(m, k)]
        row[f"{method}_speech_s"], row[f"{method}_both_s"] = m.speech_s, m.both_s
        row[f"{method}_n_backchannels"] = len(m.backchannels)
        # the detector's speech left out of them as events (0 without events)
        row[f"{method}_event_s"] = float((heard[0] & ~user).sum() + (heard[1] & ~agent).sum()) * frame_s
    heard_user, heard_agent = audit.activity[primary]
    if len(vads) > 1:  # frame agreement of the two detectors, per channel pooled
        u2, a2 = audit.activity[vads[1]]
        row["vad_agreement"] = float(np.mean(np.concatenate([heard_user == u2, heard_agent == a2])))
    n = len(heard_user)
    # the plan against everything the audio holds, events included (they are planned sound)
    plan_user, plan_agent = plan_activity(tl, n, frame_s)
    planned, heard = np.concatenate([plan_user, plan_agent]), np.concatenate([heard_user, heard_agent])
    found, explained = agreement(planned, heard, tol)
    row["planned_found"], row["audio_explained"] = found, explained
    # the plan's own turn-taking, measured as the audio's is (its words, no events): the two agree
    planned_turns = measure(*plan_activity(tl, n, frame_s, events=False), frame_s=frame_s)
    row["plan_overlap_share"] = planned_turns.overlap_share
    row["plan_speech_s"], row["plan_both_s"] = planned_turns.speech_s, planned_turns.both_s
    row["event_s"] = sum(e.end - e.start for e in tl.ignored_events())  # the timeline's events, seconds
    primary_user, primary_agent = audit.turn_activity[primary]
    # fillers: the timeline's, the ones the audio holds, per 100 content words of floor turns
    amounts = spoken_amounts(tl)
    planned_fillers, heard_fillers = fillers_found(tl, primary_user, primary_agent, frame_s)
    row["words"] = amounts["words"]
    row["fillers_planned"], row["fillers_found"] = planned_fillers, heard_fillers
    row["fillers_per_100_words"] = 100 * heard_fillers / amounts["words"] if amounts["words"] else math.nan
    speech = audit.conversation[primary].speech_s
    row["words_per_second"] = amounts["words"] / speech if speech else math.nan
    # barge-ins in the audio
    audit.barge_ins = check_barge_ins(tl, primary_user, primary_agent, frame_s)
    found_b = [b for b in audit.barge_ins if b.found]
    row["barge_ins_planned"] = behaviour_counts(tl)["barge_ins"]
    row["barge_ins_found"] = len(found_b)
    row["barge_ins_in_pause"] = sum(b.in_pause for b in found_b)
    row["barge_ins_per_minute"] = len(found_b) / minutes if minutes else math.nan
    row["stop_latency"] = [b.latency_audio for b in found_b]
    row["stop_latency_plan"] = [b.latency_plan for b in found_b]
    row["stop_latency_s"] = float(np.median(row["stop_latency"])) if found_b else math.nan
    row["stop_latency_error_s"] = (
        float(np.max(np.abs(np.subtract(row["stop_latency"], row["stop_latency_plan"])))) if found_b else math.nan
    )
    # ASR round trip
    checked = asr_round_trip(sample, asr_turns)
    row["asr_voices"] = [v for v, _, _ in checked]
    row["asr_heard"] = [h for _, h, _ in checked]
    row["asr_wers"] = [w for _, _, w in checked]
    row["asr_wer"] = float(np.mean(row["asr_wers"])) if checked else math.nan
    row["asr_metric"] = "WER" if spaced(sample.meta.scenario.language) else "CER"  # what asr_wer(s) count
    row.update(loudness(stems, sr))
    return audit
