"""Timeline stage: place rendered turns in continuous time and write the IR.

Pure function of (script, rendered utterances, a Generator, timing config). The mixer adds up
exactly the placements returned here, so every time in the timeline is a time in the audio.
Times are quantised to the sample grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from factory.audio.edit import cut_after_word, insert_pause
from factory.audio.vad import frame_rms, frame_samples
from factory.config import EventsSection, TimingSection
from factory.languages import join
from factory.models import (
    Backchannel,
    BackchannelEvent,
    BackgroundSpeech,
    BackgroundSpeechEvent,
    BargeIn,
    BargeInEvent,
    Channel,
    EndOfTurnEvent,
    EndReason,
    Event,
    FailedInterruption,
    FailedInterruptionEvent,
    Filler,
    HesitationEvent,
    HesitationKind,
    IgnoredEvent,
    IgnoredMark,
    Laugh,
    LaughEvent,
    ListenerMark,
    Mode,
    NonSpeech,
    NonSpeechEvent,
    OverlapEvent,
    Restart,
    Script,
    SideTalk,
    SideTalkEvent,
    SilentPause,
    Timeline,
    TimelineTurn,
    TimelineWord,
    TurnKind,
    Utterance,
    WordKind,
)
from factory.timeline.timing import TransitionContext, barge_in_stop, is_question, is_topic_shift, timing_model

# Minimum silence between two turns of one speaker: a shorter one is a pause inside one turn (the
# H&E measurement bridges silences under 180 ms into one IPU, and a trainer would hear one turn).
# 0.4 s, not 0.25: a cut turn's fade-out keeps ~80 ms of energy past its stop, so a speaker cut by
# a barge-in who re-interrupts 256 ms later was one IPU in the audio (seed 11, tiny run).
CHANNEL_GUARD_S = 0.4
MIN_GUARD_S = 0.05  # ... unless an interrupter must start inside its victim's speech
BACKCHANNEL_GUARD_S = 0.3  # a token closer than this to one's own turn is part of that turn, not a backchannel


@dataclass
class Placement:
    """One piece of audio on one channel; `start` in samples. `key` names the render it came
    from (("turn", script turn index) or ("reaction", mark index)), and `silences` (at, length)
    in samples, `cut` and `fade` are the edits that turned that render into `audio`: with the
    render they make one `MixPiece` of the recipe."""

    key: tuple[str, int]
    channel: Channel
    start: int
    audio: np.ndarray
    silences: list[tuple[int, int]] = field(default_factory=list)
    cut: bool = False
    fade: int = 0
    gain_db: float | None = None  # a layer: an event the agent must not answer (MixPiece.gain_db)


@dataclass
class _Ignored:
    """A placed event the agent must not answer (key ("event", mark index)), over its host turn."""

    key: tuple[str, int]
    mark: IgnoredMark
    host: tuple[str, int]
    start: float
    utt: Utterance
    gain_db: float

    @property
    def end(self) -> float:
        return self.start + len(self.utt.audio) / self.utt.sample_rate

    def audible(self, sr: int, speech_rms: float = 0.0) -> tuple[float, float]:
        """The event's span: where its render is audible in the user's channel (the energy VAD's
        -45 dB re the channel's loudest 10 ms frame: its own speech's, `speech_rms`, or the
        layer's at its gain when louder), so the render's quiet lead and tail are not in it. Framed
        on the channel's grid, as the VAD frames it (a render's own grid would be up to a frame off)."""
        hop = frame_samples(sr)
        lead = round(self.start * sr) % hop  # where the channel's frame boundary falls before the render
        audio = np.concatenate([np.zeros(lead, np.float32), self.utt.audio])
        rms = frame_rms(audio, sr) * 10 ** (self.gain_db / 20)
        loudest = max(speech_rms, float(rms.max()) if len(rms) else 0.0)
        active = np.flatnonzero(20 * np.log10(np.maximum(rms, 1e-12) / loudest) > -45.0) if loudest > 0 else []
        if not len(active):
            return self.start, _q(self.end, sr)
        on = max(int(active[0]) * hop - lead, 0) / sr
        off = min((int(active[-1]) + 1) * hop - lead, len(self.utt.audio)) / sr
        return _q(self.start + on, sr), _q(self.start + off, sr)


EVENT_DELAY_S = 0.15  # an event starts this long after the end of the host's word it is planned at


@dataclass
class _Placed:
    key: tuple[str, int]  # ("turn", script index) or ("reaction", mark index)
    channel: Channel
    kind: TurnKind
    start: float
    utt: Utterance
    audio: np.ndarray  # possibly cut
    heard_words: int
    planned_text: str
    end_reason: EndReason
    responds_to_key: tuple[str, int] | None
    hesitations: list[tuple[HesitationKind, float, float]] = field(default_factory=list)  # (kind, rel start, rel end)
    silences: list[tuple[int, int]] = field(default_factory=list)  # inserted pauses (at, length), samples
    cut: bool = False
    fade: int = 0  # fade-out samples at the cut
    word_kinds: dict[int, str] = field(default_factory=dict)  # word index -> "filler"/"restart", heard or not
    opened: dict[int, float] = field(default_factory=dict)  # side-talk mark index -> its pause's rel start

    def gap_spans(self, gaps: dict[int, float]) -> list[tuple[float, float]]:
        """The pauses this turn opened for side talk, absolute (start, end) in seconds."""
        return [(self.start + p0, self.start + p0 + gaps[k]) for k, p0 in self.opened.items()]

    @property
    def end(self) -> float:
        return self.start + len(self.audio) / self.utt.sample_rate


@dataclass
class _Edited:
    """A script turn's render after its planned pauses and its barge-in cut."""

    utt: Utterance
    audio: np.ndarray
    heard: int
    fade: int
    hesitations: list[tuple[HesitationKind, float, float]]
    silences: list[tuple[int, int]]
    word_kinds: dict[int, str]
    opened: dict[int, float]  # side-talk mark index -> where the pause opened for it starts (rel. seconds)


