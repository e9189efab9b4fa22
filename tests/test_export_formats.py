"""Token exports (bayling, dgslm, lslm, units-1s) against the timeline and audio they came from.

Samples: tests/export_fixtures.py (a barge-in, user and agent backchannels over the other
speaker, a failed interruption; noise-burst words placed by the real planner). The truth is the
timeline (turn starts, stops, who speaks in which frame) and the audio (digital silence where
nobody speaks): an audio token is checked to be the tokenizer's silence unit exactly where the
timeline says the channel is silent (one frame of slack either side) and not where a word covers
the frame, so a wrong channel, lag or frame offset fails."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factory.export import bayling, dgslm
from factory.export.base import (
    COMMON_RULES,
    ExportError,
    ExportOptions,
    RuleCounter,
    fit_frames,
    place_words,
    read_row,
    read_sidecar,
    samples_per_frame,
    silence_tokens,
)
from factory.models import BackchannelEvent, BargeInEvent, Channel, EndReason, FailedInterruptionEvent, Timeline
from factory.tokenize import fit_units, get_text_tokenizer
from tests.export_fixtures import make_sample

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def samples():
    return [make_sample(seed) for seed in SEEDS]


@pytest.fixture(scope="module")
def text_tok():
    return get_text_tokenizer(None)


def _fit(samples, rate: float):
    return fit_units([s.stems[:, ch.index] for s in samples for ch in Channel], samples[0].sample_rate, rate, 32, 0)


@pytest.fixture(scope="module")
def units12(samples):
    return _fit(samples, 12.5)


@pytest.fixture(scope="module")
def units50(samples):
    return _fit(samples, 50.0)


def check_activity(codes: np.ndarray, silence: int, tl: Timeline, channel: Channel, rate: float) -> None:
    """codes[f] (frame f from 0 s at `rate`) is the silence unit where no spoken word of `channel`
    comes within a frame of frame f, and not the silence unit where a word covers frame f."""
    words = [(w.start, w.end) for w in tl.words if w.spoken and w.channel is channel]
    n = min(len(codes), int(tl.duration * rate))
    checked_silent = checked_speech = 0
    for f in range(n):
        t0, t1 = f / rate, (f + 1) / rate
        if not any(s < t1 + 1 / rate and e > t0 - 1 / rate for s, e in words):
            assert codes[f] == silence, (channel, f, t0)
            checked_silent += 1
        elif any(s <= t0 and t1 <= e for s, e in words):
            assert codes[f] != silence, (channel, f, t0)
            checked_speech += 1
    assert checked_silent > 5 and checked_speech > 5


# --------------------------------------------------------------------------- bayling
@pytest.fixture(scope="module")
def bayling_export(samples, units12, text_tok, tmp_path_factory):
    out = tmp_path_factory.mktemp("bayling")
    report = bayling.export(
        samples, out, ExportOptions(audio_tokenizer_obj=units12, text_tokenizer_obj=text_tok, shard_size=2)
    )
    return out, report


def test_bayling_round_trip_agrees_with_the_timeline(bayling_export, samples, units12, text_tok) -> None:
    out, report = bayling_export
    sidecar = read_sidecar(out)
    assert report.samples_in == report.samples_out == len(samples)
    assert sidecar.special_tokens == {"[SILENCE]": 0, "<|assistant|>": 1, "[PAD]": 2, "[EPAD]": 3}
    assert sorted(report.shards) == ["data/train-00000.parquet", "data/train-00001.parquet"]  # 2 per shard
    silence = int(silence_tokens(units12, samples[0].sample_rate)[0, 0])
    for s in samples:
        tl = s.timeline
        row = read_row(out, s.id)
        assert len(row["input_ids"]) == row["n_blocks"] * 25 and row["n_blocks"] == -(-round(tl.duration * 12.5) // 10)
        parts = bayling.split_blocks(row["input_ids"], sidecar)
        segs = bayling.segments(parts["text"])
        agent_turns = sorted((t for t in tl.turns if t.channel is Channel.agent), key=lambda t: t.start)
        assert len(segs) == len(agent_turns)  # one <|assistant|> ... [EPAD] per agent turn or backchannel
        for (a, e, words), turn in zip(segs, agent_turns):
            assert abs(bayling.slot_time(a) + bayling.SLOT_S / 2 - turn.start) <= bayling.SLOT_S, (turn, a)
            text = text_tok.decode(words)
            if turn.end_reason is EndReason.interrupted:
                (barge,) = [ev for ev in tl.events if isinstance(ev, BargeInEvent) and ev.victim_turn == turn.id]
                assert abs(bayling.slot_time(e) + bayling.SLOT_S / 2 - barge.victim_stop) <= bayling.SLOT_S
                assert turn.spoken_text.startswith(text)
            else:
                assert bayling.slot_time(e) + bayling.SLOT_S >= turn.end  # never stops before the speech does
                assert text == turn.spoken_text
        # an interruption gives [EPAD] and then a NEW <|assistant|> for the agent's next turn
        barge = next(ev for ev in tl.events if isinstance(ev, BargeInEvent) and ev.by is Channel.user)
        i = next(k for k, t in enumerate(agent_turns) if t.id == barge.victim_turn)
        assert segs[i + 1][0] > segs[i][1]
        # the user's backchannel and failed interruption do not end the agent's segment
        for ev in tl.events:
            if isinstance(ev, (BackchannelEvent, FailedInterruptionEvent)) and ev.channel is Channel.user:
                assert any(bayling.slot_time(a) <= ev.start and bayling.slot_time(e) >= ev.end for a, e, _ in segs)
        # audio: the user block is [0.8 b, 0.8 (b + 1)); the agent block lags by one (from 0.8 s)
        check_activity(parts["user"], silence, tl, Channel.user, 12.5)
        agent_from_zero = np.concatenate([np.full(10, silence), parts["agent"]])
        check_activity(agent_from_zero, silence, tl, Channel.agent, 12.5)


def test_bayling_sidecar_names_the_tokenizers_and_the_id_layout(bayling_export, units12, text_tok) -> None:
    out, _ = bayling_export
    sidecar = json.loads((out / "export.json").read_text())
    assert sidecar["audio_tokenizer"]["weights_sha256"] == units12.identity().weights_sha256
    assert sidecar["text_tokenizer"]["name"] == text_tok.identity().name
    assert sidecar["id_layout"]["text"] == [4, text_tok.vocab_size]
    assert sidecar["id_layout"]["audio"] == [4 + text_tok.vocab_size, units12.cardinality]
    assert set(sidecar["rules"]) == set(json.loads((out / "report.json").read_text())["rules"])


# --------------------------------------------------------------------------- dgslm
def test_dgslm_lines_are_parallel_and_agree_with_the_timeline(samples, units50, tmp_path) -> None:
    report = dgslm.export(samples, tmp_path, ExportOptions(audio_tokenizer_obj=units50))
    assert report.samples_out == len(samples)
    lines = dgslm.read_lines(tmp_path, "train")  # what fairseq-preprocess reads
    assert [i for i, _, _ in lines] == [s.id for s in samples]
    silence = int(silence_tokens(units50, samples[0].sample_rate)[0, 0])
    for (sid, a, b), s in zip(lines, samples):
        assert len(a) == len(b) == int(np.ceil(round(s.timeline.duration * 50, 6)))
        check_activity(np.array(a), silence, s.timeline, Channel.user, 50.0)  # unitA = user
        check_activity(np.array(b), silence, s.timeline, Channel.agent, 50.0)
        row = read_row(tmp_path, sid)
        assert row["unitA"] == a and row["unitB"] == b
    dict_lines = (tmp_path / "dict.unitA.txt").read_text().splitlines()
    assert [ln.split()[0] for ln in dict_lines] == [str(u) for u in range(units50.cardinality)]
    assert (tmp_path / "dict.unitB.txt").read_text() == (tmp_path / "dict.unitA.txt").read_text()


def test_dgslm_dev_split_is_fairseqs_valid(units50, tmp_path) -> None:
    s = make_sample(5, split="dev")
    dgslm.export([s], tmp_path, ExportOptions(audio_tokenizer_obj=units50))
    assert [i for i, _, _ in dgslm.read_lines(tmp_path, "valid")] == [s.id]


# --------------------------------------------------------------------------- bad-input rules
def _counter() -> RuleCounter:
    return RuleCounter(dict(COMMON_RULES))


def test_word_starting_before_the_previous_words_tokens_are_out_is_shifted() -> None:
    c = _counter()
    # word 0 at 0.0 s needs 4 frames (0..3); word 1 starts at 0.16 s = frame 2 -> shifted to frame 4
    placed = place_words([(0, 0.0, 0.1, [1, 2, 3, 4]), (1, 0.16, 0.3, [5])], 12.5, 20, 1.6, c)
    assert [(p.first, p.tokens, p.shifted) for p in placed] == [(0, [1, 2, 3, 4], False), (4, [5], True)]
    assert c.counts["word_overlaps_previous_tokens"] == 1


def test_words_past_the_end_are_dropped_and_ends_clipped() -> None:
    c = _counter()
    placed = place_words([(0, 1.7, 1.8, [1]), (1, 1.5, 1.7, [2, 3])], 12.5, 20, 1.6, c)
    # 1.7 s >= 1.6 s: dropped; 1.5 s falls on frame 19, the last: one of its two tokens fits
    assert [(p.index, p.first, p.tokens) for p in placed] == [(1, 19, [2])]
    assert (c.counts["word_past_end"], c.counts["word_end_clipped"], c.counts["tokens_past_end"]) == (1, 1, 1)


def test_tokens_that_no_longer_fit_after_a_shift_are_dropped_and_counted() -> None:
    c = _counter()
    placed = place_words([(0, 0.0, 0.5, [1] * 8), (1, 0.1, 0.2, [2, 2, 2])], 12.5, 10, 0.8, c)
    assert placed[1].first == 8 and placed[1].tokens == [2, 2]
    assert c.counts["word_overlaps_previous_tokens"] == 1 and c.counts["tokens_past_end"] == 1


def test_a_frame_rate_that_does_not_divide_the_sample_rate_is_an_error() -> None:
    c = _counter()
    assert samples_per_frame(16000, 12.5, c) == 1280 and samples_per_frame(24000, 12.5, c) == 1920
    with pytest.raises(ExportError, match="75.0 Hz does not divide the sample rate 16000"):
        samples_per_frame(16000, 75.0, c)
    assert c.counts["frame_rate_not_dividing_sample_rate"] == 1


def test_audio_frames_are_fitted_to_the_timeline_and_counted() -> None:
    c = _counter()
    assert fit_frames(np.array([[1, 2, 3]]), 3, c).tolist() == [[1, 2, 3]] and c.counts["audio_frames_adjusted"] == 0
    assert fit_frames(np.array([[1, 2, 3]]), 5, c).tolist() == [[1, 2, 3, 3, 3]]
    assert fit_frames(np.array([[1, 2, 3]]), 2, c).tolist() == [[1, 2]]
    assert c.counts["audio_frames_adjusted"] == 2


def test_an_empty_sample_is_dropped_with_its_reason(samples, units12, text_tok, tmp_path) -> None:
    empty = make_sample(7, sample_id="silent")
    for w in empty.meta.timeline.words:
        w.spoken = False
    opts = ExportOptions(audio_tokenizer_obj=units12, text_tokenizer_obj=text_tok)
    report = bayling.export([samples[0], empty], tmp_path / "one", opts)
    assert (report.samples_in, report.samples_out, report.rules["empty_sample"]) == (2, 1, 1)
    assert [(d.id, d.rule) for d in report.dropped] == [("silent", "empty_sample")]
    with pytest.raises(ExportError) as err:  # nothing left: an error (exit 4), not an empty export
        bayling.export([empty], tmp_path / "none", opts)
    assert err.value.exit_code == 4
    saved = json.loads((tmp_path / "none" / "report.json").read_text())
    assert saved["rules"]["empty_sample"] == 1 and saved["rules"]["empty_output_shard"] == 1
    assert not list((tmp_path / "none").glob("data/*.parquet"))
