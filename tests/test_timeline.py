"""Timeline planner invariants on many random scripts, with word-shaped audio bursts standing in
for TTS so hundreds of dialogues run in seconds. (The end-to-end tests check real TTS audio.)"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factory.audio.edit import frame_activity, speech_intervals
from factory.audio.mix import apply_gains, loudness_gains
from factory.config import RunConfig
from factory.models import (
    TIMELINE_SCHEMA_VERSION,
    BackchannelEvent,
    BargeIn,
    BargeInEvent,
    Channel,
    EndOfTurnEvent,
    EndReason,
    FailedInterruptionEvent,
    Filler,
    HesitationEvent,
    LaughEvent,
    ListenerMark,
    Mode,
    Restart,
    Script,
    ScriptTurn,
    Timeline,
    TurnKind,
    Utterance,
    WordKind,
    WordTiming,
)
from factory.script.lexicon import behaviour_for
from factory.script.planner import barge_in_cut, insert_hesitations, plan_listener_marks
from factory.seeding import rng_for
from factory.timeline.place import build_timeline

SR = 16000
CFG = RunConfig().model_copy(update={"behaviour": behaviour_for(RunConfig().behaviour, "en")})


# Silences real voices leave after punctuation, seconds: espeak, Piper and Kokoro renders in the TTS
# cache (medians after a comma 0.16 / 0.33 / 0.34 s, after a sentence 0.33 / 0.21 / 0.56 s). Longer
# than the 180 ms bridge, so in the audio they are pauses where the other speaker's tokens and turn
# starts make short floor transfers of their own.
PUNCTUATION_PAUSE_S = {",": (0.14, 0.42), ".": (0.25, 0.60)}


def burst_utterance(text: str, rng: np.random.Generator, voice: str, punctuation_pauses: bool = False) -> Utterance:
    """Noise bursts of 150-400 ms per word with 30-120 ms gaps: speech-like activity; with
    `punctuation_pauses`, the silences real voices leave after commas and sentence ends too."""
    pieces, words, t = [], [], 0.0
    tokens = text.split()
    for i, w in enumerate(tokens):
        if i:
            mark = tokens[i - 1][-1]
            low, high = PUNCTUATION_PAUSE_S.get("," if mark in ",;:" else "." if mark in ".?!" else "", (0.03, 0.12))
            gap = int(rng.uniform(low, high) * SR) if punctuation_pauses else int(rng.uniform(0.03, 0.12) * SR)
            pieces.append(np.zeros(gap, np.float32))
            t += gap / SR
        n = int(rng.uniform(0.15, 0.4) * SR)
        pieces.append((rng.standard_normal(n) * 0.2).astype(np.float32))
        words.append(WordTiming(word=w, start=t, end=t + n / SR))
        t += n / SR
    return Utterance(text=text, voice_id=voice, sample_rate=SR, audio=np.concatenate(pieces), words=words)


def random_script(rng: np.random.Generator, mode: Mode, n_turns: int) -> Script:
    vocab = [
        "so",
        "I",
        "think",
        "we",
        "could",
        "try",
        "the",
        "other",
        "one,",
        "maybe",
        "later",
        "today",
        "if",
        "that",
        "works",
        "for",
        "you",
    ]
    turns, marks = [], []
    for i in range(n_turns):
        speaker = Channel.user if i % 2 == 0 else Channel.agent
        n = int(rng.integers(3, 25))
        text = " ".join(rng.choice(vocab, n))
        text, hes = insert_hesitations(text, i, rng, CFG.behaviour, CFG.timing.pause_median, force_filler=i == 0)
        marks += hes
        turns.append(ScriptTurn(speaker=speaker, text=text, responds_to=i - 1 if i else None))
        if 0 < i < n_turns - 1 and len(text.split()) >= 6 and rng.random() < 0.4:
            marks.append(BargeIn(turn=i, heard_words=barge_in_cut(len(text.split()), rng)))
    marks += plan_listener_marks(turns, marks, rng, CFG.behaviour, mode)
    return Script(scenario_id="t", turns=turns, marks=marks)


VOICES = {Channel.user: "u", Channel.agent: "a"}


def burst_renders(
    script, rng: np.random.Generator, punctuation_pauses: bool = False
) -> tuple[list[Utterance], dict[int, Utterance]]:
    """Noise-burst stand-ins for a script's turn renders and listener reactions (in that order of
    draws), as `build_timeline` takes them."""
    rendered = [burst_utterance(t.text, rng, VOICES[t.speaker], punctuation_pauses) for t in script.turns]
    reactions = {
        k: burst_utterance(m.token, rng, VOICES[script.turns[m.turn].speaker.other], punctuation_pauses)
        for k, m in enumerate(script.marks)
        if isinstance(m, ListenerMark)
    }
    return rendered, reactions


def build(seed: int, mode: Mode = Mode.peer, n_turns: int = 6):
    rng = np.random.default_rng(seed)
    script = random_script(rng, mode, n_turns)
    rendered, bcs = burst_renders(script, rng)
    timeline, placements = build_timeline(
        "t", script, rendered, bcs, VOICES, rng_for(seed, "t", "timeline"), CFG.timing, 0.008
    )
    return script, timeline, placements


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), mode=st.sampled_from(list(Mode)), n_turns=st.integers(2, 10))
def test_timeline_invariants(seed: int, mode: Mode, n_turns: int) -> None:
    script, tl, placements = build(seed, mode, n_turns)
    assert len(tl.turns) == len(placements)
    for ch in Channel:  # one channel never holds two pieces of speech at once
        spans = sorted((t.start, t.end) for t in tl.turns if t.channel is ch)
        assert all(e0 <= s1 for (_, e0), (s1, _) in pairwise(spans))
    for t in tl.turns:
        assert 0 <= t.start < t.end <= tl.duration
        words = [w for w in tl.words if w.turn == t.id]
        spoken = [w for w in words if w.spoken]
        assert " ".join(w.word for w in spoken) == t.spoken_text
        assert all(t.start - 1e-6 <= w.start <= w.end <= t.end + 1e-6 for w in spoken)
        assert all(a.end <= b.start + 1e-6 for a, b in pairwise(spoken))
        if t.end_reason is EndReason.interrupted:
            assert len(spoken) < len(words)
    for e in tl.events:
        if isinstance(e, BargeInEvent):
            victim, interrupter = tl.turn(e.victim_turn), tl.turn(e.turn)
            assert victim.end_reason is EndReason.interrupted and victim.channel is not interrupter.channel
            assert victim.start < e.onset < e.victim_stop == victim.end
        if isinstance(e, HesitationEvent):
            assert tl.turn(e.turn).start - 1e-6 <= e.start < e.end <= tl.turn(e.turn).end + 1e-6
    n_cuts = sum(isinstance(m, BargeIn) for m in script.marks)
    assert sum(isinstance(e, BargeInEvent) for e in tl.events) == n_cuts
    _check_schema_2(script, tl)


def _on_grid(t: float, sr: int) -> bool:
    return abs(t * sr - round(t * sr)) < 1e-6


REACTION_EVENT = {TurnKind.backchannel: BackchannelEvent, TurnKind.laugh: LaughEvent}


def _check_schema_2(script: Script, tl: Timeline) -> None:
    """What 2.0 adds: spans on every event, reaction events, word kinds, word times on the grid."""
    assert tl.schema_version == TIMELINE_SCHEMA_VERSION == "2.0"
    assert [(e.start, e.end, e.type) for e in tl.events] == sorted((e.start, e.end, e.type) for e in tl.events)
    for e in tl.events:
        assert 0 <= e.start <= e.end <= tl.duration
        assert _on_grid(e.start, tl.sample_rate) and _on_grid(e.end, tl.sample_rate), e
        if isinstance(e, BargeInEvent):
            assert (e.start, e.end) == (e.onset, e.victim_stop)
        if isinstance(e, EndOfTurnEvent):
            assert e.start == e.end == tl.turn(e.turn).end and tl.turn(e.turn).end_reason is EndReason.complete
    for w in tl.words:
        assert _on_grid(w.start, tl.sample_rate) and _on_grid(w.end, tl.sample_rate), w
    reactions = [e for e in tl.events if isinstance(e, (BackchannelEvent, LaughEvent, FailedInterruptionEvent))]
    for t in tl.turns:  # each listener reaction has one event of its own, spanning its turn
        expected = FailedInterruptionEvent if t.end_reason is EndReason.yielded else REACTION_EVENT.get(t.kind)
        mine = [e for e in reactions if e.turn == t.id]
        if expected is None:
            assert not mine
            continue
        assert len(mine) == 1 and type(mine[0]) is expected, (t, mine)
        event = mine[0]
        assert (event.start, event.end, event.during_turn, event.channel) == (t.start, t.end, t.responds_to, t.channel)
        kinds = {w.kind for w in tl.words if w.turn == t.id}
        assert kinds == ({WordKind.word} if expected is FailedInterruptionEvent else {WordKind(t.kind.value)})
    script_turns = [t for t in tl.turns if t.kind is TurnKind.turn and t.end_reason is not EndReason.yielded]
    assert len(script_turns) == len(script.turns)
    for i, t in enumerate(script_turns):  # fillers and restart fragments are the words the marks point at
        spoken = [w for w in tl.words if w.turn == t.id and w.spoken]
        expected = [WordKind.word] * len(spoken)
        for m in script.marks:
            if m.turn == i and isinstance(m, (Filler, Restart)) and m.word_index < len(spoken):
                expected[m.word_index] = WordKind.filler if isinstance(m, Filler) else WordKind.restart
                assert not isinstance(m, Filler) or spoken[m.word_index].word == m.token
                assert not isinstance(m, Restart) or spoken[m.word_index].word.endswith("-")
        assert [w.kind for w in spoken] == expected, (t, spoken)


@pytest.mark.parametrize("seed", range(20))
def test_turn_edges_agree_with_audio(seed: int) -> None:
    _, tl, placements = build(seed, Mode.assistant, 7)
    stems = np.zeros((round(tl.duration * SR), 2), np.float32)
    for p in placements:  # where the planner says each piece lies; the check is against the plan's times
        stems[p.start : p.start + len(p.audio), p.channel.index] = p.audio
    stereo = apply_gains(stems, loudness_gains(stems, SR, -23, -1))
    for ch in Channel:
        runs = speech_intervals(frame_activity(stereo[:, ch.index], SR), bridge_s=0.2)
        turns = sorted((t for t in tl.turns if t.channel is ch), key=lambda t: t.start)
        # every turn edge is an activity edge (within a frame), every activity run lies inside a turn
        for t in turns:
            assert any(abs(s - t.start) <= 0.03 for s, _ in runs), (t, runs)
            assert any(abs(e - t.end) <= 0.03 for _, e in runs), (t, runs)
        for s, e in runs:
            assert any(t.start - 0.03 <= s and e <= t.end + 0.03 for t in turns)


def test_listener_reactions_sit_inside_the_other_speakers_turn() -> None:
    found = {"backchannel": 0, "laugh": 0, "yielded": 0}
    for seed in range(60):
        script, tl, _ = build(seed, Mode.peer, 8)
        _check_schema_2(script, tl)
        for t in tl.turns:
            if t.kind in (TurnKind.backchannel, TurnKind.laugh) or t.end_reason is EndReason.yielded:
                host = tl.turn(t.responds_to)
                assert host.channel is not t.channel and host.start < t.start and t.end <= host.end
                assert host.end_reason is not EndReason.interrupted or t.end <= host.end
                found[t.kind.value if t.end_reason is not EndReason.yielded else "yielded"] += 1
        overlaps = {e.kind for e in tl.events if e.type == "overlap"}
        if any(t.end_reason is EndReason.yielded for t in tl.turns):
            assert "failed_interruption" in overlaps
    assert found["backchannel"] > 20 and found["laugh"] > 3 and found["yielded"] > 3, found
