"""Full-Duplex-Bench evaluation sets (`factory.export.fdb`): every item is placed where the timeline
says, MEASURED ON THE WRITTEN WAV (energy voice activity per 10 ms frame; the factory's silence is
digital zero, so a low threshold finds every edge), and every JSON field is what the benchmark's
own scripts read. Those rules are restated below with the file and line they come from
(github.com/DanielLin94144/Full-Duplex-Bench @ d7336bd, folder v1_v1.5/), so this needs no checkout.

The tiny run's backchannels are all the user's (during agent turns), and the benchmark scores the
model's backchannels during the user's speech, so the tests also export each dialogue with its
channels swapped (real audio, the timeline's channels swapped): peer dialogues are symmetric, and
that gives agent backchannels during user turns.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from factory.audio.edit import resample
from factory.audio.vad import energy_vad, speech_intervals
from factory.export.errors import ExportError
from factory.export.fdb import GT_DISTRIBUTION, TASK_FILES, TASKS, FullDuplexBench
from factory.export.options import ExportOptions
from factory.models import (
    BackchannelEvent,
    BargeInEvent,
    Channel,
    EndOfTurnEvent,
    EndReason,
    HesitationEvent,
    Sample,
    SampleMeta,
    TurnKind,
)
from factory.run.read import read_samples

FRAME = 0.01  # one 10 ms frame: the placement tolerance
EPS = 1e-6  # JSON times are rounded to the microsecond


def export(samples, out: Path, **format_options: object) -> dict:
    """The format's export; returns the report index.json holds (what a benchmark user reads)."""
    FullDuplexBench().export(samples, out, ExportOptions(format_options=format_options))
    return json.loads((out / "index.json").read_text())["report"]


