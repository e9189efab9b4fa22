"""The frame view against the timeline it is derived from (recomputed frame by frame from frame
centres), against the audio the placements make, and its resampling to coarser grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from factory.audio.edit import frame_activity
from factory.audio.mix import apply_gains, loudness_gains
from factory.models import BargeInEvent, Channel, Mode, Timeline
from factory.timeline.frames import FRAME_RATE, AgentState, FrameView, frame_view, resample
from tests.conftest import decode, read_rows
from tests.test_timeline import SR
from tests.test_timeline import build as build_dialogue

CASES = [(seed, mode) for seed in range(12) for mode in Mode]


def _centres(n: int) -> np.ndarray:
    return (np.arange(n) + 0.5) / FRAME_RATE


def _expected(tl: Timeline, n: int) -> dict[str, np.ndarray]:
    """The view recomputed the slow way: what covers each frame's centre."""
    c = _centres(n)
    word, turn = np.full((2, n), -1), np.full((2, n), -1)
    for i, w in enumerate(tl.words):
        if w.spoken:
            word[w.channel.index, (c >= w.start) & (c < w.end)] = i
    for t in tl.turns:
        turn[t.channel.index, (c >= t.start) & (c < t.end)] = t.id
    state = np.where(turn[1] >= 0, AgentState.speak, AgentState.listen)
    for e in tl.events:
        if isinstance(e, BargeInEvent) and e.by is Channel.user:
            state[(c >= e.onset) & (c < e.victim_stop)] = AgentState.must_stop
    return {"word": word, "turn": turn, "agent_state": state}


@pytest.mark.parametrize(("seed", "mode"), CASES)
def test_frame_view_agrees_with_the_timeline(seed: int, mode: Mode) -> None:
    _, tl, _ = build_dialogue(seed, mode, 8)
    view = frame_view(tl)
    n = math.ceil(tl.duration * FRAME_RATE - 1e-6)
    assert view.rate == FRAME_RATE and view.n_frames == n
    assert view.activity.shape == view.word.shape == view.turn.shape == view.barge_in_onset.shape == (2, n)
    expected = _expected(tl, n)
    np.testing.assert_array_equal(view.word, expected["word"])
    np.testing.assert_array_equal(view.turn, expected["turn"])
    np.testing.assert_array_equal(view.agent_state, expected["agent_state"])
    np.testing.assert_array_equal(view.activity, view.word >= 0)
    np.testing.assert_array_equal(view.overlap, (view.turn >= 0).all(0))  # overlap events = both hold a turn
    for ch in Channel:  # one onset per barge-in, in the interrupter's first frame
        firsts = sorted(
            int(np.flatnonzero(view.turn[ch.index] == e.turn)[0])
            for e in tl.events
            if isinstance(e, BargeInEvent) and e.by is ch
        )
        assert list(np.flatnonzero(view.barge_in_onset[ch.index])) == firsts
    for w in tl.words:  # every spoken word owns at least one frame
        assert not w.spoken or (view.word[w.channel.index] == tl.words.index(w)).any()


@pytest.mark.parametrize("seed", range(10))
def test_activity_agrees_with_the_mixed_audio(seed: int) -> None:
    _, tl, placements = build_dialogue(seed, Mode.assistant, 7)
    stems = np.zeros((round(tl.duration * SR), 2), np.float32)
    for p in placements:
        stems[p.start : p.start + len(p.audio), p.channel.index] = p.audio
    stereo = apply_gains(stems, loudness_gains(stems, SR, -23, -1))
    view = frame_view(tl)
    for ch in Channel:
        heard = frame_activity(stereo[:, ch.index], SR)
        assert heard.shape == view.activity[ch.index].shape
        edges = np.array([t * FRAME_RATE for w in tl.words if w.spoken and w.channel is ch for t in (w.start, w.end)])
        for i in np.flatnonzero(heard != view.activity[ch.index]):
            # a frame the word edge cuts: audio counts any energy in it, the view the frame centre
            assert np.min(np.abs(edges - (i + 0.5))) <= 0.5 + 1e-6, (ch, i / FRAME_RATE)