SILENCE_ABS = 1e-4  # |sample| at or under this (-80 dBFS) is silence in a render


def _audible_from(utt: Utterance, next_word: int, inserted_end: float) -> float:
    """Where the audio resumes after an inserted pause: the render's own gap before the next word
    is part of the pause a listener hears when it is silent (e.g. ~190 ms at an espeak comma), and
    not when the voice fills it (Piper's transitions between words)."""
    if next_word >= len(utt.words):
        return inserted_end
    sr = utt.sample_rate
    lo, hi = round(inserted_end * sr), round(utt.words[next_word].start * sr)
    loud = np.flatnonzero(np.abs(utt.audio[lo:hi]) > SILENCE_ABS)
    return (lo + (loud[0] if len(loud) else max(hi - lo, 0))) / sr


def _edit_turn(
    script: Script, i: int, utt: Utterance, cuts: dict[int, int], sr: int, fade_s: float, gaps: dict[int, float]
) -> _Edited:
    """`gaps`: the pauses (seconds) to open in the user's own turn for its side talk, by mark index."""
    hesitations: list[tuple[HesitationKind, float, float]] = []
    silences: list[tuple[int, int]] = []
    opened: dict[int, float] = {}
    for k, m in enumerate(script.marks):  # pauses first: they shift the words after them
        if m.turn != i or not isinstance(m, (SilentPause, SideTalk)) or m.word_index >= cuts.get(i, 10**9) - 1:
            continue
        if isinstance(m, SilentPause):
            utt, p0, p1 = insert_pause(utt, m.word_index, m.duration)
            silences.append((int(round(p0 * sr)), int(round((p1 - p0) * sr))))
            hesitations.append(("pause", p0, _audible_from(utt, m.word_index + 1, p1)))
        elif k in gaps:
            utt, p0, p1 = insert_pause(utt, m.word_index, gaps[k])
            silences.append((int(round(p0 * sr)), int(round((p1 - p0) * sr))))
            opened[k] = p0
    heard = cuts.get(i, len(utt.words))
    audio = cut_after_word(utt.audio, utt.words, heard - 1, sr, fade_s) if i in cuts else utt.audio
    fade = min(int(round(fade_s * sr)), len(audio)) if i in cuts else 0
    word_kinds = {m.word_index: m.type for m in script.marks if m.turn == i and isinstance(m, (Filler, Restart))}
    for m in script.marks:
        if m.turn == i and isinstance(m, (Filler, Restart)) and m.word_index < heard:
            w = utt.words[m.word_index]
            hesitations.append((m.type, w.start, w.end))
    return _Edited(utt, audio, heard, fade, hesitations, silences, word_kinds, opened)


