"""A real run (embedded LLM + CPU voices, Prefect flow, parquet shards) checked from the outside:
layout, schemas, and every timeline time against the audio itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import jsonschema
import librosa
import numpy as np
import polars as pl
import pytest

from factory.audio.edit import frame_activity, speech_intervals
from factory.config import load_config
from factory.models import Channel, MixRecipe, Script, Timeline
from factory.run.shards import generate_shard, plan_shards, shard_paths
from factory.runtime import runtime_for
from factory.schemas import SCHEMA_DIR
from tests.conftest import TINY, decode, read_rows

TOLERANCE_S = 0.030


def test_run_layout_and_datasets_loading(tiny_run: Path) -> None:
    assert sorted(p.name for p in (tiny_run / "data").iterdir()) == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    manifest = pl.read_parquet(tiny_run / "manifest.parquet")
    assert manifest["id"].to_list() == [f"train-{i:07d}" for i in range(4)]
    assert manifest["status"].to_list() == ["ok"] * 4, manifest.filter(pl.col("status") != "ok")["reason"].to_list()
    assert (tiny_run / "config.yaml").exists() and "configs:" in (tiny_run / "README.md").read_text()

    ds = datasets.load_dataset("parquet", data_files=str(tiny_run / "data" / "*.parquet"), split="train")
    assert isinstance(ds.features["audio"], datasets.Audio) and len(ds) == 4
    for column in ("audio", "audio_augmented", "voice_prompt"):
        ds = ds.cast_column(column, datasets.Audio(decode=False))
    stereo, sr = decode(ds[0]["audio"])
    assert stereo.shape[1] == 2 and sr == 24000
    assert abs(stereo.shape[0] / sr - ds[0]["duration"]) < 1e-3
    as_folder = datasets.load_dataset(str(tiny_run), split="train")  # the Hub layout + card
    assert len(as_folder) == 4


def test_timelines_validate_against_published_schema(tiny_run: Path) -> None:
    schema = json.loads((SCHEMA_DIR / "timeline.schema.json").read_text())
    for row in read_rows(tiny_run):
        jsonschema.validate(json.loads(row["timeline"]), schema)


def _channel_runs(stereo: np.ndarray, sr: int, ch: Channel) -> list[tuple[float, float]]:
    return speech_intervals(frame_activity(stereo[:, ch.index], sr), bridge_s=0.25)


def test_turn_edges_agree_with_voice_activity(tiny_run: Path) -> None:
    for row in read_rows(tiny_run):
        tl = Timeline.model_validate_json(row["timeline"])
        stereo, sr = decode(row["audio"])
        assert abs(len(stereo) / sr - tl.duration) < 1e-6
        assert np.max(np.abs(stereo)) <= 10 ** (-1 / 20) + 1e-3  # headroom kept, no clipping
        for ch in Channel:
            runs = _channel_runs(stereo, sr, ch)
            turns = [t for t in tl.turns if t.channel is ch]
            for t in turns:
                assert min(abs(s - t.start) for s, _ in runs) <= TOLERANCE_S, (row["id"], t, runs)
                assert min(abs(e - t.end) for _, e in runs) <= TOLERANCE_S, (row["id"], t, runs)
            for s, e in runs:  # no speech outside the turns the timeline declares
                assert any(t.start - TOLERANCE_S <= s and e <= t.end + TOLERANCE_S for t in turns), (row["id"], s, e)


def _silences(stereo: np.ndarray, sr: int, ch: Channel, min_s: float = 0.1) -> list[tuple[int, int]]:
    """The channel's quiet stretches (energy VAD, 10 ms frames) of at least `min_s`, as sample
    ranges without their first and last 20 ms (where a fade may reach in)."""
    hop = int(0.01 * sr)
    out = []
    for s, e in speech_intervals(~frame_activity(stereo[:, ch.index], sr)):
        if e - s >= min_s - 1e-9:
            out.append((round(s * sr) + 2 * hop, min(round(e * sr), len(stereo)) - 2 * hop))
    return out


def test_silence_inside_a_turn_is_the_silence_between_turns(tiny_run: Path) -> None:
    """A pause inside a turn must look like the gap after it: digital zero on the clean stem.
    A floor only inside turns (a TTS engine's own pauses) tells a model "the turn goes on" from
    the noise alone, which smoke-train found on the agent side (docs/exports/smoke-train.md)."""
    inside = between = 0
    for row in read_rows(tiny_run):
        tl = Timeline.model_validate_json(row["timeline"])
        stereo, sr = decode(row["audio"])
        for ch in Channel:
            turns = [(t.start, t.end) for t in tl.turns if t.channel is ch]
            for a, b in _silences(stereo, sr, ch):
                quiet = stereo[a:b, ch.index]
                in_turn = any(s * sr < a and b < e * sr for s, e in turns)
                inside, between = inside + in_turn, between + (not in_turn)
                level = 20 * np.log10(np.sqrt(np.mean(quiet.astype(np.float64) ** 2)) + 1e-12)
                assert not quiet.any(), (
                    f"{row['id']} {ch.value}: {'a pause inside a turn' if in_turn else 'a gap between turns'} at "
                    f"{a / sr:.2f}-{b / sr:.2f} s is not digital zero: "
                    f"{np.mean(quiet == 0):.0%} zeros, {level:.0f} dBFS"
                )
    assert inside >= 4 and between >= 4, (inside, between)  # both kinds were seen


def test_inner_sentence_ends_reach_the_tts_as_continuations(tiny_run: Path) -> None:
    """A turn's full stops and exclamation marks before its last word reach the TTS as commas (a
    hold's contour: `tts.hold_fall_share` of them keep their fall), and nothing else of the text
    changes; the timeline's words are the script's own."""
    continued = kept = 0
    for row in read_rows(tiny_run):
        script = Script.model_validate_json(row["script"])
        recipe = MixRecipe.model_validate_json(row["recipe"])
        tl = Timeline.model_validate_json(row["timeline"])
        said = [p.source.text.split() for p in recipe.pieces]
        for turn in script.turns:
            written = turn.text.split()
            bare = [w.rstrip(".!,") for w in written]
            (spoken,) = {tuple(s) for s in said if [w.rstrip(".!,") for w in s] == bare}  # its render's text
            for k, (w, s) in enumerate(zip(written, spoken, strict=True)):
                if w != s:
                    assert k < len(written) - 1 and w[-1] in ".!" and s == w[:-1] + ",", (row["id"], w, s)
                    continued += 1
                elif k < len(written) - 1 and w[-1] in ".!" and written[k + 1][0].isupper():
                    kept += 1
        texts = {t.text for t in script.turns}
        for t in tl.turns:
            if t.planned_text in texts:  # a script turn's render (words said or not), not a reaction
                words = [w.word for w in tl.words if w.turn == t.id]
                assert " ".join(words) == t.planned_text, (row["id"], words)
    assert continued >= 2, (continued, kept)  # the TINY run's turns have inner sentence ends


def test_barge_in_victims_fall_silent(tiny_run: Path) -> None:
    seen = 0
    for row in read_rows(tiny_run):
        tl = Timeline.model_validate_json(row["timeline"])
        stereo, sr = decode(row["audio"])
        for e in (e for e in tl.events if e.type == "barge_in"):
            victim, interrupter = tl.turn(e.victim_turn), tl.turn(e.turn)
            active = frame_activity(stereo[:, victim.channel.index], sr)
            later = [t.start for t in tl.turns if t.channel is victim.channel and t.start > victim.end]
            quiet_until = min(later, default=tl.duration)
            after = active[int((e.victim_stop + TOLERANCE_S) / 0.01) : int((quiet_until - TOLERANCE_S) / 0.01)]
            assert not after.any(), f"{row['id']}: interrupted channel speaks after its stop"
            other = frame_activity(stereo[:, interrupter.channel.index], sr)
            assert other[int(e.onset / 0.01) + 1 : int(e.victim_stop / 0.01)].any(), "interrupter silent in overlap"
            spoken = [w.word for w in tl.words if w.turn == victim.id and w.spoken]
            assert victim.spoken_text == " ".join(spoken) and victim.spoken_text != victim.planned_text
            seen += 1
    assert seen >= 4  # at least one per dialogue by default


def test_behaviour_minimums_per_dialogue(tiny_run: Path) -> None:
    """Per dialogue the configured minimums (a filler; barge-ins and backchannels may be none:
    counts vary across dialogues, as in human data); over the run, every behaviour occurs."""
    seen: set[str] = set()
    for row in read_rows(tiny_run):
        tl = Timeline.model_validate_json(row["timeline"])
        kinds = [e.type if e.type != "hesitation" else e.kind for e in tl.events]
        assert "filler" in kinds, (row["id"], kinds)
        seen |= set(kinds)
    assert {"barge_in", "backchannel", "filler"} <= seen, seen


def _speech(mono: np.ndarray, sr: int) -> np.ndarray:
    active = np.repeat(frame_activity(mono, sr), int(0.01 * sr))[: len(mono)]
    return mono[: len(active)][active]


def _timbre(speech: np.ndarray, sr: int) -> np.ndarray:
    """Mean MFCCs 1-19 of a voice's speech (c0, loudness, left out): its spectral envelope."""
    return librosa.feature.mfcc(y=speech, sr=sr, n_mfcc=20)[1:].mean(axis=1)


def test_each_channel_has_a_different_voice(tiny_run: Path) -> None:
    """Each channel's timbre differs from the other channel's more than it differs from itself
    (the first half of its speech against the second: same voice, other words). Self-calibrated:
    the TINY voices (espeak-gb-m3, piper-joe) share a ~100 Hz pitch, and a fixed pitch or
    centroid threshold passed or failed with the words the LLM wrote."""
    for row in read_rows(tiny_run):
        assert row["user_voice"] != row["agent_voice"]
        stereo, sr = decode(row["audio"])
        user, agent = (_speech(stereo[:, ch], sr) for ch in (0, 1))
        between = float(np.linalg.norm(_timbre(user, sr) - _timbre(agent, sr)))
        within = [
            float(np.linalg.norm(_timbre(x[: len(x) // 2], sr) - _timbre(x[len(x) // 2 :], sr))) for x in (user, agent)
        ]
        assert between > max(within), (row["id"], between, within)


def test_rerun_skips_finished_shards_and_redoes_broken_ones(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "tiny"
    shutil.copytree(tiny_run, run)
    cfg = load_config(None, [*TINY, f"run.output_dir={tmp_path}", "run.run_id=tiny"])
    first, second = plan_shards(cfg)
    reference = shard_paths(cfg, second.name)[0].read_bytes()
    broken = shard_paths(cfg, second.name)[0]
    broken.write_bytes(broken.read_bytes()[:1000])  # a shard cut short, as by a killed run
    recorded = json.loads(shard_paths(cfg, second.name)[2].read_text())["sha256"]
    assert generate_shard(runtime_for(cfg), first).skipped
    redone = generate_shard(runtime_for(cfg), second)
    # Same config and seed, redone in a process that has built shards before (models and TTS
    # cache warm): the fixture's bytes and recorded checksum.
    assert not redone.skipped and broken.read_bytes() == reference and redone.sha256 == recorded


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("llm.model_path=/nonexistent/model.gguf", "/nonexistent/model.gguf"),
        ("tts.voice_bank=/nonexistent/voices", "/nonexistent/voices"),
        ("dialogue.scenario_bank=/nonexistent/bank", "/nonexistent/bank"),
    ],
)
def test_missing_model_or_voice_bank_fails_fast_with_clear_error(
    tmp_path: Path, override: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong path is found before a Prefect server starts (no server is asked for at all)."""
    from typer.testing import CliRunner

    import flows.server
    from factory.cli import app

    servers: list[str] = []
    monkeypatch.setattr(flows.server, "run_server", lambda: servers.append("asked") or pytest.fail("server started"))
    result = CliRunner().invoke(app, ["generate", "--out", str(tmp_path), "--set", override, "-n", "1"])
    assert result.exit_code == 3, result.output
    assert message in result.output
    assert servers == []
    assert not (tmp_path / "demo-seed1234" / "data").exists()  # nothing half-written


def test_plot_command_draws_a_dialogue(tiny_run: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from factory.cli import app

    out = tmp_path / "d.png"
    result = CliRunner().invoke(app, ["plot", str(tiny_run), "train-0000001", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert CliRunner().invoke(app, ["plot", str(tiny_run), "nope"]).exit_code == 1


def test_manifest_marks_near_duplicate_scripts(tiny_run: Path, tmp_path: Path) -> None:
    from factory.atomic import sha256_file
    from factory.run.shards import finalize_run, signature_path
    from factory.script.dedup import load_signatures, save_signatures

    run = tmp_path / "tiny"
    shutil.copytree(tiny_run, run)
    cfg = load_config(None, [*TINY, f"run.output_dir={tmp_path}", "run.run_id=tiny"])
    assert pl.read_parquet(run / "manifest.parquet")["duplicate_of"].null_count() == 4
    first, second = plan_shards(cfg)
    sigs = load_signatures([signature_path(cfg, first.name)])
    # plant a copy of sample 0's script as sample 2's: it must be reported as its duplicate
    planted = load_signatures([signature_path(cfg, second.name)])
    planted["train-0000002"] = sigs["train-0000000"]
    save_signatures(signature_path(cfg, second.name), planted)
    # the record vouches for each file's hash: make it vouch for the planted signatures
    record = shard_paths(cfg, second.name)[2]
    info = json.loads(record.read_text()) | {"signatures_sha256": sha256_file(signature_path(cfg, second.name))}
    record.write_text(json.dumps(info))
    results = [generate_shard(runtime_for(cfg), spec) for spec in (first, second)]
    finalize_run(cfg, results)
    manifest = pl.read_parquet(run / "manifest.parquet")
    assert dict(zip(manifest["id"], manifest["duplicate_of"]))["train-0000002"] == "train-0000000"


def test_shard_submission_is_bounded(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With run.max_shards_in_flight=1 the flow submits a shard task only after the previous one's
    outcome was taken; the resumed run (shards skipped as complete) finalizes to the same bytes."""
    from flows import generate as flow_module

    run = tmp_path / "tiny"
    shutil.copytree(tiny_run, run)
    cfg = load_config(None, [*TINY, f"run.output_dir={tmp_path}", "run.run_id=tiny", "run.max_shards_in_flight=1"])
    events: list[str] = []
    real_retrying, real_outcome = flow_module._retrying, flow_module._outcome

    class Counting:  # the flow's submit, recorded
        def __init__(self, task) -> None:
            self.task = task

        def submit(self, *args, **kwargs):
            events.append("submit")
            return self.task.submit(*args, **kwargs)

    def outcome(*args, **kwargs):
        events.append("done")
        return real_outcome(*args, **kwargs)

    monkeypatch.setattr(flow_module, "_retrying", lambda c: Counting(real_retrying(c)))
    monkeypatch.setattr(flow_module, "_outcome", outcome)
    summary = flow_module.run_generate(cfg)
    assert summary.shards == 2 and summary.skipped == 2 and not summary.failed, summary
    in_flight = [events[: i + 1].count("submit") - events[: i + 1].count("done") for i in range(len(events))]
    assert events.count("submit") == 2 and max(in_flight) == 1, events
    for name in ("manifest.parquet", "README.md"):
        assert (run / name).read_bytes() == (tiny_run / name).read_bytes(), name