def _swap(value: object, key: str | None = None) -> object:
    """Swap user <-> agent wherever a channel is named (values of channel/by/speaker, voice keys)."""
    swap = {"user": "agent", "agent": "user"}
    if isinstance(value, dict):
        return {swap.get(k, k) if key == "voices" else k: _swap(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap(v, key) for v in value]
    if key in ("channel", "by", "speaker") and value in swap:
        return swap[value]
    return value


def _swapped(sample: Sample) -> Sample:
    data = _swap(sample.meta.model_dump(mode="json"))
    data["id"] = data["timeline"]["id"] = f"{sample.id}-swapped"
    stems = np.ascontiguousarray(sample.stems[:, ::-1])
    return Sample(meta=SampleMeta.model_validate(data), stems=stems, voice_prompt=sample.voice_prompt)


@pytest.fixture(scope="module")
def samples(tiny_run: Path) -> dict[str, Sample]:
    originals = list(read_samples(tiny_run))
    return {s.id: s for s in [*originals, *map(_swapped, originals)]}


@pytest.fixture(scope="module")
def exported(samples: dict[str, Sample], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    out = tmp_path_factory.mktemp("fdb") / "eval"
    report = export(samples.values(), out, split="train")  # the tiny run is all train
    index = json.loads((out / "index.json").read_text())
    return out, report, index["items"]


def _measured(path: Path, threshold_db: float = -60.0) -> tuple[list[tuple[float, float]], np.ndarray, int]:
    """Speech intervals of a written mono wav, from its own samples (10 ms frames)."""
    audio, sr = sf.read(path, dtype="float32")
    assert audio.ndim == 1, f"{path} is not mono"
    return speech_intervals(energy_vad(audio, sr, threshold_db)), audio, sr


def _near(intervals: list[tuple[float, float]], t: float, edge: int) -> float:
    """The measured onset (edge 0) or offset (edge 1) closest to t."""
    return min((iv[edge] for iv in intervals), key=lambda x: abs(x - t))


def _items(exported, task: str):
    out, _, index = exported
    assert index[task], f"no {task} item: the test would prove nothing"
    for item_id, entry in index[task].items():
        yield out / task / item_id, entry


def test_every_task_has_items_and_every_sample_is_accounted_for(exported, samples) -> None:
    out, report, index = exported
    assert report["samples"] == len(samples) and report["excluded"] == {} and report["rejected"] == {}
    for task in TASKS:
        c = report["tasks"][task]
        assert c["items"] >= 1, task
        # no silent loss: each sample gave items or is counted under a reason
        assert c["samples_with_items"] + sum(c["samples_without"].values()) == len(samples), task
        assert sorted(index[task], key=int) == [str(i) for i in range(1, c["items"] + 1)]
    # the originals' backchannels are the user's: counted as left out, with the reason
    user_bc = sum(
        isinstance(e, BackchannelEvent) and e.channel is Channel.user
        for s in samples.values()
        for e in s.timeline.events
    )
    assert report["tasks"]["backchannel"]["events_left_out"] == {
        "backchannel by the user (the benchmark scores the model's backchannels)": user_bc
    }
    agent_bi = sum(
        isinstance(e, BargeInEvent) and e.by is Channel.agent for s in samples.values() for e in s.timeline.events
    )
    left = report["tasks"]["user_interruption"]["events_left_out"]
    assert left.get("barge-in by the agent (the benchmark's interruptions are the user's)", 0) == agent_bi


def test_folder_layout_is_what_the_benchmark_walks(exported) -> None:
    out, _, index = exported
    for task in TASKS:
        root = out / task
        entries = {p.name for p in root.iterdir()}
        # eval_pause_handling.py l.18-24 and eval_smooth_turn_taking.py l.23-29 open every root entry
        # as a folder (only .md/.DS_Store skipped); eval_backchannel.py l.27-29 keeps digit names;
        # the backchannel reference lives at its root (read from the cwd, l.19).
        extra = {GT_DISTRIBUTION} if task == "backchannel" else set()
        assert entries == set(index[task]) | extra
        assert all(name.isdigit() and (root / name).is_dir() for name in index[task])
        for item in index[task]:
            files = {p.name for p in (root / item).iterdir()}
            # eval_user_interruption.py l.57-59 walks every folder below the root: no sub-folders
            assert all((root / item / f).is_file() for f in files)
            need = {"input.wav", "transcription.json", TASK_FILES[task]}
            if task == "user_interruption":
                need |= {"context.wav", "interrupt.wav"}  # dataset/README.md l.39-40
            assert need <= files
            # never a name the benchmark takes for the model's output (asr.py l.17: */output.wav;
            # eval_*.py match names ending in output.json)
            assert not any(f.endswith(("output.json", "output.wav")) for f in files)


def test_json_fields_are_what_the_eval_scripts_read(exported) -> None:
    for folder, _entry in _items(exported, "pause_handling"):
        pause = json.loads((folder / "pause.json").read_text())
        # example_data/pause_handling_example/1/pause.json: [{"text": "[PAUSE]", "timestamp": [s, e]}]
        assert all(set(p) == {"text", "timestamp"} and p["text"] == "[PAUSE]" for p in pause)
        assert all(len(p["timestamp"]) == 2 and 0 < p["timestamp"][0] < p["timestamp"][1] for p in pause)
    for folder, _entry in _items(exported, "smooth_turn_taking"):
        tt = json.loads((folder / "turn_taking.json").read_text())
        # eval_smooth_turn_taking.py l.48: input_end_time = input_turn[0]["timestamp"][0]
        # (model_inference/freeze-omni/smooth_turn_taking.py l.465 streams input up to it)
        assert isinstance(tt, list) and isinstance(tt[0]["timestamp"][0], float)
        assert tt[0]["text"] == "[TURN-TAKING]" and tt[0]["timestamp"][0] <= tt[0]["timestamp"][1]
    for folder, _entry in _items(exported, "user_interruption"):
        meta = json.loads((folder / "interrupt.json").read_text())
        # eval_user_interruption.py l.86-88: metadata[0]["interrupt"], ["context"], ["timestamp"][1];
        # get_transcript/asr.py l.40: `_, end_interrupt = interrupt_meta[0]["timestamp"]` (two values)
        assert set(meta[0]) == {"context", "interrupt", "timestamp"}
        assert meta[0]["context"].strip() and meta[0]["interrupt"].strip()
        onset, end = meta[0]["timestamp"]
        assert 0 < onset < end
    for folder, _entry in _items(exported, "backchannel"):
        bc = json.loads((folder / "backchannel.json").read_text())
        assert all(set(b) == {"text", "timestamp"} and b["text"] for b in bc)
    for task in TASKS:
        for folder, _entry in _items(exported, task):
            # example_data/smooth_turn_taking_example/1/transcription.json:
            # [{"speaker": k, "item": [{"text": w, "timestamp": [s, e]}]}]
            tr = json.loads((folder / "transcription.json").read_text())
            assert [s["speaker"] for s in tr] == [0, 1] and tr[0]["item"]
            for spk in tr:
                assert all(
                    set(w) == {"text", "timestamp"} and w["timestamp"][0] <= w["timestamp"][1] for w in spk["item"]
                )


def test_backchannel_reference_is_binned_as_eval_backchannel_bins(exported) -> None:
    out, _, index = exported
    gt = json.loads((out / "backchannel" / GT_DISTRIBUTION).read_text())
    assert set(gt) == set(index["backchannel"])  # eval_backchannel.py l.137: gt_distribution[spk]
    for folder, _entry in _items(exported, "backchannel"):
        spans = [b["timestamp"] for b in json.loads((folder / "backchannel.json").read_text())]
        info = sf.info(folder / "input.wav")
        duration = info.frames / info.samplerate
        # eval_backchannel.py l.120-134, restated: 0.2 s windows over the audio, +1e-10, normalised
        bins = [0 for _ in range(int(duration / 0.2) + 1)]
        for s, e in spans:
            for i in range(int(s / 0.2), int(e / 0.2) + 1):
                if i < len(bins):
                    bins[i] += 1
        want = np.array(bins) + 1e-10
        np.testing.assert_allclose(gt[folder.name], want / want.sum(), rtol=1e-9)
        assert abs(sum(gt[folder.name]) - 1) < 1e-9


def test_pauses_are_where_the_timeline_says_on_the_written_audio(exported, samples) -> None:
    for folder, entry in _items(exported, "pause_handling"):
        sample, t0 = samples[entry["sample_id"]], entry["window"][0]
        pauses = [
            e
            for e in sample.timeline.events
            if isinstance(e, HesitationEvent) and e.kind == "pause" and e.turn == entry["event"]["turn"]
        ]
        written = json.loads((folder / "pause.json").read_text())
        assert pauses and len(written) == len(pauses)
        intervals, _, _ = _measured(folder / "input.wav")
        gaps = [(a[1], b[0]) for a, b in zip(intervals, intervals[1:])]
        for p, w in zip(pauses, written):
            # a measured silence starts and ends within a frame of the timeline's pause
            gap = min(gaps, key=lambda g: abs(g[0] - (p.start - t0)) + abs(g[1] - (p.end - t0)))
            assert abs(gap[0] - (p.start - t0)) <= FRAME + EPS and abs(gap[1] - (p.end - t0)) <= FRAME + EPS
            assert abs(w["timestamp"][0] - gap[0]) <= FRAME + EPS and abs(w["timestamp"][1] - gap[1]) <= FRAME + EPS
        # speech resumes after the last pause, then the input ends (no tail: the example's layout)
        assert intervals[-1][0] > written[-1]["timestamp"][1] - FRAME


def test_turn_ends_are_where_the_timeline_says_on_the_written_audio(exported, samples) -> None:
    for folder, entry in _items(exported, "smooth_turn_taking"):
        sample, t0 = samples[entry["sample_id"]], entry["window"][0]
        end = next(
            e.end for e in sample.timeline.events if isinstance(e, EndOfTurnEvent) and e.turn == entry["event"]["turn"]
        )
        intervals, audio, sr = _measured(folder / "input.wav")
        offset = intervals[-1][1]  # the user's last speech in the input
        assert abs(offset - (end - t0)) <= FRAME + EPS
        tt = json.loads((folder / "turn_taking.json").read_text())
        assert abs(tt[0]["timestamp"][0] - offset) <= FRAME + EPS
        # digital silence follows for the model's reply (tail_s = 8 s; the benchmark's example has ~8.4 s)
        assert len(audio) / sr - offset >= 8.0 - FRAME
        # the input starts with the turn, lead_s after the window start
        turn = sample.timeline.turn(entry["event"]["turn"])
        assert abs(intervals[0][0] - (turn.start - t0)) <= FRAME + EPS


def test_interruptions_are_where_the_timeline_says_on_the_written_audio(exported, samples) -> None:
    for folder, entry in _items(exported, "user_interruption"):
        sample, t0 = samples[entry["sample_id"]], entry["window"][0]
        barge = next(
            e
            for e in sample.timeline.events
            if isinstance(e, BargeInEvent) and e.turn == entry["event"]["interrupt_turn"]
        )
        interrupter = sample.timeline.turn(barge.turn)
        intervals, audio, sr = _measured(folder / "input.wav")
        onset = _near(intervals, barge.onset - t0, 0)
        assert abs(onset - (barge.onset - t0)) <= FRAME + EPS  # the interruption onset, measured
        assert abs(intervals[-1][1] - (interrupter.end - t0)) <= FRAME + EPS  # its end: the last speech
        meta = json.loads((folder / "interrupt.json").read_text())[0]
        assert abs(meta["timestamp"][0] - onset) <= FRAME + EPS
        assert abs(meta["timestamp"][1] - intervals[-1][1]) <= FRAME + EPS
        # the agent's interrupted turn is not in the input: silence between context and onset
        # (only the context turn speaks before the onset)
        context = sample.timeline.turn(entry["event"]["context_turn"])
        before = [iv for iv in intervals if iv[1] <= onset + EPS]
        assert before and abs(before[-1][1] - (context.end - t0)) <= FRAME + EPS
        # context.wav / interrupt.wav are those turns' own samples of input.wav
        for name, turn in (("context.wav", context), ("interrupt.wav", interrupter)):
            clip, clip_sr = sf.read(folder / name, dtype="float32")
            first = round((turn.start - t0) * sr)
            assert clip_sr == sr and np.array_equal(clip, audio[first : first + len(clip)])
            assert abs(len(clip) / sr - (turn.end - turn.start)) <= 1 / sr + EPS
        assert meta["interrupt"] == interrupter.spoken_text and meta["context"] == context.spoken_text


def test_backchannels_are_where_the_timeline_says_on_the_written_audio(exported, samples) -> None:
    for folder, entry in _items(exported, "backchannel"):
        sample, t0 = samples[entry["sample_id"]], entry["window"][0]
        events = [
            e
            for e in sample.timeline.events
            if isinstance(e, BackchannelEvent) and e.during_turn == entry["event"]["turn"]
        ]
        # the agent's backchannels, measured on its channel (reference.wav) ...
        ref, _, _ = _measured(folder / "reference.wav")
        written = json.loads((folder / "backchannel.json").read_text())
        assert len(written) == len(events)
        for e, w in zip(events, written):
            on, off = _near(ref, e.start - t0, 0), _near(ref, e.end - t0, 1)
            assert abs(on - (e.start - t0)) <= FRAME + EPS and abs(off - (e.end - t0)) <= FRAME + EPS
            assert abs(w["timestamp"][0] - on) <= FRAME + EPS and abs(w["timestamp"][1] - off) <= FRAME + EPS
        # ... fall inside the user's turn, measured on input.wav, which holds no agent speech
        user, audio, sr = _measured(folder / "input.wav")
        turn = sample.timeline.turn(entry["event"]["turn"])
        assert abs(user[0][0] - (turn.start - t0)) <= FRAME + EPS and abs(user[-1][1] - (turn.end - t0)) <= FRAME + EPS
        rate = sample.sample_rate
        agent_only = resample(sample.stems[round(t0 * rate) :, Channel.agent.index], rate, sr)[: len(audio)]
        assert not np.array_equal(audio[: len(agent_only)], agent_only)


def test_every_wav_is_written_at_the_benchmarks_16_khz(exported) -> None:
    # eval_backchannel.py l.37-43 runs silero-vad on output.wav at its default 16 kHz, never resampling;
    # the benchmark's example inputs are 16 kHz (example_data/*/1/input.wav)
    out, _, index = exported
    for task in TASKS:
        for folder, entry in _items(exported, task):
            infos = {p.name: sf.info(p) for p in folder.glob("*.wav")}
            assert {i.samplerate for i in infos.values()} == {16_000}, (folder, infos)
            assert infos["input.wav"].frames == infos["reference.wav"].frames  # the reference spans the input
            assert abs(entry["duration"] - infos["input.wav"].frames / 16_000) < EPS


def _focal(sample: Sample, task: str, entry: dict):
    """The item's first focal user turn, from the timeline: the context turn of an interruption,
    else the event's turn."""
    return sample.timeline.turn(entry["event"]["context_turn" if task == "user_interruption" else "turn"])


def test_reference_holds_only_agent_speech_begun_at_or_after_the_focal_turn(exported, samples) -> None:
    earlier = 0  # items whose window holds an agent turn begun before the focal turn (the old reference's words)
    for task in TASKS:
        for folder, entry in _items(exported, task):
            sample, (t0, t1) = samples[entry["sample_id"]], entry["window"]
            focal = _focal(sample, task, entry)
            before = [
                t for t in sample.timeline.turns if t.channel is Channel.agent and t.start < focal.start and t.end > t0
            ]
            earlier += bool(before)
            assert [m["turn"] for m in entry["reference_silenced"]] == [t.id for t in before]  # marked
            # measured on the written reference: no speech starts before the focal turn ...
            ref, _, _ = _measured(folder / "reference.wav")
            assert all(on >= focal.start - t0 - FRAME - EPS for on, _ in ref), (folder, ref)
            # ... and the agent's later speech is all there: every agent turn begun from the focal
            # turn on and ending in the window is heard where the timeline puts it
            for t in sample.timeline.turns:
                if t.channel is Channel.agent and focal.start <= t.start and t.end <= t1:
                    on = _near(ref, t.start - t0, 0)
                    assert abs(on - (t.start - t0)) <= FRAME + EPS, (folder, t.id)
            words = json.loads((folder / "transcription.json").read_text())[1]["item"]
            assert all(w["timestamp"][0] >= focal.start - t0 - EPS for w in words)
    assert earlier, "no item had earlier agent speech in its window: the test would prove nothing"


def test_every_reply_item_has_an_agent_reply_to_score(exported, samples) -> None:
    """Turn ends and interruptions: the next floor turn is the agent's, heard in the reference
    after the point the benchmark scores from (turn_taking.json timestamp[0]; asr.py l.33-45 cuts
    output.wav at interrupt.json timestamp[1] for user interruption)."""
    for task, file, at in (("smooth_turn_taking", "turn_taking.json", 0), ("user_interruption", "interrupt.json", 1)):
        for folder, entry in _items(exported, task):
            sample, t0 = samples[entry["sample_id"]], entry["window"][0]
            user_turn = sample.timeline.turn(entry["event"]["turn" if at == 0 else "interrupt_turn"])
            after = sorted(
                (
                    t
                    for t in sample.timeline.turns
                    if t.kind is TurnKind.turn and t.end_reason is not EndReason.yielded and t.start > user_turn.start
                ),
                key=lambda t: t.start,
            )
            assert after and after[0].channel is Channel.agent, (folder, "no agent reply follows")
            scored_from = json.loads((folder / file).read_text())[0]["timestamp"][at]
            ref, _, _ = _measured(folder / "reference.wav")
            assert any(off > scored_from + 0.2 for _, off in ref), (folder, "nothing to score")
            assert abs(_near(ref, after[0].start - t0, 0) - (after[0].start - t0)) <= FRAME + EPS


def test_a_reply_after_the_tail_is_left_out_with_its_reason(exported, samples, tmp_path: Path) -> None:
    """With a short tail only turn ends answered within it keep an item: a reply after it would fall
    outside input.wav, and the item would have nothing to score. The tail sits between the run's
    reply offsets (which depend on the words the LLM wrote), so both outcomes are seen."""
    default = exported[2]["smooth_turn_taking"].values()  # tail_s = 8: every answered turn end
    offsets = sorted({e["event"]["reply_start"] - e["event"]["turn_end"] for e in default})
    assert len(offsets) >= 2 and offsets[-1] > 0, offsets
    mid = len(offsets) // 2  # between two offsets near the median: some replies within, some after
    tail_s = max(0.0, (offsets[mid - 1] + offsets[mid]) / 2)
    kept = {
        (e["sample_id"], e["event"]["turn"])
        for e in default
        if e["event"]["reply_start"] < e["event"]["turn_end"] + tail_s
    }
    assert 0 < len(kept) < len(default)
    report = export(samples.values(), tmp_path / "out", split="train", tasks="smooth_turn_taking", tail_s=tail_s)
    index = json.loads((tmp_path / "out" / "index.json").read_text())["items"]["smooth_turn_taking"]
    assert {(e["sample_id"], e["event"]["turn"]) for e in index.values()} == kept
    left = report["tasks"]["smooth_turn_taking"]["events_left_out"]
    assert left["the agent's reply begins after the tail (tail_s)"] == len(default) - len(kept)


def _ends_with_the_interruption(sample: Sample, interrupt_turn: int) -> Sample:
    """The dialogue cut after a user's interrupting turn: turns begun after its onset, their words
    and events dropped, its audio zero from the turn's end (the dialogue's last turn is the interruption)."""
    tl = sample.timeline
    barge = next(e for e in tl.events if isinstance(e, BargeInEvent) and e.turn == interrupt_turn)
    end = tl.turn(barge.turn).end
    ids = {t.id for t in tl.turns if t.start <= barge.onset}
    events = [
        e
        for e in tl.events
        if all(getattr(e, k) in ids for k in ("turn", "during_turn", "victim_turn") if hasattr(e, k))
    ]
    cut = tl.model_copy(
        update={
            "turns": [t for t in tl.turns if t.id in ids],
            "words": [w for w in tl.words if w.turn in ids],
            "events": events,
            "duration": end,
        }
    )
    stems = sample.stems.copy()
    stems[round(end * sample.sample_rate) :] = 0
    meta = sample.meta.model_copy(update={"id": f"{sample.id}-cut", "timeline": cut})
    return Sample(meta=meta, stems=stems, voice_prompt=sample.voice_prompt)


def test_an_interruption_that_ends_the_dialogue_is_left_out_with_its_reason(exported, samples, tmp_path: Path) -> None:
    entry = next(iter(exported[2]["user_interruption"].values()))  # an interruption the full dialogue gives
    cut = _ends_with_the_interruption(samples[entry["sample_id"]], entry["event"]["interrupt_turn"])
    try:
        export([cut], tmp_path / "cut", split="all", tasks="user_interruption")
    except ExportError:  # when it was the dialogue's one interruption item: no item at all
        pass
    written = json.loads((tmp_path / "cut" / "index.json").read_text())
    left = written["report"]["tasks"]["user_interruption"]["events_left_out"]
    assert left["user turn with no reply (the dialogue ends)"] == 1  # nothing to score: left out, counted
    assert entry["event"]["interrupt_turn"] not in [
        e["event"]["interrupt_turn"] for e in written["items"].get("user_interruption", {}).values()
    ]


def test_split_filter_counts_what_it_leaves_out(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no sequence exported") as err:  # default: the test split only
        export(read_samples(tiny_run), tmp_path / "test")
    assert err.value.exit_code == 4
    report = json.loads((tmp_path / "test" / "index.json").read_text())["report"]
    assert report["excluded"] == {"split 'train' (exporting 'test')": 4}
    assert all(c["items"] == 0 for c in report["tasks"].values())


def test_damaged_samples_are_rejected_with_a_reason_and_the_rest_exported(samples, tmp_path: Path) -> None:
    good = [s for s in samples.values() if not s.id.endswith("-swapped")]
    truncated = good[0].model_copy(update={"stems": good[0].stems[: len(good[0].stems) // 2]})
    mono = good[1].model_copy(update={"stems": good[1].stems[:, 0]})
    dangling = good[2].model_copy(deep=True)
    dangling.meta.timeline.turns = dangling.meta.timeline.turns[:1]
    report = export([truncated, mono, dangling, good[3]], tmp_path / "out", split=None)
    assert report["rejected"] == {
        "audio ends before the timeline's last turn (truncated)": 1,
        "audio is not two-channel (user, agent)": 1,
        "a timeline event refers to a turn the timeline does not hold": 1,
    }
    index = json.loads((tmp_path / "out" / "index.json").read_text())["items"]
    used = {e["sample_id"] for items in index.values() for e in items.values()}
    assert used == {good[3].id}
    for c in report["tasks"].values():  # only the good sample is counted per task
        assert c["samples_with_items"] + sum(c["samples_without"].values()) == 1


def test_bad_requests_are_refused(samples: dict[str, Sample], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="fdb format options: tasks.0='pause': Input should be 'pause_handling'"):
        export([], tmp_path / "a", tasks=["pause"])
    with pytest.raises(ExportError, match="fdb format options: unknown option 'tail'.*fdb takes: lead_s"):
        export([], tmp_path / "a", tail=3)
    with pytest.raises(ExportError, match="tail_s=-1: Input should be greater than or equal to 0"):
        export([], tmp_path / "a", tail_s=-1)
    assert not (tmp_path / "a").exists()  # refused before anything is written
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("earlier")
    with pytest.raises(ExportError, match="is not an export"):  # a foreign folder is never written into
        export([], tmp_path / "full")
    # a re-export into an earlier export replaces it whole: no stale item folder of another task
    one = next(iter(samples.values()))
    export([one], tmp_path / "again", split="all")
    assert (tmp_path / "again" / "pause_handling").exists()
    report = export([one], tmp_path / "again", split="all", tasks="smooth_turn_taking")
    assert list(report["tasks"]) == ["smooth_turn_taking"] and report["options"]["split"] is None
    assert sorted(p.name for p in (tmp_path / "again").iterdir() if p.is_dir()) == ["smooth_turn_taking"]


def _digest(folder: Path) -> dict[str, str]:
    """The benchmark's files (export.json names the source run, report.json holds timings)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file() and p.name not in ("export.json", "report.json")
    }


def test_cli_export_eval_writes_the_same_bytes(tiny_run: Path, exported, samples, tmp_path: Path) -> None:
    from factory.cli import app

    runner = CliRunner()
    refused = runner.invoke(app, ["export", str(tiny_run), "--format", "fdb", "--out", str(tmp_path / "none")])
    assert refused.exit_code == 4 and "no sequence exported" in refused.output  # a train-only run, split test
    out = tmp_path / "cli"
    # the window lengths are CLI options (-o KEY=VALUE), not the defaults (0.5, 8, 0.7)
    windows = {"lead_s": 0.25, "tail_s": 4.0, "pause_resume_s": 0.5}
    options = [x for k, v in windows.items() for x in ("-o", f"{k}={v}")]
    result = runner.invoke(
        app, ["export", str(tiny_run), "-f", "fdb", "--out", str(out), "-o", "split=train", *options]
    )
    assert result.exit_code == 0, result.output
    written = json.loads((out / "index.json").read_text())
    report = written["report"]
    assert report["options"] == {**windows, "split": "train"}
    # every sample either gave a backchannel item or is counted with its reason (none silently lost)
    backchannel = report["tasks"]["backchannel"]
    assert backchannel["samples_with_items"] + sum(backchannel["samples_without"].values()) == report["samples"]
    assert "samples without (reason)" in result.output  # the per-task table
    # the options shape the written audio: measured lead before and tail after a user turn
    by_id = {s.id: s for s in samples.values()}
    for item_id, entry in written["items"]["smooth_turn_taking"].items():
        turn = by_id[entry["sample_id"]].timeline.turn(entry["event"]["turn"])
        intervals, audio, sr = _measured(out / "smooth_turn_taking" / item_id / "input.wav")
        assert abs(len(audio) / sr - intervals[-1][1] - 4.0) <= FRAME + EPS
        assert abs(intervals[0][0] - min(turn.start, 0.25)) <= FRAME + EPS
    # same samples, same bytes (the originals only: the module export also holds swapped copies)
    again = tmp_path / "again"
    export([s for s in samples.values() if not s.id.endswith("-swapped")], again, split="train", **windows)
    assert _digest(out) == _digest(again)


@pytest.mark.skipif(
    not os.environ.get("FDB_EVAL_DIR"), reason="supplementary: FDB_EVAL_DIR=<checkout>/v1_v1.5/evaluation"
)
def test_the_benchmarks_own_scorers_read_our_items(exported, tmp_path: Path, capsys) -> None:
    """Runs eval_pause_handling / eval_smooth_turn_taking (pure-Python modules) on our items with
    our agent's reference.wav words as output.json: the scripts read our JSON as is, and the
    turn-taking latency they report is our agent's mean measured gap. The assertions above state
    the same rules without a checkout; this is the cross-check when one is at hand."""
    import shutil
    import sys

    sys.path.insert(0, os.environ["FDB_EVAL_DIR"])
    from eval_smooth_turn_taking import eval_smooth_turn_taking

    out, _, index = exported
    root = tmp_path / "smooth_turn_taking"
    shutil.copytree(out / "smooth_turn_taking", root)
    gaps = []
    for item_id, entry in index["smooth_turn_taking"].items():
        tr = json.loads((root / item_id / "transcription.json").read_text())
        end = json.loads((root / item_id / "turn_taking.json").read_text())[0]["timestamp"][0]
        reply_start = entry["event"]["reply_start"] - entry["window"][0]
        reply = [w for w in tr[1]["item"] if w["timestamp"][0] >= reply_start - EPS]  # the reply turn's words
        (root / item_id / "output.json").write_text(json.dumps({"text": "", "chunks": reply}))
        if reply and reply[-1]["timestamp"][1] - reply[0]["timestamp"][0] >= 1:
            gaps.append(max(reply[0]["timestamp"][0] - end, 0))
    eval_smooth_turn_taking(str(root))
    printed = capsys.readouterr().out
    latency = float(printed.split("Average latency:")[1].split()[0])
    assert abs(latency - np.mean(gaps)) < 1e-6

    from eval_pause_handling import eval_pause_handling

    root = tmp_path / "pause_handling"
    shutil.copytree(out / "pause_handling", root)
    for item_id in index["pause_handling"]:
        tr = json.loads((root / item_id / "transcription.json").read_text())
        (root / item_id / "output.json").write_text(json.dumps({"text": "", "chunks": tr[1]["item"]}))
    eval_pause_handling(str(root))  # lists the root's entries as item folders: ours are
    assert "Average take turn:" in capsys.readouterr().out