_REACTION_KIND: dict[type, tuple[TurnKind, EndReason]] = {
    Backchannel: (TurnKind.backchannel, EndReason.complete),
    Laugh: (TurnKind.laugh, EndReason.complete),
    FailedInterruption: (TurnKind.turn, EndReason.yielded),  # tried to take the floor, gave up
}


def _lognormal(rng: np.random.Generator, median: float, sigma: float) -> float:
    return float(rng.lognormal(math.log(median), sigma))


def _q(t: float, sr: int) -> float:
    """Quantise a time to the sample grid, so timeline and audio agree to the sample."""
    return round(t * sr) / sr


def build_timeline(
    sample_id: str,
    script: Script,
    rendered: list[Utterance],
    reactions: dict[int, Utterance],
    voices: dict[Channel, str],
    rng: np.random.Generator,
    timing: TimingSection,
    fade_s: float,
    mode: Mode | None = None,
    language: str = "en",
    ignored: dict[int, Utterance] | None = None,
    events: EventsSection | None = None,
) -> tuple[Timeline, list[Placement]]:
    """`rendered[i]` renders `script.turns[i].text` in full; `reactions[k]` renders the token of
    `script.marks[k]` when it is a listener mark (backchannel, laugh, failed interruption), and
    `ignored[k]` the sound of an event the agent must not answer (side talk, background speech,
    non-speech; levels from `events`). All at one sample rate. Gaps and overlaps between turns
    come from the config's `TimingModel` for the dialogue's `language`; `mode` assistant lets the
    agent's answers follow its own latency when configured."""
    sr = rendered[0].sample_rate
    cuts = {m.turn: m.heard_words for m in script.marks if isinstance(m, BargeIn)}
    ignored = ignored or {}
    # Side talk in the user's own turn: the user stops after a word, says it with the channel clear
    # `CHANNEL_GUARD_S` on each side (so it stands alone in the audio), and goes on.
    gaps = {
        k: _q(2 * CHANNEL_GUARD_S + ignored[k].duration, sr)
        for k, m in enumerate(script.marks)
        if isinstance(m, SideTalk) and k in ignored and script.turns[m.turn].speaker is Channel.user
    }
    model = timing_model(timing, language)
    tempo = model.draw_tempo(rng)
    n_cuts = sum(1 for i in cuts if i < len(script.turns) - 1)
    # Barge-ins are overlaps too: the other transitions overlap less, so the share of all stays fitted.
    p_overlap = model.ordinary_overlap_probability(len(script.turns) - 1, n_cuts)
    placed: list[_Placed] = []
    free_at = {Channel.user: 0.0, Channel.agent: 0.0}

    edited = [_edit_turn(script, i, utt, cuts, sr, fade_s, gaps) for i, utt in enumerate(rendered)]
    # Context redistributes gaps inside a dialogue (faster answers to questions, slower after long
    # turns and before new topics); the dialogue's level stays its tempo's: factors are divided by
    # their geometric mean over the dialogue's ordinary transitions, so the pooled gaps stay fitted.
    contexts: dict[int, TransitionContext] = {}
    for i in range(1, len(script.turns)):
        if i - 1 not in cuts:
            contexts[i] = TransitionContext(
                tempo=tempo,
                after_question=is_question(script.turns[i - 1].text),
                topic_shift=is_topic_shift([t.text for t in script.turns[max(0, i - 2) : i]], script.turns[i].text),
                previous_turn_s=len(edited[i - 1].audio) / sr,
                agent_response=mode is Mode.assistant and script.turns[i].speaker is Channel.agent,
                overlap_probability=p_overlap,
            )
    factors = [model.gap_factor(c) for c in contexts.values() if not model.uses_agent_latency(c)]
    norm = float(np.exp(np.mean(np.log(factors)))) if factors else 1.0

    for i, (turn, e) in enumerate(zip(script.turns, edited)):
        utt, audio, heard = e.utt, e.audio, e.heard
        duration = len(audio) / sr
        if not placed:
            start = timing.lead_in.low + rng.random() * (timing.lead_in.high - timing.lead_in.low)
        else:
            prev = placed[-1]
            if prev.end_reason is EndReason.interrupted:
                # The interrupter starts, the victim reacts and stops `reaction` later, at a word end.
                reaction = barge_in_stop(rng, timing, tempo)
                reaction = min(reaction, 0.8 * (prev.end - prev.start), 0.8 * duration)
                start = prev.end - reaction
            else:
                fto = model.sample(rng, replace(contexts[i], factor_norm=norm))
                if fto < 0:  # an overlap no longer than a share of either turn
                    start = prev.end - min(-fto, 0.5 * (prev.end - prev.start), 0.5 * duration)
                else:
                    start = prev.end + fto
        start = max(start, free_at[turn.speaker] + CHANNEL_GUARD_S)
        if placed and placed[-1].end_reason is EndReason.interrupted and start > placed[-1].end - MIN_GUARD_S:
            # an interrupter must start inside the victim's speech: then the short guard only
            start = max(placed[-1].end - MIN_GUARD_S, free_at[turn.speaker] + MIN_GUARD_S)
        start = _q(start, sr)
        p = _Placed(
            key=("turn", i),
            channel=turn.speaker,
            kind=TurnKind.turn,
            start=start,
            utt=utt,
            audio=audio,
            heard_words=heard,
            planned_text=turn.text,
            end_reason=EndReason.interrupted if i in cuts else EndReason.complete,
            responds_to_key=("turn", turn.responds_to) if turn.responds_to is not None else None,
            hesitations=e.hesitations,
            silences=e.silences,
            cut=i in cuts,
            fade=e.fade,
            word_kinds=e.word_kinds,
            opened=e.opened,
        )
        placed.append(p)
        free_at[turn.speaker] = p.end

    # Listener reactions go after a word of the host's turn where the listener's channel is free:
    # the planned word first, then the nearest others, so a collision moves a reaction, not drops it.
    hosts = {p.key[1]: p for p in placed}
    for k, mark in enumerate(script.marks):
        if not isinstance(mark, ListenerMark):
            continue
        host, utt = hosts[mark.turn], reactions[k]
        kind, reason = _REACTION_KIND[type(mark)]
        listener = host.channel.other
        busy = [(q.start, q.end) for q in placed if q.channel is listener] + host.gap_spans(gaps)
        delay = float(np.clip(_lognormal(rng, timing.backchannel_delay_median, 0.4), 0.05, 0.8))
        planned = mark.word_index  # bound here: the lambda does not see the isinstance narrowing
        candidates = sorted(range(1, host.heard_words - 1), key=lambda j: (abs(j - planned), j))
        for j in candidates:
            start = _q(host.start + host.utt.words[j].end + delay, sr)
            end = start + utt.duration
            if end <= host.end and not any(
                start < e + BACKCHANNEL_GUARD_S and s < end + BACKCHANNEL_GUARD_S for s, e in busy
            ):
                placed.append(
                    _Placed(
                        key=("reaction", k),
                        channel=listener,
                        kind=kind,
                        start=start,
                        utt=utt,
                        audio=utt.audio,
                        heard_words=len(utt.words),
                        planned_text=utt.text,
                        end_reason=reason,
                        responds_to_key=host.key,
                    )
                )
                break

    layers = _place_ignored(script, placed, ignored, events or EventsSection(), sr, gaps)
    return _to_timeline(sample_id, placed, voices, rng, timing, sr, layers, language)