def _toy(word: list[int], state: list[int], onset: list[bool]) -> FrameView:
    w = np.array([word, [-1] * len(word)], np.int32)
    return FrameView(
        rate=100.0,
        activity=w >= 0,
        word=w,
        turn=w.copy(),
        overlap=np.zeros(len(word), bool),
        barge_in_onset=np.array([onset, [False] * len(word)]),
        agent_state=np.array(state, np.int8),
        ignore=np.zeros(len(word), bool),
    )


def test_resample_rules_on_a_hand_made_view() -> None:
    view = _toy(
        word=[-1, -1, 3, 3, 3, 3, 3, 4, 4, 4, -1, -1, 5, -1, -1, -1, 6],
        state=[0, 0, 0, 2, 1, 1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 1],
        onset=[False, False, False, True] + [False] * 13,
    )
    at25 = resample(view, 25.0)
    assert at25.rate == 25.0 and at25.n_frames == 5  # 17 frames -> 4 full blocks and a partial one
    assert at25.word[0].tolist() == [3, 3, 4, -1, -1]  # half a block holds it; ties -> the earlier word
    assert at25.activity[0].tolist() == [True, True, True, False, False]
    assert at25.agent_state.tolist() == [
        AgentState.must_stop,
        AgentState.speak,
        AgentState.speak,
        AgentState.listen,
        AgentState.listen,
    ]  # one must-stop frame is enough
    assert at25.barge_in_onset[0].tolist() == [True, False, False, False, False]
    assert not at25.activity[1].any()


@pytest.mark.parametrize("rate", [50.0, 25.0, 12.5, 6.25, 1.25])
def test_resampled_view_keeps_what_the_fine_view_says(rate: float) -> None:
    _, tl, _ = build_dialogue(3, Mode.peer, 8)
    fine, factor = frame_view(tl), int(FRAME_RATE / rate)
    coarse = frame_view(tl, rate)
    assert coarse.n_frames == math.ceil(fine.n_frames / factor)
    np.testing.assert_array_equal(coarse.activity, coarse.word >= 0)
    for ch in range(2):
        for j in range(coarse.n_frames):
            block = slice(j * factor, (j + 1) * factor)
            share = fine.activity[ch, block].sum() / factor
            assert coarse.activity[ch, j] == (share >= 0.5)
            if coarse.word[ch, j] >= 0:
                assert coarse.word[ch, j] in fine.word[ch, block]
    for ch, i in zip(*np.nonzero(fine.barge_in_onset)):
        assert coarse.barge_in_onset[ch, i // factor]
    for i in np.flatnonzero(fine.agent_state == AgentState.must_stop):
        assert coarse.agent_state[i // factor] == AgentState.must_stop


@pytest.mark.parametrize("rate", [30.0, 200.0, 0.0, 33.3])
def test_resample_refuses_rates_10ms_does_not_divide(rate: float) -> None:
    _, tl, _ = build_dialogue(1, Mode.peer, 4)
    with pytest.raises(ValueError, match="whole number"):
        resample(frame_view(tl), rate)


def _within(active: np.ndarray, frames: int) -> np.ndarray:
    """Frames at most `frames` away from an active one."""
    return np.convolve(active, np.ones(2 * frames + 1), "same") > 0


def test_real_run_frames_agree_with_its_audio(tiny_run: Path) -> None:
    """Real TTS: word times come from the voices' alignments, which leave the audible transitions
    between words outside the word spans (up to ~60 ms with Piper, and ~90 ms seen on a word before
    a comma: Piper's "up," in seed 11's third dialogue); nothing else may differ (100 ms margin)."""
    for row in read_rows(tiny_run):
        tl = Timeline.model_validate_json(row["timeline"])
        stereo, sr = decode(row["audio"])
        view = frame_view(tl)
        for ch in Channel:
            heard, words = frame_activity(stereo[:, ch.index], sr), view.activity[ch.index]
            assert heard.shape == words.shape
            assert not (heard & ~_within(view.turn[ch.index] >= 0, 3)).any(), (row["id"], ch)  # 30 ms, as e2e
            assert not (heard & ~_within(words, 10)).any(), (row["id"], ch)  # speech only at the words
            # and every word is heard, bar a stop closure inside it (Piper's "perfect": 100 ms
            # of silence between its /k/ and /t/)
            assert not (words & ~_within(heard, 6)).any(), (row["id"], ch)
            assert (heard == words)[view.turn[ch.index] >= 0].mean() >= 0.75, (row["id"], ch)
