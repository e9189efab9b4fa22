"""Heldner & Edlund measures on constructed activity: each comes out as built, within one frame."""

from __future__ import annotations

import math

import numpy as np
import pytest

from factory.audit.measures import measure_stereo
from factory.conversation.measures import State, bridge, classify_segments, frame_states, measure

F = 0.01  # one frame
N = 1200  # 12 s


def _flat(pairs) -> list[float]:
    return [float(x) for p in pairs for x in p]


def _activity(intervals: list[tuple[int, int]], n: int = N) -> np.ndarray:
    x = np.zeros(n, bool)
    for s, e in intervals:
        x[s:e] = True
    return x


# Frames (10 ms). A: an IPU with a 100 ms hole (bridged), a turn that overlaps B's end, a 0.5 s
# pause, a last IPU during which B backchannels. B: a turn after a 0.3 s gap, the backchannel,
# a turn after a 0.2 s gap with a 0.2 s pause inside (not bridged: >= 180 ms).
A = [(100, 200), (210, 300), (460, 700), (750, 900)]
B = [(330, 500), (800, 840), (920, 1000), (1020, 1100)]


@pytest.fixture(scope="module")
def built():
    return measure(_activity(A), _activity(B))


def test_ipus_bridge_short_silences_only(built):
    assert _flat(built.ipus[0]) == pytest.approx(_flat([(1.0, 3.0), (4.6, 7.0), (7.5, 9.0)]), abs=F)
    assert _flat(built.ipus[1]) == pytest.approx(_flat([(3.3, 5.0), (8.0, 8.4), (9.2, 10.0), (10.2, 11.0)]), abs=F)
    assert sorted(built.ipu_durations) == pytest.approx(sorted([2.0, 2.4, 1.5, 1.7, 0.4, 0.8, 0.8]), abs=F)


def test_gaps_pauses_and_overlaps(built):
    assert built.gaps == pytest.approx([0.30, 0.20], abs=F)
    assert built.between_overlaps == pytest.approx([0.40], abs=F)
    assert built.pauses == pytest.approx([0.50, 0.20], abs=F)
    assert built.within_overlaps == pytest.approx([0.40], abs=F)
    kinds = [(s.kind, s.before, s.after) for s in built.segments]
    assert kinds == [
        ("gap", 0, 1),
        ("between_overlap", 1, 0),
        ("pause", 0, 0),
        ("within_overlap", 0, 0),
        ("gap", 0, 1),
        ("pause", 1, 1),
    ]


def test_floor_transfer_offsets(built):
    assert built.fto == pytest.approx([0.30, -0.40, 0.20], abs=F)
    assert built.transitions_in_overlap == pytest.approx(1 / 3)
    assert built.fto_within_500ms == 1.0
    q = built.fto_quantiles((0.5,))
    assert q[0.5] == pytest.approx(0.20, abs=F)


def test_overlap_share_and_backchannels(built):
    # both: 40 (between-overlap) + 40 (backchannel); anyone: 1000 frames less 120 of joint silence
    assert built.overlap_share == pytest.approx(80 / 880, abs=1 / 880)
    assert _flat(built.backchannels) == pytest.approx([1, 8.0, 8.4], abs=F)
    assert built.backchannels_per_minute == pytest.approx(1 / (12 / 60))
    s = built.summary()
    assert s["n_transitions"] == 3 and s["n_gaps"] == 2 and s["n_pauses"] == 2
    assert s["fto_p50_s"] == pytest.approx(0.20, abs=F)
    assert s["ipu_median_s"] == pytest.approx(1.5, abs=F)


def test_frame_states_and_unclassed_edges():
    a, b = _activity([(0, 10)], 30), _activity([(5, 20)], 25)  # b shorter: silent past its end
    st = frame_states(a, b)
    assert len(st) == 30
    assert st[0] == State.a and st[7] == State.both and st[15] == State.b and st[25] == State.none
    # the overlap is a floor transfer; the trailing silence (recording edge) is not classed
    assert [(x.kind, x.start, x.end) for x in classify_segments(st)] == [("between_overlap", 0.05, 0.10)]
    # runs with overlap or silence on a side are not classed (H&E: single-speaker neighbours):
    # A, both, none, A, both, B -> only the last overlap is a floor transfer
    st = frame_states(_activity([(0, 10), (20, 30)], 40), _activity([(5, 10), (25, 40)], 40))
    assert [(x.kind, x.start, x.end) for x in classify_segments(st)] == [("between_overlap", 0.25, 0.30)]


def test_bridge_keeps_edges_and_long_silences():
    x = _activity([(5, 10), (27, 30), (45, 50)], 60)
    y = bridge(x, 18)
    assert not y[:5].any() and not y[50:].any()  # edges stay silent
    assert y[10:27].all()  # 17 frames < 18: bridged
    assert y[30:45].all()  # 15 frames: bridged too
    assert not bridge(_activity([(0, 5), (23, 30)], 30), 18)[5:23].any()  # 18 frames: kept


def test_silent_and_empty_inputs():
    m = measure(np.zeros(100, bool), np.zeros(100, bool))
    assert m.fto == [] and m.segments == [] and math.isnan(m.overlap_share)
    assert math.isnan(m.summary()["fto_p50_s"])
    assert measure(np.zeros(0, bool), np.zeros(0, bool)).duration == 0


