"""The moshi export against the rules of moshi-finetune's loader and against the timeline.

Each loader rule is restated as a test, citing kyutai-labs/moshi-finetune@2acc879:
  R1 README "Prepare dataset" + finetune/data/dataset.py get_dataset_iterator: data.jsonl lines
     {"path", "duration"}; sphn resolves `path` against the jsonl's folder; windows are cut while
     start < duration, so duration must be the wav's own length.
  R2 README + interleaver.py InterleavedTokenizer.__call__ (mimi.encode on [C, 1, N], then
     .view(1, -1, T)): stereo, channel 0 = the model's voice (our agent), channel 1 = the user;
     Mimi's rate is 24 kHz (sphn resamples anything else: we write 24 kHz).
  R3 interleaver.py InterleavedTokenizer.__call__ / dicho: `<wav stem>.json` with "alignments",
     found by binary search on the start, so they must be sorted by start.
  R4 train.py Interleaver(keep_main_only=True) + main_speaker_label "SPEAKER_MAIN": only those
     words make the text stream.
  R5 interleaver.py _keep_those_with_duration: words with end <= start are dropped.
  R6 interleaver.py build_token_stream: a word whose first frame is the previous word's replaces
     the previous word's tokens; leftover tokens are dropped when the next word starts.
The moshi-finetune code itself runs against this export in tests/coqui/test_moshi_finetune.py.

Truths from outside the exporter: the timeline the samples were built from, and the written wav
read back with soundfile and put through the project's energy VAD (who is audible when).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from factory.audio.vad import energy_vad
from factory.export import moshi
from factory.export.errors import ExportError
from factory.export.options import ExportOptions
from factory.export.output import read_row, read_sidecar
from factory.export.report import RuleCounter
from factory.models import BargeInEvent, Channel, EndReason, TimelineWord, TurnKind, WordKind
from factory.tokenize import fit_units, get_text_tokenizer
from tests.export_fixtures import make_japanese_sample, make_run, make_sample

FRAME = 1 / 12.5


@pytest.fixture(scope="module")
def samples():
    return [make_sample(seed) for seed in (0, 1)]


@pytest.fixture(scope="module")
def text_tok():
    return get_text_tokenizer(None)


@pytest.fixture(scope="module")
def exported(samples, text_tok, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("moshi")
    units = fit_units(
        [moshi.moshi_audio(s)[:, c] for s in samples for c in (0, 1)], moshi.SAMPLE_RATE, 12.5, 16, seed=0
    )
    opts = ExportOptions(format_options={"tokens": True}, audio_tokenizer_obj=units, text_tokenizer_obj=text_tok)
    moshi.Moshi().export(samples, out, opts)
    return out


def _entries(out: Path, split: str = "train") -> list[dict]:
    return [json.loads(line) for line in (out / split / "data.jsonl").read_text().splitlines()]


def test_r1_jsonl_paths_and_durations(exported: Path, samples) -> None:
    entries = _entries(exported)
    assert [Path(e["path"]).stem for e in entries] == [s.id for s in samples]
    for e, s in zip(entries, samples):
        wav = exported / "train" / e["path"]  # relative to the jsonl's folder, as sphn resolves it
        info = sf.info(wav)
        assert e["duration"] == info.frames / info.samplerate  # the exact length, not the timeline's
        assert abs(e["duration"] - s.timeline.duration) < 1 / s.sample_rate


def test_r2_stereo_24k_agent_on_channel_0(exported: Path, samples) -> None:
    for s in samples:
        audio, sr = sf.read(exported / "train" / "audio" / f"{s.id}.wav", dtype="float32", always_2d=True)
        assert (
            sr == 24000
            and audio.shape[1] == 2
            and sf.info(exported / "train/audio" / f"{s.id}.wav").subtype == "PCM_16"
        )
        # who is audible: the energy VAD of each written channel against the timeline's turns
        for ch_out, who in ((0, Channel.agent), (1, Channel.user)):
            active = energy_vad(audio[:, ch_out], sr)
            for t in s.timeline.turns:
                frames = active[int(t.start * 100) + 2 : int(t.end * 100) - 2]
                if t.channel is who:
                    assert frames.mean() > 0.5, f"{who.value} turn {t.id} not audible on channel {ch_out}"
            silent = np.ones(len(active), bool)
            for t in s.timeline.turns:
                if t.channel is who:
                    silent[max(int(t.start * 100) - 3, 0) : int(t.end * 100) + 3] = False
            assert not active[silent].any(), f"channel {ch_out} has sound where no {who.value} turn is"


def test_r3_r4_r5_alignments_sorted_main_speaker_positive_duration(exported: Path, samples) -> None:
    for s in samples:
        d = moshi.read_dialogue(exported, s.id)
        starts = [a[1][0] for a in d.alignments]
        assert starts == sorted(starts)
        assert {a[2] for a in d.alignments} == {"SPEAKER_MAIN"}
        assert all(a[1][1] > a[1][0] for a in d.alignments)
        # every spoken agent word is there, in order (a merged entry holds several words)
        spoken = [w.word for w in s.timeline.words if w.spoken and w.channel is Channel.agent]
        assert " ".join(a[0] for a in d.alignments).split() == spoken
        assert {a[2] for a in d.user_alignments} == {"SPEAKER_USER"}


def test_r6_no_two_words_share_a_first_frame_and_leftover_tokens_are_counted(exported: Path, text_tok) -> None:
    report = json.loads((exported / "report.json").read_text())
    cut = 0
    for s in _entries(exported):
        d = moshi.read_dialogue(exported, Path(s["path"]).stem)
        frames = [moshi.first_frame(a[1][0]) for a in d.alignments]
        assert len(frames) == len(set(frames))
        # the loader loses a word's leftover tokens when the next word's first frame comes before
        # they are out: count those pairs directly, frames apart vs tokens of the previous word
        free = 0
        for (word, _, _), first in zip(d.alignments, frames):
            cut += free > first  # tokens of the previous word still queued: replaced by this word's
            free = first + len(text_tok.encode(word))
    assert report["rules"]["loader_drops_leftover_tokens"] == cut
    assert set(report["rules"]) == set(moshi.Moshi().rules())


def test_round_trip_turns_stops_and_backchannels_within_one_frame(exported: Path, samples) -> None:
    for s in samples:
        tl = s.timeline
        d = moshi.read_dialogue(exported, s.id)
        agent_words = [(w, a, b) for w, (a, b), _ in d.alignments]
        user_words = [(w, a, b) for w, (a, b), _ in d.user_alignments]
        for t in tl.turns:
            words = agent_words if t.channel is Channel.agent else user_words
            inside = [w for w in words if t.start - FRAME <= w[1] and w[2] <= t.end + FRAME]
            assert " ".join(w[0] for w in inside).split() == t.spoken_text.split(), t
            assert abs(inside[0][1] - t.start) <= FRAME and abs(inside[-1][2] - t.end) <= FRAME
        # the barge-in: the agent's words stop at the victim's stop; the user starts at the onset
        for e in tl.events:
            if isinstance(e, BargeInEvent):
                victim = tl.turn(e.victim_turn)
                stop = max(b for w, a, b in agent_words if victim.start - FRAME <= a <= victim.end)
                assert abs(stop - e.victim_stop) <= FRAME and victim.end_reason is EndReason.interrupted
                onset = min(a for w, a, b in user_words if a >= e.onset - FRAME)
                assert abs(onset - e.onset) <= FRAME
                # and in the audio: the agent channel falls silent at the stop
                active = energy_vad(d.audio[:, 0], 24000)
                after = active[int((e.victim_stop + FRAME) * 100) : int((e.victim_stop + 0.5) * 100)]
                assert not after.any()
        # backchannels and the failed interruption: the listener's words over the other's turn
        for t in tl.turns:
            if t.kind is TurnKind.backchannel or t.end_reason is EndReason.yielded:
                words = agent_words if t.channel is Channel.agent else user_words
                other = user_words if t.channel is Channel.agent else agent_words
                mine = [w for w in words if abs(w[1] - t.start) <= FRAME]
                assert mine and mine[0][0] == t.spoken_text.split()[0]
                assert any(a < t.start and b > t.end - FRAME for w, a, b in other) or any(
                    a <= t.end + FRAME and b >= t.start for w, a, b in other
                ), "a listener reaction should overlap the other speaker"
        turns = {(x["speaker"], x["kind"], x["end_reason"]) for x in d.turns}
        assert ("SPEAKER_MAIN", "turn", "interrupted") in turns and ("SPEAKER_USER", "turn", "yielded") in turns
        assert ("SPEAKER_USER", "backchannel", "complete") in turns


def test_pre_tokenized_streams(exported: Path, samples, text_tok) -> None:
    side = read_sidecar(exported)
    pad, epad = side.special_tokens["text_padding"], side.special_tokens["end_of_text_padding"]
    assert (pad, epad) == (text_tok.vocab_size, text_tok.vocab_size + 1)  # appended after a non-Moshi vocab
    for s in samples:
        row = read_row(exported, s.id)
        codes = np.array(row["codes"])
        n24 = sf.info(exported / row["path"]).frames
        assert codes.shape == (3, math.ceil(n24 / 1920)) == (3, row["n_frames"])  # units: n_q = 1
        text = codes[0]
        d = moshi.read_dialogue(exported, s.id)
        # every agent word's tokens, in order, each word starting at floor(start * 12.5)
        f = 0
        for word, (start, _), _ in d.alignments:
            ids = text_tok.encode(word)
            first = moshi.first_frame(start)
            assert first >= f
            assert list(text[first : first + len(ids)]) == ids, word
            if first > 0 and first - 1 >= f:  # the frame before a word is free: EPAD
                assert text[first - 1] == epad
            f = first + len(ids)
        assert set(text[f:].tolist()) <= {pad}
        n_text = sum(len(text_tok.encode(a[0])) for a in d.alignments)
        assert int(np.sum((text != pad) & (text != epad))) == n_text
        # audio rows: where the timeline says a channel is silent (one frame of slack), its codes
        # are one unit, the silence unit, which the frames inside its words are not
        for row, who in ((1, Channel.agent), (2, Channel.user)):
            turns = [t for t in s.timeline.turns if t.channel is who]
            silent = [
                i
                for i in range(codes.shape[1])
                if not any(t.start - FRAME < (i + 2) * FRAME and t.end + FRAME > (i - 1) * FRAME for t in turns)
            ]
            (unit,) = set(codes[row, silent].tolist())
            words = [w for w in s.timeline.words if w.channel is who and w.spoken and w.end - w.start > 3 * FRAME]
            inside = [i for w in words for i in range(math.ceil(w.start / FRAME), math.floor(w.end / FRAME))]
            assert inside and np.mean(codes[row, inside] == unit) < 0.2, who


def test_text_stream_restates_the_loader(text_tok) -> None:
    """The interleaver rule on a hand case: floor frames, EPAD before a word, drop vs shift."""
    al = [moshi.Alignment("hello", 0.05, 0.3, "SPEAKER_MAIN"), moshi.Alignment("x", 0.9, 1.0, "SPEAKER_MAIN")]
    toks = {"hello": [10, 11, 12], "x": [20]}
    s = moshi.text_stream(al, toks.__getitem__, 16, pad=3, epad=0, keep_and_shift=True)
    assert list(s[:14]) == [10, 11, 12, 3, 3, 3, 3, 3, 3, 3, 0, 20, 3, 3]  # 0.9 s -> frame 11
    close = [moshi.Alignment("hello", 0.05, 0.3, "SPEAKER_MAIN"), moshi.Alignment("x", 0.1, 0.2, "SPEAKER_MAIN")]
    c = RuleCounter(moshi.Moshi().rules())
    dropped = moshi.text_stream(close, toks.__getitem__, 4, 3, 0, c, keep_and_shift=False)
    assert list(dropped) == [10, 20, 3, 3] and c.counts["loader_drops_leftover_tokens"] == 1
    c = RuleCounter(moshi.Moshi().rules())
    shifted = moshi.text_stream(close, toks.__getitem__, 4, 3, 0, c, keep_and_shift=True)
    assert list(shifted) == [10, 11, 12, 20] and c.counts["word_overlaps_previous_tokens"] == 1


def test_bad_words_are_counted_not_lost(samples, text_tok, tmp_path: Path) -> None:
    s = samples[0].model_copy(deep=True)
    tl = s.meta.timeline
    agent = [w for w in tl.words if w.channel is Channel.agent and w.spoken]
    turn = agent[0].turn
    extra = [
        # a word whose first frame is the previous word's: merged into its entry
        TimelineWord(
            channel=Channel.agent,
            turn=turn,
            word="uh",
            kind=WordKind.filler,
            start=agent[0].start + 0.01,
            end=agent[0].end,
            spoken=True,
        ),
        # no duration: dropped, counted
        TimelineWord(
            channel=Channel.agent,
            turn=turn,
            word="zero",
            kind=WordKind.word,
            start=agent[1].end,
            end=agent[1].end,
            spoken=True,
        ),
        # past the end of the audio: dropped, counted
        TimelineWord(
            channel=Channel.agent,
            turn=turn,
            word="late",
            kind=WordKind.word,
            start=tl.duration + 1,
            end=tl.duration + 2,
            spoken=True,
        ),
    ]
    tl.words = tl.words + extra
    report = moshi.Moshi().export([s], tmp_path / "x", ExportOptions(text_tokenizer_obj=text_tok))
    assert report.rules["words_share_a_frame"] == 1
    assert report.rules["word_without_duration"] == 1
    assert report.rules["word_past_end"] == 1
    d = moshi.read_dialogue(tmp_path / "x", s.id)
    assert d.alignments[0][0] == f"{agent[0].word} uh"
    assert all(a[0] not in ("zero", "late") for a in d.alignments)
    assert not (tmp_path / "x" / "data").exists()  # no pre-tokenized streams unless asked


def test_bad_options_and_tokenizers(samples, text_tok, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="moshi format options"):
        moshi.Moshi().export(
            samples, tmp_path / "a", ExportOptions(format_options={"token": True}, text_tokenizer_obj=text_tok)
        )
    units25 = fit_units([samples[0].stems[:, 0]], samples[0].sample_rate, 25.0, 4, 0)
    with pytest.raises(ExportError, match="12.5 Hz"):
        moshi.Moshi().export(
            samples,
            tmp_path / "b",
            ExportOptions(format_options={"tokens": True}, audio_tokenizer_obj=units25, text_tokenizer_obj=text_tok),
        )


def test_export_is_deterministic_whatever_the_tokenize_batch(samples, text_tok, tmp_path: Path) -> None:
    for name, batch in (("a", 1), ("b", 3)):
        opts = ExportOptions(
            format_options={"tokens": True}, units_k=8, text_tokenizer_obj=text_tok, tokenize_batch=batch
        )
        moshi.Moshi().export(samples, tmp_path / name, opts)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert Path("units_codebook.json") in files and Path("train/audio/d000.wav") in files
    for f in files:
        if f.name not in ("report.json", "export.json"):  # timings; the options (tokenize_batch)
            assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_inspect_renders_words_and_streams_on_the_frame_grid(exported: Path, samples) -> None:
    s = samples[0]
    dec = moshi.Moshi().decode(exported, s.id)
    n = read_row(exported, s.id)["n_frames"]
    assert set(dec.tracks) == {"agent words", "user words", "text ids", "agent cb0", "user cb0"}
    assert all(len(t) == n for t in dec.tracks.values())
    first_agent = next(w for w in s.timeline.words if w.channel is Channel.agent and w.spoken)
    assert dec.tracks["agent words"][moshi.first_frame(first_agent.start)] == first_agent.word
    assert dec.tracks["text ids"][moshi.first_frame(first_agent.start) - 1] == "EPAD"


def test_a_japanese_run_keeps_every_word_with_the_default_vocabulary(tmp_path: Path) -> None:
    """A Japanese run's default text tokenizer is Gemma 3's (the run's manifest says ja): every agent
    word's tokens fit before the next word starts, so the loader drops none and each turn's words
    are all in the alignments; SmolLM2's vocabulary (bytes for Japanese) loses tokens of the same run."""
    from factory.export.run import export_run
    from factory.packaged import smollm2_gguf

    samples = [make_japanese_sample(seed) for seed in range(3)]
    run = make_run(tmp_path / "run", samples)
    report = export_run(run, "moshi", tmp_path / "out")
    assert report.samples_out == 3 and report.rules["loader_drops_leftover_tokens"] == 0
    sidecar = read_sidecar(tmp_path / "out")
    assert sidecar.text_tokenizer is not None and sidecar.text_tokenizer["config"]["file"] == "gemma-3-270m-vocab.gguf"
    tok = get_text_tokenizer("gemma")
    for s in samples:
        said = [
            w.word for w in sorted(s.timeline.words, key=lambda w: w.start) if w.channel is Channel.agent and w.spoken
        ]
        aligned = [
            w
            for w, _, who in json.loads((tmp_path / "out" / "train" / "audio" / f"{s.id}.json").read_text())[
                "alignments"
            ]
            if who == "SPEAKER_MAIN"
        ]
        assert "".join(aligned) == "".join(said)
        assert all(tok.decode(tok.encode(w)) == w for w in aligned)
    gguf = export_run(run, "moshi", tmp_path / "gguf", ExportOptions(text_tokenizer=str(smollm2_gguf())))
    assert gguf.rules["loader_drops_leftover_tokens"] > 0
