"""The production LLM path end to end: `duplex-factory generate` with `llm.backend=http` and
`llm.script_mode=structured` against a real vLLM server (SmolLM2-135M, JSON-schema guided
decoding), checked from the outside: the manifest and parquet rows the run wrote, and the audio.

The script's marks are the claim; the timeline must carry them (barge-ins, hesitations, listener
reactions where the marks put them) and each channel's voice activity must agree."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from factory.audio.vad import FRAME_S, energy_vad
from factory.models import (
    Backchannel,
    BargeIn,
    Channel,
    EndReason,
    FailedInterruption,
    Filler,
    Laugh,
    Restart,
    Script,
    SilentPause,
    Timeline,
    TurnKind,
)
from tests.conftest import TINY, decode, read_rows
from tests.servers import Server, vllm_skip_reason

TOLERANCE_S = 0.030
# Short peer dialogues with loose word limits: the tiny model's turns rarely fit tight ones, and
# every rejected attempt costs a full generation on a 2-core CPU server.
STRUCTURED = [
    *TINY,
    "run.n_samples=1",
    "run.samples_per_shard=1",
    # On one fresh CI machine all of the first 4 attempts were rejected (no barge-in, no filler,
    # cut-off JSON, a repetition loop: the 135M model's usual faults), on another all 8 (fillers,
    # backchannels, one side only, loops, prompt echo, a runaway turn): the vLLM CPU server's
    # answers to the same seeds differ between a loaded machine and a quiet one (alone, the
    # first attempt was accepted). Later attempts cost nothing where an early one is accepted.
    "run.max_sample_attempts=10",  # the config's most
    "tts.qa_wer_threshold=null",  # intelligibility QA is the TTS side's, tested in tests/test_end_to_end.py
    "dialogue.n_turns=[4, 4]",
    "dialogue.mode_weights={peer: 1.0}",
    "dialogue.peer_words=[2, 40]",
    "llm.backend=http",
    "llm.script_mode=structured",
    "llm.turn_attempts=3",
    "llm.timeout_s=600",
    # One dialogue, so it must carry the behaviours this file checks (the default leaves ~40 % of
    # dialogues without a barge-in, as in human data).
    "behaviour.barge_in_dialogue_share=1.0",
    "behaviour.min_barge_ins=1",
    "behaviour.min_backchannels=1",
    # Not asked of the one dialogue: a filler the script marks is still checked in the timeline and
    # the audio (2 of those 8 attempts were rejected for no spoken filler alone).
    "behaviour.min_fillers=0",
]
LISTENER_EVENTS = {Backchannel: "backchannel", Laugh: "laugh", FailedInterruption: "failed_interruption"}


@pytest.fixture(scope="module")
def structured_run(vllm_server: Server, prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from typer.testing import CliRunner

    from factory.cli import app

    out = tmp_path_factory.mktemp("runs")
    args = ["generate", "--out", str(out), "--run-id", "structured"]
    for item in [*STRUCTURED, f"llm.base_url={vllm_server.base_url}"]:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out / "structured"


def test_server_scripts_are_accepted(structured_run: Path) -> None:
    manifest = pl.read_parquet(structured_run / "manifest.parquet")
    ok = manifest.filter(pl.col("status") == "ok")
    assert len(ok) >= 1, manifest["reason"].to_list()
    assert set(ok["llm"].to_list()) == {"http:smollm2"}
    for reason in manifest.filter(pl.col("status") != "ok")["reason"].to_list():
        assert reason.startswith(("script: ", "behaviour_minimum: ")), reason
    rows = read_rows(structured_run)
    assert [r["id"] for r in rows] == ok["id"].to_list()
    for row in rows:
        assert Script.model_validate_json(row["script"]).llm == "http:smollm2"


def _script_turn_ids(script: Script, tl: Timeline) -> list[int]:
    """Timeline turn id of each script turn: turns keep their order on the timeline."""
    ids = [t.id for t in tl.turns if t.kind is TurnKind.turn and t.end_reason is not EndReason.yielded]
    assert [tl.turn(i).planned_text for i in ids] == [t.text for t in script.turns]
    return ids


def test_timeline_carries_the_script_marks(structured_run: Path) -> None:
    for row in read_rows(structured_run):
        script = Script.model_validate_json(row["script"])
        tl = Timeline.model_validate_json(row["timeline"])
        ids = _script_turn_ids(script, tl)
        cuts = {m.turn: m.heard_words for m in script.marks if isinstance(m, BargeIn)}
        assert cuts, "the pipeline keeps only dialogues with a barge-in"

        barge_ins = {(e.victim_turn, e.turn, e.by) for e in tl.events if e.type == "barge_in"}
        assert barge_ins == {(ids[i], ids[i + 1], script.turns[i + 1].speaker) for i in cuts}, row["id"]
        for i, heard in cuts.items():
            victim = tl.turn(ids[i])
            assert victim.end_reason.value == "interrupted"
            assert victim.spoken_text == " ".join(script.turns[i].text.split()[:heard])

        hesitations = sorted((e.turn, e.kind, e.start, e.end) for e in tl.events if e.type == "hesitation")
        expected = []
        for m in script.marks:
            heard = cuts.get(m.turn, 10**9)
            if isinstance(m, Filler | Restart) and m.word_index < heard:
                word = next(w for k, w in enumerate(_words_of(tl, ids[m.turn])) if k == m.word_index)
                assert word.kind.value == m.type, (m, word)
                assert not isinstance(m, Filler) or _norm(word.word) == _norm(m.token), (m, word)
                expected.append((ids[m.turn], m.type, word.start, word.end))
            elif isinstance(m, SilentPause) and m.word_index < heard - 1:
                pause = [e for e in tl.events if e.type == "hesitation" and e.kind == "pause" and e.turn == ids[m.turn]]
                # the scripted silence, plus the render's own silent gap before the next word if any
                nxt = _words_of(tl, ids[m.turn])[m.word_index + 1].start
                assert any(
                    e.end - e.start >= m.duration - 2 / tl.sample_rate and e.end <= nxt + 2 / tl.sample_rate
                    for e in pause
                ), (m, pause)
                expected += [(ids[m.turn], "pause", e.start, e.end) for e in pause]
        assert sorted(set(expected)) == hesitations, row["id"]

        for cls, kind in LISTENER_EVENTS.items():
            marks = [m for m in script.marks if isinstance(m, cls)]
            events = [e for e in tl.events if e.type == kind]
            assert len(events) <= len(marks)  # a reaction with no free slot is dropped, never invented
            for e in events:
                host = ids.index(e.during_turn)
                tokens = {m.token for m in marks if m.turn == host}
                assert tokens, f"{kind} during script turn {host}, which has no such mark"
                assert e.channel is script.turns[host].speaker.other
                assert tl.turn(e.turn).planned_text in tokens
        assert sum(e.type == "backchannel" for e in tl.events) >= 1


def _norm(word: str) -> str:
    return word.strip(",.;:!?").lower()


def _words_of(tl: Timeline, turn_id: int) -> list:
    return [w for w in tl.words if w.turn == turn_id]


def _frames(t: float) -> int:
    return int(round(t / FRAME_S))


def test_audio_follows_the_marks(structured_run: Path) -> None:
    seen = {"barge_in": 0, "filler": 0, "backchannel": 0}
    for row in read_rows(structured_run):
        tl = Timeline.model_validate_json(row["timeline"])
        stereo, sr = decode(row["audio"])
        active = {ch: energy_vad(stereo[:, ch.index], sr) for ch in Channel}
        for e in tl.events:
            if e.type == "barge_in":
                victim = tl.turn(e.victim_turn)
                later = [t.start for t in tl.turns if t.channel is victim.channel and t.start > victim.end]
                # Silent from its last heard word on: the words after the cut are not in the audio.
                stop = max(w.end for w in _words_of(tl, victim.id) if w.spoken)
                assert abs(e.victim_stop - stop) <= TOLERANCE_S, (row["id"], e, stop)
                quiet_until = min(later, default=tl.duration)
                quiet = active[victim.channel][_frames(stop + TOLERANCE_S) : _frames(quiet_until - TOLERANCE_S)]
                assert not quiet.any(), f"{row['id']}: the interrupted channel speaks after its victim_stop"
                onset = active[e.by][_frames(e.onset) : _frames(e.onset + 0.15)]
                assert onset.any(), f"{row['id']}: the interrupter is silent at its onset"
                seen["barge_in"] += 1
            elif e.type == "hesitation" and e.kind == "pause" and e.end - e.start > 2 * TOLERANCE_S:
                gap = active[e.channel][_frames(e.start + TOLERANCE_S) : _frames(e.end - TOLERANCE_S)]
                assert not gap.any(), f"{row['id']}: speech inside a scripted pause"
            elif e.type == "hesitation" and e.kind == "filler":
                assert active[e.channel][_frames(e.start) : _frames(e.end) + 1].any(), f"{row['id']}: silent filler"
                seen["filler"] += 1
            elif e.type == "backchannel":
                assert active[e.channel][_frames(e.start) : _frames(e.end) + 1].any(), f"{row['id']}: silent reaction"
                seen["backchannel"] += 1
    assert seen["barge_in"] >= 1 and seen["backchannel"] >= 1, seen


@pytest.mark.parametrize(
    ("env", "skipped"),
    [
        ({}, False),
        ({"DUPLEX_SKIP_VLLM": "1"}, True),
        ({"DUPLEX_SKIP_VLLM": "0"}, False),
        ({"DUPLEX_SKIP_VLLM": "1", "CI": "true"}, False),  # CI runs the vLLM tests, or fails loudly
        ({"DUPLEX_SKIP_VLLM": "1", "CI": "1"}, False),
        ({"DUPLEX_SKIP_VLLM": "1", "CI": "false"}, True),
        ({"DUPLEX_SKIP_VLLM": "1", "CI": ""}, True),
    ],
)
def test_skip_vllm_is_ignored_under_ci(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], skipped: bool) -> None:
    for name in ("DUPLEX_SKIP_VLLM", "CI"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert (vllm_skip_reason() is not None) is skipped