@pytest.mark.parametrize("seed", range(5))
def test_random_alternating_turns_come_out_as_constructed(seed):
    """Alternating turns placed with drawn floor-transfer offsets: every FTO, gap, overlap and IPU
    read back from the frames equals the constructed one within a frame."""
    rng = np.random.default_rng(seed)
    n_turns = 30
    offsets = []
    while len(offsets) < n_turns - 1:
        x = int(round(rng.normal(10, 40)))  # frames; human-like spread
        if abs(x) >= 1 and x > -80:
            offsets.append(x)
    durations = rng.integers(150, 400, n_turns)  # every turn outlasts the overlaps around it
    t, turns = 50, []
    for i, d in enumerate(durations):
        turns.append((i % 2, t, t + int(d)))
        if i < n_turns - 1:
            t = t + int(d) + offsets[i]
    n = turns[-1][2] + 50
    a = _activity([(s, e) for ch, s, e in turns if ch == 0], n)
    b = _activity([(s, e) for ch, s, e in turns if ch == 1], n)
    m = measure(a, b)
    # gaps shorter than the bridge are still gaps: bridging works within one speaker only
    assert m.fto == pytest.approx([o * F for o in offsets], abs=F)
    assert m.gaps == pytest.approx([o * F for o in offsets if o > 0], abs=F)
    assert m.between_overlaps == pytest.approx([-o * F for o in offsets if o < 0], abs=F)
    assert m.ipu_durations == pytest.approx(sorted(int(d) * F for d in durations), abs=F)
    assert m.transitions_in_overlap == pytest.approx(np.mean(np.array(offsets) < 0))
    assert m.pauses == [] and m.within_overlaps == []
    both = sum(-o for o in offsets if o < 0)
    anyone = n - 100 - sum(o for o in offsets if o > 0)
    assert m.overlap_share == pytest.approx(both / anyone, abs=1 / anyone)


@pytest.mark.parametrize("layout", ["n2", "2n"])
def test_measure_stereo_energy_vad_on_audio(layout):
    """Noise bursts at the constructed times in a stereo signal: the energy detector of
    factory.audio.vad puts them back on the grid, and the measures follow within a frame."""
    sr = 16_000
    rng = np.random.default_rng(0)
    hop = sr // 100
    audio = np.zeros((N * hop, 2), np.float32)
    for ch, intervals in ((0, A), (1, B)):
        for s, e in intervals:
            audio[s * hop : e * hop, ch] = rng.uniform(-0.3, 0.3, (e - s) * hop)
    m = measure_stereo(audio if layout == "n2" else audio.T, sr, vad="energy")
    assert m.fto == pytest.approx([0.30, -0.40, 0.20], abs=F)
    assert m.pauses == pytest.approx([0.50, 0.20], abs=F)
    assert m.within_overlaps == pytest.approx([0.40], abs=F)
    assert _flat(m.backchannels) == pytest.approx([1, 8.0, 8.4], abs=F)


def test_measure_stereo_rejects_bad_shapes_and_methods():
    with pytest.raises(ValueError, match="stereo"):
        measure_stereo(np.zeros(100, np.float32), 16_000)
    with pytest.raises(ValueError, match="unknown VAD"):
        measure_stereo(np.zeros((1600, 2), np.float32), 16_000, vad="nope")


# --------------------------------------------------------------------------- barge-ins in the audio
def _barge_in(onset: float, stop: float, by: str = "agent"):
    from types import SimpleNamespace

    from factory.models import BargeInEvent

    event = BargeInEvent(start=onset, end=stop, by=by, turn=2, victim_turn=1, onset=onset, victim_stop=stop)
    return SimpleNamespace(events=[event])


@pytest.mark.parametrize(
    ("victim", "interrupter", "found", "latency", "in_pause"),
    [
        # the victim speaks through the onset and stops 0.40 s later
        ([(0, 300)], [(260, 500)], True, 0.40, False),
        # the interrupter's own previous turn ends 50 ms before its barge-in: the onset is the new edge
        ([(100, 300)], [(0, 255), (260, 500)], True, 0.40, False),
        # the onset falls in a 300 ms pause of the victim, who resumes over the interrupter
        ([(0, 250), (280, 300)], [(260, 500)], True, 0.40, True),
        # a pause longer than the bridge inside the victim's speech after the onset is not its stop
        ([(0, 265), (290, 300)], [(260, 500)], True, 0.40, False),
        # the victim talks on a second past the planned stop: not a barge-in the audio shows
        ([(0, 400)], [(260, 500)], False, None, False),
        # the interrupter is silent near the planned onset
        ([(0, 300)], [(350, 500)], False, None, False),
    ],
)
def test_barge_ins_found_in_activity(victim, interrupter, found, latency, in_pause):
    from factory.audit.measures import check_barge_ins

    n = 600
    tl = _barge_in(2.60, 3.00)
    user, agent = _activity(victim, n), _activity(interrupter, n)
    (b,) = check_barge_ins(tl, user, agent, F)
    assert b.found is found
    if found:
        assert b.onset_audio == pytest.approx(2.60, abs=F)
        assert b.latency_audio == pytest.approx(latency, abs=F)
        assert b.in_pause is in_pause