def _place_ignored(
    script: Script,
    placed: list[_Placed],
    ignored: dict[int, Utterance],
    cfg: EventsSection,
    sr: int,
    gaps: dict[int, float],
) -> list[_Ignored]:
    """Events the agent must not answer. Side talk in the user's own turn goes in the pause its
    turn opened for it (`gaps`), `CHANNEL_GUARD_S` after the user's last word. The others go after
    a word of an agent's turn and inside it (the agent keeps talking), where the user's channel is
    free (`CHANNEL_GUARD_S` from any of its sound, so each event stands alone in the user's audio):
    the planned turn and word first, then the nearest words, then the agent's other turns (the
    planner's room is an estimate in words; the renders decide); an event that fits nowhere is
    dropped. Background speech and non-speech sounds the planner put in a user's turn go under the
    user's own speech instead: after a word of that turn (then the nearest words, then the user's
    other turns, then the agent's), over before its last word ends, `CHANNEL_GUARD_S` from any other event so
    each one's edges stay its own. No random draws."""
    hosts = {p.key[1]: p for p in placed if p.key[0] == "turn"}
    out: list[_Ignored] = []
    layers: list[tuple[float, float]] = []  # the events placed so far, and the pauses opened for side talk
    for p in hosts.values():
        layers += p.gap_spans(gaps)
        for k, p0 in p.opened.items():
            mark = script.marks[k]
            assert isinstance(mark, SideTalk)
            start = _q(p.start + p0 + CHANNEL_GUARD_S, sr)
            out.append(_Ignored(("event", k), mark, p.key, start, ignored[k], cfg.side_talk_gain_db))
    agent_turns = [i for i, p in hosts.items() if p.channel is Channel.agent]
    user_turns = [i for i, p in hosts.items() if p.channel is Channel.user]
    busy = [(q.start, q.end) for q in placed if q.channel is Channel.user]
    levels = {
        SideTalk: cfg.side_talk_gain_db,
        BackgroundSpeech: cfg.background_speech_gain_db,
        NonSpeech: cfg.non_speech_gain_db,
    }

    def clear(start: float, end: float, spans: list[tuple[float, float]]) -> bool:
        return not any(start < e + CHANNEL_GUARD_S and s < end + CHANNEL_GUARD_S for s, e in spans)

    for k, mark in enumerate(script.marks):
        if not isinstance(mark, (SideTalk, BackgroundSpeech, NonSpeech)) or k not in ignored or k in gaps:
            continue
        utt, planned = ignored[k], mark.word_index
        under = script.turns[mark.turn].speaker is Channel.user  # under the user's speech (not side talk)
        # (host turn, under the user's speech) in the order tried: the planned kind of turn first
        order = [(i, True) for i in _nearest_turns(user_turns, mark.turn)] if under else []
        order += [(i, False) for i in _nearest_turns(agent_turns, mark.turn)]
        slots = (
            (hosts[i], j, mine)
            for i, mine in order
            for j in sorted(range(1, hosts[i].heard_words - 1), key=lambda j: (abs(j - planned), j))
        )
        for host, j, mine in slots:
            start = _q(host.start + host.utt.words[j].end + EVENT_DELAY_S, sr)
            end = start + utt.duration
            # under the user's speech: over before the user's last word ends
            last = host.start + host.utt.words[host.heard_words - 1].end if mine else host.end
            if end <= last and clear(start, end, layers) and (mine or clear(start, end, busy)):
                out.append(_Ignored(("event", k), mark, host.key, start, utt, levels[type(mark)]))
                busy.append((start, end))
                layers.append((start, end))
                break
    return out


