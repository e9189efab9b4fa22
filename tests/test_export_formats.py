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
from factory.export.errors import ExportError
from factory.export.grid import fit_frames, place_words, samples_per_frame, silence_tokens
from factory.export.options import ExportOptions
from factory.export.output import read_row, read_sidecar
from factory.export.report import COMMON_RULES, RuleCounter
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
    report = bayling.Bayling().export(
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
    report = dgslm.Dgslm().export(samples, tmp_path, ExportOptions(audio_tokenizer_obj=units50))
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
    dgslm.Dgslm().export([s], tmp_path, ExportOptions(audio_tokenizer_obj=units50))
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
    report = bayling.Bayling().export([samples[0], empty], tmp_path / "one", opts)
    assert (report.samples_in, report.samples_out, report.rules["empty_sample"]) == (2, 1, 1)
    assert [(d.id, d.rule) for d in report.dropped] == [("silent", "empty_sample")]
    with pytest.raises(ExportError) as err:  # nothing left: an error (exit 4), not an empty export
        bayling.Bayling().export([empty], tmp_path / "none", opts)
    assert err.value.exit_code == 4
    saved = json.loads((tmp_path / "none" / "report.json").read_text())
    assert saved["rules"]["empty_sample"] == 1 and saved["rules"]["empty_output_shard"] == 1
    assert not list((tmp_path / "none").glob("data/*.parquet"))


# --------------------------------------------------------------------------- lslm
def check_window(codes, silence: int, tl: Timeline, channel: Channel, rate: float, first: int) -> None:
    """check_activity for a window of frames starting at frame `first` (others unchecked)."""
    words = [(w.start, w.end) for w in tl.words if w.spoken and w.channel is channel]
    for k, code in enumerate(codes):
        t0, t1 = (first + k) / rate, (first + k + 1) / rate
        if t1 > tl.duration:
            break
        if not any(s < t1 + 1 / rate and e > t0 - 1 / rate for s, e in words):
            assert code == silence, (channel, first + k, t0)
        elif any(s <= t0 and t1 <= e for s, e in words):
            assert code != silence, (channel, first + k, t0)


@pytest.mark.parametrize("mu", [0.5, 0.2])
def test_lslm_irq_at_onset_plus_mu_eos_at_turn_ends(samples, units50, tmp_path, mu: float) -> None:
    from factory.export import lslm
    from factory.export.output import read_rows

    report = lslm.Lslm().export(
        samples, tmp_path, ExportOptions(audio_tokenizer_obj=units50, format_options={"mu": mu})
    )
    sidecar = read_sidecar(tmp_path)
    eos, irq = sidecar.special_tokens["EOS"], sidecar.special_tokens["IRQ"]
    assert (eos, irq) == (units50.cardinality, units50.cardinality + 1)
    rows = {r["id"]: r for r in read_rows(tmp_path)}
    silence = int(silence_tokens(units50, samples[0].sample_rate)[0, 0])
    rate, n_irq = 50.0, 0
    for s in samples:
        tl = s.timeline
        agent_turns = [t for t in tl.turns if t.channel is Channel.agent]
        assert sorted(r["turn"] for r in rows.values() if r["sample_id"] == s.id) == sorted(t.id for t in agent_turns)
        for turn in agent_turns:
            r = rows[f"{s.id}#{turn.id}"]
            assert abs(r["first_frame"] / rate - turn.start) <= 1 / rate and r["text"] == turn.spoken_text
            assert len(r["listen"]) == len(r["speak"])
            end_at = (r["first_frame"] + len(r["speak"]) - 1) / rate  # the frame of EOS / IRQ
            barge = [e for e in tl.events if isinstance(e, BargeInEvent) and e.victim_turn == turn.id]
            if barge:
                assert r["speak"][-1] == irq and r["end_token"] == "IRQ" and eos not in r["speak"]
                assert abs(end_at - (barge[0].onset + mu)) <= 1 / rate
                n_irq += 1
            else:  # complete turns, the agent's backchannel: EOS at the end, never IRQ
                assert r["speak"][-1] == eos and irq not in r["speak"]
                assert abs(end_at - turn.end) <= 1 / rate
                # the user's backchannel and failed interruption inside this turn do not stop it
            check_window(r["speak"][:-1], silence, tl, Channel.agent, rate, r["first_frame"])
            check_window(r["listen"], silence, tl, Channel.user, rate, r["first_frame"])
        for ev in tl.events:  # the user's backchannel and failed attempt sit inside an EOS turn
            if isinstance(ev, (BackchannelEvent, FailedInterruptionEvent)) and ev.channel is Channel.user:
                host = rows[f"{s.id}#{ev.during_turn}"]
                t0 = host["first_frame"] / rate
                assert t0 <= ev.start and ev.end <= t0 + len(host["speak"]) / rate
    assert n_irq == len(samples)
    stopped_early = sum(
        e.victim_stop < e.onset + mu for s in samples for e in s.timeline.events if isinstance(e, BargeInEvent)
    )
    assert report.rules["lslm_agent_stopped_before_irq"] == stopped_early


def test_lslm_listening_channel_as_features(samples, units50, tmp_path) -> None:
    from factory.export import lslm
    from factory.export.output import read_rows
    from factory.tokenize.units import features

    opts = ExportOptions(audio_tokenizer_obj=units50, format_options={"listen": "features"})
    lslm.Lslm().export(samples[:1], tmp_path, opts)
    s = samples[0]
    feats = features(s.stems[:, 0], s.sample_rate, 50.0)
    for r in read_rows(tmp_path):
        x = np.array(r["listen"], np.float32)
        assert x.shape == (len(r["speak"]), feats.shape[1])
        np.testing.assert_allclose(x[:-1], feats[r["first_frame"] : r["first_frame"] + len(x) - 1], rtol=1e-6)


# --------------------------------------------------------------------------- units-1s
@pytest.fixture(scope="module")
def units25(samples):
    return _fit(samples, 25.0)


def test_units_1s_states_agree_with_the_timeline(samples, units25, text_tok, tmp_path) -> None:
    from factory.export import units1s

    units1s.Units1s().export(samples, tmp_path, ExportOptions(audio_tokenizer_obj=units25, text_tokenizer_obj=text_tok))
    sidecar = read_sidecar(tmp_path)
    silence = int(silence_tokens(units25, samples[0].sample_rate)[0, 0])
    for s in samples:
        tl, row = s.timeline, read_row(tmp_path, s.id)
        n = int(np.ceil(tl.duration))
        assert row["n_units"] == n and all(len(c) == 25 for c in row["user_audio"] + row["agent_audio"])
        for ch, name in ((Channel.user, "user"), (Channel.agent, "agent")):
            state = row[f"{name}_state"]
            words = [w for w in tl.words if w.spoken and w.channel is ch]
            for u in range(n):  # speaking units are exactly those a word of the channel overlaps
                talks = any(w.start < u + 1 and w.end > u for w in words)
                assert (state[u] != "listen") == talks or state[u] == "interrupt", (name, u, state[u])
            for t in tl.turns:
                if t.channel is ch and t.end_reason is not EndReason.interrupted:
                    assert state[min(int(t.end - 1e-9), n - 1)] in ("turn_end", "interrupt"), (name, t)
            # the words, unit by unit, read back as what the channel said
            text = text_tok.decode([i for ids in row[f"{name}_text"] for i in ids])
            assert text == " ".join(w.word for w in sorted(words, key=lambda w: w.start))
            for u, ids in enumerate(row[f"{name}_text"]):  # each word in the unit it starts in
                assert text_tok.decode(ids).split() == [w.word for w in words if int(w.start) == u], (name, u)
            codes = np.array(row[f"{name}_audio"]).reshape(-1)
            check_activity(codes, silence, tl, ch, 25.0)
        # the user's barge-in: the agent's unit holding the onset says interrupt, and no turn_end there
        barge = next(e for e in tl.events if isinstance(e, BargeInEvent) and e.by is Channel.user)
        assert row["agent_state"][int(barge.onset)] == "interrupt"
        assert "interrupt" not in row["user_state"]
        # the user's backchannel and failed attempt: the agent keeps speaking through them
        for ev in tl.events:
            if isinstance(ev, (BackchannelEvent, FailedInterruptionEvent)) and ev.channel is Channel.user:
                for u in range(int(ev.start), int(ev.end) + 1):
                    assert row["agent_state"][u] in ("speak", "turn_end", "interrupt")
                    assert row["user_state"][u] != "listen"
        # the flat sequence parses back into the same units and states
        ids, units, k = row["input_ids"], [], 0
        specials = sidecar.special_tokens
        while k < len(ids):
            assert ids[k] == specials["<unit>"]
            end = ids.index(specials["</unit>"], k)
            units.append(ids[k + 1 : end])
            k = end + 1
        assert len(units) == n
        ending = {specials["<|chunk_eos|>"]: "speak", specials["<|turn_eos|>"]: "turn_end"}
        ending[specials["<|interrupt|>"]] = "interrupt"
        for u, body in enumerate(units):
            assert body[25] in (specials["<|listen|>"], specials["<|speak|>"])
            parsed = "listen" if body[25] == specials["<|listen|>"] else ending[body[-1]]
            assert parsed == row["agent_state"][u]


# --------------------------------------------------------------------------- format rules
def _agent_timeline(turns: list[tuple[float, float, str, EndReason]], duration: float = 6.0) -> Timeline:
    from factory.models import TimelineTurn, TurnKind

    return Timeline(
        id="t",
        sample_rate=16000,
        duration=duration,
        voices={Channel.user: "u", Channel.agent: "a"},
        turns=[
            TimelineTurn(
                id=i,
                channel=Channel.agent,
                start=s,
                end=e,
                kind=TurnKind.turn,
                planned_text=text,
                spoken_text=text,
                end_reason=reason,
                voice_id="a",
            )
            for i, (s, e, text, reason) in enumerate(turns)
        ],
        words=[],
        events=[],
    )


def _bayling_rules(turns, encode=lambda text: list(range(10, 10 + len(text.split())))):
    c = RuleCounter({**COMMON_RULES, **bayling.RULES})
    tl = _agent_timeline(turns)
    return bayling.text_channel(tl, encode, c, bayling.n_blocks(tl) * bayling.TEXT), c.counts


def test_bayling_turn_rules_shift_drop_and_count() -> None:
    done, cut = EndReason.complete, EndReason.interrupted
    # a turn inside the first 0.8 s (no agent block yet) opens in slot 0
    text, counts = _bayling_rules([(0.3, 1.9, "a b", done)])
    assert text[0] == bayling.ASSISTANT and counts["bayling_agent_before_first_block"] == 1
    # the next turn starts in the slot of the previous [EPAD]: one slot later
    text, counts = _bayling_rules([(1.0, 1.8, "a", done), (1.81, 2.6, "b", done)])
    first_epad = int(np.flatnonzero(text == bayling.EPAD)[0])
    assert text[first_epad + 1] == bayling.ASSISTANT and counts["bayling_turn_start_shifted"] == 1
    # an interrupted turn keeps its stop: the text that does not fit is dropped
    text, counts = _bayling_rules([(1.0, 1.5, "w " * 8, cut)])
    ((a, e, words),) = bayling.segments(text)
    assert bayling.slot_time(e) <= 1.5 and counts["bayling_text_truncated"] == 8 - len(words) > 0
    # a completed turn keeps its text: [EPAD] right after it
    text, counts = _bayling_rules([(1.0, 1.5, "w " * 8, done)])
    ((a, e, words),) = bayling.segments(text)
    assert len(words) == 8 and e == a + 9 and counts["bayling_epad_after_text"] == 1


def test_lslm_irq_past_the_end_goes_in_the_last_frame(samples, units50, tmp_path) -> None:
    from factory.export import lslm
    from factory.export.output import read_rows

    s = samples[0]
    report = lslm.Lslm().export([s], tmp_path, ExportOptions(audio_tokenizer_obj=units50, format_options={"mu": 60.0}))
    assert report.rules["lslm_irq_after_turn_end"] == 1
    (row,) = [r for r in read_rows(tmp_path) if r["end_token"] == "IRQ"]
    assert row["first_frame"] + len(row["speak"]) == int(np.ceil(s.timeline.duration * 50))
    with pytest.raises(ExportError, match="lslm format options: unknown option 'nu'"):
        lslm.Lslm().export([s], tmp_path / "x", ExportOptions(audio_tokenizer_obj=units50, format_options={"nu": 1}))


def test_units_1s_drops_a_word_past_the_end_and_counts_it(units25, text_tok, tmp_path) -> None:
    from factory.export import units1s
    from factory.models import TimelineWord, WordKind

    s = make_sample(3)
    tl = s.meta.timeline
    last = max((t for t in tl.turns if t.channel is Channel.agent), key=lambda t: t.start)
    tl.words.append(
        TimelineWord(
            channel=Channel.agent,
            turn=last.id,
            word="ghost",
            kind=WordKind.word,
            start=tl.duration + 0.2,
            end=tl.duration + 0.5,
            spoken=True,
        )
    )
    report = units1s.Units1s().export(
        [s], tmp_path, ExportOptions(audio_tokenizer_obj=units25, text_tokenizer_obj=text_tok)
    )
    assert report.rules["word_past_end"] == 1 and report.samples_out == 1
    row = read_row(tmp_path, s.id)
    assert "ghost" not in text_tok.decode([i for ids in row["agent_text"] for i in ids])


def test_batched_tokenization_gives_the_same_export(samples, units50, tmp_path) -> None:
    one = dgslm.Dgslm().export(samples, tmp_path / "b1", ExportOptions(audio_tokenizer_obj=units50, tokenize_batch=1))
    two = dgslm.Dgslm().export(samples, tmp_path / "b2", ExportOptions(audio_tokenizer_obj=units50, tokenize_batch=2))
    assert one.samples_out == two.samples_out == len(samples)
    assert (tmp_path / "b1" / "train.unitA").read_bytes() == (tmp_path / "b2" / "train.unitA").read_bytes()
    assert (tmp_path / "b1" / "train.unitB").read_bytes() == (tmp_path / "b2" / "train.unitB").read_bytes()
