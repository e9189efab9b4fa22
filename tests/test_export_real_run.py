"""The token exports of a real run (the session's tiny run: real LLM scripts, real TTS voices) read
back against its timelines: the agent's turns, stops and the user's barge-ins where the
timeline has them, within one frame of each format's grid. (tests/test_export_formats.py checks
the same on many stand-in dialogues, frame by frame against the audio.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from factory.cli import app
from factory.export import bayling, units1s
from factory.export.grid import silence_tokens
from factory.export.output import read_row, read_rows, read_sidecar
from factory.models import BargeInEvent, Channel, EndReason
from factory.run.read import read_samples
from factory.tokenize import get_audio_tokenizer, get_text_tokenizer


def _export(run: Path, out: Path, fmt: str) -> Path:
    r = CliRunner().invoke(app, ["export", str(run), "-f", fmt, "--out", str(out / fmt), "--units-k", "32"])
    assert r.exit_code == 0, r.output
    return out / fmt


@pytest.fixture(scope="module")
def real(tiny_run: Path, tmp_path_factory) -> tuple[Path, list, Path]:
    out = tmp_path_factory.mktemp("real_exports")
    return tiny_run, list(read_samples(tiny_run)), out


def _barges(tl):
    return {e.victim_turn: e for e in tl.events if isinstance(e, BargeInEvent) and e.by is Channel.user}


def test_bayling_on_a_real_run(real) -> None:
    run, samples, out = real
    out = _export(run, out, "bayling")
    side, text_tok = read_sidecar(out), get_text_tokenizer(None)
    for s in samples:
        tl, slot = s.timeline, bayling.SLOT_S
        parts = bayling.split_blocks(read_row(out, s.id)["input_ids"], side)
        segs = bayling.segments(parts["text"])
        turns = sorted((t for t in tl.turns if t.channel is Channel.agent), key=lambda t: t.start)
        assert len(segs) == len(turns)
        prev_e = -1
        for (a, e, words), turn in zip(segs, turns):
            # on time, or at the first slot after the agent's previous segment, whose text ran past its
            # audio (a backchannel "yeah" 0.36 s before the agent's next turn, seed 11's second dialogue)
            assert abs(bayling.slot_time(a) + slot / 2 - turn.start) <= slot or (
                a == prev_e + 1 and bayling.slot_time(a) > turn.start
            ), (s.id, turn.id, a, prev_e)
            prev_e = e
            text = text_tok.decode(words)
            if turn.end_reason is EndReason.interrupted:
                assert abs(bayling.slot_time(e) + slot / 2 - _barges(tl)[turn.id].victim_stop) <= slot
                assert turn.spoken_text.startswith(text)
            else:
                text_bound = bayling.PAD not in parts["text"][a + 1 : e]
                assert abs(bayling.slot_time(e) + slot / 2 - turn.end) <= slot or text_bound
                assert text == turn.spoken_text


def test_lslm_on_a_real_run(real) -> None:
    run, samples, out = real
    out = _export(run, out, "lslm")
    side = read_sidecar(out)
    rate, irq = side.frame_rate, side.special_tokens["IRQ"]
    rows = {r["id"]: r for r in read_rows(out)}
    assert any(_barges(s.timeline) for s in samples), "the tiny run (seed 11) should hold a user barge-in"
    for s in samples:
        tl = s.timeline
        for turn in (t for t in tl.turns if t.channel is Channel.agent):
            r = rows[f"{s.id}#{turn.id}"]
            last = (r["first_frame"] + len(r["speak"]) - 1) / rate
            barge = _barges(tl).get(turn.id)
            want = min(barge.onset + 0.5, (np.ceil(tl.duration * rate) - 1) / rate) if barge else turn.end
            assert (r["speak"][-1] == irq) == (barge is not None)
            assert abs(last - want) <= 1 / rate and abs(r["first_frame"] / rate - turn.start) <= 1 / rate


def test_units_1s_and_dgslm_on_a_real_run(real) -> None:
    run, samples, out = real
    u_out, d_out = _export(run, out, "units-1s"), _export(run, out, "dgslm")
    for s in samples:
        tl = s.timeline
        row = read_row(u_out, s.id)
        assert row["agent_state"] == units1s.states(tl, Channel.agent)
        for e in _barges(tl).values():
            assert row["agent_state"][int(e.onset)] == "interrupt"
        words = [w for w in tl.words if w.spoken and w.channel is Channel.agent]
        for u, state in enumerate(row["agent_state"]):
            talks = any(w.start < u + 1 and w.end > u for w in words)
            assert (state != "listen") == talks or state == "interrupt"
    # dgslm: equal counts, and each channel is the silence unit wherever the timeline gives it no
    # turn (a frame of slack): the channels are where the trainer expects them
    tok = get_audio_tokenizer("units", codebook=d_out / "units_codebook.json")
    for s in samples:
        tl, row = s.timeline, read_row(d_out, s.id)
        silence = int(silence_tokens(tok, s.sample_rate)[0, 0])
        assert len(row["unitA"]) == len(row["unitB"]) == int(np.ceil(round(tl.duration * 50, 6)))
        for ch, units in ((Channel.user, row["unitA"]), (Channel.agent, row["unitB"])):
            spans = [(t.start, t.end) for t in tl.turns if t.channel is ch]
            quiet = [
                f
                for f in range(len(units))
                if (f + 1) / 50 <= tl.duration and not any(a < (f + 2) / 50 and b > (f - 1) / 50 for a, b in spans)
            ]
            assert quiet and all(units[f] == silence for f in quiet), ch