def _nearest_turns(turns: list[int], planned: int) -> list[int]:
    """The planned turn first, then the nearest (the later on a tie)."""
    return sorted(turns, key=lambda i: (abs(i - planned), -i))


def _word_kinds(p: _Placed) -> list[WordKind]:
    """Kind of each word of a placed piece: a listener reaction is all backchannel or laugh
    tokens; in a turn, fillers and restart fragments are the words the Filler and Restart marks
    point at (spoken or, after a barge-in cut, not)."""
    if p.kind in (TurnKind.backchannel, TurnKind.laugh):
        return [WordKind(p.kind.value)] * len(p.utt.words)
    return [WordKind(p.word_kinds.get(j, "word")) for j in range(len(p.utt.words))]


def _to_timeline(
    sample_id: str,
    placed: list[_Placed],
    voices: dict[Channel, str],
    rng: np.random.Generator,
    timing: TimingSection,
    sr: int,
    layers: list[_Ignored],
    language: str = "en",
) -> tuple[Timeline, list[Placement]]:
    placed.sort(key=lambda p: (p.start, p.channel.index))
    ids = {p.key: n for n, p in enumerate(placed)}
    turns, words, events = [], [], []
    for n, p in enumerate(placed):
        spoken_words = p.utt.words[: p.heard_words]
        turn = TimelineTurn(
            id=n,
            channel=p.channel,
            start=p.start,
            end=_q(p.end, sr),
            kind=p.kind,
            planned_text=p.planned_text,
            spoken_text=join([w.word for w in spoken_words], language),  # Japanese runs its words together
            end_reason=p.end_reason,
            responds_to=ids.get(p.responds_to_key) if p.responds_to_key else None,
            voice_id=p.utt.voice_id,
            qa_wer=p.utt.qa_wer,
        )
        turns.append(turn)
        for j, (w, kind) in enumerate(zip(p.utt.words, _word_kinds(p))):
            words.append(
                TimelineWord(
                    channel=p.channel,
                    turn=n,
                    word=w.word,
                    kind=kind,
                    start=_q(p.start + w.start, sr),
                    end=_q(p.start + w.end, sr),
                    spoken=j < p.heard_words,
                )
            )
        for kind, s, e in p.hesitations:
            events.append(
                HesitationEvent(
                    channel=p.channel, turn=n, kind=kind, start=_q(p.start + s, sr), end=_q(p.start + e, sr)
                )
            )
        if p.kind is TurnKind.turn and p.end_reason is EndReason.complete:
            events.append(EndOfTurnEvent(channel=p.channel, turn=n, start=turn.end, end=turn.end))
        reaction = {TurnKind.backchannel: BackchannelEvent, TurnKind.laugh: LaughEvent}.get(p.kind)
        if p.end_reason is EndReason.yielded:
            reaction = FailedInterruptionEvent
        if reaction is not None:
            assert p.responds_to_key is not None  # a reaction is placed with its host's key
            events.append(
                reaction(channel=p.channel, turn=n, during_turn=ids[p.responds_to_key], start=turn.start, end=turn.end)
            )
    for p in placed:
        if p.key[0] == "turn" and p.end_reason is EndReason.interrupted:
            victim, interrupter = turns[ids[p.key]], turns[ids[("turn", p.key[1] + 1)]]
            events.append(
                BargeInEvent(
                    by=interrupter.channel,
                    turn=interrupter.id,
                    victim_turn=victim.id,
                    start=interrupter.start,
                    end=victim.end,
                    onset=interrupter.start,
                    victim_stop=victim.end,
                )
            )
    events.extend(overlap_events(turns))
    # The user's channel's loudest 10 ms frame, as mixed (its speech, then the layers at their gains: one
    # under the user's speech may be louder than either): the level the events' spans are measured
    # against, as in the audio. Without events there is nothing to measure.
    speech_rms = _loudest_user_frame(placed, layers, sr) if layers else 0.0
    events.extend(_ignored_event(x, ids[x.host], sr, speech_rms) for x in layers)
    events.sort(key=lambda e: (e.start, e.end, e.type))

    tail = timing.tail.low + rng.random() * (timing.tail.high - timing.tail.low)
    duration = _q(max(t.end for t in turns) + tail, sr)
    timeline = Timeline(
        id=sample_id,
        sample_rate=sr,
        duration=duration,
        voices=voices,
        turns=turns,
        words=words,
        events=events,
    )
    placements = [
        Placement(
            key=p.key,
            channel=p.channel,
            start=round(p.start * sr),
            audio=p.audio,
            silences=p.silences,
            cut=p.cut,
            fade=p.fade,
        )
        for p in placed
    ]
    placements += [
        Placement(key=x.key, channel=Channel.user, start=round(x.start * sr), audio=x.utt.audio, gain_db=x.gain_db)
        for x in layers
    ]
    return timeline, placements


