"""Behaviour measures read off placed timelines, checked against what was spoken: counts against the
turns and words (not the script's marks), and the timeline's times against the audio (energy VAD
on the stems), on hundreds of stand-in dialogues and on the real `tiny_run` samples."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from factory.audio.mix import apply_gains, loudness_gains
from factory.audio.vad import FRAME_S, energy_vad
from factory.models import BargeIn, Channel, EndReason, Filler, Mode, Timeline, TurnKind, WordKind
from factory.timeline.measures import behaviour_counts, behaviour_rates, spoken_amounts
from tests.test_timeline import SR, build

N_TIMELINES = 300


def spoken_counts(tl: Timeline) -> dict[str, int]:
    """The behaviours as the turns and words show them, without reading the events."""
    spoken = [w for w in tl.words if w.spoken]
    return {
        "fillers": sum(w.kind is WordKind.filler for w in spoken),
        "restarts": sum(w.kind is WordKind.restart for w in spoken),
        "backchannels": sum(t.kind is TurnKind.backchannel for t in tl.turns),
        "laughs": sum(t.kind is TurnKind.laugh for t in tl.turns),
        "barge_ins": sum(t.end_reason is EndReason.interrupted for t in tl.turns),
        "failed_interruptions": sum(t.end_reason is EndReason.yielded for t in tl.turns),
    }


@pytest.fixture(scope="module")
def built() -> list:
    return [build(seed, Mode(["peer", "assistant"][seed % 2]), 4 + seed % 6) for seed in range(N_TIMELINES)]


def test_counts_are_what_was_spoken(built):
    cut_fillers = 0
    for script, tl, _ in built:
        counts = behaviour_counts(tl)
        assert {k: counts[k] for k in spoken_counts(tl)} == spoken_counts(tl)
        assert counts["pauses"] <= sum(m.type == "pause" for m in script.marks)
        cut_fillers += sum(isinstance(m, Filler) for m in script.marks) - counts["fillers"]
    assert cut_fillers > 0  # barge-in cuts dropped some planned fillers: marks and speech differ here


def test_rates_pool_counts_over_spoken_words_and_minutes(built):
    timelines = [tl for _, tl, _ in built]
    rates = behaviour_rates(timelines)
    words = sum(
        w.spoken and w.kind is WordKind.word and tl.turn(w.turn).kind is TurnKind.turn
        for tl in timelines
        for w in tl.words
        if tl.turn(w.turn).end_reason is not EndReason.yielded
    )
    minutes = sum(
        t.end - t.start
        for tl in timelines
        for t in tl.turns
        if t.kind is TurnKind.turn and t.end_reason is not EndReason.yielded
    )
    minutes /= 60
    assert sum(spoken_amounts(tl)["words"] for tl in timelines) == words
    fillers = sum(spoken_counts(tl)["fillers"] for tl in timelines)
    backchannels = sum(spoken_counts(tl)["backchannels"] for tl in timelines)
    cuts = sum(spoken_counts(tl)["barge_ins"] for tl in timelines)
    assert rates["fillers_per_100_words"] == pytest.approx(100 * fillers / words)
    assert rates["backchannels_per_minute"] == pytest.approx(backchannels / minutes)
    assert rates["barge_ins_per_dialogue"] == pytest.approx(cuts / len(timelines))
    assert behaviour_rates([]) == dict.fromkeys(rates, 0.0)


def _stems(tl: Timeline, placements) -> np.ndarray:
    stems = np.zeros((round(tl.duration * SR), 2), np.float32)
    for p in placements:
        stems[p.start : p.start + len(p.audio), p.channel.index] = p.audio
    return apply_gains(stems, loudness_gains(stems, SR, -23, -1))


def check_against_audio(tl: Timeline, stems: np.ndarray, sr: int) -> dict[str, int]:
    """A barge-in's victim channel is silent from its victim_stop until that channel speaks again;
    a listener reaction's audio is active, inside its host turn. Returns how many were checked."""
    active = {ch: energy_vad(stems[:, ch.index], sr) for ch in Channel}
    frame = lambda t: int(round(t / FRAME_S))  # noqa: E731
    checked = {"barge_ins": 0, "reactions": 0}
    for e in tl.events:
        if e.type == "barge_in":
            victim = tl.turn(e.victim_turn)
            after = [t.start for t in tl.turns if t.channel is victim.channel and t.start >= e.victim_stop]
            quiet = active[victim.channel][frame(e.victim_stop) + 1 : frame(min(after, default=tl.duration)) - 1]
            assert len(quiet) and not quiet.any(), (tl.id, e)
            assert active[victim.channel][frame(victim.start) : frame(e.victim_stop)].any()
            checked["barge_ins"] += 1
        if e.type in ("backchannel", "laugh", "failed_interruption"):
            host = tl.turn(e.during_turn)
            assert host.start <= e.start < e.end <= host.end, (tl.id, e, host)
            assert active[e.channel][frame(e.start) : frame(e.end) + 1].any(), (tl.id, e)
            assert active[host.channel][frame(host.start) : frame(host.end) + 1].any(), (tl.id, host)
            checked["reactions"] += 1
    return checked


def test_barge_ins_and_reactions_agree_with_stand_in_audio(built):
    total = {"barge_ins": 0, "reactions": 0}
    for _, tl, placements in built[:80]:
        for k, v in check_against_audio(tl, _stems(tl, placements), SR).items():
            total[k] += v
    assert total["barge_ins"] >= 20 and total["reactions"] >= 40, total


def test_real_samples_agree_with_their_audio_and_manifest(tiny_run):
    from factory.run.read import read_samples

    manifest = {r["id"]: r for r in pl.read_parquet(tiny_run / "manifest.parquet").to_dicts()}
    total = {"barge_ins": 0, "reactions": 0}
    samples = list(read_samples(tiny_run))
    assert samples
    for sample in samples:
        for k, v in check_against_audio(sample.timeline, sample.stems, sample.sample_rate).items():
            total[k] += v
        row, spoken = manifest[sample.id], spoken_counts(sample.timeline)
        for name in ("fillers", "backchannels", "laughs", "barge_ins", "failed_interruptions"):
            assert row[f"n_{name}"] == spoken[name], (sample.id, name)
        planned_cuts = sum(isinstance(m, BargeIn) for m in sample.meta.script.marks)
        assert row["n_barge_ins"] == planned_cuts  # every planned cut is spoken: the victim stops
    assert total["barge_ins"] >= len(samples) and total["reactions"] >= len(samples), total