def _loudest_user_frame(placed: list[_Placed], layers: list[_Ignored], sr: int) -> float:
    """The RMS of the loudest frame of the VAD's grid of the user's channel as the mixer sums it."""
    pieces = [(round(p.start * sr), p.audio, None) for p in placed if p.channel is Channel.user]
    pieces += [(round(x.start * sr), x.utt.audio, x.gain_db) for x in layers]
    user = np.zeros(max(start + len(audio) for start, audio, _ in pieces), np.float32)
    for start, audio, gain_db in pieces:  # speech first, then the layers (factory.audio.mix.place)
        scale = np.float32(1.0 if gain_db is None else 10 ** (gain_db / 20))
        user[start : start + len(audio)] += audio * scale
    return float(frame_rms(user, sr).max())


def _ignored_event(x: _Ignored, during: int, sr: int, speech_rms: float) -> IgnoredEvent:
    start, end = x.audible(sr, speech_rms)
    span = {"start": start, "end": end, "during_turn": during, "level_db": x.gain_db}
    if isinstance(x.mark, SideTalk):
        return SideTalkEvent(text=x.mark.text, **span)
    if isinstance(x.mark, BackgroundSpeech):
        return BackgroundSpeechEvent(text=x.mark.text, voice_id=x.utt.voice_id, **span)
    return NonSpeechEvent(sound=x.mark.sound, **span)


def overlap_events(turns: list[TimelineTurn]) -> list[Event]:
    """Stretches where both channels hold a turn, classified by what caused them."""
    out: list[Event] = []
    for a in turns:
        for b in turns:
            if a.channel is Channel.user and b.channel is Channel.agent:
                start, end = max(a.start, b.start), min(a.end, b.end)
                if end > start:
                    if TurnKind.backchannel in (a.kind, b.kind):
                        kind = "backchannel"
                    elif TurnKind.laugh in (a.kind, b.kind):
                        kind = "laugh"
                    elif EndReason.yielded in (a.end_reason, b.end_reason):
                        kind = "failed_interruption"
                    elif (
                        EndReason.interrupted in (a.end_reason, b.end_reason)
                        and a.end_reason != b.end_reason
                        and (
                            (a.end_reason is EndReason.interrupted and b.start > a.start)
                            or (b.end_reason is EndReason.interrupted and a.start > b.start)
                        )
                    ):
                        kind = "barge_in"
                    else:
                        kind = "turn_end"
                    out.append(OverlapEvent(start=start, end=end, kind=kind))
    return out
